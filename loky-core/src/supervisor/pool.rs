//! A pool as its callers (executor handles, `map`, futures) see it: its
//! open/broken/shut-down status, checked and changed under one lock, the
//! channel of events to its supervisor, and the one path by which calls
//! are made and submitted.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use loky_proto::CallKind;

use crate::call::{Encoding, Target, WorkItem};
use crate::config::{Config, Shutdown};
use crate::error::Error;
use crate::events::{Calls, Event};
use crate::future::{FutureState, Killer};
use crate::pool_thread;
use loky_proto::shm::FrameBuf;

/// At most this long [`Pool::worker_pids`] waits for the workers being
/// started to have a pid.
const SPAWN_WAIT: Duration = Duration::from_secs(5);

/// What callers and the supervisor share.
pub(crate) struct Pool {
    pub(crate) events: Sender<Event>,
    pub(crate) config: Arc<Config>,
    status: Mutex<Status>,
    /// Notified when the pool finishes and when its pids change.
    finished: Condvar,
    next_call: AtomicU64,
    /// How calls are encoded for this pool's workers.
    encoding: Encoding,
    /// The workers callers may send their calls to themselves.
    pub(crate) direct: Arc<super::Direct>,
}

/// The pool's status, under [`Pool`]'s lock.
#[derive(Default)]
pub(super) struct Status {
    pub(super) broken: Option<Error>,
    pub(super) shutdown: bool,
    pub(super) finished: bool,
    pub(super) pids: Vec<u32>,
    /// Workers whose process is being started (no pid yet).
    pub(super) spawning: usize,
    /// Resizes sent to the supervisor and not yet handled: the workers a
    /// grown pool starts are not counted in `spawning` until then.
    resizing: usize,
    pub(super) max_workers: usize,
    /// Async waiters for the end of the pool (`shutdown_async`).
    finish_wakers: Vec<Waker>,
}

