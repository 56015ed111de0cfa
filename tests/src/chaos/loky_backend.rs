//! The executor under test: loky, with the chaos program as its own worker.

use std::any::Any;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use loky::diagnostics::{
    ABORT, ALLOCATE, BYTES, ECHO_BYTES, ECHO_I64, EXIT, PANIC, PANIC_UNFORMATTABLE, PID, SEGFAULT,
    SLEEP, SPAWN_SLEEPER,
};
use loky::{
    CallOptions, CrashPolicy, Error, ExecutorBuilder, ProcessPoolExecutor, ReturnWhen, Shutdown,
    WorkerProgram,
};
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;

use super::backend::{Backend, INIT_ARG, Pending, Pool, PoolSettings, Waited};
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
    escapees: Sleepers,
}

impl LokyBackend {
    /// Pools whose workers run `program`.
    pub fn new(program: WorkerProgram) -> Self {
        LokyBackend {
            program,
            sleepers: Sleepers::default(),
            escapees: Sleepers::default(),
        }
    }

    /// The processes tasks started outside their worker's session
    /// (`ECHO_OR_ESCAPE`) since the last call: no pool can stop them, so
    /// the round stops them itself once its pools are closed.
    pub fn take_escapees(&self) -> Vec<PidFd> {
        std::mem::take(&mut *self.escapees.lock().unwrap_or_else(|e| e.into_inner()))
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
        if settings.initializer {
            builder = builder.initializer(crate::INIT, INIT_ARG.to_owned());
        }
        if let Some(n) = settings.max_tasks_per_child {
            builder = builder.max_tasks_per_child(n);
        }
        if let Some(timeout) = settings.idle_timeout {
            builder = builder.idle_timeout(timeout);
        }
        if let Some(bytes) = settings.max_frame_size {
            builder = builder.max_frame_size(bytes);
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
            escapees: self.escapees.clone(),
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
            escapees: self.escapees.clone(),
        }))
    }
}

/// One loky executor.
#[derive(Debug)]
pub struct LokyPool {
    ex: ProcessPoolExecutor,
    sleepers: Sleepers,
    escapees: Sleepers,
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
            Call::InitValue => ex
                .submit_with(crate::INIT_VALUE, (), options)
                .map(LokyFuture::Init),
            Call::EchoOrExit(x, code) => ex
                .submit_with(crate::ECHO_OR_EXIT, (*x, *code), options)
                .map(LokyFuture::Int),
            Call::Escape => {
                let file = PidFile::new(&self.escapees, false);
                let arg = (ByteBuf::new(), Some(file.path()));
                ex.submit_with(crate::ECHO_OR_ESCAPE, arg, options)
                    .map(|f| LokyFuture::Escape(f, file))
            }
            Call::LeaveGroup(d) => {
                let file = PidFile::new(&self.sleepers, true);
                ex.submit_with(crate::LEAVE_GROUP_AND_SLEEP, (file.path(), *d), options)
                    .map(|f| LokyFuture::LeaveGroup(f, file))
            }
            Call::PanicUnformattable => ex
                .submit_with(PANIC_UNFORMATTABLE, (), options)
                .map(LokyFuture::Unit),
            Call::Oversized(n) => ex.submit_with(BYTES, *n, options).map(LokyFuture::Bytes),
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

    fn map_flaky(&self, inputs: Vec<i64>, chunksize: usize, timeout: Duration) -> Vec<Outcome> {
        let n = inputs.len();
        let map = self.ex.map(crate::FLAKY, inputs).chunksize(chunksize);
        let mut outcomes = Vec::with_capacity(n);
        for result in map.timeout(timeout) {
            match result {
                Err(Error::Timeout) => {
                    // What the map did not yield by its timeout hung.
                    outcomes.resize(n.max(outcomes.len()), Outcome::Hung);
                    break;
                }
                Ok(value) => outcomes.push(Outcome::Value(flaky_value(value))),
                Err(err) => outcomes.push(Outcome::Failed(classify(&err))),
            }
        }
        outcomes
    }

    fn wait(&self, futures: &[&dyn Pending], how: ReturnWhen, timeout: Duration) -> Waited {
        let futures = integer_futures(futures);
        let waited = loky::wait(&futures, Some(timeout), how);
        Waited {
            done: waited
                .done
                .iter()
                .map(|f| settle(f, Duration::ZERO, Value::Int))
                .collect(),
            not_done: waited.not_done.len(),
        }
    }

    fn as_completed(&self, futures: &[&dyn Pending], timeout: Duration) -> Vec<Option<Outcome>> {
        loky::as_completed(integer_futures(futures), Some(timeout))
            .map(|yielded| match yielded {
                Ok(fut) => Some(settle(&fut, Duration::ZERO, Value::Int)),
                Err(_timeout) => None,
            })
            .collect()
    }

    fn shutdown(&self, how: Shutdown) {
        self.ex.shutdown_with(how);
    }

