//! What `map` and `map_unordered` share: their settings, the inputs
//! encoded one at a time as chunks are made, the chunks submitted (all at
//! once, or a few ahead of the consumer with a buffer size), and the
//! results of a chunk decoded item by item.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use loky_proto::CallKind;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::call::Target;
use crate::codec;
use crate::completions::Completions;
use crate::deadline;
use crate::error::{Error, Result, SerializationError};
use crate::future::{FutureState, RawOutput, Settled, decode_output};
use crate::options::CallOptions;
use crate::supervisor::PoolHandle;

/// The settings of a map, as its builder methods set them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) chunksize: usize,
    /// From the `map` call to the last result.
    pub(crate) timeout: Option<Duration>,
    /// Chunks submitted ahead of the consumer; all of them if `None`.
    pub(crate) buffersize: Option<usize>,
    /// Per item, as for `submit_with`.
    pub(crate) options: CallOptions,
    pub(crate) called: Instant,
}

impl Settings {
    pub(crate) fn new() -> Settings {
        Settings {
            chunksize: 1,
            timeout: None,
            buffersize: None,
            options: CallOptions::new(),
            called: Instant::now(),
        }
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.timeout.and_then(|t| deadline::after(self.called, t))
    }

    /// The error every map yields first if a setting is out of range.
    pub(crate) fn check(&self) -> Result<()> {
        if self.chunksize == 0 {
            return Err(Error::InvalidArgument(
                "chunksize must be greater than 0".to_owned(),
            ));
        }
        if self.buffersize == Some(0) {
            return Err(Error::InvalidArgument(
                "buffersize must be greater than 0".to_owned(),
            ));
        }
        Ok(())
    }

    /// How many chunks to submit at once.
    pub(crate) fn batch(&self) -> usize {
        self.buffersize.unwrap_or(usize::MAX)
    }
}

/// Encodes up to `n` next inputs into a buffer, back to back; how many it
/// took, and those that could not be encoded (by position, not in the
/// buffer). One call per chunk: the inputs' type is erased once per chunk,
/// not once per input.
type EncodeChunk<'a> =
    Box<dyn FnMut(&mut Vec<u8>, usize, &mut Vec<(usize, Error)>) -> usize + Send + 'a>;

/// Consecutive inputs sent as one call.
pub(crate) struct Chunk {
    /// The index of its first input among all inputs.
    pub(crate) first: usize,
    pub(crate) len: usize,
    /// `None` when no input of the chunk could be sent.
    pub(crate) future: Option<Arc<FutureState>>,
    /// Inputs that failed before any call, by position within the chunk.
    pub(crate) failed: Vec<(usize, Error)>,
}

impl Chunk {
    /// How many of its items were sent.
    pub(crate) fn sent(&self) -> usize {
        if self.future.is_some() {
            self.len - self.failed.len()
        } else {
            0
        }
    }
}

/// What both kinds of map keep of their inputs: the feeder and the
/// settings, the chunks' calls watched for completion, and the counts
/// behind `done` and `in_flight`.
pub(crate) struct Source<'a> {
    pub(crate) feeder: Feeder<'a>,
    pub(crate) settings: Settings,
    /// The chunks' calls, each under its chunk's number.
    pub(crate) watch: Completions,
    /// Chunks made so far.
    made: usize,
    /// Items that failed before they could be sent.
    unsent_done: usize,
    /// Items sent.
    sent: usize,
}

impl<'a> Source<'a> {
    /// The inputs of `feeder`, their calls watched by `watch`.
    pub(crate) fn new(feeder: Feeder<'a>, watch: Completions) -> Source<'a> {
        Source {
            feeder,
            settings: Settings::new(),
            watch,
            made: 0,
            unsent_done: 0,
            sent: 0,
        }
    }

    /// Items with their result: done in a worker, or failed unsent.
    pub(crate) fn done(&self) -> usize {
        self.unsent_done + self.watch.done()
    }

    /// Items sent and without a result.
    pub(crate) fn in_flight(&self) -> usize {
        self.sent - self.watch.done()
    }

    /// Makes and submits up to `room` more chunks (none once the inputs
    /// are all taken), each with its number; their calls are watched.
    pub(crate) fn submit(&mut self, room: usize) -> impl Iterator<Item = (usize, Chunk)> + '_ {
        let chunks = if room == 0 || self.feeder.finished() {
            Vec::new()
        } else {
            self.feeder.feed(room, &self.settings)
        };
        chunks.into_iter().map(move |chunk| {
            let number = self.made;
            self.made += 1;
            if let Some(future) = &chunk.future {
                self.sent += chunk.sent();
                self.watch.watch(number, chunk.sent(), future);
            }
            self.unsent_done += chunk.len - chunk.sent();
            (number, chunk)
        })
    }

