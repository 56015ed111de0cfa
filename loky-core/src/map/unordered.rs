//! `ProcessPoolExecutor::map_unordered`: each input's index with its
//! result, in the order results arrive, as an iterator or a stream.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_core::Stream;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::chunks::{Chunk, Feeder, Ready, Source, cancel_all, results_of};
use crate::call::Target;
use crate::completions::{Completions, TimedOut};
use crate::error::{Error, Result};
use crate::options::CallOptions;
use crate::supervisor::PoolHandle;
use crate::timer::Alarm;

/// The iterator returned by
/// [`ProcessPoolExecutor::map_unordered`](crate::ProcessPoolExecutor::map_unordered):
/// `(input index, result)` pairs in the order the results arrive, each
/// index exactly once; the items of one chunk arrive together, in input
/// order.
///
/// Settings and behaviour are those of [`Map`](crate::Map): chunk size,
/// timeout (then one `(i, Err(Error::Timeout))`, `i` the first input
/// without a result, and the end), buffer size, per-item options,
/// counters, cancellation of the chunks not started on drop, and
/// [`into_stream`](MapUnordered::into_stream) for async code.
///
/// ```
/// use std::time::Duration;
/// use loky::{ProcessPoolExecutor, Task};
///
/// const SLEEP_MS: Task<u64, u64> = Task::new("sleep_ms");
///
/// # // Runs where LOKY_WORKER names a worker program (`cargo xtask test` sets it).
/// # if std::env::var_os("LOKY_WORKER").is_none() { return Ok(()); }
/// let ex = ProcessPoolExecutor::new(2)?;
/// for (i, result) in ex.map_unordered(SLEEP_MS, [300, 10, 20]) {
///     println!("input {i}: {:?}", result); // 1 and 2 first, then 0
/// }
/// # Ok::<(), loky::Error>(())
/// ```
#[must_use = "a map does nothing until iterated"]
pub struct MapUnordered<'a, O> {
    /// The inputs, their chunks' calls watched in completion order.
    source: Source<'a>,
    started: bool,
    finished: bool,
    /// Chunks submitted and not yet done, by number.
    chunks: HashMap<usize, Chunk>,
    /// Results to yield: each chunk's first index and its results.
    ready: VecDeque<(usize, Ready<O>)>,
}

impl<O> fmt::Debug for MapUnordered<'_, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.source.debug("MapUnordered", f)
    }
}

impl<'a, O: DeserializeOwned> MapUnordered<'a, O> {
    pub(crate) fn new<I, It>(
        pool: Arc<PoolHandle>,
        target: Target,
        inputs: It,
    ) -> MapUnordered<'a, O>
    where
        I: Serialize,
        It: IntoIterator<Item = I>,
        It::IntoIter: Send + 'a,
    {
        let feeder = Feeder::new(pool, target, inputs);
        MapUnordered {
            source: Source::new(feeder, Completions::in_completion_order()),
            started: false,
            finished: false,
            chunks: HashMap::new(),
            ready: VecDeque::new(),
        }
    }

    /// This map with every item failing with `err` (its function cannot
    /// be sent), nothing being sent.
    pub(crate) fn refused(mut self, err: Error) -> Self {
        self.source.feeder.refuse(err);
        self
    }

    /// As [`Map::chunksize`](crate::Map::chunksize).
    pub fn chunksize(mut self, n: usize) -> Self {
        self.source.settings.chunksize = n;
        self
    }

    /// As [`Map::timeout`](crate::Map::timeout): past it, one
    /// `(i, Err(Error::Timeout))` with `i` the first input without a
    /// result, then the end.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.source.settings.timeout = Some(timeout);
        self
    }

    /// As [`Map::buffersize`](crate::Map::buffersize): at most `n` chunks
    /// submitted whose results were not yielded yet.
    pub fn buffersize(mut self, n: usize) -> Self {
        self.source.settings.buffersize = Some(n);
        self
    }

    /// As [`Map::options`](crate::Map::options).
    pub fn options(mut self, options: CallOptions) -> Self {
        self.source.settings.options = options;
        self
    }

    /// The same results as a [`Stream`], for async code.
    pub fn into_stream(self) -> MapUnorderedStream<'a, O> {
        MapUnorderedStream {
            map: self,
            alarm: None,
        }
    }

    fn feed(&mut self) {
        let waiting = self.chunks.len() + self.ready.len();
        let room = self.source.settings.batch().saturating_sub(waiting);
        let task = self.source.feeder.task();
        for (number, chunk) in self.source.submit(room) {
            if chunk.future.is_some() {
                self.chunks.insert(number, chunk);
            } else {
                let results = results_of(task, &chunk, Err(Error::Cancelled));
                self.ready.push_back((chunk.first, results));
            }
        }
    }

    /// Takes the chunk `number`, done, into the results to yield.
    fn collect(&mut self, number: usize) {
        let chunk = self
            .chunks
            .remove(&number)
            .expect("each chunk is done once");
        let settled = match &chunk.future {
            Some(future) => future.wait(None),
            None => Err(Error::Cancelled),
        };
        let results = results_of(self.source.feeder.task(), &chunk, settled);
        self.ready.push_back((chunk.first, results));
    }

    /// The next ready result, if any.
    fn pop_ready(&mut self) -> Option<(usize, Result<O>)> {
        loop {
            let (first, results) = self.ready.front_mut()?;
            if let Some(result) = results.next() {
                let index = *first;
                *first += 1;
                return Some((index, result));
            }
            self.ready.pop_front();
            self.feed();
        }
    }

    /// The next pair, waiting for a chunk with `wait` (blocking or
    /// polling).
    fn poll_step(
        &mut self,
        mut wait: impl FnMut(&mut Completions, Option<Instant>) -> Poll<Result<Option<usize>, TimedOut>>,
    ) -> Poll<Option<(usize, Result<O>)>> {
        if self.finished {
            return Poll::Ready(None);
        }
        if !self.started {
            self.started = true;
            if let Err(err) = self.source.settings.check() {
                self.finished = true;
                return Poll::Ready(Some((0, Err(err))));
            }
            self.feed();
        }
        loop {
            if let Some(next) = self.pop_ready() {
                return Poll::Ready(Some(next));
            }
            if self.chunks.is_empty() {
                self.feed();
                if self.chunks.is_empty() && self.ready.is_empty() {
                    self.finished = true;
                    return Poll::Ready(None);
                }
                continue;
            }
            match wait(&mut self.source.watch, self.source.settings.deadline()) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(Some(number))) => self.collect(number),
                Poll::Ready(Ok(None)) => unreachable!("chunks in flight are watched"),
                Poll::Ready(Err(TimedOut)) => return Poll::Ready(Some(self.time_out())),
            }
        }
    }

    /// Ends the map at its timeout, with the first input without a result.
    fn time_out(&mut self) -> (usize, Result<O>) {
        let first = self.chunks.values().map(|c| c.first).min().unwrap_or(0);
        cancel_all(self.chunks.values());
        self.chunks.clear();
        self.finished = true;
        (first, Err(Error::Timeout))
    }
}

