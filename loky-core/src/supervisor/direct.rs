//! Calls their caller sends itself. While nothing waits in the pool's
//! queue, a single call without a deadline goes from the submitting thread
//! straight to a serving worker that holds no call, through the worker's
//! [`Port`]; its reply settles it as any other, and neither the call nor
//! its reply wakes the supervisor. Everything else (a busy pool, a call
//! with a deadline, a `map` chunk, a pool that recycles its workers) goes
//! through the supervisor's queue as before. `supervisor.md`, "Calls sent
//! by their caller", says why this is safe.
//!
//! The supervisor decides which workers callers may take (it *enrolls*
//! them) and takes them back (*withdraws* them) before it does anything
//! else to them: retire, close, kill, forget. A caller takes a worker and
//! sends its call under the same lock, so once a withdrawal returns, every
//! call a caller gave that worker is in its link.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::slot::TaskTable;
use crate::call::{InFlight, WorkItem};
use crate::events::WorkerId;
use crate::link::Link;
use crate::worker::Port;

/// The workers callers may send to, shared by the pool's callers, its
/// supervisor and its workers' readers.
#[derive(Default)]
pub(crate) struct Direct {
    state: Mutex<State>,
    /// Calls submitted through the supervisor's queue, ever.
    submitted: AtomicU64,
}

#[derive(Default)]
struct State {
    workers: Vec<Enrolled>,
    /// Calls the supervisor has received, ever, as it last said.
    received: u64,
    /// Calls in its queue then.
    queued: usize,
}

impl State {
    /// Whether calls wait for the supervisor: submitted and not received,
    /// or in its queue. A caller then queues behind them.
    fn waiting(&self, submitted: u64) -> bool {
        submitted > self.received || self.queued > 0
    }
}

/// A worker callers may take.
struct Enrolled {
    id: WorkerId,
    link: Arc<Link>,
    port: Arc<dyn Port>,
    tasks: Arc<TaskTable>,
    /// It holds no call: the next caller may take it.
    free: bool,
}

impl Direct {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Consistent between any two statements: a poisoned lock only
        // means a panic elsewhere.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts `n` calls submitted through the supervisor's queue; before
    /// they are sent to it.
    pub(crate) fn queueing(&self, n: usize) {
        self.submitted.fetch_add(n as u64, Ordering::SeqCst);
    }

    /// Sends `item` to a free worker that runs it, if nothing waits in
    /// the supervisor's queue and the call has no deadline; gives it back
    /// otherwise, for the queue.
    pub(crate) fn try_send(&self, item: WorkItem) -> Result<(), WorkItem> {
        if item.timeout.is_some() || item.initializer {
            return Err(item);
        }
        let mut state = self.lock();
        if state.waiting(self.submitted.load(Ordering::SeqCst)) {
            return Err(item);
        }
        let Some(worker) = state
            .workers
            .iter_mut()
            .find(|w| w.free && w.tasks.runs(&item))
        else {
            return Err(item);
        };
        if !item.future.set_running() {
            return Err(item); // Cancelled already: the queue drops it.
        }
        worker.free = false;
        let (port, link) = (worker.port.clone(), worker.link.clone());
        let call = InFlight {
            item,
            sent: Instant::now(),
            depth: 1,
        };
        // Recorded under the lock: a withdrawal that follows finds the
        // call in the link. Written after it: the worker may answer before
        // the write returns (on one core, before this thread runs again),
        // and its reader takes the lock.
        let mut state = Some(state);
        port.send(&link, call, &mut || drop(state.take()));
        Ok(())
    }

    /// A reply of worker `id` was handled. If it is enrolled, holds no
    /// call, and no call waits in the supervisor's queue, it is free again
    /// and the supervisor need not hear of the reply (true). Otherwise the
    /// supervisor must: it sends queued calls, and times the call the
    /// worker runs next (its deadline starts now).
    pub(crate) fn replied(&self, id: WorkerId) -> bool {
        let mut state = self.lock();
        if state.waiting(self.submitted.load(Ordering::SeqCst)) {
            return false;
        }
        match state.workers.iter_mut().find(|w| w.id == id) {
            Some(worker) if worker.link.held() == 0 => {
                worker.free = true;
                true
            }
            _ => false,
        }
    }

    /// Takes worker `id` away from callers: when this returns, every call
    /// a caller sent it is in its link, and no caller sends it another
    /// until it is enrolled again.
    pub(crate) fn withdraw(&self, id: WorkerId) {
        self.lock().workers.retain(|w| w.id != id);
    }

    /// Takes every worker away from callers.
    pub(crate) fn withdraw_all(&self) {
        self.lock().workers.clear();
    }

    /// Marks worker `id` busy: the supervisor sends it a call.
    pub(crate) fn take(&self, id: WorkerId) {
        if let Some(worker) = self.lock().workers.iter_mut().find(|w| w.id == id) {
            worker.free = false;
        }
    }

    /// What the supervisor says after each round of events: how many
    /// calls it received and how many wait in its queue, and the workers
    /// callers may take now (`None` where it enrolls none). An enrolled
    /// worker is free when it holds no call and nothing waits.
    pub(super) fn publish(&self, received: u64, queued: usize, workers: Option<Vec<Enrollment>>) {
        let mut state = self.lock();
        state.received = received;
        state.queued = queued;
        let Some(workers) = workers else {
            state.workers.clear();
            return;
        };
        let idle = !state.waiting(self.submitted.load(Ordering::SeqCst));
        state
            .workers
            .retain(|w| workers.iter().any(|e| e.id == w.id));
        for enrollment in workers {
            let free = idle && enrollment.link.held() == 0;
            match state.workers.iter_mut().find(|w| w.id == enrollment.id) {
                Some(worker) => worker.free |= free,
                None => state.workers.push(Enrolled {
                    id: enrollment.id,
                    link: enrollment.link,
                    port: enrollment.port,
                    tasks: enrollment.tasks,
                    free,
                }),
            }
        }
    }

    /// The workers enrolled, and whether each is free (for tests).
    #[cfg(test)]
    pub(super) fn enrolled(&self) -> Vec<(WorkerId, bool)> {
        self.lock().workers.iter().map(|w| (w.id, w.free)).collect()
    }
}

/// A serving worker the supervisor lets callers take.
pub(super) struct Enrollment {
    pub(super) id: WorkerId,
    pub(super) link: Arc<Link>,
    pub(super) port: Arc<dyn Port>,
    pub(super) tasks: Arc<TaskTable>,
}
