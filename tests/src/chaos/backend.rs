//! The executor under test, seen through three small traits so that the
//! scenarios run as well against a fake (to test the harness) as against
//! loky.

use std::any::Any;
use std::time::Duration;

use loky::Shutdown;

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
}

/// A pool of workers.
pub trait Pool: Send + Sync {
    /// Submits `call`, with a deadline if `timeout` is set.
    fn submit(&self, call: &Call, timeout: Option<Duration>) -> Result<Box<dyn Pending>, Failure>;

    /// The pids of the live workers.
    fn worker_pids(&self) -> Vec<u32>;

    /// Sends `signal` to worker `pid` from outside; true if it was sent.
    fn signal(&self, pid: u32, signal: Signal) -> bool;

    /// Shuts the pool down.
    fn shutdown(&self, how: Shutdown);

    /// Whether the pool is broken.
    fn is_broken(&self) -> bool;

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
