//! Which of many futures completed, in the order they did: each watched
//! future wakes, on the thread that settles it, a waker that queues its
//! index (a few instructions, never blocking); a thread blocks for the
//! next index, or an async task is woken for it. Used by `wait`,
//! `as_completed` (and its stream) and `map_unordered`, and by `map` to
//! count the items done.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use crate::future::FutureState;

/// What the wakers of the watched futures share with the watcher.
#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    cond: Condvar,
    /// The sum of the weights of the futures done.
    done: AtomicUsize,
}

#[derive(Default)]
struct Queue {
    /// Indices of the futures done, in completion order (when kept).
    done: VecDeque<usize>,
    /// The async task waiting for the next one.
    waker: Option<Waker>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Consistent between any two statements.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The waker given to one watched future.
struct Completion {
    index: usize,
    weight: usize,
    /// Whether the index is queued (else only counted).
    queued: bool,
    /// [`UNCOUNTED`], [`COUNTING`] or [`COUNTED`].
    counted: AtomicU8,
    shared: Arc<Shared>,
}

/// Its weight is not in [`Shared::done`] yet.
const UNCOUNTED: u8 = 0;
/// A thread is adding its weight.
const COUNTING: u8 = 1;
/// Its weight is in [`Shared::done`].
const COUNTED: u8 = 2;

impl Completion {
    /// Counts the weight once, whoever sees the future done first. With
    /// `settled`, returns only once the weight is counted: a thread that
    /// loses the race to the future's waker waits the few instructions the
    /// waker has left (else a map's `in_flight` could still count a chunk
    /// that it has taken the results of).
    fn count(&self, settled: bool) {
        match self.counted.compare_exchange(
            UNCOUNTED,
            COUNTING,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                self.shared.done.fetch_add(self.weight, Ordering::Relaxed);
                self.counted.store(COUNTED, Ordering::Release);
            }
            Err(_) if settled => {
                while self.counted.load(Ordering::Acquire) != COUNTED {
                    std::thread::yield_now();
                }
            }
            Err(_) => {}
        }
    }
}

impl Wake for Completion {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.count(false);
        let mut queue = self.shared.lock();
        if self.queued {
            queue.done.push_back(self.index);
        }
        let waker = queue.waker.take();
        self.shared.cond.notify_all();
        drop(queue);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Watches futures for their completion.
pub(crate) struct Completions {
    shared: Arc<Shared>,
    /// Watched futures not yet seen done, with their waker and its key.
    watched: HashMap<usize, Watched>,
    /// Whether indices are queued for `next`, or only weights counted.
    ordered: bool,
}

struct Watched {
    future: Arc<FutureState>,
    completion: Arc<Completion>,
    key: Option<u64>,
}

/// The deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimedOut;

impl Completions {
    /// A watcher whose [`next`](Self::wait_next) gives indices in
    /// completion order.
    pub(crate) fn in_completion_order() -> Completions {
        Completions {
            shared: Arc::default(),
            watched: HashMap::new(),
            ordered: true,
        }
    }

    /// A watcher that only counts: it keeps no order, only the sum of the
    /// weights done (see [`Completions::done`]).
    pub(crate) fn counting() -> Completions {
        Completions {
            shared: Arc::default(),
            watched: HashMap::new(),
            ordered: false,
        }
    }

    /// Watches `future` under `index`; its `weight` counts towards
    /// [`Completions::done`] once it is done. A future already done is
    /// queued at once.
    pub(crate) fn watch(&mut self, index: usize, weight: usize, future: &Arc<FutureState>) {
        let completion = Arc::new(Completion {
            index,
            weight,
            queued: self.ordered,
            counted: AtomicU8::new(UNCOUNTED),
            shared: self.shared.clone(),
        });
        let key = future.wake_when_done(&Waker::from(completion.clone()));
        if self.ordered || key.is_some() {
            let future = future.clone();
            self.watched.insert(
                index,
                Watched {
                    future,
                    completion,
                    key,
                },
            );
        }
    }

    /// Takes `index`, seen done by its caller, off the watch. Its weight
    /// counts from now on, even if its waker has not run yet: a waiter may
    /// see a future settled a moment before the settling thread wakes the
    /// future's wakers.
    pub(crate) fn finished(&mut self, index: usize) {
        if let Some(watched) = self.watched.remove(&index) {
            watched.completion.count(true);
        }
    }

    /// The sum of the weights of the watched futures that are done.
    pub(crate) fn done(&self) -> usize {
        self.shared.done.load(Ordering::Relaxed)
    }

    /// How many watched futures have not been returned by `next` yet.
    pub(crate) fn pending(&self) -> usize {
        self.watched.len()
    }

    /// Blocks for the next index done; `None` when nothing is watched any
    /// more; `Err(TimedOut)` at `deadline`.
    pub(crate) fn wait_next(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Option<usize>, TimedOut> {
        let mut queue = self.shared.lock();
        loop {
            if let Some(index) = queue.done.pop_front() {
                drop(queue);
                self.watched.remove(&index);
                return Ok(Some(index));
            }
            if self.watched.is_empty() {
                return Ok(None);
            }
            queue = match deadline {
                None => self
                    .shared
                    .cond
                    .wait(queue)
                    .unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(TimedOut);
                    }
                    self.shared
                        .cond
                        .wait_timeout(queue, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// The next index done; `Ready(None)` when nothing is watched any
    /// more; otherwise `cx` is woken when one is done.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<usize>> {
        let mut queue = self.shared.lock();
        if let Some(index) = queue.done.pop_front() {
            drop(queue);
            self.watched.remove(&index);
            return Poll::Ready(Some(index));
        }
        if self.watched.is_empty() {
            return Poll::Ready(None);
        }
        match &mut queue.waker {
            Some(waker) => waker.clone_from(cx.waker()),
            none => *none = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Blocks until `event` wakes the watcher or `deadline` passes; false
    /// at the deadline. For a counting watcher, whose indices are not
    /// queued.
    pub(crate) fn wait_change(&self, seen: usize, deadline: Option<Instant>) -> bool {
        let mut queue = self.shared.lock();
        while self.done() == seen {
            queue = match deadline {
                None => self
                    .shared
                    .cond
                    .wait(queue)
                    .unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return false;
                    }
                    self.shared
                        .cond
                        .wait_timeout(queue, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
        true
    }
}

/// Takes every waker back from the futures still watched: a watcher that
/// goes away early (a `wait` that returned at its first completion, a
/// dropped stream) leaves nothing behind in them.
impl Drop for Completions {
    fn drop(&mut self) {
        for (_, watched) in self.watched.drain() {
            if let Some(key) = watched.key {
                watched.future.forget_waker(key);
            }
        }
    }
}
