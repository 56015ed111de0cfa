//! An in-memory executor with loky's semantics, and bugs to inject into
//! it ([`Bug`]): the harness's own tests run the scenarios against it and
//! check that the checker passes it when faithful and fails it when buggy.
//!
//! Calls queue on fake workers (round robin) and run lazily, in order,
//! when some future is waited for, so that crashes leave unfinished calls
//! behind as in a real pool. No timing is involved: a run is a function of
//! its seed. Done callbacks run as their future settles, under the pool's
//! lock: they must not call back into the pool.

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use loky::{ReturnWhen, Shutdown};

pub use super::bugs::Bug;

use super::backend::{Backend, INIT_ARG, Pending, Pool, PoolSettings, Waited};
use super::model::{Call, Death, ErrorKind, Exit, Failure, Outcome, Policy, Signal, Value};
use super::model::{digest, payload};

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
    initializer: bool,
    max_tasks: Option<usize>,
    workers: Vec<FakeWorker>,
    calls: Vec<FakeCall>,
    broken: Option<Failure>,
    shut_down: bool,
    next_pid: u32,
    next_worker: usize,
}

#[derive(Debug)]
struct FakeWorker {
    pid: u32,
    /// The calls it holds, by index, the first one running.
    queue: VecDeque<usize>,
    /// Calls it ran, for `max_tasks_per_child`.
    served: usize,
}

/// A done callback of a fake future.
struct Callback(Box<dyn FnOnce(bool) + Send>);

impl fmt::Debug for Callback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Callback")
    }
}

#[derive(Debug)]
struct FakeCall {
    call: Call,
    timeout: Option<Duration>,
    outcome: Option<Outcome>,
    /// Left unresolved for good by [`Bug::DeadWorkerFuturesHang`].
    abandoned: bool,
    callbacks: Vec<Callback>,
}

