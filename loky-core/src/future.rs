//! Futures: the caller's handle on one task's result.
//!
//! A [`FutureState`] is the shared, untyped state of one call: its stage
//! (pending → running → finished, or pending → cancelled), its raw output
//! bytes, and its done callbacks. [`Future<T>`] is the typed handle users
//! hold; it decodes the output on the caller's thread.

use std::fmt;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::deadline;
use crate::error::{Error, Result, SerializationError};
use crate::pool_thread;

/// What a finished call carries, still encoded: the output, or for a `map`
/// chunk the outputs of its items.
#[derive(Debug)]
pub(crate) enum RawOutput {
    /// One encoded value (for a chunk: the encoded sequence of outputs).
    Value(Vec<u8>),
    /// A chunk in which some item failed: one result per item.
    Items(Vec<Result<Vec<u8>>>),
}

/// How a call ended, as the future holds it.
pub(crate) type Settled = Result<Arc<RawOutput>>;

type Callback = Box<dyn FnOnce() + Send>;

enum Stage {
    Pending,
    Running,
    Finished(Settled),
    Cancelled,
}

struct Inner {
    stage: Stage,
    callbacks: Vec<Callback>,
}

/// Asks the pool to stop the task of a running future.
pub(crate) trait Killer: Send + Sync {
    fn kill(&self, state: &Arc<FutureState>);
}

/// The shared state of one call, behind every clone of its [`Future`].
pub(crate) struct FutureState {
    inner: Mutex<Inner>,
    cond: Condvar,
    pub(crate) task: &'static str,
    killer: Option<std::sync::Weak<dyn Killer>>,
}

