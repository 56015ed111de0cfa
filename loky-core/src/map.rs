//! `ProcessPoolExecutor::map`: ordered results of one task over many
//! inputs, sent in chunks, as an iterator or a stream.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_core::Stream;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::call::Target;
use crate::completions::Completions;
use crate::error::{Error, Result};
use crate::future::{FutureState, Settled};
use crate::options::CallOptions;
use crate::supervisor::PoolHandle;
use crate::timer::Alarm;

mod chunks;
mod unordered;

use chunks::{Chunk, Feeder, Ready, Source, cancel_all, results_of};
pub use unordered::{MapUnordered, MapUnorderedStream};

/// The iterator returned by
/// [`ProcessPoolExecutor::map`](crate::ProcessPoolExecutor::map): results in
/// input order, an error at the position of each item that failed.
///
/// The inputs are taken (and encoded) at the first `next()`: all of them,
/// or, with [`buffersize`](Map::buffersize), a few chunks ahead of the
/// results consumed, so that an endless iterator works. Each chunk goes to
/// the pool as soon as it is made (the first alone, then in batches that
/// double), so workers start while later inputs are encoded. Dropping the map
/// (or reaching its timeout) cancels the chunks that have not started.
///
/// [`done`](Map::done) and [`in_flight`](Map::in_flight) tell how far it
/// got, for a progress bar; [`into_stream`](Map::into_stream) gives the
/// same results to async code.
///
/// ```
/// use std::time::Duration;
/// use loky::{ProcessPoolExecutor, Task};
///
/// const SQUARE: Task<i64, i64> = Task::new("square");
///
/// # // Runs where LOKY_WORKER names a worker program (`cargo xtask test` sets it).
/// # if std::env::var_os("LOKY_WORKER").is_none() { return Ok(()); }
/// let ex = ProcessPoolExecutor::new(2)?;
/// let results = ex
///     .map(SQUARE, 0..10_000)
///     .chunksize(256)
///     .timeout(Duration::from_secs(10));
/// for (i, result) in results.enumerate() {
///     match result {
///         Ok(square) => assert_eq!(square, (i * i) as i64),
///         Err(e) => eprintln!("item {i}: {e}"), // and go on with the next ones
///     }
/// }
/// # Ok::<(), loky::Error>(())
/// ```
#[must_use = "a map does nothing until iterated"]
pub struct Map<'a, O> {
    /// The inputs, their chunks' calls counted as they are done.
    source: Source<'a>,
    state: State,
    /// Chunks submitted and not yet yielded, in input order.
    chunks: VecDeque<(usize, Chunk)>,
    /// The results of the chunk being yielded.
    ready: Ready<O>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Prepared,
    Running,
    Done,
}

impl<O> fmt::Debug for Map<'_, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.source.debug("Map", f)
    }
}

/// How [`Map::poll_step`] waits for a chunk's call: blocking, or as a
/// stream's poll.
trait Waiter {
    /// The call's result; `Ready(None)` at `deadline`.
    fn wait(
        &mut self,
        future: &Arc<FutureState>,
        deadline: Option<Instant>,
    ) -> Poll<Option<Settled>>;
}

/// Blocks the calling thread.
struct Blocking;

impl Waiter for Blocking {
    fn wait(
        &mut self,
        future: &Arc<FutureState>,
        deadline: Option<Instant>,
    ) -> Poll<Option<Settled>> {
        match future.wait(deadline) {
            Err(Error::Timeout) => Poll::Ready(None),
            settled => Poll::Ready(Some(settled)),
        }
    }
}

impl<'a, O: DeserializeOwned> Map<'a, O> {
    pub(crate) fn new<I, It>(pool: Arc<PoolHandle>, target: Target, inputs: It) -> Map<'a, O>
    where
        I: Serialize,
        It: IntoIterator<Item = I>,
        It::IntoIter: Send + 'a,
    {
        Map {
            source: Source::new(Feeder::new(pool, target, inputs), Completions::counting()),
            state: State::Prepared,
            chunks: VecDeque::new(),
            ready: Ready::empty(),
        }
    }

    /// This map with every item failing with `err` (its function cannot
    /// be sent), nothing being sent.
    pub(crate) fn refused(mut self, err: Error) -> Self {
        self.source.feeder.refuse(err);
        self
    }

    /// Sends the inputs `n` at a time (default 1); zero is an error.
    pub fn chunksize(mut self, n: usize) -> Self {
        self.source.settings.chunksize = n;
        self
    }

