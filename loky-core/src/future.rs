//! Futures: the caller's handle on one task's result.
//!
//! A [`FutureState`] is the shared, untyped state of one call: its stage
//! (pending → running → finished, or pending → cancelled), its raw output
//! bytes, its done callbacks and the wakers of those awaiting it.
//! [`Future<T>`] is the typed handle users hold; it decodes the output on
//! the caller's thread.
//!
//! Whoever settles a future (a worker's reader, the supervisor, a caller
//! cancelling) wakes its wakers and then runs its callbacks, both after
//! releasing its lock. Wakers only schedule (they never block); callbacks
//! are the application's code, and on a pool's own thread they are handed
//! to runner threads (see `callbacks.rs`) so that one that blocks never
//! keeps a result from being settled.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::callbacks::{self, Callback};
use crate::codec;
use crate::deadline;
use crate::error::{Error, Result, SerializationError};
use crate::output::OutputBytes;

/// What a finished call carries, still encoded: the output, or for a `map`
/// chunk the outputs of its items.
#[derive(Debug)]
pub(crate) enum RawOutput {
    /// One encoded value (for a chunk: the encoded sequence of outputs).
    Value(OutputBytes),
    /// A chunk in which some item failed: one result per item.
    Items(Vec<Result<OutputBytes>>),
}

/// How a call ended, as the future holds it.
pub(crate) type Settled = Result<Arc<RawOutput>>;

enum Stage {
    Pending,
    Running,
    /// The error boxed: an [`Error`] is several times the size of the rest
    /// of the stage, and every pending future would carry its room.
    Finished(Result<Arc<RawOutput>, Box<Error>>),
    Cancelled,
}

impl Stage {
    /// A settled call's result, as its waiters get it.
    fn finished(result: &Result<Arc<RawOutput>, Box<Error>>) -> Settled {
        match result {
            Ok(output) => Ok(Arc::clone(output)),
            Err(err) => Err(Error::clone(err)),
        }
    }
}

struct Inner {
    stage: Stage,
    callbacks: Vec<Callback>,
    wakers: Wakers,
    /// For a chunk call that runs: the results of its first items, as its
    /// worker reported them.
    partial: Vec<Result<OutputBytes>>,
    /// Threads blocked in [`FutureState::wait`]: the condvar is notified
    /// only if there are any (a notify is a system call).
    sleepers: u32,
    /// Where a waiter may read the reply itself, if its call was sent by
    /// its caller to a worker that allows it.
    replies: Option<Weak<dyn ReadReplies>>,
}

/// The wakers of those awaiting a future, each under a key so that a
/// waiter that goes away (an `.await` dropped by a timeout) takes its own
/// waker back instead of leaving it until the future settles.
#[derive(Default)]
struct Wakers {
    next_key: u64,
    list: Vec<(u64, Waker)>,
}

impl Wakers {
    /// Keeps `waker` under `key`, or under a new key written to `key`.
    fn set(&mut self, key: &mut Option<u64>, waker: &Waker) {
        if let Some(k) = *key
            && let Some((_, old)) = self.list.iter_mut().find(|(at, _)| *at == k)
        {
            if !old.will_wake(waker) {
                old.clone_from(waker);
            }
            return;
        }
        let k = self.next_key;
        self.next_key += 1;
        self.list.push((k, waker.clone()));
        *key = Some(k);
    }

    fn remove(&mut self, key: u64) {
        if let Some(at) = self.list.iter().position(|(k, _)| *k == key) {
            self.list.swap_remove(at);
        }
    }

    fn take(&mut self) -> Vec<(u64, Waker)> {
        std::mem::take(&mut self.list)
    }
}

/// What a settled future's waiters get: wake them, then run the callbacks.
struct Done {
    wakers: Vec<(u64, Waker)>,
    callbacks: Vec<Callback>,
    /// Whether threads wait in [`FutureState::wait`].
    sleepers: bool,
}

