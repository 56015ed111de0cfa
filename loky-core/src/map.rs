//! `ProcessPoolExecutor::map`: ordered results of one task over many inputs,
//! sent in chunks.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use loky_proto::{CallKind, Signature, Task};

use crate::deadline;
use crate::error::{Error, Result, SerializationError};
use crate::future::{FutureState, RawOutput, decode_output};
use crate::supervisor::PoolHandle;

/// The iterator returned by
/// [`ProcessPoolExecutor::map`](crate::ProcessPoolExecutor::map): results in
/// input order, an error at the position of each item that failed.
///
/// Dropping it (or reaching its timeout) cancels the chunks that have not
/// started.
///
/// ```no_run
/// use std::time::Duration;
/// use loky_core::{ProcessPoolExecutor, Task};
///
/// const SQUARE: Task<i64, i64> = Task::new("square");
///
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
/// # Ok::<(), loky_core::Error>(())
/// ```
#[must_use = "a map does nothing until iterated"]
pub struct Map<O> {
    /// Keeps the pool open until the map is done.
    pool: Arc<PoolHandle>,
    sig: Signature,
    /// Every input, encoded back to back.
    encoded: Vec<u8>,
    /// End offset in `encoded` of each input (failed ones are empty).
    ends: Vec<usize>,
    /// Inputs that could not be encoded, by index.
    failed: VecDeque<(usize, Error)>,
    chunksize: usize,
    timeout: Option<Duration>,
    called: Instant,
    state: State<O>,
}

enum State<O> {
    Prepared,
    Running {
        chunks: VecDeque<Chunk>,
        ready: Ready<O>,
        deadline: Option<Instant>,
    },
    Done,
}

/// Consecutive inputs sent as one call.
struct Chunk {
    /// `None` when no input of the chunk could be encoded.
    future: Option<Arc<FutureState>>,
    /// Encoding failures, by position within the chunk.
    failed: Vec<(usize, Error)>,
    len: usize,
}

impl<O> fmt::Debug for Map<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Map")
            .field("task", &self.sig.name)
            .field("inputs", &self.ends.len())
            .field("chunksize", &self.chunksize)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<O: DeserializeOwned> Map<O> {
    pub(crate) fn new<I: Serialize>(
        pool: Arc<PoolHandle>,
        task: Task<I, O>,
        inputs: impl IntoIterator<Item = I>,
    ) -> Map<O> {
        let called = Instant::now();
        let mut encoded = Vec::new();
        let mut ends = Vec::new();
        let mut failed = VecDeque::new();
        for (i, input) in inputs.into_iter().enumerate() {
            let start = encoded.len();
            if let Err(e) = loky_proto::encode_payload_into(&input, &mut encoded) {
                encoded.truncate(start);
                failed.push_back((
                    i,
                    Error::Serialization(SerializationError::new(
                        task.name(),
                        "encode the arguments",
                        e,
                    )),
                ));
            }
            ends.push(encoded.len());
        }
        Map {
            pool,
            sig: task.signature(),
            encoded,
            ends,
            failed,
            chunksize: 1,
            timeout: None,
            called,
            state: State::Prepared,
        }
    }

    /// Sends the inputs `n` at a time (default 1); zero is an error.
    pub fn chunksize(mut self, n: usize) -> Self {
        self.chunksize = n;
        self
    }

    /// Stops waiting `timeout` after the `map` call: the next result is then
    /// `Err(Error::Timeout)` and iteration ends.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Submits every chunk.
    fn start(&mut self) -> State<O> {
        let deadline = self.timeout.and_then(|t| deadline::after(self.called, t));
        if self.chunksize == 0 {
            return State::Running {
                chunks: VecDeque::new(),
                ready: Ready::Results(
                    vec![Err(Error::InvalidArgument(
                        "chunksize must be greater than 0".to_owned(),
                    ))]
                    .into_iter(),
                ),
                deadline,
            };
        }
        match self.submit_chunks() {
            Ok(chunks) => State::Running {
                chunks,
                ready: Ready::Values(Vec::new().into_iter()),
                deadline,
            },
            Err(err) => State::Running {
                chunks: VecDeque::new(),
                ready: Ready::Results(
                    self.ends
                        .iter()
                        .map(|_| Err(err.clone()))
                        .collect::<Vec<_>>()
                        .into_iter(),
                ),
                deadline,
            },
        }
    }

    fn submit_chunks(&mut self) -> Result<VecDeque<Chunk>> {
        let pool = self.pool.pool().clone();
        pool.check_open()?;
        let mut chunks = VecDeque::new();
        let mut items = Vec::new();
        let count = self.ends.len();
        for first in (0..count).step_by(self.chunksize) {
            let last = (first + self.chunksize).min(count);
            let mut failed = Vec::new();
            while self.failed.front().is_some_and(|(i, _)| *i < last) {
                let (i, err) = self.failed.pop_front().expect("checked");
                failed.push((i - first, err));
            }
            let len = last - first;
            let ok = len - failed.len();
            let future = if ok == 0 {
                None
            } else {
                let start = if first == 0 { 0 } else { self.ends[first - 1] };
                let inputs = &self.encoded[start..self.ends[last - 1]];
                let item = pool.prepare(self.sig, CallKind::Chunk, None, |frame| {
                    loky_proto::encode_array_header(ok, frame);
                    frame.extend_from_slice(inputs);
                    Ok::<_, std::convert::Infallible>(())
                })?;
                let future = item.future.clone();
                items.push(item);
                Some(future)
            };
            chunks.push_back(Chunk {
                future,
                failed,
                len,
            });
        }
        self.encoded = Vec::new();
        pool.submit(items)?;
        Ok(chunks)
    }
}