impl Pool {
    pub(super) fn new(config: Arc<Config>, events: Sender<Event>, encoding: Encoding) -> Pool {
        Pool {
            events,
            status: Mutex::new(Status {
                max_workers: config.max_workers,
                ..Status::default()
            }),
            config,
            finished: Condvar::new(),
            next_call: AtomicU64::new(0),
            encoding,
            direct: Arc::default(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh call id.
    pub(crate) fn next_call_id(&self) -> u64 {
        self.next_call.fetch_add(1, Ordering::Relaxed)
    }

    /// Checks, in loky's order, that the pool takes work: broken first, then
    /// shut down.
    pub(crate) fn check_open(&self) -> Result<(), Error> {
        Self::open(&self.lock())
    }

    fn open(status: &Status) -> Result<(), Error> {
        if let Some(err) = &status.broken {
            return Err(err.clone());
        }
        if status.shutdown || status.finished {
            return Err(Error::shutdown());
        }
        Ok(())
    }

    /// A call of `target` with a fresh future, its arguments written by
    /// `encode_args` straight into its frame on the caller's thread;
    /// `timeout` overrides the pool's task timeout.
    pub(crate) fn prepare<E: std::error::Error + Send + Sync + 'static>(
        self: &Arc<Self>,
        target: &Target,
        kind: CallKind,
        timeout: Option<Duration>,
        encode_args: impl FnOnce(&mut FrameBuf) -> Result<(), E>,
    ) -> Result<WorkItem, Error> {
        let killer: Weak<dyn Killer> = Arc::downgrade(self) as Weak<Pool>;
        let future = FutureState::new(target.signature().name, Some(killer));
        let id = self.next_call_id();
        let mut item = WorkItem::new(future, target, kind, id, self.frames(), encode_args)?;
        item.timeout = timeout.or(self.config.task_timeout);
        Ok(item)
    }

    /// How this pool encodes frames, and their largest size.
    pub(crate) fn frames(&self) -> (Encoding, usize) {
        (self.encoding, self.config.max_frame)
    }

    /// Queues calls, atomically with the checks of [`Pool::check_open`].
    pub(crate) fn submit(&self, items: Vec<WorkItem>) -> Result<(), Error> {
        let status = self.lock();
        Self::open(&status)?;
        self.queue(Calls::Many(items))
    }

    /// Sends calls to the supervisor's queue, the pool's lock held.
    fn queue(&self, items: Calls) -> Result<(), Error> {
        self.direct.queueing(items.len());
        self.events
            .send(Event::Submit(items))
            .map_err(|_| Error::shutdown())
    }

    /// Submits one call: straight to an idle worker when nothing waits in
    /// the queue (see `direct.rs`), else to the queue; atomically with the
    /// checks of [`Pool::check_open`], like [`submit`](Self::submit).
    fn submit_one(&self, item: WorkItem) -> Result<(), Error> {
        let status = self.lock();
        Self::open(&status)?;
        match self.direct.try_send(item) {
            Ok(()) => Ok(()),
            Err(item) => self.queue(Calls::One(item)),
        }
    }

    /// Makes one call and submits it: the way `submit` and its variants
    /// run a task. Fails before encoding anything if the pool is closed.
    pub(crate) fn submit_call<E: std::error::Error + Send + Sync + 'static>(
        self: &Arc<Self>,
        target: &Target,
        timeout: Option<Duration>,
        encode_args: impl FnOnce(&mut FrameBuf) -> Result<(), E>,
    ) -> Result<Arc<FutureState>, Error> {
        self.check_open()?;
        let item = self.prepare(target, CallKind::Single, timeout, encode_args)?;
        let future = item.future.clone();
        self.submit_one(item)?;
        Ok(future)
    }

    /// Starts a shutdown; waits for the supervisor to finish if `how.wait`
    /// (except on a pool thread, which the wait would deadlock).
    pub(crate) fn shutdown(&self, how: Shutdown) {
        {
            let mut status = self.lock();
            status.shutdown = true;
            if !status.finished {
                let _ = self.events.send(Event::Shutdown(how));
            }
        }
        if how.wait && !pool_thread::is_pool_thread() {
            let mut status = self.lock();
            while !status.finished {
                status = self
                    .finished
                    .wait(status)
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
    }

    /// Starts a shutdown without waiting: [`Pool::poll_finished`] then
    /// tells when it is over.
    pub(crate) fn start_shutdown(&self, how: Shutdown) {
        self.shutdown(Shutdown { wait: false, ..how });
    }

    /// Ready once the pool finished (every worker exited and was reaped);
    /// until then `cx` is woken when it does.
    pub(crate) fn poll_finished(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut status = self.lock();
        if status.finished {
            return Poll::Ready(());
        }
        if !status.finish_wakers.iter().any(|w| w.will_wake(cx.waker())) {
            status.finish_wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Marks the pool finished and wakes whoever waits for it.
    pub(super) fn mark_finished(&self) {
        let wakers = {
            let mut status = self.lock();
            status.finished = true;
            status.pids.clear();
            self.finished.notify_all();
            std::mem::take(&mut status.finish_wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// How many workers `worker_pids` waits for (for tests).
    #[cfg(test)]
    pub(super) fn spawning(&self) -> usize {
        self.lock().spawning
    }

    /// The pids of the workers, and how many are being started.
    pub(super) fn publish_pids(&self, pids: Vec<u32>, spawning: usize) {
        let mut status = self.lock();
        status.pids = pids;
        status.spawning = spawning;
        self.finished.notify_all();
    }

    /// Changes the number of workers.
    pub(crate) fn resize(&self, max_workers: usize) {
        let mut status = self.lock();
        status.max_workers = max_workers;
        if self.events.send(Event::Resize(max_workers)).is_ok() {
            status.resizing += 1;
        }
    }

    /// The supervisor handled a resize (and started the workers it
    /// needed, whose spawns [`publish_pids`](Self::publish_pids) counted).
    pub(super) fn resized(&self) {
        let mut status = self.lock();
        status.resizing = status.resizing.saturating_sub(1);
        self.finished.notify_all();
    }

    pub(crate) fn max_workers(&self) -> usize {
        self.lock().max_workers
    }

    /// The pids of the workers started and not reaped, once the workers
    /// being started have a pid, those of a resize just asked for included
    /// (a spawn takes a fraction of a millisecond; this waits for at most
    /// [`SPAWN_WAIT`], and not at all on a pool's own thread, which the
    /// wait could hold up).
    pub(crate) fn worker_pids(&self) -> Vec<u32> {
        let mut status = self.lock();
        if !pool_thread::is_pool_thread() {
            let deadline = Instant::now() + SPAWN_WAIT;
            while (status.spawning > 0 || status.resizing > 0) && !status.finished {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                status = self
                    .finished
                    .wait_timeout(status, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        status.pids.clone()
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.lock().broken.is_some()
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        let status = self.lock();
        status.shutdown || status.finished
    }
}

impl Killer for Pool {
    fn kill(&self, state: &Arc<FutureState>) {
        let _ = self.events.send(Event::Kill(state.clone()));
    }
}

/// Keeps its pool open: the pool shuts down, waiting for its tasks, when
/// the last handle goes (as Python's `with` block), whether it was held by
/// an executor or by a `map` still running.
pub(crate) struct PoolHandle {
    pool: Arc<Pool>,
    /// What dropping it does: the pool's `on_drop` setting, unless
    /// [`release`](Self::release) says otherwise.
    on_drop: Shutdown,
}

impl PoolHandle {
    pub(crate) fn new(pool: Arc<Pool>) -> PoolHandle {
        let on_drop = pool.config.on_drop;
        PoolHandle { pool, on_drop }
    }

    pub(crate) fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Lets the pool go as `how` says rather than as its `on_drop`
    /// setting does.
    pub(crate) fn release(mut self, how: Shutdown) {
        self.on_drop = how;
    }
}

impl Deref for PoolHandle {
    type Target = Pool;

    fn deref(&self) -> &Pool {
        &self.pool
    }
}

impl Drop for PoolHandle {
    fn drop(&mut self) {
        self.pool.shutdown(self.on_drop);
    }
}