impl Done {
    fn take(inner: &mut Inner) -> Done {
        Done {
            wakers: inner.wakers.take(),
            callbacks: std::mem::take(&mut inner.callbacks),
            sleepers: inner.sleepers > 0,
        }
    }

    /// Outside the future's lock: a waker or callback may look at it.
    fn notify(self) {
        for (_, waker) in self.wakers {
            waker.wake();
        }
        callbacks::run(self.callbacks);
    }
}

/// The threads of this process watching for a result without sleeping
/// (see [`FutureState::wait`]).
static WATCHING: AtomicU32 = AtomicU32::new(0);

/// At most this many threads watch at once: one fewer than the CPUs, so
/// that watchers never take every CPU from the workers they wait for.
fn max_watchers() -> u32 {
    // Unit tests run their waiters side by side in one process.
    if cfg!(test) {
        return u32::MAX;
    }
    u32::try_from(crate::cpu::process_cpu_count().saturating_sub(1)).unwrap_or(u32::MAX)
}

/// A thread's place among those watching for a result, given back on drop.
struct Watcher(&'static AtomicU32);

impl Watcher {
    /// A place in `watching` if fewer than `max` are taken.
    fn enter(watching: &'static AtomicU32, max: u32) -> Option<Watcher> {
        watching
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Watcher(watching))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

/// Reads the replies of the worker a call was sent to, on the thread that
/// waits for the call's result, for the time that thread would otherwise
/// watch its future (see `worker::io::Desk`): no thread hand-off between
/// the reply and its caller.
pub(crate) trait ReadReplies: Send + Sync {
    /// Reads and handles the worker's replies until `settled` is set or
    /// `until` passes; false, at once, if it cannot now (another thread
    /// reads them, or the worker is not serving).
    fn read_until(&self, settled: &AtomicBool, until: Instant) -> bool;
}

/// Asks the pool to stop the task of a running future.
pub(crate) trait Killer: Send + Sync {
    fn kill(&self, state: &Arc<FutureState>);
}

/// The shared state of one call, behind every clone of its [`Future`].
pub(crate) struct FutureState {
    inner: Mutex<Inner>,
    cond: Condvar,
    /// Set with the stage when the future settles or is cancelled: what a
    /// spinning waiter watches without the lock.
    settled: AtomicBool,
    /// While its call runs on a worker and is expected to answer soon: how
    /// long (in µs) a thread about to block on it first checks for the
    /// result instead (see [`expect_soon`](Self::expect_soon)); 0 otherwise.
    spin_us: AtomicU32,
    /// How often a waiter watched without sleeping, and slept.
    #[cfg(test)]
    spins: AtomicU32,
    #[cfg(test)]
    parks: AtomicU32,
    pub(crate) task: &'static str,
    killer: Option<std::sync::Weak<dyn Killer>>,
    /// Set when the worker that answered runs another build of the program:
    /// said if the output fails to decode.
    stale_worker: OnceLock<Arc<str>>,
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
                wakers: Wakers::default(),
                partial: Vec::new(),
                sleepers: 0,
                replies: None,
            }),
            cond: Condvar::new(),
            settled: AtomicBool::new(false),
            spin_us: AtomicU32::new(0),
            #[cfg(test)]
            spins: AtomicU32::new(0),
            #[cfg(test)]
            parks: AtomicU32::new(0),
            task,
            killer,
            stale_worker: OnceLock::new(),
        })
    }

    /// Records, before settling, that the worker that answered runs another
    /// build of the program (`note` says so).
    pub(crate) fn note_stale_worker(&self, note: &Arc<str>) {
        let _ = self.stale_worker.set(note.clone());
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
            self.spin_us.store(0, Ordering::Relaxed);
        }
    }

    /// The call was sent to a worker, which is expected to answer within
    /// `spin`: a thread that waits for it checks for the result for up to
    /// that long before it goes to sleep, which saves it the wake-up (see
    /// [`ExecutorBuilder::wait_spin`](crate::ExecutorBuilder::wait_spin)).
    pub(crate) fn expect_soon(&self, spin: Duration) {
        let us = u32::try_from(spin.as_micros()).unwrap_or(u32::MAX);
        self.spin_us.store(us, Ordering::Relaxed);
    }

    /// Its call was sent to a worker whose replies a waiter may read
    /// itself, through `replies`.
    pub(crate) fn replies_from(&self, replies: Weak<dyn ReadReplies>) {
        self.lock().replies = Some(replies);
    }

    /// Settles the future once; later calls do nothing. Wakes its waiters
    /// and runs its callbacks.
    pub(crate) fn settle(&self, result: Settled) -> bool {
        let done = {
            let mut inner = self.lock();
            match inner.stage {
                Stage::Pending | Stage::Running => {}
                Stage::Finished(_) | Stage::Cancelled => return false,
            }
            inner.stage = Stage::Finished(result.map_err(Box::new));
            self.settled.store(true, Ordering::Release);
            inner.partial = Vec::new();
            Done::take(&mut inner)
        };
        self.wake_sleepers(done.sleepers);
        done.notify();
        true
    }

    /// Pending → cancelled. True if cancelled now or before.
    pub(crate) fn cancel(&self) -> bool {
        let done = {
            let mut inner = self.lock();
            match inner.stage {
                Stage::Cancelled => return true,
                Stage::Running | Stage::Finished(_) => return false,
                Stage::Pending => {}
            }
            inner.stage = Stage::Cancelled;
            self.settled.store(true, Ordering::Release);
            Done::take(&mut inner)
        };
        self.wake_sleepers(done.sleepers);
        done.notify();
        true
    }

    /// Wakes the threads blocked in [`wait`](Self::wait), if there were any
    /// when the future was settled. After the lock is released: a woken
    /// thread takes it at once instead of blocking again on it.
    fn wake_sleepers(&self, any: bool) {
        if any {
            self.cond.notify_all();
        }
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
    /// A call expected to answer soon (see [`expect_soon`](Self::expect_soon))
    /// is first watched for without sleeping.
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> Settled {
        let mut inner = self.lock();
        let mut spun = false;
        loop {
            match &inner.stage {
                Stage::Finished(result) => return Stage::finished(result),
                Stage::Cancelled => return Err(Error::Cancelled),
                Stage::Pending | Stage::Running => {}
            }
            let left = match deadline {
                None => None,
                Some(at) => match at.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Err(Error::Timeout),
                },
            };
            if !spun {
                spun = true;
                let spin = self.spin_us.load(Ordering::Relaxed);
                if spin > 0
                    && matches!(inner.stage, Stage::Running)
                    && let Some(_watching) = Watcher::enter(&WATCHING, max_watchers())
                {
                    let replies = inner.replies.as_ref().and_then(Weak::upgrade);
                    drop(inner);
                    self.spin(Duration::from_micros(spin.into()), deadline, replies);
                    inner = self.lock();
                    continue;
                }
            }
            #[cfg(test)]
            self.parks.fetch_add(1, Ordering::Relaxed);
            inner.sleepers += 1;
            inner = match left {
                None => self.cond.wait(inner).unwrap_or_else(|e| e.into_inner()),
                Some(left) => {
                    self.cond
                        .wait_timeout(inner, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
            inner.sleepers -= 1;
        }
    }

    /// How long a waiter would watch for the result (zero: it sleeps at
    /// once).
    #[cfg(test)]
    pub(crate) fn expected_within(&self) -> Duration {
        Duration::from_micros(self.spin_us.load(Ordering::Relaxed).into())
    }

    /// Watches for the future to settle for up to `spin` (and not past
    /// `deadline`), without the lock and without sleeping: reading the
    /// worker's replies itself through `replies` if it can, else watching
    /// the flag.
    fn spin(
        &self,
        spin: Duration,
        deadline: Option<Instant>,
        replies: Option<Arc<dyn ReadReplies>>,
    ) {
        let start = Instant::now();
        let until = deadline.map_or(start + spin, |at| at.min(start + spin));
        #[cfg(test)]
        self.spins.fetch_add(1, Ordering::Relaxed);
        if replies.is_some_and(|replies| replies.read_until(&self.settled, until)) {
            return;
        }
        loop {
            // A clock read costs some 20 ns: look at the flag more often.
            for _ in 0..64 {
                if self.settled.load(Ordering::Acquire) {
                    return;
                }
                std::hint::spin_loop();
            }
            if Instant::now() >= until {
                return;
            }
        }
    }

    /// Keeps the results of the next items of a running chunk call.
    pub(crate) fn add_partial(&self, items: impl IntoIterator<Item = Result<OutputBytes>>) {
        let mut inner = self.lock();
        if matches!(inner.stage, Stage::Running) {
            inner.partial.extend(items);
        }
    }

    /// The results of the first items of a chunk call, as reported.
    pub(crate) fn take_partial(&self) -> Vec<Result<OutputBytes>> {
        std::mem::take(&mut self.lock().partial)
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
        callbacks::run(vec![callback]);
    }

    /// The result if settled; otherwise keeps `cx`'s waker (under `key`,
    /// which a first call sets) to be woken when it is.
    pub(crate) fn poll_settled(
        &self,
        cx: &mut Context<'_>,
        key: &mut Option<u64>,
    ) -> Poll<Settled> {
        let mut inner = self.lock();
        match &inner.stage {
            Stage::Finished(result) => Poll::Ready(Stage::finished(result)),
            Stage::Cancelled => Poll::Ready(Err(Error::Cancelled)),
            Stage::Pending | Stage::Running => {
                inner.wakers.set(key, cx.waker());
                Poll::Pending
            }
        }
    }

    /// Wakes `waker` once when the future is done (at once if it is): a
    /// notification that runs on the settling thread and must not block.
    /// The key takes it back with [`FutureState::forget_waker`].
    pub(crate) fn wake_when_done(&self, waker: &Waker) -> Option<u64> {
        let mut inner = self.lock();
        if matches!(inner.stage, Stage::Pending | Stage::Running) {
            let mut key = None;
            inner.wakers.set(&mut key, waker);
            return key;
        }
        drop(inner);
        waker.wake_by_ref();
        None
    }

    /// Takes back the waker kept under `key`, if it is still there.
    pub(crate) fn forget_waker(&self, key: u64) {
        self.lock().wakers.remove(key);
    }

    /// How many wakers wait for this future.
    #[cfg(test)]
    pub(crate) fn waker_count(&self) -> usize {
        self.lock().wakers.list.len()
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

/// The eventual result of a task, as in `concurrent.futures.Future`.
///
/// A cheap `Clone` handle: clones share one state. The result is decoded on
/// the calling thread each time it is asked for, so `result` can be called
/// again and `T` need not be `Clone`.
///
/// ```
/// # use loky::{ProcessPoolExecutor, Task};
/// # const SQUARE: Task<i64, i64> = Task::new("square");
/// # // Runs where LOKY_WORKER names a worker program (`cargo xtask test` sets it).
/// # if std::env::var_os("LOKY_WORKER").is_none() { return Ok(()); }
/// let ex = ProcessPoolExecutor::new(2)?;
/// let fut = ex.submit(SQUARE, 7)?;
/// fut.add_done_callback(|f| println!("done: {:?}", f.result()));
/// assert_eq!(fut.result()?, 49);
/// # Ok::<(), loky::Error>(())
/// ```
///
/// # Awaiting
///
/// A future can also be awaited, from any async runtime (tokio, smol,
/// async-std, a plain `block_on`): awaiting parks no thread, and the
/// result and errors are those of [`result`](Future::result). `.await`
/// takes the handle; [`wait_async`](Future::wait_async) keeps it.
///
/// Dropping an `.await` (a `select!` that took another branch, a timeout)
/// *detaches*: the task goes on, and the handle, or any clone of it, still
/// gets its result. To stop the task, [`cancel`](Future::cancel) or
/// [`kill`](Future::kill) it, as with tokio's `JoinHandle::abort`.
///
/// ```
/// # use loky::{ProcessPoolExecutor, Task};
/// # const SQUARE: Task<i64, i64> = Task::new("square");
/// # // Runs where LOKY_WORKER names a worker program (`cargo xtask test` sets it).
/// # if std::env::var_os("LOKY_WORKER").is_none() { return Ok(()); }
/// # let ex = ProcessPoolExecutor::new(2)?;
/// # futures_executor::block_on(async {
/// let square = ex.submit(SQUARE, 7)?.await?;
/// assert_eq!(square, 49);
///
/// let fut = ex.submit(SQUARE, 8)?;
/// assert_eq!(fut.wait_async().await?, 64);
/// assert!(fut.done());
/// # Ok::<(), loky::Error>(())
/// # })?;
/// # Ok::<(), loky::Error>(())
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
    /// cancelled).
    ///
    /// If the future is already done, it runs at once on this thread; if
    /// the application completes it (with [`cancel`](Future::cancel)), on
    /// that thread too. When the pool completes it (a result arrived, the
    /// task failed, the pool broke or shut down), the callback runs on a
    /// thread of loky's set aside for callbacks, never on a thread that
    /// settles results: a callback may block, wait for another future of
    /// the same pool, submit new work and wait for its result, without ever
    /// keeping a result from arriving. Callbacks of one future run in the
    /// order they were added. A panicking callback is logged and the next
    /// one still runs.
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

    /// A future that resolves to this one's result, keeping this handle:
    /// as `.await` on a clone. Dropping it before it resolves detaches
    /// (see [Awaiting](Future#awaiting)).
    pub fn wait_async(&self) -> WaitAsync<T> {
        WaitAsync {
            future: self.clone(),
            key: None,
        }
    }
}

impl<T: DeserializeOwned> Future<T> {
    /// Blocks until the task is done and returns its output, or its error.
    /// For a call expected to answer within moments, the thread checks for
    /// the result for a while before it sleeps (see
    /// [`ExecutorBuilder::wait_spin`](crate::ExecutorBuilder::wait_spin)).
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
            RawOutput::Value(bytes) => bytes.decode_with(|b| decode_output(&self.state, b)),
            RawOutput::Items(_) => Err(Error::Serialization(SerializationError::described(
                self.state.task,
                "decode the result",
                "a chunk reply arrived for a single call",
            ))),
        }
    }
}

/// Decodes the output of the call of `state`; a `Deserialize` that fails
/// or panics is this result's error, which says whether the worker that
/// answered may be out of date.
pub(crate) fn decode_output<T: DeserializeOwned>(state: &FutureState, bytes: &[u8]) -> Result<T> {
    codec::decode(bytes).map_err(|e| {
        let mut error = SerializationError::new(state.task, "decode the result", e);
        if let Some(note) = state.stale_worker.get() {
            error.message = format!("{}; {note}", error.message);
        }
        Error::Serialization(error)
    })
}

/// Awaiting a [`Future`] gives its result, as [`Future::result`] does,
/// without blocking a thread.
impl<T: DeserializeOwned> IntoFuture for Future<T> {
    type Output = Result<T>;
    type IntoFuture = WaitAsync<T>;

    fn into_future(self) -> WaitAsync<T> {
        WaitAsync {
            future: self,
            key: None,
        }
    }
}

/// The result of a [`Future`], as a `std::future::Future`: what `.await`
/// on a `Future` and [`Future::wait_async`] return.
///
/// Dropping it before it resolves detaches: the task goes on, and the
/// waker it left is taken back at once.
#[must_use = "a future does nothing unless awaited"]
pub struct WaitAsync<T> {
    future: Future<T>,
    /// Under which key the state keeps our waker, once it keeps one.
    key: Option<u64>,
}

impl<T> fmt::Debug for WaitAsync<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitAsync")
            .field("future", &self.future)
            .finish()
    }
}