impl FakePool {
    fn new(settings: &PoolSettings, bug: Option<Bug>) -> Self {
        let mut state = State {
            bug,
            policy: settings.policy,
            memory_limit: settings.memory_limit,
            initializer: settings.initializer,
            max_tasks: settings.max_tasks_per_child,
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

    /// Submits `call` and returns its index.
    fn submit_call(&self, call: &Call, timeout: Option<Duration>) -> Result<usize, Failure> {
        let mut state = self.lock();
        state.check_open()?;
        let index = state.calls.len();
        state.calls.push(FakeCall {
            call: call.clone(),
            timeout,
            outcome: None,
            abandoned: false,
            callbacks: Vec::new(),
        });
        if state.workers.is_empty() {
            state.spawn();
        }
        let w = state.next_worker % state.workers.len();
        state.next_worker += 1;
        state.workers[w].queue.push_back(index);
        Ok(index)
    }

    /// The outcome of call `index`, running what it takes.
    fn outcome(&self, index: usize) -> Outcome {
        let mut state = self.lock();
        state.run_until(index);
        // A call that nothing will ever resolve would time out: report it
        // as such at once.
        state.calls[index].outcome.clone().unwrap_or(Outcome::Hung)
    }

    /// The indices of `futures`, which must be of this pool.
    fn indices(futures: &[&dyn Pending]) -> Vec<(FakePool, usize)> {
        futures
            .iter()
            .map(|pending| {
                let fake = pending
                    .as_any()
                    .downcast_ref::<FakeFuture>()
                    .expect("a future of the fake executor");
                (fake.pool.clone(), fake.index)
            })
            .collect()
    }
}

impl State {
    fn spawn(&mut self) -> u32 {
        self.next_pid += 1;
        self.workers.push(FakeWorker {
            pid: self.next_pid,
            queue: VecDeque::new(),
            served: 0,
        });
        self.next_pid
    }

    fn settle(&mut self, index: usize, outcome: Outcome) {
        let call = &mut self.calls[index];
        if call.outcome.is_none() && !call.abandoned {
            call.outcome = Some(outcome);
            for Callback(callback) in std::mem::take(&mut call.callbacks) {
                callback(true);
            }
        }
    }

    /// Runs queued calls, in order on each worker, until call `target`
    /// has an outcome or nothing is left to run.
    fn run_until(&mut self, target: usize) {
        while self.calls[target].outcome.is_none() && !self.calls[target].abandoned {
            let Some(w) = (0..self.workers.len()).find(|&w| !self.workers[w].queue.is_empty())
            else {
                return;
            };
            let index = self.workers[w].queue[0];
            self.run_front(w, index);
        }
    }

    fn run_front(&mut self, w: usize, index: usize) {
        let pid = self.workers[w].pid;
        let call = self.calls[index].call.clone();
        if let Some(exit) = self.crash_of(&call) {
            return self.worker_died(w, exit);
        }
        self.workers[w].queue.pop_front();
        let outcome = match &call {
            Call::Sleep(d) | Call::LeaveGroup(d)
                if self.calls[index].timeout.is_some_and(|t| t < *d) =>
            {
                // Killed at its deadline; its worker is replaced.
                self.replace(w);
                Outcome::Failed(Failure::of(ErrorKind::DeadlineExceeded, "deadline"))
            }
            _ => self.value_of(&call, pid),
        };
        self.settle(index, outcome);
        self.workers[w].served += 1;
        if self.max_tasks.is_some_and(|n| self.workers[w].served >= n) {
            self.replace(w);
        }
    }

    /// Worker `w` leaves and a new one takes over its queue.
    fn replace(&mut self, w: usize) {
        self.next_pid += 1;
        self.workers[w].pid = self.next_pid;
        self.workers[w].served = 0;
    }

    fn value_of(&self, call: &Call, pid: u32) -> Outcome {
        let value = match call {
            Call::Echo(x) if self.bug == Some(Bug::WrongEcho) => Value::Int(x + 1),
            Call::Echo(x) | Call::EchoOrExit(x, None) => Value::Int(*x),
            Call::EchoBytes { len, salt } => Value::Bytes {
                len: *len,
                digest: digest(&payload(*len, *salt)),
            },
            Call::Sleep(_) | Call::LeaveGroup(_) => Value::Unit,
            Call::PanicUnformattable => {
                return Outcome::Failed(Failure::of(ErrorKind::Panicked, "unformattable"));
            }
            Call::Oversized(_) => {
                return Outcome::Failed(Failure::of(ErrorKind::Serialization, "oversized"));
            }
            Call::Pid | Call::SpawnSleeper(_) => Value::Pid(pid),
            Call::Flaky(x) if x.rem_euclid(10) == 3 => {
                return Outcome::Failed(Failure::of(ErrorKind::Panicked, "flaky"));
            }
            Call::Flaky(x) if x.rem_euclid(10) == 7 => Value::Returned(format!("{x} ends in 7")),
            Call::Flaky(x) => Value::Int(x * 2),
            Call::Panic => return Outcome::Failed(Failure::of(ErrorKind::Panicked, "panic")),
            Call::Allocate(n) => Value::Int(*n as i64),
            Call::InitValue => Value::Init(self.initializer.then(|| INIT_ARG.to_owned())),
            Call::Segfault
            | Call::Abort
            | Call::Exit(_)
            | Call::EchoOrExit(_, Some(_))
            | Call::Escape => {
                unreachable!("crashes are handled")
            }
        };
        Outcome::Value(value)
    }

    fn crash_of(&self, call: &Call) -> Option<Exit> {
        match call {
            Call::Segfault => Some(Exit::Signal(libc::SIGSEGV)),
            Call::Abort => Some(Exit::Signal(libc::SIGABRT)),
            Call::Exit(code) | Call::EchoOrExit(_, Some(code)) => Some(Exit::Code(*code)),
            Call::Escape => Some(Exit::Code(3)),
            Call::Allocate(n) if self.memory_limit.is_some_and(|l| *n > l) => {
                Some(Exit::Code(loky::exit_code::MEMORY_LIMIT))
            }
            _ => None,
        }
    }

    /// Worker `w` died with `exit` holding its queue.
    fn worker_died(&mut self, w: usize, exit: Exit) {
        let held = self.workers.remove(w).queue;
        let running = held.front().map(|&i| self.calls[i].call.task().to_owned());
        let memory = exit == Exit::Code(loky::exit_code::MEMORY_LIMIT);
        let failure = Failure {
            kind: ErrorKind::TerminatedWorker,
            death: Some(Death {
                exit,
                task: running.filter(|_| self.bug != Some(Bug::UnnamedTask)),
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
                self.workers[w].queue.push_back(index);
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

    /// Takes call `index` off its worker's queue and settles it as
    /// cancelled: true if it was pending (or already cancelled).
    fn cancel(&mut self, index: usize) -> bool {
        if let Some(outcome) = &self.calls[index].outcome {
            return matches!(outcome, Outcome::Failed(f) if f.kind == ErrorKind::Cancelled);
        }
        for worker in &mut self.workers {
            worker.queue.retain(|&i| i != index);
        }
        let cancelled = Failure::of(ErrorKind::Cancelled, "cancelled");
        self.settle(index, Outcome::Failed(cancelled));
        true
    }
}

/// A fake future.
struct FakeFuture {
    pool: FakePool,
    index: usize,
}

impl Pending for FakeFuture {
    fn wait(&self, _timeout: Duration) -> Outcome {
        self.pool.outcome(self.index)
    }

    fn kill(&self) -> bool {
        let mut state = self.pool.lock();
        state.calls[self.index].outcome.is_none() && state.cancel(self.index)
    }

    fn cancel(&self) -> bool {
        // Nothing runs until waited for: an unresolved call is pending.
        self.pool.lock().cancel(self.index)
    }

    fn on_done(&self, callback: Box<dyn FnOnce(bool) + Send>) {
        let mut state = self.pool.lock();
        let call = &mut state.calls[self.index];
        if call.outcome.is_some() {
            callback(true);
        } else {
            call.callbacks.push(Callback(callback));
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Pool for FakePool {
    fn submit(&self, call: &Call, timeout: Option<Duration>) -> Result<Box<dyn Pending>, Failure> {
        let index = self.submit_call(call, timeout)?;
        Ok(Box::new(FakeFuture {
            pool: self.clone(),
            index,
        }))
    }

    fn worker_pids(&self) -> Vec<u32> {
        self.lock().workers.iter().map(|w| w.pid).collect()
    }

    fn signal(&self, pid: u32, signal: Signal) -> bool {
        let mut state = self.lock();
        if state.bug == Some(Bug::SignalsLost) {
            return false;
        }
        let Some(w) = state.workers.iter().position(|w| w.pid == pid) else {
            return false;
        };
        state.worker_died(w, Exit::Signal(signal.number()));
        true
    }

    fn map_flaky(&self, inputs: Vec<i64>, _chunksize: usize, _timeout: Duration) -> Vec<Outcome> {
        // One call per item: the fake has no chunks.
        let submitted: Vec<Result<usize, Failure>> = inputs
            .iter()
            .map(|&x| self.submit_call(&Call::Flaky(x), None))
            .collect();
        submitted
            .into_iter()
            .map(|index| match index {
                Ok(index) => self.outcome(index),
                Err(failure) => Outcome::Failed(failure),
            })
            .collect()
    }

    fn wait(&self, futures: &[&dyn Pending], _how: ReturnWhen, _timeout: Duration) -> Waited {
        // Everything runs at once: every future is done.
        let done = FakePool::indices(futures)
            .into_iter()
            .map(|(pool, index)| pool.outcome(index))
            .collect();
        Waited { done, not_done: 0 }
    }

    fn as_completed(&self, futures: &[&dyn Pending], _timeout: Duration) -> Vec<Option<Outcome>> {
        FakePool::indices(futures)
            .into_iter()
            .map(|(pool, index)| Some(pool.outcome(index)))
            .collect()
    }

    fn shutdown(&self, how: Shutdown) {
        let mut state = self.lock();
        if let Some(bug) = state.bug {
            bug.leak();
        }
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
            state.workers.iter_mut().for_each(|w| w.queue.clear());
        }
        for index in 0..state.calls.len() {
            state.run_until(index);
        }
        state.workers.clear();
    }

    fn is_broken(&self) -> bool {
        self.lock().broken.is_some()
    }

    fn is_shut_down(&self) -> bool {
        self.lock().shut_down
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