impl FutureState {
    pub(crate) fn new(
        task: &'static str,
        killer: Option<std::sync::Weak<dyn Killer>>,
    ) -> Arc<FutureState> {
        Arc::new(FutureState {
            inner: Mutex::new(Inner {
                stage: Stage::Pending,
                callbacks: Vec::new(),
            }),
            cond: Condvar::new(),
            task,
            killer,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere while it was held; the
        // state itself is always left consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pending → running. False if the future was cancelled (or already
    /// settled), in which case the call must not be sent.
    pub(crate) fn set_running(&self) -> bool {
        let mut inner = self.lock();
        match inner.stage {
            Stage::Pending => {
                inner.stage = Stage::Running;
                true
            }
            _ => false,
        }
    }

    /// Running → pending: the call is back in the pool's queue (its worker
    /// died before starting it), where it can be cancelled again.
    pub(crate) fn requeue(&self) {
        let mut inner = self.lock();
        if matches!(inner.stage, Stage::Running) {
            inner.stage = Stage::Pending;
        }
    }

    /// Settles the future once; later calls do nothing. Runs the callbacks.
    pub(crate) fn settle(&self, result: Settled) -> bool {
        let callbacks = {
            let mut inner = self.lock();
            match inner.stage {
                Stage::Pending | Stage::Running => {}
                Stage::Finished(_) | Stage::Cancelled => return false,
            }
            inner.stage = Stage::Finished(result);
            self.cond.notify_all();
            std::mem::take(&mut inner.callbacks)
        };
        run_callbacks(callbacks);
        true
    }

    /// Pending → cancelled. True if cancelled now or before.
    pub(crate) fn cancel(&self) -> bool {
        let callbacks = {
            let mut inner = self.lock();
            match inner.stage {
                Stage::Cancelled => return true,
                Stage::Running | Stage::Finished(_) => return false,
                Stage::Pending => {}
            }
            inner.stage = Stage::Cancelled;
            self.cond.notify_all();
            std::mem::take(&mut inner.callbacks)
        };
        run_callbacks(callbacks);
        true
    }

    pub(crate) fn is_running(&self) -> bool {
        matches!(self.lock().stage, Stage::Running)
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        matches!(self.lock().stage, Stage::Cancelled)
    }

    pub(crate) fn is_done(&self) -> bool {
        matches!(self.lock().stage, Stage::Finished(_) | Stage::Cancelled)
    }

    /// Whether it finished with an error (cancelled does not count).
    pub(crate) fn is_failed(&self) -> bool {
        matches!(self.lock().stage, Stage::Finished(Err(_)))
    }

    /// Blocks until settled or `deadline`; `Err(Timeout)` at the deadline.
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> Settled {
        let mut inner = self.lock();
        loop {
            match &inner.stage {
                Stage::Finished(result) => return result.clone(),
                Stage::Cancelled => return Err(Error::Cancelled),
                Stage::Pending | Stage::Running => {}
            }
            inner = match deadline {
                None => self.cond.wait(inner).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(Error::Timeout);
                    }
                    self.cond
                        .wait_timeout(inner, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// Runs `callback` once when the future is done, at once if it is.
    pub(crate) fn on_done(&self, callback: Callback) {
        {
            let mut inner = self.lock();
            if matches!(inner.stage, Stage::Pending | Stage::Running) {
                inner.callbacks.push(callback);
                return;
            }
        }
        run_callbacks(vec![callback]);
    }

    pub(crate) fn kill(self: &Arc<Self>) -> bool {
        if self.cancel() {
            return true;
        }
        if self.is_done() {
            return false;
        }
        match self.killer.as_ref().and_then(|k| k.upgrade()) {
            Some(killer) => {
                killer.kill(self);
                true
            }
            None => false,
        }
    }
}

fn run_callbacks(callbacks: Vec<Callback>) {
    for callback in callbacks {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(callback)) {
            log::error!(
                "a done callback of a future panicked: {}",
                pool_thread::panic_message(&*panic)
            );
        }
    }
}

/// The eventual result of a task, as in `concurrent.futures.Future`.
///
/// A cheap `Clone` handle: clones share one state. The result is decoded on
/// the calling thread each time it is asked for, so `result` can be called
/// again and `T` need not be `Clone`.
///
/// ```no_run
/// # use loky_core::{ProcessPoolExecutor, Task};
/// # const SQUARE: Task<i64, i64> = Task::new("square");
/// let ex = ProcessPoolExecutor::new(2)?;
/// let fut = ex.submit(SQUARE, 7)?;
/// fut.add_done_callback(|f| println!("done: {:?}", f.result()));
/// assert_eq!(fut.result()?, 49);
/// # Ok::<(), loky_core::Error>(())
/// ```
pub struct Future<T> {
    pub(crate) state: Arc<FutureState>,
    marker: PhantomData<fn() -> T>,
}

impl<T> Clone for Future<T> {
    fn clone(&self) -> Self {
        Future::from_state(self.state.clone())
    }
}

impl<T> fmt::Debug for Future<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stage = match self.state.lock().stage {
            Stage::Pending => "pending",
            Stage::Running => "running",
            Stage::Finished(Ok(_)) => "finished",
            Stage::Finished(Err(_)) => "failed",
            Stage::Cancelled => "cancelled",
        };
        f.debug_struct("Future")
            .field("task", &self.state.task)
            .field("state", &stage)
            .finish()
    }
}

impl<T> Future<T> {
    pub(crate) fn from_state(state: Arc<FutureState>) -> Self {
        Future {
            state,
            marker: PhantomData,
        }
    }

    /// Cancels the future if it has not started: true if it is now (or was
    /// already) cancelled, false once it runs or is finished.
    pub fn cancel(&self) -> bool {
        self.state.cancel()
    }

    /// Whether the future was cancelled.
    pub fn cancelled(&self) -> bool {
        self.state.is_cancelled()
    }

    /// Whether a worker has (or may have) started the task and it has not
    /// finished: it was sent to a worker, which is only done ahead of time
    /// for tasks measured short. A call waiting in the pool's queue is not
    /// running, and can be cancelled.
    pub fn running(&self) -> bool {
        self.state.is_running()
    }

    /// Whether the future finished or was cancelled.
    pub fn done(&self) -> bool {
        self.state.is_done()
    }

    /// Stops the task: a pending future is cancelled; a running one has its
    /// worker (and the worker's process group) killed and replaced, and
    /// fails with [`Error::Cancelled`]. The pool is not broken. Returns false
    /// if the future was already finished.
    pub fn kill(&self) -> bool {
        self.state.kill()
    }

    /// Runs `callback` once when the future is done (finished or
    /// cancelled), at once on this thread if it already is; otherwise on the
    /// pool thread that completes it. A panicking callback is logged and the
    /// next one still runs. A callback may submit new work.
    pub fn add_done_callback<F>(&self, callback: F)
    where
        F: FnOnce(&Future<T>) + Send + 'static,
        T: 'static,
    {
        let fut = Future::<T>::from_state(self.state.clone());
        self.state.on_done(Box::new(move || callback(&fut)));
    }

    /// The task name this future runs.
    pub fn task_name(&self) -> &'static str {
        self.state.task
    }
}

impl<T: DeserializeOwned> Future<T> {
    /// Blocks until the task is done and returns its output, or its error.
    pub fn result(&self) -> Result<T> {
        self.decode(self.state.wait(None))
    }

    /// As [`Future::result`], but gives up after `timeout` with
    /// [`Error::Timeout`], leaving the future untouched.
    pub fn result_timeout(&self, timeout: Duration) -> Result<T> {
        self.decode(self.state.wait(deadline::from_now(timeout)))
    }

    /// Blocks until done; the error, or `None` on success.
    pub fn exception(&self) -> Option<Error> {
        self.result().err()
    }

    /// As [`Future::exception`], but `Some(Error::Timeout)` after `timeout`.
    pub fn exception_timeout(&self, timeout: Duration) -> Option<Error> {
        self.result_timeout(timeout).err()
    }

    fn decode(&self, settled: Settled) -> Result<T> {
        match &*settled? {
            RawOutput::Value(bytes) => decode_output(self.state.task, bytes),
            RawOutput::Items(_) => Err(Error::Serialization(SerializationError::described(
                self.state.task,
                "decode the result",
                "a chunk reply arrived for a single call",
            ))),
        }
    }
}

pub(crate) fn decode_output<T: DeserializeOwned>(task: &str, bytes: &[u8]) -> Result<T> {
    loky_proto::decode_payload(bytes)
        .map_err(|e| Error::Serialization(SerializationError::new(task, "decode the result", e)))
}