    /// The `Debug` output of the map `name` of these inputs.
    pub(crate) fn debug(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(name)
            .field("task", &self.feeder.task())
            .field("chunksize", &self.settings.chunksize)
            .field("timeout", &self.settings.timeout)
            .field("buffersize", &self.settings.buffersize)
            .field("done", &self.done())
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

/// Takes the inputs and makes chunks of them, submitted to the pool.
pub(crate) struct Feeder<'a> {
    pool: Arc<PoolHandle>,
    /// The task or function to run.
    target: Target,
    /// Every item fails with this instead of being sent (the function
    /// cannot be sent).
    refused: Option<Error>,
    encode_chunk: EncodeChunk<'a>,
    /// How many inputs were taken.
    taken: usize,
    /// No input is left, or the pool refused work: no more chunks.
    finished: bool,
    /// The encoded inputs of the chunk being made.
    scratch: Vec<u8>,
}

impl<'a> Feeder<'a> {
    pub(crate) fn new<I, It>(pool: Arc<PoolHandle>, target: Target, inputs: It) -> Feeder<'a>
    where
        I: Serialize,
        It: IntoIterator<Item = I>,
        It::IntoIter: Send + 'a,
    {
        let mut inputs = inputs.into_iter();
        let task = target.signature().name;
        let encode_chunk: EncodeChunk<'a> = Box::new(move |out, n, failed| {
            let mut taken = 0;
            for input in inputs.by_ref().take(n) {
                if let Err(e) = codec::encode_into(&input, out) {
                    let err = SerializationError::new(task, "encode the arguments", e);
                    failed.push((taken, Error::Serialization(err)));
                }
                taken += 1;
            }
            taken
        });
        Feeder {
            pool,
            target,
            refused: None,
            encode_chunk,
            taken: 0,
            finished: false,
            scratch: Vec::new(),
        }
    }

    pub(crate) fn task(&self) -> &'static str {
        self.target.signature().name
    }

    /// Makes every item fail with `err`, nothing being sent.
    pub(crate) fn refuse(&mut self, err: Error) {
        self.refused = Some(err);
    }

    /// Whether more chunks may come.
    pub(crate) fn finished(&self) -> bool {
        self.finished
    }

    /// Makes up to `max` chunks of `settings.chunksize` inputs and submits
    /// them: the first chunk as soon as it is made, then batches twice as
    /// large as the one before, so that workers start on the first chunks
    /// while the next are encoded, and a long map is still submitted in a
    /// few batches. If the pool refuses a batch, every item of it fails
    /// with its error and no input is taken after it; if the pool was
    /// closed before the first, every chunk up to `max` fails so.
    pub(crate) fn feed(&mut self, max: usize, settings: &Settings) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        let open = match &self.refused {
            Some(err) => Err(err.clone()),
            None => self.pool.check_open(),
        };
        if let Err(err) = open {
            while chunks.len() < max && !self.finished {
                match self.make_chunk(settings, false) {
                    Some((chunk, _)) => chunks.push(chunk),
                    None => self.finished = true,
                }
            }
            self.finished = true;
            refuse(&mut chunks, &err);
            return chunks;
        }
        let mut items = Vec::new();
        // Where the batch being made starts in `chunks`, and its size.
        let mut batch_start = 0;
        let mut batch = 1;
        while chunks.len() < max && !self.finished {
            match self.make_chunk(settings, true) {
                Some((chunk, item)) => {
                    items.extend(item);
                    chunks.push(chunk);
                }
                None => self.finished = true,
            }
            let full = chunks.len() - batch_start >= batch || chunks.len() == max;
            if !(full || self.finished) {
                continue;
            }
            // A batch none of whose inputs could be encoded has no call.
            if !items.is_empty()
                && let Err(err) = self.pool.submit(std::mem::take(&mut items))
            {
                self.finished = true;
                refuse(&mut chunks[batch_start..], &err);
            }
            batch_start = chunks.len();
            batch *= 2;
        }
        chunks
    }

    /// The next chunk and its call (none when no input could be encoded,
    /// or `prepare` is false); `None` when no input is left.
    fn make_chunk(
        &mut self,
        settings: &Settings,
        prepare: bool,
    ) -> Option<(Chunk, Option<crate::call::WorkItem>)> {
        let first = self.taken;
        self.scratch.clear();
        let mut failed = Vec::new();
        let len = (self.encode_chunk)(&mut self.scratch, settings.chunksize, &mut failed);
        if len == 0 {
            return None;
        }
        self.taken += len;
        let mut chunk = Chunk {
            first,
            len,
            future: None,
            failed,
        };
        let ok = len - chunk.failed.len();
        if ok == 0 || !prepare {
            return Some((chunk, None));
        }
        let inputs = &self.scratch;
        let prepared = self.pool.pool().prepare(
            &self.target,
            CallKind::Chunk,
            settings.options.timeout,
            |frame| {
                loky_proto::encode_array_header(ok, frame);
                frame.extend_from_slice(inputs);
                Ok::<_, std::convert::Infallible>(())
            },
        );
        match prepared {
            Ok(item) => {
                chunk.future = Some(item.future.clone());
                Some((chunk, Some(item)))
            }
            Err(err) => {
                // Too large a frame: each item of the chunk fails with it.
                let mut failed: Vec<_> = (0..len).map(|i| (i, err.clone())).collect();
                for (i, own) in chunk.failed.drain(..) {
                    failed[i].1 = own;
                }
                chunk.failed = failed;
                Some((chunk, None))
            }
        }
    }
}