    fn is_broken(&self) -> bool {
        self.ex.is_broken()
    }

    fn is_shut_down(&self) -> bool {
        self.ex.is_shutdown()
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
    Init(loky::Future<Option<String>>),
    Escape(loky::Future<ByteBuf>, PidFile),
    LeaveGroup(loky::Future<()>, PidFile),
}

/// The file where a task writes the pid of a process it started, and the
/// list that process joins once the call has resolved.
#[derive(Debug)]
struct PidFile {
    path: PathBuf,
    into: Sleepers,
    /// The process is a `sleep` (checked before it is tracked, against pid
    /// reuse); otherwise a fork of the worker, alive for a minute.
    sleep: bool,
}

impl PidFile {
    /// A fresh path in the temporary directory, unique in this run.
    fn new(into: &Sleepers, sleep: bool) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("loky-chaos-{}-{n}.pid", std::process::id());
        PidFile {
            path: std::env::temp_dir().join(name),
            into: into.clone(),
            sleep,
        }
    }

    fn path(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }

    /// Moves the process named in the file, if the task wrote it, to the
    /// list (once: the file is removed).
    fn collect(&self) {
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return;
        };
        let _ = std::fs::remove_file(&self.path);
        match text.trim().parse() {
            Ok(pid) if self.sleep => track_sleeper(pid, &self.into),
            Ok(pid) => {
                if let Some(handle) = PidFd::open(pid) {
                    self.into
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(handle);
                }
            }
            Err(_) => {}
        }
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(self.path.with_extension("pid.partial"));
    }
}

/// Runs `$body` with `$f` bound to the `loky::Future` of any variant.
macro_rules! with_future {
    ($self:expr, $f:ident => $body:expr) => {
        match $self {
            LokyFuture::Int($f) => $body,
            LokyFuture::Bytes($f) => $body,
            LokyFuture::Unit($f) => $body,
            LokyFuture::Pid($f) => $body,
            LokyFuture::Flaky($f) => $body,
            LokyFuture::Size($f) => $body,
            LokyFuture::Sleeper($f, _) => $body,
            LokyFuture::Init($f) => $body,
            LokyFuture::Escape($f, _) => $body,
            LokyFuture::LeaveGroup($f, _) => $body,
        }
    };
}

/// The loky futures of integer-valued calls among `futures`.
///
/// # Panics
///
/// On any other future: a scenario bug.
fn integer_futures(futures: &[&dyn Pending]) -> Vec<loky::Future<i64>> {
    futures
        .iter()
        .map(
            |pending| match pending.as_any().downcast_ref::<LokyFuture>() {
                Some(LokyFuture::Int(f)) => f.clone(),
                _ => panic!("wait and as_completed take futures of integer-valued calls"),
            },
        )
        .collect()
}

/// The value of a byte-string call.
fn bytes_value(bytes: ByteBuf) -> Value {
    Value::Bytes {
        len: bytes.len(),
        digest: digest(&bytes),
    }
}

/// `outcome`, after taking the pid `file` names once the call resolved
/// (the task wrote it, if it ran, before its call could resolve).
fn collecting(file: &PidFile, outcome: Outcome) -> Outcome {
    if outcome != Outcome::Hung {
        file.collect();
    }
    outcome
}

/// The value of a `FLAKY` call.
fn flaky_value(result: Result<i64, String>) -> Value {
    match result {
        Ok(x) => Value::Int(x),
        Err(text) => Value::Returned(text),
    }
}

impl Pending for LokyFuture {
    fn wait(&self, timeout: Duration) -> Outcome {
        match self {
            LokyFuture::Int(f) => settle(f, timeout, Value::Int),
            LokyFuture::Bytes(f) => settle(f, timeout, bytes_value),
            LokyFuture::Unit(f) => settle(f, timeout, |()| Value::Unit),
            LokyFuture::Pid(f) => settle(f, timeout, Value::Pid),
            LokyFuture::Flaky(f) => settle(f, timeout, flaky_value),
            LokyFuture::Size(f) => settle(f, timeout, |n| Value::Int(n as i64)),
            LokyFuture::Sleeper(f, sleepers) => settle(f, timeout, |pid| {
                track_sleeper(pid, sleepers);
                Value::Pid(pid)
            }),
            LokyFuture::Init(f) => settle(f, timeout, Value::Init),
            LokyFuture::Escape(f, file) => collecting(file, settle(f, timeout, bytes_value)),
            LokyFuture::LeaveGroup(f, file) => {
                collecting(file, settle(f, timeout, |()| Value::Unit))
            }
        }
    }

    fn kill(&self) -> bool {
        with_future!(self, f => f.kill())
    }

    fn cancel(&self) -> bool {
        with_future!(self, f => f.cancel())
    }

    fn on_done(&self, callback: Box<dyn FnOnce(bool) + Send>) {
        with_future!(self, f => f.add_done_callback(move |fut| callback(fut.done())))
    }

    fn as_any(&self) -> &dyn Any {
        self
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
