//! An in-memory executor with loky's semantics, and bugs to inject into
//! it: the harness's own tests run the scenarios against it and check that
//! the checker passes it when faithful and fails it when buggy.
//!
//! Calls queue on fake workers (round robin) and run lazily, in order,
//! when some future is waited for, so that crashes leave unfinished calls
//! behind as in a real pool. No timing is involved: a run is a function of
//! its seed.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use loky::Shutdown;

use super::backend::{Backend, Pending, Pool, PoolSettings};
use super::model::{Call, Death, ErrorKind, Exit, Failure, Outcome, Policy, Signal, Value};
use super::model::{digest, payload};

/// A bug the fake executor can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// When a worker dies, the futures of its other calls never resolve.
    DeadWorkerFuturesHang,
    /// Under `Respawn`, every call the dead worker held fails, not only the
    /// one it was running.
    RespawnFailsHeldCalls,
    /// `ECHO_I64` returns its argument plus one.
    WrongEcho,
    /// Under `BreakPool`, a crash fails the other calls with
    /// `ShutdownExecutor` instead of `TerminatedWorker`.
    WrongErrorKind,
}

impl Bug {
    /// Every bug.
    pub const ALL: [Bug; 4] = [
        Bug::DeadWorkerFuturesHang,
        Bug::RespawnFailsHeldCalls,
        Bug::WrongEcho,
        Bug::WrongErrorKind,
    ];

    /// Its name on the chaos program's command line (`--self-test-bug`).
    pub fn name(self) -> &'static str {
        match self {
            Bug::DeadWorkerFuturesHang => "dead-worker-futures-hang",
            Bug::RespawnFailsHeldCalls => "respawn-fails-held-calls",
            Bug::WrongEcho => "wrong-echo",
            Bug::WrongErrorKind => "wrong-error-kind",
        }
    }

    /// The bug named `name`.
    pub fn named(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|bug| bug.name() == name)
    }
}

/// Makes fake pools, with `bug` in them if set.
#[derive(Debug, Default)]
pub struct FakeBackend {
    bug: Option<Bug>,
    reusable: Mutex<Option<(PoolSettings, FakePool)>>,
}

impl FakeBackend {
    /// A faithful fake (`None`) or one with `bug`.
    pub fn new(bug: Option<Bug>) -> Self {
        FakeBackend {
            bug,
            reusable: Mutex::new(None),
        }
    }
}

impl Backend for FakeBackend {
    fn build(&self, settings: &PoolSettings) -> Result<Box<dyn Pool>, Failure> {
        Ok(Box::new(FakePool::new(settings, self.bug)))
    }

    fn reusable(&self, settings: &PoolSettings) -> Result<Box<dyn Pool>, Failure> {
        let mut current = self.reusable.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((old_settings, pool)) = current.as_ref() {
            let same = PoolSettings {
                workers: settings.workers,
                ..*old_settings
            } == *settings;
            let state = pool.lock();
            if same && state.broken.is_none() && !state.shut_down {
                return Ok(Box::new(pool.clone()));
            }
        }
        if let Some((_, old)) = current.take() {
            old.shutdown(Shutdown {
                kill_workers: settings.kill_workers,
                ..Shutdown::default()
            });
        }
        let pool = FakePool::new(settings, self.bug);
        *current = Some((*settings, pool.clone()));
        Ok(Box::new(pool))
    }
}

/// One fake pool; clones are handles on it.
#[derive(Debug, Clone)]
pub struct FakePool(Arc<Mutex<State>>);

#[derive(Debug)]
struct State {
    bug: Option<Bug>,
    policy: Policy,
    memory_limit: Option<u64>,
    /// Worker pids; each worker's queue of call indices.
    workers: Vec<(u32, VecDeque<usize>)>,
    calls: Vec<FakeCall>,
    broken: Option<Failure>,
    shut_down: bool,
    next_pid: u32,
    next_worker: usize,
}

#[derive(Debug)]
struct FakeCall {
    call: Call,
    timeout: Option<Duration>,
    outcome: Option<Outcome>,
    /// Left unresolved for good by [`Bug::DeadWorkerFuturesHang`].
    abandoned: bool,
}