impl<O: DeserializeOwned> Iterator for MapUnordered<'_, O> {
    type Item = (usize, Result<O>);

    fn next(&mut self) -> Option<(usize, Result<O>)> {
        let step = self.poll_step(|watch, deadline| Poll::Ready(watch.wait_next(deadline)));
        match step {
            Poll::Ready(next) => next,
            Poll::Pending => unreachable!("a blocking wait is always ready"),
        }
    }
}

impl<O> MapUnordered<'_, O> {
    /// As [`Map::done`](crate::Map::done).
    pub fn done(&self) -> usize {
        self.source.done()
    }

    /// As [`Map::in_flight`](crate::Map::in_flight).
    pub fn in_flight(&self) -> usize {
        self.source.in_flight()
    }
}

impl<O> Drop for MapUnordered<'_, O> {
    fn drop(&mut self) {
        cancel_all(self.chunks.values());
    }
}

/// The results of a [`MapUnordered`] as a [`Stream`]: what
/// [`MapUnordered::into_stream`] returns.
///
/// ```
/// # use loky::{ProcessPoolExecutor, Task};
/// # const SQUARE: Task<i64, i64> = Task::new("square");
/// # // Runs where LOKY_WORKER names a worker program (`cargo xtask test` sets it).
/// # if std::env::var_os("LOKY_WORKER").is_none() { return Ok(()); }
/// # let ex = ProcessPoolExecutor::new(2)?;
/// # futures_executor::block_on(async {
/// let mut squares = ex.map_unordered(SQUARE, 0..1000).chunksize(10).into_stream();
/// while let Some((i, square)) = squares.next().await {
///     assert_eq!(square?, (i * i) as i64);
/// }
/// # Ok::<(), loky::Error>(())
/// # })?;
/// # Ok::<(), loky::Error>(())
/// ```
#[must_use = "a stream does nothing unless polled"]
pub struct MapUnorderedStream<'a, O> {
    map: MapUnordered<'a, O>,
    alarm: Option<Alarm>,
}

// Nothing in it is ever pinned: the stream polls through `&mut`.
impl<O> Unpin for MapUnorderedStream<'_, O> {}

impl<O> fmt::Debug for MapUnorderedStream<'_, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapUnorderedStream")
            .field("map", &self.map)
            .finish()
    }
}

impl<O: DeserializeOwned> MapUnorderedStream<'_, O> {
    /// The next pair: as `StreamExt::next`, without needing the trait.
    pub async fn next(&mut self) -> Option<(usize, Result<O>)> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// See [`Map::done`](crate::Map::done).
    pub fn done(&self) -> usize {
        self.map.done()
    }

    /// See [`Map::in_flight`](crate::Map::in_flight).
    pub fn in_flight(&self) -> usize {
        self.map.in_flight()
    }
}

impl<O: DeserializeOwned> Stream for MapUnorderedStream<'_, O> {
    type Item = (usize, Result<O>);

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let alarm = &mut this.alarm;
        let next = this.map.poll_step(|watch, deadline| {
            if let Poll::Ready(next) = watch.poll_next(cx) {
                return Poll::Ready(Ok(next));
            }
            let Some(deadline) = deadline else {
                return Poll::Pending;
            };
            if Instant::now() >= deadline {
                return Poll::Ready(Err(TimedOut));
            }
            match alarm {
                Some(alarm) => alarm.update(cx.waker()),
                None => *alarm = Some(Alarm::new(deadline, cx.waker())),
            }
            Poll::Pending
        });
        if next.is_ready() && this.map.finished {
            this.alarm = None;
        }
        next
    }
}