impl<O: DeserializeOwned> Iterator for Map<O> {
    type Item = Result<O>;

    fn next(&mut self) -> Option<Result<O>> {
        loop {
            match &mut self.state {
                State::Prepared => self.state = self.start(),
                State::Done => return None,
                State::Running {
                    chunks,
                    ready,
                    deadline,
                } => {
                    if let Some(result) = ready.next() {
                        return Some(result);
                    }
                    let Some(chunk) = chunks.pop_front() else {
                        self.state = State::Done;
                        return None;
                    };
                    match results_of(self.sig.name, &chunk, *deadline) {
                        Ok(results) => *ready = results,
                        Err(_timeout) => {
                            cancel_all(std::iter::once(&chunk).chain(chunks.iter()));
                            self.state = State::Done;
                            return Some(Err(Error::Timeout));
                        }
                    }
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.state {
            State::Prepared => (self.ends.len(), Some(self.ends.len())),
            State::Running { chunks, ready, .. } => {
                let n = ready.len() + chunks.iter().map(|c| c.len).sum::<usize>();
                (0, Some(n.max(1)))
            }
            State::Done => (0, Some(0)),
        }
    }
}

/// The results of one chunk, yielded in order: in the common case its
/// decoded outputs as they are, with no per-item wrapping or copying.
enum Ready<O> {
    /// Every item succeeded.
    Values(std::vec::IntoIter<O>),
    /// One result per item.
    Results(std::vec::IntoIter<Result<O>>),
}

impl<O> Ready<O> {
    fn len(&self) -> usize {
        match self {
            Ready::Values(values) => values.len(),
            Ready::Results(results) => results.len(),
        }
    }
}

impl<O> Iterator for Ready<O> {
    type Item = Result<O>;

    fn next(&mut self) -> Option<Result<O>> {
        match self {
            Ready::Values(values) => values.next().map(Ok),
            Ready::Results(results) => results.next(),
        }
    }
}

/// Waits for `chunk` and returns one result per input. `Err(())` at the
/// deadline.
fn results_of<O: DeserializeOwned>(
    task: &str,
    chunk: &Chunk,
    deadline: Option<Instant>,
) -> std::result::Result<Ready<O>, ()> {
    let outputs: Vec<Result<O>> = match &chunk.future {
        None => Vec::new(),
        Some(future) => match future.wait(deadline) {
            Err(Error::Timeout) => return Err(()),
            Err(err) => (0..chunk.len - chunk.failed.len())
                .map(|_| Err(err.clone()))
                .collect(),
            Ok(payload) => match decode_chunk(task, &payload, chunk.len - chunk.failed.len()) {
                values @ Ready::Values(_) if chunk.failed.is_empty() => return Ok(values),
                results => results.collect(),
            },
        },
    };
    let mut outputs = outputs.into_iter();
    let mut failed = chunk.failed.iter().peekable();
    let results: Vec<Result<O>> = (0..chunk.len)
        .map(|i| match failed.next_if(|(pos, _)| *pos == i) {
            Some((_, err)) => Err(err.clone()),
            None => outputs.next().unwrap_or_else(|| Err(short_reply(task))),
        })
        .collect();
    Ok(Ready::Results(results.into_iter()))
}

fn decode_chunk<O: DeserializeOwned>(task: &str, payload: &RawOutput, len: usize) -> Ready<O> {
    let results: Vec<Result<O>> = match payload {
        RawOutput::Value(bytes) => match decode_output::<Vec<O>>(task, bytes) {
            Ok(values) if values.len() == len => return Ready::Values(values.into_iter()),
            Ok(_) => (0..len).map(|_| Err(short_reply(task))).collect(),
            // Some output does not decode: decode them one by one, so that
            // it fails alone.
            Err(err) => match loky_proto::split_array(bytes) {
                Some(items) if items.len() == len => items
                    .into_iter()
                    .map(|item| decode_output(task, item))
                    .collect(),
                _ => (0..len).map(|_| Err(err.clone())).collect(),
            },
        },
        RawOutput::Items(items) => items
            .iter()
            .map(|item| match item {
                Ok(bytes) => decode_output(task, bytes),
                Err(err) => Err(err.clone()),
            })
            .collect(),
    };
    Ready::Results(results.into_iter())
}

fn short_reply(task: &str) -> Error {
    Error::Serialization(SerializationError::described(
        task,
        "decode the result",
        "the worker returned another number of outputs than inputs",
    ))
}

/// Cancels the chunks that have not started.
fn cancel_all<'a>(chunks: impl Iterator<Item = &'a Chunk>) {
    for future in chunks.filter_map(|chunk| chunk.future.as_ref()) {
        future.cancel();
    }
}

impl<O> Drop for Map<O> {
    fn drop(&mut self) {
        if let State::Running { chunks, .. } = &self.state {
            cancel_all(chunks.iter());
        }
    }
}