impl<T: DeserializeOwned> std::future::Future for WaitAsync<T> {
    type Output = Result<T>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let this = &mut *self;
        match this.future.state.poll_settled(cx, &mut this.key) {
            Poll::Ready(settled) => {
                // Settling took every waker away: nothing to forget.
                this.key = None;
                Poll::Ready(this.future.decode(settled))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> Drop for WaitAsync<T> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.future.state.forget_waker(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;

    /// Counts its wakes; its `Arc` counts the clones kept anywhere.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn value(n: u64) -> Settled {
        Ok(Arc::new(RawOutput::Value(
            loky_proto::encode_payload(&n).unwrap().into(),
        )))
    }

    #[test]
    fn a_pending_future_holds_no_room_for_an_error() {
        // What row 8 of the benchmarks counts: an error is kept boxed, so a
        // future's state is not sized by the largest error.
        assert_eq!(size_of::<Stage>(), 2 * size_of::<usize>());
    }

    #[test]
    fn a_failed_future_gives_its_error_to_every_waiter() {
        let state = FutureState::new("t", None);
        let fut = Future::<u64>::from_state(state.clone());
        assert!(state.settle(Err(Error::InvalidArgument("no".into()))));
        assert!(state.is_failed());
        for _ in 0..2 {
            match state.wait(None) {
                Err(Error::InvalidArgument(why)) => assert_eq!(why, "no"),
                other => panic!("expected the error, got {other:?}"),
            }
        }
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut waiting = pin!(fut.wait_async());
        match waiting.as_mut().poll(&mut cx) {
            Poll::Ready(Err(Error::InvalidArgument(why))) => assert_eq!(why, "no"),
            other => panic!("expected the error, got {other:?}"),
        }
    }

    #[test]
    fn an_await_keeps_one_waker_and_a_dropped_one_leaves_none() {
        let state = FutureState::new("t", None);
        let fut = Future::<u64>::from_state(state.clone());
        let counting = Arc::new(Counting::default());
        let waker = Waker::from(counting.clone());
        let mut cx = Context::from_waker(&waker);
        {
            let mut waiting = pin!(fut.wait_async());
            for _ in 0..3 {
                assert!(waiting.as_mut().poll(&mut cx).is_pending());
            }
            assert_eq!(
                state.waker_count(),
                1,
                "one waker per waiter, however often polled"
            );
            let other = Arc::new(Counting::default());
            let other_waker = Waker::from(other.clone());
            assert!(
                waiting
                    .as_mut()
                    .poll(&mut Context::from_waker(&other_waker))
                    .is_pending()
            );
            assert_eq!(state.waker_count(), 1, "the newer waker replaces the older");
        }
        assert_eq!(
            state.waker_count(),
            0,
            "a dropped await takes its waker back"
        );
        assert_eq!(Arc::strong_count(&counting), 2, "only `waker` holds it");
        // The handle is still usable, and a new await is woken once.
        let mut waiting = pin!(fut.clone().into_future());
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        assert!(state.settle(value(7)));
        assert_eq!(counting.0.load(Ordering::SeqCst), 1);
        assert_eq!(state.waker_count(), 0);
        match waiting.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(7)) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(fut.result().unwrap(), 7);
    }

    #[test]
    fn a_cancelled_future_wakes_its_waiters_with_cancelled() {
        let state = FutureState::new("t", None);
        let fut = Future::<u64>::from_state(state.clone());
        let counting = Arc::new(Counting::default());
        let waker = Waker::from(counting.clone());
        let mut cx = Context::from_waker(&waker);
        let mut waiting = pin!(fut.wait_async());
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        assert!(fut.cancel());
        assert_eq!(counting.0.load(Ordering::SeqCst), 1);
        assert!(matches!(
            waiting.as_mut().poll(&mut cx),
            Poll::Ready(Err(Error::Cancelled))
        ));
    }

    #[test]
    fn a_notification_for_a_future_already_done_wakes_at_once() {
        let state = FutureState::new("t", None);
        state.settle(value(1));
        let counting = Arc::new(Counting::default());
        assert_eq!(state.wake_when_done(&Waker::from(counting.clone())), None);
        assert_eq!(counting.0.load(Ordering::SeqCst), 1);
    }

    /// A waiter blocked in `wait` on another thread, once it either
    /// watches without sleeping or sleeps.
    fn waiter_started(state: &Arc<FutureState>) -> std::thread::JoinHandle<Settled> {
        let spins = state.spins.load(Ordering::SeqCst);
        let waiting = state.clone();
        let waiter = std::thread::spawn(move || waiting.wait(None));
        while state.spins.load(Ordering::SeqCst) == spins && state.sleepers() == 0 {
            std::thread::yield_now();
        }
        waiter
    }

    impl FutureState {
        fn sleepers(&self) -> u32 {
            self.lock().sleepers
        }
    }

    fn seven(settled: Settled) -> u64 {
        let Ok(output) = settled else {
            panic!("{settled:?}")
        };
        match &*output {
            RawOutput::Value(bytes) => loky_proto::decode_payload(bytes).unwrap(),
            RawOutput::Items(_) => panic!("items"),
        }
    }

    #[test]
    fn a_waiter_for_a_call_expected_soon_gets_its_result_without_sleeping() {
        let state = FutureState::new("t", None);
        assert!(state.set_running());
        // Far longer than the test: the waiter cannot stop watching early.
        state.expect_soon(Duration::from_secs(600));
        let waiter = waiter_started(&state);
        assert!(state.settle(value(7)));
        assert_eq!(seven(waiter.join().unwrap()), 7);
        assert_eq!(state.spins.load(Ordering::SeqCst), 1);
        assert_eq!(state.parks.load(Ordering::SeqCst), 0, "the waiter slept");
    }

    #[test]
    fn watchers_are_counted_up_to_their_limit_and_leave_on_drop() {
        static WATCHING: AtomicU32 = AtomicU32::new(0);
        let first = Watcher::enter(&WATCHING, 2).expect("0 of 2");
        let second = Watcher::enter(&WATCHING, 2).expect("1 of 2");
        assert!(Watcher::enter(&WATCHING, 2).is_none(), "2 of 2");
        drop(first);
        let third = Watcher::enter(&WATCHING, 2).expect("a place was given back");
        drop((second, third));
        assert_eq!(WATCHING.load(Ordering::SeqCst), 0);
        assert!(Watcher::enter(&WATCHING, 0).is_none(), "a single CPU: none");
    }

    #[test]
    fn a_waiter_sleeps_at_once_for_a_call_not_expected_soon() {
        let state = FutureState::new("t", None);
        assert!(state.set_running());
        let waiter = waiter_started(&state);
        assert!(state.settle(value(7)));
        assert_eq!(seven(waiter.join().unwrap()), 7);
        assert_eq!(state.spins.load(Ordering::SeqCst), 0);
        assert_eq!(state.parks.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_call_back_in_the_queue_is_no_longer_expected_soon() {
        let state = FutureState::new("t", None);
        assert!(state.set_running());
        state.expect_soon(Duration::from_secs(600));
        state.requeue();
        assert!(state.set_running());
        let waiter = waiter_started(&state);
        assert!(state.settle(value(7)));
        assert_eq!(seven(waiter.join().unwrap()), 7);
        assert_eq!(state.spins.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_waiter_watching_for_a_result_stops_at_its_deadline_and_when_cancelled() {
        let state = FutureState::new("t", None);
        assert!(state.set_running());
        state.expect_soon(Duration::from_secs(600));
        let start = Instant::now();
        let timed_out = state.wait(Some(start + Duration::from_millis(20)));
        assert!(matches!(timed_out, Err(Error::Timeout)), "{timed_out:?}");
        // Not a measure of speed: only that the 600 s watch was cut short.
        assert!(start.elapsed() < Duration::from_secs(300));
        assert_eq!(state.parks.load(Ordering::SeqCst), 0);

        let waiter = waiter_started(&state);
        assert_eq!(state.spins.load(Ordering::SeqCst), 2);
        state.requeue();
        assert!(state.cancel());
        assert!(matches!(waiter.join().unwrap(), Err(Error::Cancelled)));
    }
}
