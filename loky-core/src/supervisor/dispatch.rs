//! Sending queued calls to workers, and starting workers to send them to.

use std::sync::Arc;
use std::time::Duration;

use super::Supervisor;
use super::slot::{Retire, Slot};
use crate::error::Error;
use crate::link::Link;

/// A call running longer than this gets no other call queued behind it.
const LONG_CALL: Duration = Duration::from_millis(2);

impl Supervisor {
    pub(super) fn dispatch(&mut self) {
        if self.broken.is_some() {
            return;
        }
        if !self.pending.is_empty() {
            self.top_up();
        }
        while !self.pending.is_empty() {
            let Some(idx) = self.pick() else {
                break;
            };
            let item = self.pending.pop_front().expect("checked non-empty");
            if !item.resent && !item.future.set_running() {
                continue; // Cancelled while queued.
            }
            let slot = &mut self.slots[idx];
            let tasks = slot.serving().expect("only serving workers get calls");
            if let Err(err) = tasks.check(&item.sig) {
                item.future.settle(Err(err));
                continue;
            }
            slot.calls += 1;
            slot.send(item);
        }
        if self.shutdown.is_some() && self.pending.is_empty() {
            for slot in &mut self.slots {
                if slot.serving().is_some() && slot.link.held() == 0 {
                    slot.retire(Retire::Shutdown);
                }
            }
        }
    }

    /// The serving worker with the fewest calls that has room for one more.
    /// Fewest as the workers' links count them now: a count kept by the
    /// supervisor would lag behind replies on their way to it, and a call
    /// queued behind a busy worker while another one is idle could wait for
    /// as long as the busy one's call runs.
    fn pick(&self) -> Option<usize> {
        let max_calls = self.config.max_tasks_per_child;
        let starting = self.slots.iter().any(Slot::starting);
        (0..self.slots.len())
            .filter(|&i| {
                let slot = &self.slots[i];
                slot.serving().is_some()
                    && max_calls.is_none_or(|max| slot.calls < max)
                    && slot.link.held() < capacity(&slot.link, starting)
            })
            .min_by_key(|&i| self.slots[i].link.held())
    }

    /// Starts workers until `max_workers` are live.
    pub(super) fn top_up(&mut self) {
        if self.broken.is_some() || matches!(self.shutdown, Some(how) if how.kill_workers) {
            return;
        }
        let live = self.slots.iter().filter(|s| s.live()).count();
        for _ in live..self.max_workers {
            if let Err(err) = self.launch() {
                return self.break_pool(err);
            }
        }
    }

    fn launch(&mut self) -> Result<(), Error> {
        self.next_worker += 1;
        let link = Arc::new(Link::default());
        let handle =
            self.launcher
                .launch(self.next_worker, link.clone(), self.events_tx.clone())?;
        self.slots.push(Slot::new(self.next_worker, link, handle));
        self.publish_pids();
        Ok(())
    }
}

/// How many calls a worker may hold: one while calls are long (so calls
/// wait in the pool's queue, where they can still be cancelled and go to
/// whichever worker frees up first); a deep pipeline when calls are short
/// and the round trip would dominate.
///
/// No pipeline while other workers of the pool are still starting (they
/// will be free in a moment), nor behind a call that has run for long
/// already (it may run much longer).
fn capacity(link: &Link, pool_starting: bool) -> usize {
    let deep = match link.service_time() {
        Some(t) if t < Duration::from_micros(200) => 64,
        Some(t) if t < Duration::from_millis(2) => 4,
        _ => 1,
    };
    if deep == 1 {
        return deep;
    }
    match link.front() {
        None => deep,
        Some(_) if pool_starting => 1,
        Some((_, _, since)) if since.elapsed() > LONG_CALL => 1,
        Some(_) => deep,
    }
}