impl FakePool {
    fn new(settings: &PoolSettings, bug: Option<Bug>) -> Self {
        let mut state = State {
            bug,
            policy: settings.policy,
            memory_limit: settings.memory_limit,
            workers: Vec::new(),
            calls: Vec::new(),
            broken: None,
            shut_down: false,
            next_pid: 1000,
            next_worker: 0,
        };
        for _ in 0..settings.workers {
            state.spawn();
        }
        FakePool(Arc::new(Mutex::new(state)))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn spawn(&mut self) -> u32 {
        self.next_pid += 1;
        self.workers.push((self.next_pid, VecDeque::new()));
        self.next_pid
    }

    fn settle(&mut self, index: usize, outcome: Outcome) {
        let call = &mut self.calls[index];
        if call.outcome.is_none() && !call.abandoned {
            call.outcome = Some(outcome);
        }
    }

    /// Runs queued calls, in order on each worker, until call `target`
    /// has an outcome or nothing is left to run.
    fn run_until(&mut self, target: usize) {
        while self.calls[target].outcome.is_none() && !self.calls[target].abandoned {
            let Some(w) = (0..self.workers.len()).find(|&w| !self.workers[w].1.is_empty()) else {
                return;
            };
            let index = self.workers[w].1[0];
            self.run_front(w, index);
        }
    }

    fn run_front(&mut self, w: usize, index: usize) {
        let pid = self.workers[w].0;
        let call = self.calls[index].call.clone();
        if let Some(exit) = self.crash_of(&call) {
            return self.worker_died(w, exit);
        }
        self.workers[w].1.pop_front();
        let outcome = match &call {
            Call::Sleep(d) if self.calls[index].timeout.is_some_and(|t| t < *d) => {
                // Killed at its deadline; its worker is replaced.
                self.next_pid += 1;
                self.workers[w].0 = self.next_pid;
                Outcome::Failed(Failure::of(ErrorKind::DeadlineExceeded, "deadline"))
            }
            _ => self.value_of(&call, pid),
        };
        self.settle(index, outcome);
    }

    fn value_of(&self, call: &Call, pid: u32) -> Outcome {
        let value = match call {
            Call::Echo(x) if self.bug == Some(Bug::WrongEcho) => Value::Int(x + 1),
            Call::Echo(x) => Value::Int(*x),
            Call::EchoBytes { len, salt } => Value::Bytes {
                len: *len,
                digest: digest(&payload(*len, *salt)),
            },
            Call::Sleep(_) => Value::Unit,
            Call::Pid | Call::SpawnSleeper(_) => Value::Pid(pid),
            Call::Flaky(x) if x.rem_euclid(10) == 3 => {
                return Outcome::Failed(Failure::of(ErrorKind::Panicked, "flaky"));
            }
            Call::Flaky(x) if x.rem_euclid(10) == 7 => Value::Returned(format!("{x} ends in 7")),
            Call::Flaky(x) => Value::Int(x * 2),
            Call::Panic => return Outcome::Failed(Failure::of(ErrorKind::Panicked, "panic")),
            Call::Allocate(n) => Value::Int(*n as i64),
            Call::Segfault | Call::Abort | Call::Exit(_) => unreachable!("crashes are handled"),
        };
        Outcome::Value(value)
    }

    fn crash_of(&self, call: &Call) -> Option<Exit> {
        match call {
            Call::Segfault => Some(Exit::Signal(libc::SIGSEGV)),
            Call::Abort => Some(Exit::Signal(libc::SIGABRT)),
            Call::Exit(code) => Some(Exit::Code(*code)),
            Call::Allocate(n) if self.memory_limit.is_some_and(|l| *n > l) => {
                Some(Exit::Code(loky::exit_code::MEMORY_LIMIT))
            }
            _ => None,
        }
    }

    /// Worker `w` died with `exit` holding its queue.
    fn worker_died(&mut self, w: usize, exit: Exit) {
        let (_, held) = self.workers.remove(w);
        let running = held.front().map(|&i| self.calls[i].call.task().to_owned());
        let memory = exit == Exit::Code(loky::exit_code::MEMORY_LIMIT);
        let failure = Failure {
            kind: ErrorKind::TerminatedWorker,
            death: Some(Death {
                exit,
                task: running,
                memory_limit: self.memory_limit.filter(|_| memory),
            }),
            message: "a worker died".to_owned(),
        };
        match self.policy {
            Policy::BreakPool => self.break_pool(failure, held),
            Policy::Respawn => self.respawn(failure, held),
        }
    }

    fn break_pool(&mut self, failure: Failure, held: VecDeque<usize>) {
        let mut held = held.into_iter();
        if let Some(first) = held.next() {
            self.settle(first, Outcome::Failed(failure.clone()));
        }
        for index in held {
            if self.bug == Some(Bug::DeadWorkerFuturesHang) {
                self.calls[index].abandoned = true;
            }
        }
        let others = match self.bug {
            Some(Bug::WrongErrorKind) => Failure::of(ErrorKind::ShutdownKilled, "wrong"),
            _ => failure.clone(),
        };
        for index in 0..self.calls.len() {
            self.settle(index, Outcome::Failed(others.clone()));
        }
        self.workers.clear();
        self.broken = Some(failure);
    }

    fn respawn(&mut self, failure: Failure, held: VecDeque<usize>) {
        let mut held = held.into_iter();
        if let Some(first) = held.next() {
            self.settle(first, Outcome::Failed(failure.clone()));
        }
        self.spawn();
        let w = self.workers.len() - 1;
        for index in held {
            if self.bug == Some(Bug::RespawnFailsHeldCalls) {
                self.settle(index, Outcome::Failed(failure.clone()));
            } else {
                self.workers[w].1.push_back(index);
            }
        }
    }

    fn check_open(&self) -> Result<(), Failure> {
        if let Some(broken) = &self.broken {
            return Err(broken.clone());
        }
        if self.shut_down {
            return Err(Failure::of(ErrorKind::Shutdown, "shut down"));
        }
        Ok(())
    }
}

/// A fake future.
struct FakeFuture {
    pool: FakePool,
    index: usize,
}

impl Pending for FakeFuture {
    fn wait(&self, _timeout: Duration) -> Outcome {
        let mut state = self.pool.lock();
        state.run_until(self.index);
        // A call that nothing will ever resolve would time out: report it
        // as such at once.
        state.calls[self.index]
            .outcome
            .clone()
            .unwrap_or(Outcome::Hung)
    }

