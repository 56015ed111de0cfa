//! `wait` and `as_completed`, as in `concurrent.futures`.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::deadline;
use crate::error::{Error, Result};
use crate::future::{Future, FutureState};

/// When [`wait`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReturnWhen {
    /// As soon as any future is done.
    FirstCompleted,
    /// As soon as any future fails; like `AllCompleted` if none fails.
    FirstException,
    /// When every future is done.
    #[default]
    AllCompleted,
}

/// The two sets returned by [`wait`], in the order the futures were given.
#[derive(Debug)]
pub struct DoneAndNotDone<T> {
    /// Futures that are finished or cancelled.
    pub done: Vec<Future<T>>,
    /// The others.
    pub not_done: Vec<Future<T>>,
}

/// Waits for the futures until `return_when` holds or `timeout` passes.
///
/// Duplicates are counted once.
///
/// ```no_run
/// # use std::time::Duration;
/// # use loky_core::{ProcessPoolExecutor, ReturnWhen, Task, DoneAndNotDone};
/// # const SQUARE: Task<i64, i64> = Task::new("square");
/// let ex = ProcessPoolExecutor::new(2)?;
/// let futures: Vec<_> = (0..4).map(|i| ex.submit(SQUARE, i)).collect::<Result<_, _>>()?;
/// let DoneAndNotDone { done, not_done } =
///     loky_core::wait(&futures, Some(Duration::from_secs(5)), ReturnWhen::AllCompleted);
/// assert_eq!(done.len(), 4);
/// assert!(not_done.is_empty());
/// # Ok::<(), loky_core::Error>(())
/// ```
pub fn wait<T>(
    futures: &[Future<T>],
    timeout: Option<Duration>,
    return_when: ReturnWhen,
) -> DoneAndNotDone<T> {
    let deadline = timeout.and_then(deadline::from_now);
    let futures = dedup(futures.iter().cloned());
    let satisfied = |futures: &[Future<T>]| {
        let done = futures.iter().filter(|f| f.state.is_done()).count();
        match return_when {
            ReturnWhen::AllCompleted => done == futures.len(),
            ReturnWhen::FirstCompleted => done > 0 || futures.is_empty(),
            ReturnWhen::FirstException => {
                done == futures.len() || futures.iter().any(|f| f.state.is_failed())
            }
        }
    };
    if !satisfied(&futures) {
        let events = notify_on_done(futures.iter().map(|f| &f.state));
        while !satisfied(&futures) {
            if !wait_event(&events, deadline) {
                break;
            }
        }
    }
    let (done, not_done) = futures.into_iter().partition(|f| f.state.is_done());
    DoneAndNotDone { done, not_done }
}

/// Yields the futures as they complete: those already done first (in the
/// order given), then each as it finishes. At the deadline it yields
/// `Err(Error::Timeout)` once and stops. Duplicates are yielded once.
///
/// ```no_run
/// # use std::time::Duration;
/// # use loky_core::{ProcessPoolExecutor, Task};
/// # const SQUARE: Task<i64, i64> = Task::new("square");
/// let ex = ProcessPoolExecutor::new(2)?;
/// let futures: Vec<_> = (0..4).map(|i| ex.submit(SQUARE, i)).collect::<Result<_, _>>()?;
/// for fut in loky_core::as_completed(futures, Some(Duration::from_secs(5))) {
///     println!("{}", fut?.result()?);
/// }
/// # Ok::<(), loky_core::Error>(())
/// ```
pub fn as_completed<T>(
    futures: impl IntoIterator<Item = Future<T>>,
    timeout: Option<Duration>,
) -> AsCompleted<T> {
    let deadline = timeout.and_then(deadline::from_now);
    let futures = dedup(futures);
    let (ready, waiting): (Vec<_>, Vec<_>) = futures.into_iter().partition(|f| f.state.is_done());
    let events = notify_on_done(waiting.iter().map(|f| &f.state));
    AsCompleted {
        ready: ready.into(),
        waiting,
        events,
        deadline,
        finished: false,
    }
}

/// The iterator returned by [`as_completed`].
pub struct AsCompleted<T> {
    ready: VecDeque<Future<T>>,
    waiting: Vec<Future<T>>,
    events: Receiver<()>,
    deadline: Option<Instant>,
    finished: bool,
}

impl<T> Iterator for AsCompleted<T> {
    type Item = Result<Future<T>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        loop {
            if let Some(fut) = self.ready.pop_front() {
                return Some(Ok(fut));
            }
            if self.waiting.is_empty() {
                self.finished = true;
                return None;
            }
            let (done, waiting) = std::mem::take(&mut self.waiting)
                .into_iter()
                .partition::<Vec<_>, _>(|f| f.state.is_done());
            self.waiting = waiting;
            self.ready.extend(done);
            if self.ready.is_empty() && !wait_event(&self.events, self.deadline) {
                self.finished = true;
                return Some(Err(Error::Timeout));
            }
        }
    }
}

fn dedup<T>(futures: impl IntoIterator<Item = Future<T>>) -> Vec<Future<T>> {
    let mut seen = HashSet::new();
    futures
        .into_iter()
        .filter(|f| seen.insert(Arc::as_ptr(&f.state)))
        .collect()
}

/// A channel that gets a message each time one of `cores` is done.
fn notify_on_done<'a>(states: impl Iterator<Item = &'a Arc<FutureState>>) -> Receiver<()> {
    let (tx, rx) = crossbeam_channel::unbounded();
    for state in states {
        let tx = tx.clone();
        state.on_done(Box::new(move || {
            // The waiter may be gone; then nobody needs the news.
            let _ = tx.send(());
        }));
    }
    rx
}

/// Waits for one event; false at the deadline.
fn wait_event(events: &Receiver<()>, deadline: Option<Instant>) -> bool {
    match deadline {
        None => {
            // Disconnected means every watched future already reported.
            let _ = events.recv();
            true
        }
        Some(deadline) => match events.recv_deadline(deadline) {
            Ok(()) => true,
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        },
    }
}
