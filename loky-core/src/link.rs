//! The calls a worker holds: the one record of them, shared by the
//! supervisor (which sends calls and reads how many a worker holds) and the
//! worker's reader (which takes each call off as its reply arrives and
//! settles its future). Replies come in call order, so the calls form a
//! FIFO whose front is the call running.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::call::{InFlight, WorkItem};
use crate::durations::{Durations, TaskKey};
use crate::future::FutureState;

/// The calls in flight on one worker.
pub(crate) struct Link {
    calls: Mutex<Calls>,
    /// Where the durations of its calls are recorded: the pool's.
    durations: Arc<Durations>,
    /// Which calls a thread waiting for their result may watch for.
    watch: Arc<Watch>,
    /// Told when its reader handled replies; says whether the supervisor
    /// need not hear of them (see [`Link::replied`]).
    on_replies: Option<OnReplies>,
}

/// See [`Link::replied`].
pub(crate) type OnReplies = Box<dyn Fn() -> bool + Send + Sync>;

struct Calls {
    queue: VecDeque<InFlight>,
    /// When the call at the front of the queue started running.
    front_since: Instant,
    /// When its deadline started: as `front_since`, or later for a chunk,
    /// from its last progress report (its deadline bounds each item).
    deadline_since: Instant,
    /// When the previous reply arrived.
    last_reply: Option<Instant>,
    /// Since when the worker holds no call (`None` while it holds some).
    idle_since: Option<Instant>,
}

/// A reply that matches no call: the worker broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnexpectedReply {
    /// The call id of the reply.
    pub(crate) id: u64,
    /// The call that was due, if any.
    pub(crate) expected: Option<u64>,
}

impl fmt::Display for UnexpectedReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.expected {
            Some(first) => write!(f, "reply for call {} while call {first} was first", self.id),
            None => write!(f, "reply for call {}, which was not sent", self.id),
        }
    }
}

