//! The executor under test: loky, with the chaos program as its own worker.

use std::any::Any;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use loky::diagnostics::{
    ABORT, ALLOCATE, ECHO_BYTES, ECHO_I64, EXIT, PANIC, PID, SEGFAULT, SLEEP, SPAWN_SLEEPER,
};
use loky::{
    CallOptions, CrashPolicy, Error, ExecutorBuilder, ProcessPoolExecutor, Shutdown, WorkerProgram,
};
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;

use super::backend::{Backend, Pending, Pool, PoolSettings};
use super::model::{Call, Death, ErrorKind, Exit, Failure, Outcome, Policy, Signal, Value};
use super::model::{digest, payload};
use super::probe::{self, PidFd};

/// Processes that tasks started (`SPAWN_SLEEPER`), to check that they die
/// with their pool.
type Sleepers = Arc<Mutex<Vec<PidFd>>>;

/// Builds loky pools running `program` as their workers.
#[derive(Debug, Clone)]
pub struct LokyBackend {
    program: WorkerProgram,
    sleepers: Sleepers,
}

impl LokyBackend {
    /// Pools whose workers run `program`.
    pub fn new(program: WorkerProgram) -> Self {
        LokyBackend {
            program,
            sleepers: Sleepers::default(),
        }
    }

    /// The processes tasks started since the last call, each held by a
    /// pidfd (so its pid cannot be mistaken for another process).
    pub fn take_sleepers(&self) -> Vec<PidFd> {
        std::mem::take(&mut *self.sleepers.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn builder(&self, settings: &PoolSettings) -> ExecutorBuilder {
        let policy = match settings.policy {
            Policy::BreakPool => CrashPolicy::BreakPool,
            Policy::Respawn => CrashPolicy::Respawn,
        };
        let mut builder = ProcessPoolExecutor::builder()
            .max_workers(settings.workers)
            .worker_program(self.program.clone())
            .on_worker_crash(policy)
            .kill_workers(settings.kill_workers)
            .env("LOKY_CHAOS_GENERATION", settings.generation.to_string());
        if let Some(limit) = settings.memory_limit {
            builder = builder.memory_limit(limit);
        }
        builder
    }
}

impl Backend for LokyBackend {
    fn build(&self, settings: &PoolSettings) -> Result<Box<dyn Pool>, Failure> {
        let ex = self.builder(settings).build().map_err(|e| classify(&e))?;
        Ok(Box::new(LokyPool {
            ex,
            sleepers: self.sleepers.clone(),
        }))
    }

    fn reusable(&self, settings: &PoolSettings) -> Result<Box<dyn Pool>, Failure> {
        let ex = self
            .builder(settings)
            .get_reusable()
            .map_err(|e| classify(&e))?;
        Ok(Box::new(LokyPool {
            ex,
            sleepers: self.sleepers.clone(),
        }))
    }
}

/// One loky executor.
#[derive(Debug)]
pub struct LokyPool {
    ex: ProcessPoolExecutor,
    sleepers: Sleepers,
}

impl Pool for LokyPool {
    fn submit(&self, call: &Call, timeout: Option<Duration>) -> Result<Box<dyn Pending>, Failure> {
        let options = timeout.map_or(CallOptions::new(), |t| CallOptions::new().timeout(t));
        let ex = &self.ex;
        let submitted = match call {
            Call::Echo(x) => ex.submit_with(ECHO_I64, *x, options).map(LokyFuture::Int),
            Call::EchoBytes { len, salt } => {
                let bytes = ByteBuf::from(payload(*len, *salt));
                ex.submit_with(ECHO_BYTES, bytes, options)
                    .map(LokyFuture::Bytes)
            }
            Call::Sleep(d) => ex.submit_with(SLEEP, *d, options).map(LokyFuture::Unit),
            Call::Pid => ex.submit_with(PID, (), options).map(LokyFuture::Pid),
            Call::Flaky(x) => ex
                .submit_with(crate::FLAKY, *x, options)
                .map(LokyFuture::Flaky),
            Call::Panic => ex
                .submit_with(PANIC, "chaos".to_owned(), options)
                .map(LokyFuture::Unit),
            Call::Segfault => ex.submit_with(SEGFAULT, (), options).map(LokyFuture::Unit),
            Call::Abort => ex.submit_with(ABORT, (), options).map(LokyFuture::Unit),
            Call::Exit(code) => ex.submit_with(EXIT, *code, options).map(LokyFuture::Unit),
            Call::Allocate(n) => ex.submit_with(ALLOCATE, *n, options).map(LokyFuture::Size),
            Call::SpawnSleeper(d) => ex
                .submit_with(SPAWN_SLEEPER, *d, options)
                .map(|f| LokyFuture::Sleeper(f, self.sleepers.clone())),
        };
        match submitted {
            Ok(fut) => Ok(Box::new(fut)),
            Err(err) => Err(classify(&err)),
        }
    }

    fn worker_pids(&self) -> Vec<u32> {
        self.ex.worker_pids()
    }

    fn signal(&self, pid: u32, signal: Signal) -> bool {
        probe::signal_child(pid, signal.number())
    }

    fn shutdown(&self, how: Shutdown) {
        self.ex.shutdown_with(how);
    }

    fn is_broken(&self) -> bool {
        self.ex.is_broken()
    }

    fn same_pool(&self, other: &dyn Pool) -> bool {
        other
            .as_any()
            .downcast_ref::<LokyPool>()
            .is_some_and(|other| self.ex.same_pool(&other.ex))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A loky future of one of the output types the suite uses.
enum LokyFuture {
    Int(loky::Future<i64>),
    Bytes(loky::Future<ByteBuf>),
    Unit(loky::Future<()>),
    Pid(loky::Future<u32>),
    Flaky(loky::Future<Result<i64, String>>),
    Size(loky::Future<u64>),
    Sleeper(loky::Future<u32>, Sleepers),
}

impl Pending for LokyFuture {
    fn wait(&self, timeout: Duration) -> Outcome {
        match self {
            LokyFuture::Int(f) => settle(f, timeout, Value::Int),
            LokyFuture::Bytes(f) => settle(f, timeout, |b| Value::Bytes {
                len: b.len(),
                digest: digest(&b),
            }),
            LokyFuture::Unit(f) => settle(f, timeout, |()| Value::Unit),
            LokyFuture::Pid(f) => settle(f, timeout, Value::Pid),
            LokyFuture::Flaky(f) => settle(f, timeout, |r| match r {
                Ok(x) => Value::Int(x),
                Err(text) => Value::Returned(text),
            }),
            LokyFuture::Size(f) => settle(f, timeout, |n| Value::Int(n as i64)),
            LokyFuture::Sleeper(f, sleepers) => settle(f, timeout, |pid| {
                track_sleeper(pid, sleepers);
                Value::Pid(pid)
            }),
        }
    }

    fn kill(&self) -> bool {
        match self {
            LokyFuture::Int(f) => f.kill(),
            LokyFuture::Bytes(f) => f.kill(),
            LokyFuture::Unit(f) => f.kill(),
            LokyFuture::Pid(f) => f.kill(),
            LokyFuture::Flaky(f) => f.kill(),
            LokyFuture::Size(f) => f.kill(),
            LokyFuture::Sleeper(f, _) => f.kill(),
        }
    }
}

/// Holds the `sleep` process `pid` a task started, if it is still there.
fn track_sleeper(pid: u32, sleepers: &Sleepers) {
    if let Some(handle) = PidFd::open(pid)
        && probe::comm(pid).as_deref() == Some("sleep")
    {
        sleepers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(handle);
    }
}

fn settle<T: DeserializeOwned>(
    fut: &loky::Future<T>,
    timeout: Duration,
    value: impl FnOnce(T) -> Value,
) -> Outcome {
    match fut.result_timeout(timeout) {
        Ok(v) => Outcome::Value(value(v)),
        Err(Error::Timeout) => Outcome::Hung,
        Err(err) => Outcome::Failed(classify(&err)),
    }
}

/// The class of a loky error, with what a `TerminatedWorker` reports.
pub fn classify(err: &Error) -> Failure {
    let message = err.to_string();
    let kind = match err {
        Error::TerminatedWorker(t) => {
            let exit = match (t.exit_code(), t.signal()) {
                (Some(code), _) => Exit::Code(code),
                (None, Some(sig)) => Exit::Signal(sig),
                (None, None) => Exit::Code(-1),
            };
            return Failure {
                kind: ErrorKind::TerminatedWorker,
                death: Some(Death {
                    exit,
                    task: t.task().map(str::to_owned),
                    memory_limit: t.memory_limit_exceeded(),
                }),
                message,
            };
        }
        Error::BrokenProcessPool(b) if b.reason().contains("did not start") => {
            ErrorKind::BrokenStart
        }
        Error::BrokenProcessPool(b) if b.reason().contains("broke the protocol") => {
            ErrorKind::BrokenProtocol
        }
        Error::BrokenProcessPool(_) => ErrorKind::Broken,
        Error::ShutdownExecutor(s) if s.workers_killed() => ErrorKind::ShutdownKilled,
        Error::ShutdownExecutor(_) => ErrorKind::Shutdown,
        Error::Cancelled => ErrorKind::Cancelled,
        Error::Task(_) => ErrorKind::Panicked,
        Error::DeadlineExceeded(_) => ErrorKind::DeadlineExceeded,
        Error::Serialization(_) => ErrorKind::Serialization,
        _ => ErrorKind::Other,
    };
    Failure::of(kind, message)
}
