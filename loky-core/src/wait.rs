//! `wait` and `as_completed`, as in `concurrent.futures`, and
//! `as_completed_stream` for async code.

use std::collections::HashSet;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_core::Stream;

use crate::completions::{Completions, TimedOut};
use crate::deadline;
use crate::error::{Error, Result};
use crate::future::Future;

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
/// ```
/// # use std::time::Duration;
/// # use loky::{ProcessPoolExecutor, ReturnWhen, Task, DoneAndNotDone};
/// # const SQUARE: Task<i64, i64> = Task::new("square");
/// # // Runs where LOKY_WORKER names a worker program (`cargo xtask test` sets it).
/// # if std::env::var_os("LOKY_WORKER").is_none() { return Ok(()); }
/// let ex = ProcessPoolExecutor::new(2)?;
/// let futures: Vec<_> = (0..4).map(|i| ex.submit(SQUARE, i)).collect::<Result<_, _>>()?;
/// let DoneAndNotDone { done, not_done } =
///     loky::wait(&futures, Some(Duration::from_secs(5)), ReturnWhen::AllCompleted);
/// assert_eq!(done.len(), 4);
/// assert!(not_done.is_empty());
/// # Ok::<(), loky::Error>(())
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
        let mut watch = Completions::counting();
        for (i, future) in futures.iter().enumerate() {
            watch.watch(i, 1, &future.state);
        }
        let mut seen = 0;
        while !satisfied(&futures) {
            if !watch.wait_change(seen, deadline) {
                break;
            }
            seen = watch.done();
        }
    }
    let (done, not_done) = futures.into_iter().partition(|f| f.state.is_done());
    DoneAndNotDone { done, not_done }
}

/// Yields the futures as they complete: those already done first (in the
/// order given), then each as it finishes. At the deadline it yields
/// `Err(Error::Timeout)` once and stops. Duplicates are yielded once.
///
/// ```
/// # use std::time::Duration;
/// # use loky::{ProcessPoolExecutor, Task};
/// # const SQUARE: Task<i64, i64> = Task::new("square");
/// # // Runs where LOKY_WORKER names a worker program (`cargo xtask test` sets it).
/// # if std::env::var_os("LOKY_WORKER").is_none() { return Ok(()); }
/// let ex = ProcessPoolExecutor::new(2)?;
/// let futures: Vec<_> = (0..4).map(|i| ex.submit(SQUARE, i)).collect::<Result<_, _>>()?;
/// for fut in loky::as_completed(futures, Some(Duration::from_secs(5))) {
///     println!("{}", fut?.result()?);
/// }
/// # Ok::<(), loky::Error>(())
/// ```
pub fn as_completed<T>(
    futures: impl IntoIterator<Item = Future<T>>,
    timeout: Option<Duration>,
) -> AsCompleted<T> {
    AsCompleted {
        watch: Watched::new(futures),
        deadline: timeout.and_then(deadline::from_now),
        finished: false,
    }
}

/// The iterator returned by [`as_completed`].
pub struct AsCompleted<T> {
    watch: Watched<T>,
    deadline: Option<Instant>,
    finished: bool,
}

impl<T> fmt::Debug for AsCompleted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsCompleted")
            .field("left", &self.watch.left())
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl<T> Iterator for AsCompleted<T> {
    type Item = Result<Future<T>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        match self.watch.wait_next(self.deadline) {
            Ok(Some(fut)) => Some(Ok(fut)),
            Ok(None) => {
                self.finished = true;
                None
            }
            Err(TimedOut) => {
                self.finished = true;
                Some(Err(Error::Timeout))
            }
        }
    }
}

/// The futures as they complete, as a [`Stream`]: those already done
/// first (in the order given), then each as it finishes. Duplicates are
/// yielded once. Awaiting it parks no thread; for a deadline, wrap it in
/// your runtime's timeout (dropping the stream takes its wakers back from
/// the futures, which go on).
///
/// ```
/// # use loky::{ProcessPoolExecutor, Task};
/// # const SQUARE: Task<i64, i64> = Task::new("square");
/// # // Runs where LOKY_WORKER names a worker program (`cargo xtask test` sets it).
/// # if std::env::var_os("LOKY_WORKER").is_none() { return Ok(()); }
/// # let ex = ProcessPoolExecutor::new(2)?;
/// # futures_executor::block_on(async {
/// use futures_core::Stream;
/// use std::pin::pin;
///
/// let futures: Vec<_> = (0..4).map(|i| ex.submit(SQUARE, i)).collect::<Result<_, _>>()?;
/// let mut done = pin!(loky::as_completed_stream(futures));
/// while let Some(fut) = std::future::poll_fn(|cx| done.as_mut().poll_next(cx)).await {
///     println!("{}", fut.wait_async().await?);
/// }
/// # Ok::<(), loky::Error>(())
/// # })?;
/// # Ok::<(), loky::Error>(())
/// ```
pub fn as_completed_stream<T>(
    futures: impl IntoIterator<Item = Future<T>>,
) -> AsCompletedStream<T> {
    AsCompletedStream {
        watch: Watched::new(futures),
    }
}

/// The stream returned by [`as_completed_stream`].
#[must_use = "a stream does nothing unless polled"]
pub struct AsCompletedStream<T> {
    watch: Watched<T>,
}

impl<T> fmt::Debug for AsCompletedStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsCompletedStream")
            .field("left", &self.watch.left())
            .finish()
    }
}

impl<T> Stream for AsCompletedStream<T> {
    type Item = Future<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Future<T>>> {
        self.get_mut().watch.poll_next(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.watch.left();
        (left, Some(left))
    }
}

/// Futures, each given back once, as it completes.
struct Watched<T> {
    futures: Vec<Option<Future<T>>>,
    watch: Completions,
}

impl<T> Watched<T> {
    fn new(futures: impl IntoIterator<Item = Future<T>>) -> Watched<T> {
        let futures = dedup(futures);
        let mut watch = Completions::in_completion_order();
        // Those already done are queued at once, in the order given.
        for (i, future) in futures.iter().enumerate() {
            watch.watch(i, 1, &future.state);
        }
        Watched {
            futures: futures.into_iter().map(Some).collect(),
            watch,
        }
    }

    fn left(&self) -> usize {
        self.watch.pending()
    }

    fn take(&mut self, index: usize) -> Future<T> {
        self.futures[index]
            .take()
            .expect("each future completes once")
    }

    fn wait_next(&mut self, deadline: Option<Instant>) -> Result<Option<Future<T>>, TimedOut> {
        Ok(self.watch.wait_next(deadline)?.map(|i| self.take(i)))
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Future<T>>> {
        self.watch.poll_next(cx).map(|i| i.map(|i| self.take(i)))
    }
}

fn dedup<T>(futures: impl IntoIterator<Item = Future<T>>) -> Vec<Future<T>> {
    let mut seen = HashSet::new();
    futures
        .into_iter()
        .filter(|f| seen.insert(Arc::as_ptr(&f.state)))
        .collect()
}
