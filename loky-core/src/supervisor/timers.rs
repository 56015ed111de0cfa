//! The supervisor's timers: kill escalation, idle timeout, task deadlines,
//! the deferred replacement of a dead worker.
//! Every deadline saturates: a duration too long to add to an `Instant`
//! (`Duration::MAX`, the usual "no limit") never fires.

use std::time::{Duration, Instant};

use super::Supervisor;
use super::slot::{KillReason, Retire, Slot, SlotState};
use crate::deadline;
use crate::worker::Stop;

/// How often, at most, the supervisor looks whether a busy worker has
/// become idle, for the idle timeout.
const BUSY_LOOK: Duration = Duration::from_millis(10);

impl Supervisor {
    /// When the next timer fires, if any is set.
    pub(super) fn next_timer(&self) -> Option<Instant> {
        self.slots
            .iter()
            .flat_map(|slot| {
                [
                    escalation(slot),
                    self.idle_deadline(slot).or_else(|| self.busy_look(slot)),
                    call_deadline(slot),
                ]
            })
            .flatten()
            .chain(self.replace_at)
            .min()
    }

    /// Runs the timers due at `now`.
    pub(super) fn on_timers(&mut self, now: Instant) {
        if self.replace_at.is_some_and(|at| at <= now) {
            if self.shutdown.is_some() && self.pending.is_empty() {
                // Nothing left for a replacement to do.
                self.replace_at = None;
            } else {
                self.top_up();
            }
        }
        let grace = self.config.kill_grace;
        for i in 0..self.slots.len() {
            let idle_at = self.idle_deadline(&self.slots[i]);
            let slot = &mut self.slots[i];
            if let SlotState::Killing { escalate_at, .. } = &mut slot.state {
                if escalate_at.is_some_and(|at| at <= now) {
                    *escalate_at = None;
                    slot.handle.stop(Stop::Kill);
                }
                continue;
            }
            if idle_at.is_some_and(|at| at <= now) {
                slot.retire(Retire::Idle);
            }
            if call_deadline(slot).is_some_and(|at| at <= now)
                && let Some((future, Some(timeout), _)) = slot.link.front()
            {
                let escalate_at = deadline::after(now, grace);
                slot.kill(
                    KillReason::Deadline(future, timeout),
                    Stop::Term,
                    escalate_at,
                );
            }
        }
    }

    /// When `slot` has been idle for the idle timeout. A worker counts as
    /// idle only while no call waits in the pool's queue: a worker that
    /// has just said hello is not idle if there is work for it.
    fn idle_deadline(&self, slot: &Slot) -> Option<Instant> {
        let timeout = self.config.idle_timeout?;
        if !self.pending.is_empty() || slot.serving().is_none() {
            return None;
        }
        deadline::after(slot.link.idle_since()?, timeout)
    }

    /// When to look again at a busy serving worker for the idle timeout.
    /// The reply of a call its caller sent reaches no event, so the
    /// supervisor looks when the worker could have been idle that long at
    /// the earliest (and not more often than every [`BUSY_LOOK`]: a zero
    /// timeout must not make it spin).
    fn busy_look(&self, slot: &Slot) -> Option<Instant> {
        let timeout = self.config.idle_timeout?;
        let busy = slot.link.idle_since().is_none();
        if !busy || !self.pending.is_empty() || slot.serving().is_none() {
            return None;
        }
        deadline::from_now(timeout.max(BUSY_LOOK))
    }
}

/// When a polite kill of `slot` becomes a `SIGKILL`.
fn escalation(slot: &Slot) -> Option<Instant> {
    match slot.state {
        SlotState::Killing { escalate_at, .. } => escalate_at,
        _ => None,
    }
}

/// When the call `slot` is running passes its deadline.
fn call_deadline(slot: &Slot) -> Option<Instant> {
    if slot.killing() {
        return None;
    }
    let (_, timeout, since) = slot.link.front()?;
    deadline::after(since, timeout?)
}