    /// Stops waiting `timeout` after the `map` call: the next result is then
    /// `Err(Error::Timeout)` and iteration ends.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.source.settings.timeout = Some(timeout);
        self
    }

    /// Submits at most `n` chunks ahead of the results consumed (as
    /// CPython's `Executor.map(..., buffersize=n)`): one more each time a
    /// chunk's results start being yielded. Inputs are then taken only as
    /// they are needed, so an endless iterator works, in bounded memory.
    /// Without it, every input is taken and submitted at the first
    /// `next()`. Zero is an error.
    pub fn buffersize(mut self, n: usize) -> Self {
        self.source.settings.buffersize = Some(n);
        self
    }

    /// Per-item options, as for
    /// [`submit_with`](crate::ProcessPoolExecutor::submit_with): a timeout
    /// bounds each item, never a whole chunk.
    pub fn options(mut self, options: CallOptions) -> Self {
        self.source.settings.options = options;
        self
    }

    /// The same results as a [`Stream`], for async code: awaiting them
    /// parks no thread. Input order, timeout, buffer size and
    /// cancellation on drop are as for the iterator.
    pub fn into_stream(self) -> MapStream<'a, O> {
        MapStream {
            map: self,
            key: None,
            alarm: None,
        }
    }

    /// Submits chunks: all at first, or up to the buffer size.
    fn feed(&mut self) {
        let room = self
            .source
            .settings
            .batch()
            .saturating_sub(self.chunks.len());
        self.chunks.extend(self.source.submit(room));
    }

    /// The next result, waiting with `waiter`.
    fn poll_step(&mut self, waiter: &mut impl Waiter) -> Poll<Option<Result<O>>> {
        loop {
            match self.state {
                State::Done => return Poll::Ready(None),
                State::Prepared => {
                    self.state = State::Running;
                    if let Err(err) = self.source.settings.check() {
                        self.state = State::Done;
                        return Poll::Ready(Some(Err(err)));
                    }
                    self.feed();
                }
                State::Running => {}
            }
            if let Some(result) = self.ready.next() {
                return Poll::Ready(Some(result));
            }
            let Some((_, chunk)) = self.chunks.front() else {
                self.state = State::Done;
                return Poll::Ready(None);
            };
            let settled = match &chunk.future {
                None => Err(Error::Cancelled),
                Some(future) => match waiter.wait(future, self.source.settings.deadline()) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(settled)) => settled,
                    Poll::Ready(None) => return Poll::Ready(Some(Err(self.time_out()))),
                },
            };
            let (number, chunk) = self.chunks.pop_front().expect("front checked above");
            self.source.watch.finished(number);
            self.ready = results_of(self.source.feeder.task(), &chunk, settled);
            self.feed();
        }
    }

    /// Ends the map at its timeout.
    fn time_out(&mut self) -> Error {
        cancel_all(self.chunks.iter().map(|(_, chunk)| chunk));
        self.chunks.clear();
        self.state = State::Done;
        Error::Timeout
    }
}

impl<O: DeserializeOwned> Iterator for Map<'_, O> {
    type Item = Result<O>;

    fn next(&mut self) -> Option<Result<O>> {
        // The common case, a value of a chunk that succeeded whole, made a
        // `Result` here rather than moved as one (some hundred bytes, most
        // of them the error's) through `poll_step`. Results wait in `ready`
        // only while the map runs.
        if let Some(value) = self.ready.next_value() {
            return Some(Ok(value));
        }
        match self.poll_step(&mut Blocking) {
            Poll::Ready(result) => result,
            Poll::Pending => unreachable!("a blocking wait is always ready"),
        }
    }

    /// Once started: the results of the chunks submitted (all of them
    /// without a buffer size), so that `collect` allocates once; with a
    /// timeout, which can end the map early, at least one.
    fn size_hint(&self) -> (usize, Option<usize>) {
        match self.state {
            State::Prepared => (0, None),
            State::Running => {
                let known =
                    self.ready.len() + self.chunks.iter().map(|(_, c)| c.len).sum::<usize>();
                let upper = self.source.feeder.finished().then_some(known.max(1));
                match self.source.settings.timeout {
                    Some(_) => (known.min(1), upper),
                    None => (known, upper),
                }
            }
            State::Done => (0, Some(0)),
        }
    }
}