impl std::error::Error for UnexpectedReply {}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere while it was held; the
    // queue itself is always consistent between two statements.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Link {
    /// The link of a new worker, recording durations in `durations`.
    #[cfg(test)]
    pub(crate) fn new(durations: Arc<Durations>) -> Link {
        Link::with_hook(
            durations,
            Arc::new(Watch::with_cpus(Duration::ZERO, 1)),
            None,
        )
    }

    /// The link of a worker whose replies `on_replies` is told of, and
    /// whose calls `watch` marks.
    pub(crate) fn with_replies(
        durations: Arc<Durations>,
        watch: Arc<Watch>,
        on_replies: OnReplies,
    ) -> Link {
        Link::with_hook(durations, watch, Some(on_replies))
    }

    fn with_hook(
        durations: Arc<Durations>,
        watch: Arc<Watch>,
        on_replies: Option<OnReplies>,
    ) -> Link {
        let now = Instant::now();
        Link {
            calls: Mutex::new(Calls {
                queue: VecDeque::new(),
                front_since: now,
                deadline_since: now,
                last_reply: None,
                idle_since: Some(now),
            }),
            durations,
            watch,
            on_replies,
        }
    }

    /// Its reader handled replies: whether the supervisor need not hear of
    /// them (in a pool whose callers send calls themselves, the worker is
    /// one they send to and nothing waits in the supervisor's queue; the
    /// worker is then free for callers again if it holds no call).
    pub(crate) fn replied(&self) -> bool {
        self.on_replies.as_ref().is_some_and(|replied| replied())
    }

    /// Records a call sent to the worker.
    pub(crate) fn push(&self, call: InFlight) {
        let typical = if self.watch.spin.is_zero() {
            None
        } else {
            self.durations.typical(TaskKey::of(&call.item))
        };
        let mut calls = lock(&self.calls);
        if calls.queue.is_empty() {
            calls.front_since = call.sent;
            calls.deadline_since = call.sent;
        }
        let busy = if calls.idle_since.take().is_some() {
            self.watch.busy.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.watch.busy.load(Ordering::Relaxed)
        };
        // It answers once the calls ahead of it did.
        let place = u32::try_from(calls.queue.len() + 1).unwrap_or(u32::MAX);
        if let Some(typical) = typical {
            self.watch.mark(&call.item.future, typical, place, busy);
        }
        calls.queue.push_back(call);
    }

    /// Takes the call a reply is for, read `now`: always the oldest one.
    pub(crate) fn pop(&self, id: u64, now: Instant) -> Result<InFlight, UnexpectedReply> {
        let mut calls = lock(&self.calls);
        match calls.queue.front() {
            Some(front) if front.item.id == id => {}
            front => {
                return Err(UnexpectedReply {
                    id,
                    expected: front.map(|c| c.item.id),
                });
            }
        }
        let call = calls.queue.pop_front().expect("front checked above");
        let started = match calls.last_reply {
            Some(last) if last > call.sent => last,
            _ => call.sent,
        };
        calls.last_reply = Some(now);
        calls.front_since = now;
        calls.deadline_since = now;
        if calls.queue.is_empty() {
            calls.idle_since = Some(now);
            self.watch.busy.fetch_sub(1, Ordering::Relaxed);
        }
        drop(calls);
        let took = now.saturating_duration_since(started);
        self.durations.record(TaskKey::of(&call.item), took);
        Ok(call)
    }

    /// The running call `id` (a chunk) reported items done, read `now`:
    /// `report` gets it, and the running item's deadline counts from then.
    pub(crate) fn progress(
        &self,
        id: u64,
        now: Instant,
        report: impl FnOnce(&WorkItem),
    ) -> Result<(), UnexpectedReply> {
        let mut calls = lock(&self.calls);
        match calls.queue.front() {
            Some(front) if front.item.id == id => report(&front.item),
            front => {
                return Err(UnexpectedReply {
                    id,
                    expected: front.map(|c| c.item.id),
                });
            }
        }
        calls.deadline_since = now;
        Ok(())
    }

    /// How many calls the worker holds now: a reply the caller has seen is
    /// no longer counted (the reader takes the call off before it settles
    /// the future), whether or not the supervisor has heard of it yet.
    pub(crate) fn held(&self) -> usize {
        lock(&self.calls).queue.len()
    }

    /// Since when the worker holds no call; `None` while it holds some.
    pub(crate) fn idle_since(&self) -> Option<Instant> {
        lock(&self.calls).idle_since
    }

    /// Every call still in flight (the first one was running).
    pub(crate) fn take_all(&self) -> Vec<InFlight> {
        let mut calls = lock(&self.calls);
        if calls.idle_since.is_none() {
            calls.idle_since = Some(Instant::now());
            self.watch.busy.fetch_sub(1, Ordering::Relaxed);
        }
        calls.queue.drain(..).collect()
    }

    /// The running call's future, its timeout, and when it started.
    pub(crate) fn front(&self) -> Option<(Arc<FutureState>, Option<Duration>, Instant)> {
        let calls = lock(&self.calls);
        calls
            .queue
            .front()
            .map(|c| (c.item.future.clone(), c.item.timeout, calls.deadline_since))
    }

    /// How many calls the worker could hold when its running call was sent,
    /// and since when that call runs.
    pub(crate) fn front_depth(&self) -> Option<(usize, Instant)> {
        let calls = lock(&self.calls);
        calls.queue.front().map(|c| (c.depth, calls.front_since))
    }

    /// Where `future` is in the queue (0: running).
    pub(crate) fn position(&self, future: &Arc<FutureState>) -> Option<usize> {
        lock(&self.calls)
            .queue
            .iter()
            .position(|c| Arc::ptr_eq(&c.item.future, future))
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let calls = self.calls.get_mut().unwrap_or_else(|e| e.into_inner());
        if calls.idle_since.is_none() {
            self.watch.busy.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Which calls a thread waiting for their result may watch for instead of
/// sleeping at once (see `ExecutorBuilder::wait_spin`): those expected
/// within the pool's spin time, while a CPU is left for the watcher. One
/// per pool, shared by its links.
pub(crate) struct Watch {
    /// How long a waiter may watch; zero: never.
    spin: Duration,
    /// The CPUs this process may use; `None`: as counted once for the
    /// process, when a call is first marked (counting reads several files,
    /// which a pool's start should not wait for).
    cpus: Option<usize>,
    /// The pool's workers that hold calls.
    busy: AtomicUsize,
}

impl Watch {
    /// Watches for calls within `spin`, while a CPU is left over.
    pub(crate) fn new(spin: Duration) -> Watch {
        Watch {
            spin,
            cpus: None,
            busy: AtomicUsize::new(0),
        }
    }

    /// As [`new`](Self::new), on a machine of `cpus` CPUs.
    #[cfg(test)]
    fn with_cpus(spin: Duration, cpus: usize) -> Watch {
        Watch {
            cpus: Some(cpus),
            ..Watch::new(spin)
        }
    }

    /// Marks `future`, whose call is `place`th in its worker's queue, when
    /// calls of its task typically take `typical` and `busy` workers hold
    /// calls.
    fn mark(&self, future: &FutureState, typical: Duration, place: u32, busy: usize) {
        let soon = typical
            .checked_mul(place)
            .is_some_and(|expected| expected <= self.spin);
        // A watcher takes a CPU: none while the workers could use them all.
        if soon && busy < self.cpus.unwrap_or_else(crate::cpu::process_cpu_count) {
            future.expect_soon(self.spin);
        }
    }
}

#[cfg(test)]
impl Link {
    /// The ids of the calls held, running one first.
    pub(crate) fn ids(&self) -> Vec<u64> {
        lock(&self.calls).queue.iter().map(|c| c.item.id).collect()
    }

    /// The id of the call whose frame `frame` is.
    pub(crate) fn id_of_frame(&self, frame: &Arc<loky_proto::shm::EncodedFrame>) -> Option<u64> {
        lock(&self.calls)
            .queue
            .iter()
            .find(|c| Arc::ptr_eq(&c.item.frame, frame))
            .map(|c| c.item.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call of task `t`, as sent now.
    fn call(id: u64) -> InFlight {
        InFlight::of_unit_task(id, 4)
    }

    /// Pushes call `id` on `link`; how long a waiter would watch for it.
    fn pushed(link: &Link, id: u64) -> Duration {
        let call = call(id);
        let future = call.item.future.clone();
        link.push(call);
        future.expected_within()
    }

    fn link(durations: &Arc<Durations>, watch: &Arc<Watch>) -> Link {
        Link::with_hook(durations.clone(), watch.clone(), None)
    }

    #[test]
    fn calls_expected_within_the_wait_spin_are_marked_so() {
        let durations = Arc::new(Durations::default());
        let spin = Duration::from_micros(100);
        let watch = Arc::new(Watch::with_cpus(spin, 2));
        let first = link(&durations, &watch);
        assert_eq!(pushed(&first, 1), Duration::ZERO, "a task not measured yet");
        let key = TaskKey::of(&call(0).item);
        durations.set(key, Duration::from_micros(40));
        assert_eq!(pushed(&first, 2), spin, "answers after 2 calls of 40 µs");
        assert_eq!(pushed(&first, 3), Duration::ZERO, "after 3 calls of 40 µs");

        let never = link(&durations, &Arc::new(Watch::with_cpus(Duration::ZERO, 2)));
        assert_eq!(pushed(&never, 4), Duration::ZERO, "a pool that never spins");

        durations.set(key, Duration::from_millis(1));
        let long = link(&durations, &Arc::new(Watch::with_cpus(spin, 2)));
        assert_eq!(pushed(&long, 5), Duration::ZERO, "a call of 1 ms");
    }

    #[test]
    fn no_call_is_marked_while_the_busy_workers_could_use_every_cpu() {
        let durations = Arc::new(Durations::default());
        let spin = Duration::from_micros(100);
        let key = TaskKey::of(&call(0).item);
        durations.set(key, Duration::from_micros(10));
        let watch = Arc::new(Watch::with_cpus(spin, 2));
        let (first, second) = (link(&durations, &watch), link(&durations, &watch));
        assert_eq!(pushed(&first, 1), spin, "1 busy worker of 2 CPUs");
        assert_eq!(pushed(&second, 2), Duration::ZERO, "2 busy workers");
        assert_eq!(pushed(&first, 3), Duration::ZERO, "still 2");
        // The first worker answers both calls: it is idle again.
        first.pop(1, Instant::now()).expect("front");
        first.pop(3, Instant::now()).expect("front");
        durations.set(key, Duration::from_micros(10));
        assert_eq!(pushed(&second, 4), spin, "1 busy worker again");
        // A worker that dies with calls, or goes away, is idle.
        assert_eq!(second.take_all().len(), 2);
        drop(second);
        let busy = link(&durations, &watch);
        assert_eq!(pushed(&busy, 5), spin);
        drop(busy);
        assert_eq!(watch.busy.load(Ordering::SeqCst), 0);
        assert_eq!(
            pushed(&link(&durations, &Arc::new(Watch::with_cpus(spin, 1))), 6),
            Duration::ZERO,
            "one CPU"
        );
    }
}
