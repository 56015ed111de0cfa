//! Sending queued calls to workers, and starting workers to send them to.
//!
//! The rule (`supervisor.md`, "Calls"): a worker holding nothing takes any
//! call; a call is sent ahead (queued behind others on a busy worker) only
//! if its task is measured short, the call running there was itself sent
//! as short and has not run long, and no worker of the pool is starting.
//! Among workers with room, the one holding the fewest calls gets it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Supervisor;
use super::slot::{Retire, Slot};
use crate::call::WorkItem;
use crate::deadline;
use crate::durations::TaskKey;
use crate::error::Error;
use crate::link::Link;

/// Calls of a task typically taking less than this are sent ahead, as many
/// as [`AHEAD`] of its work: the round trip (some 20-70 µs) would otherwise
/// dominate them.
const MEDIUM: Duration = Duration::from_millis(2);
/// How much measured work a worker may hold ahead of the call it runs.
/// Enough calls of a short task that a worker never runs dry while its
/// replies travel and the next calls come; little enough that a call sent
/// ahead (which can no longer be cancelled) starts within a few
/// milliseconds, and that a worker does not hold much more than its share
/// when a burst ends.
const AHEAD: Duration = Duration::from_millis(8);
/// At most this many calls are sent ahead to one worker, however short
/// their task (a burst's frames and replies stay within a socket's buffer).
const MAX_DEPTH: usize = 1024;
/// A call running longer than this gets no other call queued behind it,
/// whatever its task usually takes.
const LONG_CALL: Duration = Duration::from_millis(2);
/// At most this many calls of a round of dispatch wait to be sent with
/// others: past it, what was gathered goes.
const BATCH: usize = 256;
/// How long the replacement of a dead worker may wait while other workers
/// serve (see [`Supervisor::replace_soon`]).
const REPLACEMENT_DELAY: Duration = Duration::from_millis(5);

/// How many calls of a task a worker may hold, by the task's typical
/// duration: one (nothing sent ahead) while it is unknown or long, else
/// as many as take [`AHEAD`] in all, from 1 to [`MAX_DEPTH`].
fn depth(typical: Option<Duration>) -> usize {
    match typical {
        Some(t) if t < MEDIUM => {
            let calls = AHEAD.as_nanos() / t.as_nanos().max(1);
            usize::try_from(calls).map_or(MAX_DEPTH, |n| n.clamp(1, MAX_DEPTH))
        }
        _ => 1,
    }
}

impl Supervisor {
    pub(super) fn dispatch(&mut self) {
        if self.broken.is_some() {
            return;
        }
        // A replacement that waits (see `replace_soon`) starts only if a
        // call finds no worker.
        let deferred = self.replace_at.is_some();
        // Missing workers start once this round's calls are sent: on a
        // fresh pool, the first call then does not wait behind the start
        // of the others. `worker_pids` waits for them from now.
        let launching = if self.pending.is_empty() || deferred {
            0
        } else {
            self.missing()
        };
        if launching > 0 {
            self.publish_pids_launching(launching);
        }
        // Durations change only as replies arrive: one look-up per task
        // and dispatch is enough (a burst is usually of one task).
        let mut known: Option<(TaskKey, usize)> = None;
        // The calls each worker gets in this round, sent together at its
        // end (or every `BATCH` calls, so that the first go soon in a large
        // pool): one write for a burst, not one per call.
        let mut batches: Vec<Vec<(WorkItem, usize)>> = Vec::new();
        let mut batched = 0;
        // How long the workers' calls have run, as of the start of this
        // round or of its last `BATCH` (a clock read per call and worker
        // was a burst's main cost here).
        let mut now = Instant::now();
        while let Some(front) = self.pending.front() {
            let key = TaskKey::of(front);
            let depth = match known {
                Some((k, depth)) if k == key => depth,
                _ => depth(self.durations.typical(key)),
            };
            known = Some((key, depth));
            let Some(idx) = self.pick(depth, &batches, now, launching > 0) else {
                break;
            };
            let item = self.pending.pop_front().expect("checked non-empty");
            if !item.future.set_running() {
                continue; // Cancelled while queued.
            }
            let slot = &mut self.slots[idx];
            let tasks = slot.serving().expect("only serving workers get calls");
            if let Err(err) = tasks.check_item(&item, slot.pid) {
                item.future.settle(Err(err));
                continue;
            }
            slot.calls += 1;
            if batches.len() <= idx {
                batches.resize_with(idx + 1, Vec::new);
            }
            batches[idx].push((item, depth));
            batched += 1;
            if batched == BATCH {
                self.send_batches(&mut batches);
                batched = 0;
                now = Instant::now();
            }
        }
        self.send_batches(&mut batches);
        if launching > 0 || (deferred && !self.pending.is_empty()) {
            self.top_up();
        }
        if self.shutdown.is_some() && self.pending.is_empty() {
            for slot in &mut self.slots {
                if slot.serving().is_some() && slot.link.held() == 0 {
                    slot.retire(Retire::Shutdown);
                }
            }
        }
    }

    /// Sends each worker the calls of its batch, emptying them.
    fn send_batches(&mut self, batches: &mut [Vec<(WorkItem, usize)>]) {
        for (slot, batch) in self.slots.iter_mut().zip(batches) {
            if !batch.is_empty() {
                slot.send(std::mem::take(batch));
            }
        }
    }