impl<O> Map<'_, O> {
    /// How many items have their result: done in a worker (successfully
    /// or not), or failed before they could be sent. Includes results not
    /// yielded yet. A cheap read of a counter.
    pub fn done(&self) -> usize {
        self.source.done()
    }

    /// How many items were sent to the pool and have no result yet.
    pub fn in_flight(&self) -> usize {
        self.source.in_flight()
    }
}

impl<O> Drop for Map<'_, O> {
    fn drop(&mut self) {
        cancel_all(self.chunks.iter().map(|(_, chunk)| chunk));
    }
}

/// The results of a [`Map`] as a [`Stream`], in input order: what
/// [`Map::into_stream`] returns.
///
/// Its timeout needs no runtime: a thread of loky's wakes the stream at the
/// deadline. Dropping it cancels the chunks that have not started.
///
/// ```
/// # use loky::{ProcessPoolExecutor, Task};
/// # const SQUARE: Task<i64, i64> = Task::new("square");
/// # // Runs where LOKY_WORKER names a worker program (`cargo xtask test` sets it).
/// # if std::env::var_os("LOKY_WORKER").is_none() { return Ok(()); }
/// # let ex = ProcessPoolExecutor::new(2)?;
/// # futures_executor::block_on(async {
/// let mut squares = ex.map(SQUARE, 0..1000).chunksize(100).into_stream();
/// let mut i = 0;
/// while let Some(square) = squares.next().await {
///     assert_eq!(square?, i * i);
///     i += 1;
/// }
/// # Ok::<(), loky::Error>(())
/// # })?;
/// # Ok::<(), loky::Error>(())
/// ```
#[must_use = "a stream does nothing unless polled"]
pub struct MapStream<'a, O> {
    map: Map<'a, O>,
    /// The key of our waker in the front chunk's future.
    key: Option<u64>,
    alarm: Option<Alarm>,
}

// Nothing in it is ever pinned: the stream polls through `&mut`.
impl<O> Unpin for MapStream<'_, O> {}

impl<O> fmt::Debug for MapStream<'_, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapStream").field("map", &self.map).finish()
    }
}

impl<O: DeserializeOwned> MapStream<'_, O> {
    /// The next result: as `StreamExt::next`, without needing the trait.
    pub async fn next(&mut self) -> Option<Result<O>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// See [`Map::done`].
    pub fn done(&self) -> usize {
        self.map.done()
    }

    /// See [`Map::in_flight`].
    pub fn in_flight(&self) -> usize {
        self.map.in_flight()
    }
}

/// Polls, waking the stream's task when the call settles or the deadline
/// passes.
struct Polling<'s, 'c, 'w> {
    cx: &'s mut Context<'w>,
    key: &'c mut Option<u64>,
    alarm: &'c mut Option<Alarm>,
}

impl Waiter for Polling<'_, '_, '_> {
    fn wait(
        &mut self,
        future: &Arc<FutureState>,
        deadline: Option<Instant>,
    ) -> Poll<Option<Settled>> {
        if let Poll::Ready(settled) = future.poll_settled(self.cx, self.key) {
            // Settling took our waker away.
            *self.key = None;
            return Poll::Ready(Some(settled));
        }
        let Some(deadline) = deadline else {
            return Poll::Pending;
        };
        if Instant::now() >= deadline {
            if let Some(key) = self.key.take() {
                future.forget_waker(key);
            }
            return Poll::Ready(None);
        }
        match self.alarm {
            Some(alarm) => alarm.update(self.cx.waker()),
            None => *self.alarm = Some(Alarm::new(deadline, self.cx.waker())),
        }
        Poll::Pending
    }
}

impl<O: DeserializeOwned> Stream for MapStream<'_, O> {
    type Item = Result<O>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<O>>> {
        let this = self.get_mut();
        // As in `Map::next`.
        if let Some(value) = this.map.ready.next_value() {
            return Poll::Ready(Some(Ok(value)));
        }
        let mut waiter = Polling {
            cx,
            key: &mut this.key,
            alarm: &mut this.alarm,
        };
        let next = this.map.poll_step(&mut waiter);
        if next.is_ready() && this.map.state == State::Done {
            this.alarm = None;
        }
        next
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.map.size_hint()
    }
}

impl<O> Drop for MapStream<'_, O> {
    fn drop(&mut self) {
        if let (Some(key), Some((_, chunk))) = (self.key, self.map.chunks.front())
            && let Some(future) = &chunk.future
        {
            future.forget_waker(key);
        }
    }
}