/// Makes every item of `chunks` fail with `err`, none being sent.
fn refuse(chunks: &mut [Chunk], err: &Error) {
    for chunk in chunks {
        chunk.future = None;
        chunk.failed = (0..chunk.len).map(|i| (i, err.clone())).collect();
    }
}

/// Cancels the chunks that have not started.
pub(crate) fn cancel_all<'c>(chunks: impl Iterator<Item = &'c Chunk>) {
    for future in chunks.filter_map(|chunk| chunk.future.as_ref()) {
        future.cancel();
    }
}

/// The results of one chunk, yielded in order: in the common case its
/// decoded outputs as they are, with no per-item wrapping or copying.
pub(crate) enum Ready<O> {
    /// Every item succeeded.
    Values(std::vec::IntoIter<O>),
    /// One result per item.
    Results(std::vec::IntoIter<Result<O>>),
}

impl<O> Ready<O> {
    pub(crate) fn empty() -> Ready<O> {
        Ready::Values(Vec::new().into_iter())
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Ready::Values(values) => values.len(),
            Ready::Results(results) => results.len(),
        }
    }

    /// The next value of a chunk whose items all succeeded; `None` when
    /// there is none, or the results carry errors (then `next` yields
    /// them).
    #[inline]
    pub(crate) fn next_value(&mut self) -> Option<O> {
        match self {
            Ready::Values(values) => values.next(),
            Ready::Results(_) => None,
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

/// One result per input of `chunk`, from how its call was `settled`
/// (anything if it has no call).
pub(crate) fn results_of<O: DeserializeOwned>(
    task: &str,
    chunk: &Chunk,
    settled: Settled,
) -> Ready<O> {
    let sent = chunk.sent();
    let outputs: Vec<Result<O>> = match (&chunk.future, settled) {
        (None, _) => Vec::new(),
        (Some(_), Err(err)) => {
            let err = in_map(err, chunk, None);
            (0..sent).map(|_| Err(err.clone())).collect()
        }
        (Some(future), Ok(payload)) => match decode_chunk(future, &payload, sent) {
            values @ Ready::Values(_) if chunk.failed.is_empty() => return values,
            results => results.collect(),
        },
    };
    let mut outputs = outputs.into_iter();
    let mut failed = chunk.failed.iter().peekable();
    let results: Vec<Result<O>> = (0..chunk.len)
        .map(|i| match failed.next_if(|(pos, _)| *pos == i) {
            Some((_, err)) => Err(err.clone()),
            None => match outputs.next() {
                Some(Err(err)) => Err(in_map(err, chunk, Some(i))),
                Some(ok) => ok,
                None => Err(short_reply(task)),
            },
        })
        .collect();
    Ready::Results(results.into_iter())
}

/// `err` of the item at `at` of `chunk` (or of the whole chunk), saying
/// which input of the map it is about when a worker died.
fn in_map(err: Error, chunk: &Chunk, at: Option<usize>) -> Error {
    match err {
        Error::TerminatedWorker(mut dead) => {
            dead.in_map(chunk.first, at);
            Error::TerminatedWorker(dead)
        }
        other => other,
    }
}

fn decode_chunk<O: DeserializeOwned>(
    future: &FutureState,
    payload: &RawOutput,
    len: usize,
) -> Ready<O> {
    let results: Vec<Result<O>> = match payload {
        RawOutput::Value(bytes) => match bytes.decode_with(|b| decode_sequence(future, b, len)) {
            Ok(values) => return Ready::Values(values.into_iter()),
            Err(results) => results,
        },
        RawOutput::Items(items) => items
            .iter()
            .map(|item| match item {
                Ok(bytes) => bytes.decode_with(|b| decode_output(future, b)),
                Err(err) => Err(err.clone()),
            })
            .collect(),
    };
    Ready::Results(results.into_iter())
}

/// The `len` outputs of a chunk encoded as one sequence; if that fails, one
/// result per item.
fn decode_sequence<O: DeserializeOwned>(
    future: &FutureState,
    bytes: &[u8],
    len: usize,
) -> std::result::Result<Vec<O>, Vec<Result<O>>> {
    match decode_output::<Vec<O>>(future, bytes) {
        Ok(values) if values.len() == len => Ok(values),
        Ok(_) => Err((0..len).map(|_| Err(short_reply(future.task))).collect()),
        // Some output does not decode: decode them one by one, so that it
        // fails alone.
        Err(err) => Err(match loky_proto::split_array(bytes) {
            Some(items) if items.len() == len => items
                .into_iter()
                .map(|item| decode_output(future, item))
                .collect(),
            _ => (0..len).map(|_| Err(err.clone())).collect(),
        }),
    }
}

fn short_reply(task: &str) -> Error {
    Error::Serialization(SerializationError::described(
        task,
        "decode the result",
        "the worker returned another number of outputs than inputs",
    ))
}
