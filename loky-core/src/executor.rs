//! `ProcessPoolExecutor`: the handle users submit work through.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use loky_proto::Task;

use crate::builder::ExecutorBuilder;
use crate::call::Target;
use crate::codec;
use crate::config::{Config, Shutdown};
use crate::error::Result;
use crate::future::Future;
use crate::map::{Map, MapUnordered};
use crate::options::CallOptions;
use crate::supervisor::{self, Pool, PoolHandle};

/// A pool of worker processes running tasks, as Python's
/// `concurrent.futures.ProcessPoolExecutor` with loky's robustness.
///
/// A cheap `Clone` handle; the pool shuts down (waiting for its tasks) when
/// the last handle is dropped, like Python's `with` block
/// ([`ExecutorBuilder::on_drop`](crate::ExecutorBuilder::on_drop) chooses
/// otherwise). Workers start on the first submit: local workers one
/// first, so that the first result does not wait for every start, and the
/// others as soon as it is ready.
///
/// ```
/// use loky::{ProcessPoolExecutor, Task};
///
/// const SQUARE: Task<i64, i64> = Task::new("square");
///
/// # // Runs where LOKY_WORKER names a worker program (`cargo xtask test` sets it).
/// # if std::env::var_os("LOKY_WORKER").is_none() { return Ok(()); }
/// let ex = ProcessPoolExecutor::new(4)?;
/// let fut = ex.submit(SQUARE, 7)?;
/// assert_eq!(fut.result()?, 49);
/// let squares: Vec<i64> = ex.map(SQUARE, 0..100).chunksize(16).collect::<Result<_, _>>()?;
/// assert_eq!(squares[9], 81);
/// ex.shutdown(true);
/// # Ok::<(), loky::Error>(())
/// ```
///
/// # From async code
///
/// Futures, `map` and `map_unordered` have async forms that park no thread
/// (`.await` on a [`Future`], [`Map::into_stream`],
/// [`MapUnordered::into_stream`], [`as_completed_stream`](crate::as_completed_stream),
/// [`shutdown_async`](Self::shutdown_async)); any runtime can drive them.
/// These calls block the calling thread, so on an async runtime wrap them
/// (tokio: `spawn_blocking`) or make them outside it:
///
/// - building an executor (`new`, `build`, `get_reusable`): at most the
///   time to check the worker program, not to start workers;
/// - [`shutdown`](Self::shutdown)`(true)` and [`shutdown_with`](Self::shutdown_with)
///   with `wait`, and dropping the last handle (which shuts down waiting
///   for every task, unless [`on_drop`](crate::ExecutorBuilder::on_drop)
///   says otherwise): use [`shutdown_async`](Self::shutdown_async) first;
/// - [`Future::result`] and the other waits of a future, [`wait`](crate::wait),
///   [`as_completed`](crate::as_completed), and iterating a [`Map`] or a
///   [`MapUnordered`] (their `next` waits for a result).
///
/// `submit`, `map`/`map_unordered` themselves (inputs are taken at the
/// first result asked for), `cancel`, `kill` and `add_done_callback` never
/// wait for a worker.
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

    pub(crate) fn pool(&self) -> &Arc<Pool> {
        self.handle.pool()
    }

    /// A handle that keeps the pool open (for a `map` still running).
    pub(crate) fn pool_handle(&self) -> Arc<PoolHandle> {
        self.handle.clone()
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
        let future =
            self.pool()
                .submit_call(&Target::Task(task.signature()), options.timeout, |frame| {
                    codec::encode_into(&args, frame)
                })?;
        Ok(Future::from_state(future))
    }

    /// Runs `task` on every item of `inputs`, yielding results in input
    /// order. Set `.chunksize(n)` to send items `n` at a time,
    /// `.timeout(d)` to stop waiting `d` after this call, `.buffersize(n)`
    /// to take inputs only `n` chunks ahead of the results consumed. The
    /// inputs are taken, encoded and submitted from the first `next()`.
    ///
    /// With [`CrashPolicy::Respawn`](crate::CrashPolicy::Respawn), an item
    /// whose worker dies fails alone, and a deadline bounds each item,
    /// never a whole chunk (see [`Map`]).
    pub fn map<'a, I, O, It>(&self, task: Task<I, O>, inputs: It) -> Map<'a, O>
    where
        I: Serialize,
        O: DeserializeOwned,
        It: IntoIterator<Item = I>,
        It::IntoIter: Send + 'a,
    {
        Map::new(self.handle.clone(), Target::Task(task.signature()), inputs)
    }

    /// Runs `task` on every item of `inputs`, yielding each input's index
    /// with its result as results arrive: faster items first. The same
    /// settings as [`map`](Self::map) (chunk size, timeout, buffer size).
    ///
    /// ```
    /// # use loky::{ProcessPoolExecutor, Task};
    /// # const SQUARE: Task<i64, i64> = Task::new("square");
    /// # // Runs where LOKY_WORKER names a worker program (`cargo xtask test` sets it).
    /// # if std::env::var_os("LOKY_WORKER").is_none() { return Ok(()); }
    /// let ex = ProcessPoolExecutor::new(2)?;
    /// let mut squares = vec![0; 100];
    /// for (i, square) in ex.map_unordered(SQUARE, 0..100).chunksize(10) {
    ///     squares[i] = square?;
    /// }
    /// assert_eq!(squares[9], 81);
    /// # Ok::<(), loky::Error>(())
    /// ```
    pub fn map_unordered<'a, I, O, It>(&self, task: Task<I, O>, inputs: It) -> MapUnordered<'a, O>
    where
        I: Serialize,
        O: DeserializeOwned,
        It: IntoIterator<Item = I>,
        It::IntoIter: Send + 'a,
    {
        MapUnordered::new(self.handle.clone(), Target::Task(task.signature()), inputs)
    }

    /// Shuts down: no more submits; with `wait`, blocks until every
    /// submitted task ran and every worker exited and was reaped. Without
    /// `wait`, returns at once and the work finishes in the background. May
    /// be called again.
    ///
    /// Called from a done callback that runs on a thread of the pool, it
    /// does not wait, whatever `wait` says: that thread completes the very
    /// futures the wait would be for. The shutdown then goes on in the
    /// background as with `wait = false`.
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

    /// Shuts down as `how` says and lets this handle go. Were it the last
    /// one, its drop follows `how` too, not the pool's `on_drop` setting:
    /// with `how.wait` false, this never waits.
    pub(crate) fn release(self, how: Shutdown) {
        self.handle.shutdown(how);
        if let Some(handle) = Arc::into_inner(self.handle) {
            handle.release(how);
        }
    }

    /// Shuts down as [`shutdown_with`](Self::shutdown_with), and, if
    /// `how.wait`, resolves once every task ran and every worker exited
    /// and was reaped, without blocking a thread: what async code calls
    /// instead of `shutdown(true)`. Without `wait`, it resolves at once.
    /// Dropping it before then leaves the shutdown going on.
    ///
    /// ```
    /// # use loky::{ProcessPoolExecutor, Shutdown};
    /// # let ex = ProcessPoolExecutor::new(2)?;
    /// # futures_executor::block_on(async {
    /// ex.shutdown_async(Shutdown::default()).await;
    /// assert!(ex.worker_pids().is_empty());
    /// # });
    /// # Ok::<(), loky::Error>(())
    /// ```
    pub fn shutdown_async(
        &self,
        how: Shutdown,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let pool = self.pool().clone();
        pool.start_shutdown(how);
        std::future::poll_fn(move |cx| {
            if how.wait {
                pool.poll_finished(cx)
            } else {
                std::task::Poll::Ready(())
            }
        })
    }

    /// The number of workers the pool keeps.
    pub fn max_workers(&self) -> usize {
        self.handle.max_workers()
    }

    /// The pids of the live workers (started, not yet reaped). Local
    /// workers being started are waited for (a spawn takes a fraction of a
    /// millisecond), those a grown reusable executor starts included,
    /// unless this runs on a pool's own thread. A worker
    /// started by a launcher (`ExecutorBuilder::launcher`, feature `remote`)
    /// is listed once it connected back and said hello, with its pid on its
    /// own host.
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
