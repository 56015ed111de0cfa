//! The state that callers (executor handles, futures) and the supervisor
//! share: the pool's open/broken/shut-down state, checked and changed under
//! one lock, and the channel of events to the supervisor.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crossbeam_channel::Sender;

use super::Event;
use crate::call::WorkItem;
use crate::config::{Config, Shutdown};
use crate::error::Error;
use crate::future::{Core, Killer};

/// What callers and the supervisor share.
pub(crate) struct Shared {
    pub(crate) events: Sender<Event>,
    pub(crate) config: Arc<Config>,
    pub(super) state: Mutex<PoolState>,
    pub(super) finished: Condvar,
    pub(super) next_call: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
pub(super) struct PoolState {
    pub(super) broken: Option<Error>,
    pub(super) shutdown: bool,
    pub(super) finished: bool,
    pub(super) pids: Vec<u32>,
    pub(super) max_workers: usize,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh call id.
    pub(crate) fn next_call_id(&self) -> u64 {
        self.next_call
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Checks, in loky's order, that the pool takes work: broken first, then
    /// shut down.
    pub(crate) fn check_open(&self) -> Result<(), Error> {
        let state = self.lock();
        Self::open(&state)
    }

    fn open(state: &PoolState) -> Result<(), Error> {
        if let Some(err) = &state.broken {
            return Err(err.clone());
        }
        if state.shutdown || state.finished {
            return Err(Error::shutdown());
        }
        Ok(())
    }

    /// Queues calls, atomically with the checks of [`Shared::check_open`].
    pub(crate) fn submit(&self, items: Vec<WorkItem>) -> Result<(), Error> {
        let state = self.lock();
        Self::open(&state)?;
        self.events
            .send(Event::Submit(items))
            .map_err(|_| Error::shutdown())
    }

    /// Starts a shutdown; waits for the supervisor to finish if `how.wait`.
    pub(crate) fn shutdown(&self, how: Shutdown) {
        {
            let mut state = self.lock();
            state.shutdown = true;
            if !state.finished {
                let _ = self.events.send(Event::Shutdown(how));
            }
        }
        if how.wait && !in_pool_thread() {
            let mut state = self.lock();
            while !state.finished {
                state = self.finished.wait(state).unwrap_or_else(|e| e.into_inner());
            }
        }
    }

    /// Changes the number of workers.
    pub(crate) fn resize(&self, max_workers: usize) {
        let mut state = self.lock();
        state.max_workers = max_workers;
        let _ = self.events.send(Event::Resize(max_workers));
    }

    pub(crate) fn max_workers(&self) -> usize {
        self.lock().max_workers
    }

    pub(crate) fn worker_pids(&self) -> Vec<u32> {
        self.lock().pids.clone()
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.lock().broken.is_some()
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        let state = self.lock();
        state.shutdown || state.finished
    }
}

impl Killer for Shared {
    fn kill(&self, core: &Arc<Core>) {
        let _ = self.events.send(Event::Kill(core.clone()));
    }
}

thread_local! {
    static POOL_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the current thread as one of a pool's own (supervisor, reader),
/// where waiting for a pool to finish would deadlock.
pub(crate) fn mark_pool_thread() {
    POOL_THREAD.with(|t| t.set(true));
}

fn in_pool_thread() -> bool {
    POOL_THREAD.with(|t| t.get())
}