    /// The serving worker with room for a call of `depth` that holds the
    /// fewest calls, as the workers' links count them now: a count kept by
    /// the supervisor would lag behind replies on their way to it, and a
    /// call could queue behind a busy worker while another one is idle.
    /// Calls of this round not yet sent (`batches`, by worker) count as
    /// held. `launching`: workers start once the round is sent (no call
    /// is sent ahead meanwhile, as while a worker starts).
    fn pick(
        &self,
        depth: usize,
        batches: &[Vec<(WorkItem, usize)>],
        now: Instant,
        launching: bool,
    ) -> Option<usize> {
        let max_calls = self.config.max_tasks_per_child;
        let starting = launching || self.slots.iter().any(Slot::starting);
        let batch = |i: usize| batches.get(i).map_or(&[][..], Vec::as_slice);
        (0..self.slots.len())
            .map(|i| (i, self.slots[i].link.held() + batch(i).len()))
            .filter(|&(i, held)| {
                let slot = &self.slots[i];
                // The call it runs first: the oldest it holds, else the
                // first of its batch (sent as of now).
                let front = || {
                    slot.link.front_depth().or_else(|| {
                        let (_, depth) = batch(i).first()?;
                        Some((*depth, now))
                    })
                };
                slot.serving().is_some()
                    && max_calls.is_none_or(|max| slot.calls < max)
                    && has_room(front, now, held, depth, starting)
            })
            .min_by_key(|&(_, held)| held)
            .map(|(i, _)| i)
    }

    /// Starts workers until `max_workers` are live; none once the pool
    /// broke, or shuts down with no call waiting for a worker (a worker
    /// started then would only be closed, and the next hello would start
    /// another).
    pub(super) fn top_up(&mut self) {
        self.replace_at = None;
        for _ in 0..self.missing() {
            if let Err(err) = self.launch() {
                // `worker_pids` may have been told of more starts (see
                // `dispatch`): it waits for none now.
                self.publish_pids();
                return self.break_pool(err);
            }
        }
    }

    /// How many workers [`top_up`](Self::top_up) would start now.
    fn missing(&self) -> usize {
        let shutting_down = matches!(
            self.shutdown,
            Some(how) if how.kill_workers || self.pending.is_empty()
        );
        if self.broken.is_some() || shutting_down {
            return 0;
        }
        let live = self.slots.iter().filter(|s| s.live()).count();
        // A pool of workers started on this machine, none of which said
        // hello, starts one alone: the others start once it did
        // (`on_ready`), so that its start, and the first result, do not
        // share the cores with every other start.
        let target = if self.launcher.starts_here() && !self.greeted() {
            1
        } else {
            self.max_workers
        };
        target.saturating_sub(live)
    }

    /// Whether a live worker of the pool has said hello.
    pub(super) fn greeted(&self) -> bool {
        self.slots.iter().any(|s| s.live() && !s.starting())
    }

    /// Replaces a worker that died: at once when no other worker serves or
    /// calls wait in the queue; otherwise [`REPLACEMENT_DELAY`] later
    /// (sooner if a call comes to wait), so that the calls that follow a
    /// crash, which the other workers take at once, do not share the
    /// machine with the start of a process.
    pub(super) fn replace_soon(&mut self) {
        let serving = self.slots.iter().any(|slot| slot.serving().is_some());
        if !serving || !self.pending.is_empty() {
            return self.top_up();
        }
        match deadline::from_now(REPLACEMENT_DELAY) {
            Some(at) => self.replace_at = Some(self.replace_at.map_or(at, |soon| soon.min(at))),
            None => self.top_up(),
        }
    }

    fn launch(&mut self) -> Result<(), Error> {
        self.next_worker += 1;
        let id = self.next_worker;
        let direct = self.pool.direct.clone();
        // Weak: the record of the workers callers take holds the links.
        let replied = Arc::downgrade(&direct);
        let link = Arc::new(Link::with_replies(
            self.durations.clone(),
            self.watch.clone(),
            Box::new(move || replied.upgrade().is_some_and(|d| d.replied(id))),
        ));
        let handle = self
            .launcher
            .launch(id, link.clone(), self.events_tx.clone())?;
        self.slots.push(Slot::new(id, link, handle, direct));
        self.publish_pids();
        Ok(())
    }
}

/// Whether a worker holding `held` calls may take one more of `depth`, as
/// of `now`; `front` gives the depth of the call it runs first and when
/// that was sent.
fn has_room(
    front: impl FnOnce() -> Option<(usize, Instant)>,
    now: Instant,
    held: usize,
    depth: usize,
    pool_starting: bool,
) -> bool {
    if held == 0 {
        return true;
    }
    // Other workers will be free in a moment; a long call would not be.
    if held >= depth || pool_starting {
        return false;
    }
    match front() {
        None => true, // Answered meanwhile.
        Some((front_depth, since)) => {
            front_depth > 1 && now.saturating_duration_since(since) <= LONG_CALL
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_holds_about_eight_milliseconds_of_a_short_task_ahead() {
        let us = Duration::from_micros;
        assert_eq!(depth(None), 1, "unknown");
        assert_eq!(depth(Some(MEDIUM)), 1, "long");
        assert_eq!(depth(Some(us(1_900))), 4);
        assert_eq!(depth(Some(us(1_000))), 8);
        assert_eq!(depth(Some(us(200))), 40);
        assert_eq!(depth(Some(us(10))), 800);
        assert_eq!(depth(Some(us(1))), MAX_DEPTH);
        assert_eq!(depth(Some(Duration::ZERO)), MAX_DEPTH);
    }
}