    fn kill(&self) -> bool {
        let mut state = self.pool.lock();
        if state.calls[self.index].outcome.is_some() {
            return false;
        }
        for (_, queue) in &mut state.workers {
            queue.retain(|&i| i != self.index);
        }
        state.settle(
            self.index,
            Outcome::Failed(Failure::of(ErrorKind::Cancelled, "killed")),
        );
        true
    }
}

impl Pool for FakePool {
    fn submit(&self, call: &Call, timeout: Option<Duration>) -> Result<Box<dyn Pending>, Failure> {
        let mut state = self.lock();
        state.check_open()?;
        let index = state.calls.len();
        state.calls.push(FakeCall {
            call: call.clone(),
            timeout,
            outcome: None,
            abandoned: false,
        });
        if state.workers.is_empty() {
            state.spawn();
        }
        let w = state.next_worker % state.workers.len();
        state.next_worker += 1;
        state.workers[w].1.push_back(index);
        Ok(Box::new(FakeFuture {
            pool: self.clone(),
            index,
        }))
    }

    fn worker_pids(&self) -> Vec<u32> {
        self.lock().workers.iter().map(|(pid, _)| *pid).collect()
    }

    fn signal(&self, pid: u32, signal: Signal) -> bool {
        let mut state = self.lock();
        let Some(w) = state.workers.iter().position(|(p, _)| *p == pid) else {
            return false;
        };
        state.worker_died(w, Exit::Signal(signal.number()));
        true
    }

    fn shutdown(&self, how: Shutdown) {
        let mut state = self.lock();
        state.shut_down = true;
        if how.kill_workers || how.cancel_futures {
            let kind = if how.kill_workers {
                ErrorKind::ShutdownKilled
            } else {
                ErrorKind::Cancelled
            };
            for index in 0..state.calls.len() {
                state.settle(index, Outcome::Failed(Failure::of(kind, "shutdown")));
            }
            state.workers.iter_mut().for_each(|(_, q)| q.clear());
        }
        for index in 0..state.calls.len() {
            state.run_until(index);
        }
        state.workers.clear();
    }

    fn is_broken(&self) -> bool {
        self.lock().broken.is_some()
    }

    fn same_pool(&self, other: &dyn Pool) -> bool {
        other
            .as_any()
            .downcast_ref::<FakePool>()
            .is_some_and(|other| Arc::ptr_eq(&self.0, &other.0))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
