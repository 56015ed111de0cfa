//! `ProcessPoolExecutor`: the handle users submit work through.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use loky_proto::Task;

use crate::builder::ExecutorBuilder;
use crate::config::{Config, Shutdown};
use crate::error::Result;
use crate::future::Future;
use crate::map::Map;
use crate::supervisor::{self, Pool, PoolHandle};

/// A pool of worker processes running tasks, as Python's
/// `concurrent.futures.ProcessPoolExecutor` with loky's robustness.
///
/// A cheap `Clone` handle; the pool shuts down (waiting for its tasks) when
/// the last handle is dropped, like Python's `with` block. Workers start on
/// the first submit.
///
/// ```no_run
/// use loky_core::{ProcessPoolExecutor, Task};
///
/// const SQUARE: Task<i64, i64> = Task::new("square");
///
/// let ex = ProcessPoolExecutor::new(4)?;
/// let fut = ex.submit(SQUARE, 7)?;
/// assert_eq!(fut.result()?, 49);
/// let squares: Vec<i64> = ex.map(SQUARE, 0..100).chunksize(16).collect::<Result<_, _>>()?;
/// assert_eq!(squares[9], 81);
/// ex.shutdown(true);
/// # Ok::<(), loky_core::Error>(())
/// ```
#[derive(Clone)]
pub struct ProcessPoolExecutor {
    handle: Arc<PoolHandle>,
}

impl fmt::Debug for ProcessPoolExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessPoolExecutor")
            .field("max_workers", &self.max_workers())
            .field("program", &self.handle.config.program)
            .field("worker_pids", &self.worker_pids())
            .finish()
    }
}

/// Per-call settings for [`ProcessPoolExecutor::submit_with`].
///
/// ```no_run
/// use std::time::Duration;
/// use loky_core::{CallOptions, Error, ProcessPoolExecutor, Task};
///
/// const SLEEP: Task<Duration, ()> = Task::new("sleep");
///
/// let ex = ProcessPoolExecutor::new(2)?;
/// let options = CallOptions::new().timeout(Duration::from_millis(300));
/// let fut = ex.submit_with(SLEEP, Duration::from_secs(60), options)?;
/// assert!(matches!(fut.result(), Err(Error::DeadlineExceeded(_))));
/// assert!(!ex.is_broken()); // the worker was replaced
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use]
pub struct CallOptions {
    timeout: Option<Duration>,
}

impl CallOptions {
    /// Default options: the executor's settings apply.
    pub fn new() -> Self {
        CallOptions::default()
    }

    /// Kills the task (and its worker, which is replaced) if it runs longer
    /// than `timeout`; overrides the executor's `task_timeout`.
    /// `Duration::MAX` means no limit.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

impl ProcessPoolExecutor {
    /// An executor of `max_workers` workers running the discovered worker
    /// program (see [`WorkerProgram::Discover`](crate::WorkerProgram::Discover)).
    pub fn new(max_workers: usize) -> Result<Self> {
        Self::builder().max_workers(max_workers).build()
    }

    /// A builder for all settings.
    pub fn builder() -> ExecutorBuilder {
        ExecutorBuilder::default()
    }

    pub(crate) fn from_config(config: Config) -> Result<Self> {
        let pool = supervisor::start(config)?;
        Ok(ProcessPoolExecutor {
            handle: Arc::new(PoolHandle::new(pool)),
        })
    }

    pub(crate) fn config(&self) -> &Config {
        &self.handle.config
    }

    fn pool(&self) -> &Arc<Pool> {
        self.handle.pool()
    }

    /// Schedules `task(args)` and returns its future at once.
    ///
    /// Fails at once with the stored error if the pool is broken, with
    /// [`Error::ShutdownExecutor`](crate::Error::ShutdownExecutor) after shutdown, and with
    /// [`Error::Serialization`](crate::Error::Serialization) if `args` cannot be encoded (the pool stays
    /// usable).
    pub fn submit<I, O>(&self, task: Task<I, O>, args: I) -> Result<Future<O>>
    where
        I: Serialize,
        O: DeserializeOwned,
    {
        self.submit_with(task, args, CallOptions::new())
    }

    /// As [`submit`](Self::submit), with per-call options.
    pub fn submit_with<I, O>(
        &self,
        task: Task<I, O>,
        args: I,
        options: CallOptions,
    ) -> Result<Future<O>>
    where
        I: Serialize,
        O: DeserializeOwned,
    {
        let future = self
            .pool()
            .submit_call(task.signature(), options.timeout, |frame| {
                loky_proto::encode_payload_into(&args, frame)
            })?;
        Ok(Future::from_state(future))
    }

    /// Runs `task` on every item of `inputs`, yielding results in input
    /// order. Set `.chunksize(n)` to send items `n` at a time and
    /// `.timeout(d)` to stop waiting `d` after this call. The inputs are
    /// encoded now; the work is submitted at the first `next()`.
    pub fn map<I, O>(&self, task: Task<I, O>, inputs: impl IntoIterator<Item = I>) -> Map<O>
    where
        I: Serialize,
        O: DeserializeOwned,
    {
        Map::new(self.handle.clone(), task, inputs)
    }

    /// Shuts down: no more submits; with `wait`, blocks until every
    /// submitted task ran and every worker exited and was reaped. Without
    /// `wait`, returns at once and the work finishes in the background. May
    /// be called again.
    pub fn shutdown(&self, wait: bool) {
        self.shutdown_with(Shutdown {
            wait,
            ..Shutdown::default()
        });
    }

    /// Shuts down with every option of [`Shutdown`].
    pub fn shutdown_with(&self, how: Shutdown) {
        self.handle.shutdown(how);
    }

    /// The number of workers the pool keeps.
    pub fn max_workers(&self) -> usize {
        self.handle.max_workers()
    }

    /// The pids of the live workers (started, not yet reaped).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.handle.worker_pids()
    }

    /// Whether the pool is broken (submits fail with the stored error).
    pub fn is_broken(&self) -> bool {
        self.handle.is_broken()
    }

    /// Whether the pool was shut down (or finished after breaking).
    pub fn is_shutdown(&self) -> bool {
        self.handle.is_shut_down()
    }

    /// Changes the number of workers in place: growing keeps the workers,
    /// shrinking retires the extra ones once their work is done.
    pub(crate) fn resize(&self, max_workers: usize) {
        self.handle.resize(max_workers);
    }

    /// Whether both handles are of one pool.
    pub fn same_pool(&self, other: &ProcessPoolExecutor) -> bool {
        Arc::ptr_eq(&self.handle, &other.handle)
    }
}

impl ExecutorBuilder {
    /// Builds the executor. Workers start on the first submit.
    pub fn build(self) -> Result<ProcessPoolExecutor> {
        ProcessPoolExecutor::from_config(self.config()?)
    }
}
