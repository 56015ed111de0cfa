//! The executor under test, seen through three small traits so that the
//! scenarios run as well against a fake (to test the harness) as against
//! loky.

use std::any::Any;
use std::time::Duration;

use loky::{ReturnWhen, Shutdown};

use super::model::{Call, Failure, Outcome, Policy, Signal};

/// How a scenario wants its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Number of workers.
    pub workers: usize,
    /// Crash policy.
    pub policy: Policy,
    /// Per-worker memory cap, in bytes.
    pub memory_limit: Option<u64>,
    /// For the reusable executor: kill the tasks of a pool it replaces.
    pub kill_workers: bool,
    /// For the reusable executor: a setting that differs between
    /// generations, to force a replacement.
    pub generation: u64,
    /// An initializer that stores [`INIT_ARG`] in every worker.
    pub initializer: bool,
    /// Retire a worker after this many calls.
    pub max_tasks_per_child: Option<usize>,
    /// Idle workers leave after this long.
    pub idle_timeout: Option<Duration>,
    /// The largest frame either side accepts, in bytes.
    pub max_frame_size: Option<usize>,
}

/// What the initializer of a pool with [`PoolSettings::initializer`]
/// stores (`INIT_VALUE` then returns it).
pub const INIT_ARG: &str = "chaos";

/// What `wait` returned, reduced to what the scenarios check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waited {
    /// The outcome of each future in the done set, looked at right after
    /// `wait` returned.
    pub done: Vec<Outcome>,
    /// How many futures were in the not-done set.
    pub not_done: usize,
}

impl PoolSettings {
    /// `workers` workers under `policy`, nothing else set.
    pub fn new(workers: usize, policy: Policy) -> Self {
        PoolSettings {
            workers,
            policy,
            memory_limit: None,
            kill_workers: false,
            generation: 0,
            initializer: false,
            max_tasks_per_child: None,
            idle_timeout: None,
            max_frame_size: None,
        }
    }
}

/// A submitted call's future.
pub trait Pending: Send + Sync {
    /// Waits up to `timeout` for the outcome; [`Outcome::Hung`] if it is
    /// not there by then.
    fn wait(&self, timeout: Duration) -> Outcome;

    /// `Future::kill`: true if the call was stopped.
    fn kill(&self) -> bool;

    /// `Future::cancel`: true if the call had not started (or was already
    /// cancelled).
    fn cancel(&self) -> bool;

    /// `Future::add_done_callback` with a callback that gets the future's
    /// `done()` as it runs.
    fn on_done(&self, callback: Box<dyn FnOnce(bool) + Send>);

    /// For [`Pool::wait`] and [`Pool::as_completed`].
    fn as_any(&self) -> &dyn Any;
}

/// A pool of workers.
pub trait Pool: Send + Sync {
    /// Submits `call`, with a deadline if `timeout` is set.
    fn submit(&self, call: &Call, timeout: Option<Duration>) -> Result<Box<dyn Pending>, Failure>;

    /// The pids of the live workers.
    fn worker_pids(&self) -> Vec<u32>;

    /// Sends `signal` to worker `pid` from outside; true if it was sent.
    fn signal(&self, pid: u32, signal: Signal) -> bool;

    /// `map` of `FLAKY` over `inputs` in chunks of `chunksize`, with a
    /// timeout: the outcome of each item it yielded, in order
    /// ([`Outcome::Hung`] for a timeout and every item after it).
    fn map_flaky(&self, inputs: Vec<i64>, chunksize: usize, timeout: Duration) -> Vec<Outcome>;

    /// `loky::wait` over `futures` (of integer-valued calls).
    fn wait(&self, futures: &[&dyn Pending], how: ReturnWhen, timeout: Duration) -> Waited;

    /// `loky::as_completed` over `futures` (of integer-valued calls): the
    /// outcome of each future it yielded, looked at as it was yielded, and
    /// `None` for a timeout.
    fn as_completed(&self, futures: &[&dyn Pending], timeout: Duration) -> Vec<Option<Outcome>>;

    /// Shuts the pool down.
    fn shutdown(&self, how: Shutdown);

    /// Whether the pool is broken.
    fn is_broken(&self) -> bool;

    /// Whether the pool was shut down.
    fn is_shut_down(&self) -> bool;

    /// Whether `other` is a handle on the same pool.
    fn same_pool(&self, other: &dyn Pool) -> bool;

    /// For [`Pool::same_pool`].
    fn as_any(&self) -> &dyn Any;
}

/// Makes pools.
pub trait Backend: Sync {
    /// A new pool.
    fn build(&self, settings: &PoolSettings) -> Result<Box<dyn Pool>, Failure>;

    /// The process-wide reusable pool with these settings.
    fn reusable(&self, settings: &PoolSettings) -> Result<Box<dyn Pool>, Failure>;
}
