//! The calls a worker holds: the one record of them, shared by the
//! supervisor (which sends calls and reads how many a worker holds) and the
//! worker's reader (which takes each call off as its reply arrives and
//! settles its future). Replies come in call order, so the calls form a
//! FIFO whose front is the call running.

use std::collections::VecDeque;
use std::fmt;
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
        Link::with_hook(durations, None)
    }

    /// The link of a worker whose replies `on_replies` is told of.
    pub(crate) fn with_replies(durations: Arc<Durations>, on_replies: OnReplies) -> Link {
        Link::with_hook(durations, Some(on_replies))
    }

    fn with_hook(durations: Arc<Durations>, on_replies: Option<OnReplies>) -> Link {
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
        let mut calls = lock(&self.calls);
        if calls.queue.is_empty() {
            calls.front_since = call.sent;
            calls.deadline_since = call.sent;
        }
        calls.idle_since = None;
        calls.queue.push_back(call);
    }

    /// Takes the call a reply is for: always the oldest one.
    pub(crate) fn pop(&self, id: u64) -> Result<InFlight, UnexpectedReply> {
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
        let now = Instant::now();
        let started = match calls.last_reply {
            Some(last) if last > call.sent => last,
            _ => call.sent,
        };
        calls.last_reply = Some(now);
        calls.front_since = now;
        calls.deadline_since = now;
        if calls.queue.is_empty() {
            calls.idle_since = Some(now);
        }
        drop(calls);
        let took = now.saturating_duration_since(started);
        self.durations.record(TaskKey::of(&call.item), took);
        Ok(call)
    }

    /// The running call `id` (a chunk) reported items done: `report` gets
    /// it, and the running item's deadline counts from now.
    pub(crate) fn progress(
        &self,
        id: u64,
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
        calls.deadline_since = Instant::now();
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
        calls.idle_since.get_or_insert_with(Instant::now);
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
