//! The supervisor's view of one worker: its state, how many calls it may
//! hold, and the checks a call passes before it is sent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use loky_proto::{Signature, TaskInfo};

use crate::error::{Error, TaskMismatch, UnknownTask};
use crate::future::Core;
use crate::worker::{Worker, WorkerId};

/// A call running longer than this gets no other call queued behind it.
const LONG_CALL: Duration = Duration::from_millis(2);

/// Why the supervisor is killing a worker.
pub(super) enum KillReason {
    /// Its running call passed its deadline.
    Deadline(Arc<Core>, Duration),
    /// `Future::kill` on its running call.
    Killed(Arc<Core>),
    /// Shutdown with `kill_workers`.
    Shutdown,
    /// The pool broke.
    Broken,
}

/// The supervisor's view of one worker.
pub(super) struct Slot {
    pub(super) worker: Worker,
    /// The worker's task table, once it said hello.
    pub(super) tasks: Option<Arc<HashMap<String, TaskInfo>>>,
    pub(super) program: String,
    /// The initializer call, while it runs.
    pub(super) init: Option<Arc<Core>>,
    /// Gets no more calls; leaves once its calls are answered.
    pub(super) retiring: bool,
    pub(super) in_flight: usize,
    pub(super) calls: usize,
    pub(super) idle_since: Instant,
    pub(super) kill: Option<KillReason>,
    pub(super) escalate_at: Option<Instant>,
}

impl Slot {
    pub(super) fn id(&self) -> WorkerId {
        self.worker.link.id
    }

    pub(super) fn pid(&self) -> u32 {
        self.worker.link.pid
    }

    pub(super) fn live(&self) -> bool {
        !self.retiring && self.kill.is_none()
    }

    /// How many calls this worker may hold: one while calls are long (so
    /// calls wait in the pool's queue, where they can still be cancelled
    /// and go to whichever worker frees up first); a deep pipeline when
    /// calls are short and the round trip would dominate.
    ///
    /// No pipeline while other workers of the pool are still starting
    /// (they will be free in a moment), nor behind a call that has run for
    /// long already (it may run much longer).
    pub(super) fn capacity(&self, pool_starting: bool) -> usize {
        let deep = match self.worker.link.service_time() {
            Some(t) if t < Duration::from_micros(200) => 64,
            Some(t) if t < Duration::from_millis(2) => 4,
            _ => 1,
        };
        if deep == 1 || self.in_flight == 0 {
            return deep;
        }
        if pool_starting || self.front_running_longer_than(LONG_CALL) {
            return 1;
        }
        deep
    }

    pub(super) fn front_running_longer_than(&self, limit: Duration) -> bool {
        self.worker
            .link
            .front()
            .is_some_and(|(_, _, since)| since.elapsed() > limit)
    }

    pub(super) fn accepts(&self, max_calls: Option<usize>, pool_starting: bool) -> bool {
        self.tasks.is_some()
            && self.init.is_none()
            && self.live()
            && self.in_flight < self.capacity(pool_starting)
            && max_calls.is_none_or(|max| self.calls < max)
    }

    /// Started and not ready yet.
    pub(super) fn starting(&self) -> bool {
        self.tasks.is_none() && self.live()
    }

    /// Whether its channel was closed.
    pub(super) fn closed(&self) -> bool {
        self.worker.frames.is_none()
    }

    /// Closes the channel: the worker leaves once it reads the end.
    pub(super) fn close(&mut self) {
        self.retiring = true;
        self.worker.frames = None;
    }

    pub(super) fn check(&self, sig: &Signature) -> Result<(), Error> {
        let tasks = self.tasks.as_ref().expect("only ready workers get calls");
        match tasks.get(sig.name) {
            Some(info) if info.matches(sig) => Ok(()),
            Some(info) => Err(Error::TaskMismatch(TaskMismatch {
                task: sig.name.to_owned(),
                handle: format!("{} -> {}", sig.input, sig.output),
                worker: format!("{} -> {}", info.input, info.output),
            })),
            None => {
                let mut known: Vec<String> = tasks.keys().cloned().collect();
                known.sort();
                Err(Error::UnknownTask(UnknownTask {
                    task: sig.name.to_owned(),
                    program: self.program.clone(),
                    known,
                }))
            }
        }
    }
}
