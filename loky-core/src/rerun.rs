//! A `map` chunk whose worker died running it (under
//! `CrashPolicy::Respawn`) or was killed for an item's deadline: the items
//! its worker reported done keep their results; the others are run again,
//! one call each, so that only an item that crashes or times out on its
//! own fails, with its own error. The chunk's future settles once every
//! item has a result.
//!
//! The supervisor calls [`after_death`] for the call a dead worker was
//! running; nothing else of the supervision changes.

use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};

use loky_proto::shm::EncodedFrame;
use loky_proto::{CallKind, HEADER_LEN, Request, decode_body, split_array};

use crate::call::WorkItem;
use crate::error::{ChunkItem, Error, Result};
use crate::future::{FutureState, RawOutput};
use crate::output::OutputBytes;

/// What became of the running call of a dead worker.
pub(crate) enum AfterDeath {
    /// Settled (failed with the error, or a chunk with its items' results).
    Settled,
    /// Items of the chunk to queue first, one call each.
    Rerun(Vec<WorkItem>),
}

/// The running call `item` of a dead worker failed with `err`: a single
/// call fails; a chunk keeps the results reported and runs the other items
/// again, each a call that `single` makes of the item's encoded input (or
/// fails its one unfinished item).
pub(crate) fn after_death(
    item: WorkItem,
    err: Error,
    mut single: impl FnMut(&WorkItem, &[u8]) -> Result<WorkItem>,
) -> AfterDeath {
    let Some(inputs) = chunk_inputs(&item.frame) else {
        item.future.settle(Err(err));
        return AfterDeath::Settled;
    };
    let mut results: Vec<Option<Result<OutputBytes>>> =
        item.future.take_partial().into_iter().map(Some).collect();
    results.truncate(inputs.len());
    let left = inputs.len() - results.len();
    if left <= 1 {
        // The one item without a result was running: it failed on its own.
        let err = name_item(err, results.len(), inputs.len());
        results.extend((0..left).map(|_| Some(Err(err.clone()))));
        settle(&item.future, results);
        return AfterDeath::Settled;
    }
    let mut calls = Vec::with_capacity(left);
    for input in &inputs[results.len()..] {
        match single(&item, input) {
            Ok(call) => calls.push(call),
            Err(e) => {
                // It fitted in the chunk's frame: it fits in its own.
                item.future.settle(Err(e));
                return AfterDeath::Settled;
            }
        }
    }
    let first = results.len();
    results.resize_with(inputs.len(), || None);
    let futures: Vec<Arc<FutureState>> = calls.iter().map(|c| c.future.clone()).collect();
    let assembly = Arc::new(Assembly {
        state: Mutex::new(Parts {
            results,
            left,
            chunk: Some(item),
        }),
    });
    for (i, future) in futures.iter().enumerate() {
        let waker = Waker::from(Arc::new(Part {
            index: first + i,
            future: future.clone(),
            assembly: assembly.clone(),
        }));
        future.wake_when_done(&waker);
    }
    AfterDeath::Rerun(calls)
}

/// The encoded inputs of `frame`'s call if it is a chunk of several, its
/// body sent as bytes or in a memory file (read back). A chunk with shared
/// buffers among its inputs (which its items' bytes name by their place in
/// the frame) is not split: it fails whole.
fn chunk_inputs(frame: &EncodedFrame) -> Option<Vec<Vec<u8>>> {
    let spilled;
    let body = match frame {
        EncodedFrame::Bytes(frame) => frame.get(HEADER_LEN..)?,
        EncodedFrame::Descriptors(frame) => {
            spilled = frame.spilled_body()?.ok()?;
            &spilled[..]
        }
    };
    let (kind, args) = match decode_body::<Request<'_>>(body).ok()? {
        Request::Call(call) => (call.kind, call.args),
        Request::CallFn(call) => (call.kind, call.args),
    };
    if kind != CallKind::Chunk {
        return None;
    }
    let items = split_array(&args)?;
    (items.len() > 1).then(|| items.into_iter().map(<[u8]>::to_vec).collect())
}

/// `err`, naming the item of the chunk that was running when it happened.
fn name_item(err: Error, finished: usize, len: usize) -> Error {
    match err {
        Error::TerminatedWorker(mut dead) => {
            dead.item = Some(ChunkItem::new(finished, len));
            Error::TerminatedWorker(dead)
        }
        other => other,
    }
}

/// Names, in a crash that breaks the pool, the item of the chunk `item`
/// that was running: the first one its worker had not reported done.
pub(crate) fn name_running_item(item: &WorkItem, err: Error) -> Error {
    match chunk_inputs(&item.frame) {
        Some(inputs) => {
            let finished = item.future.take_partial().len().min(inputs.len());
            name_item(err, finished, inputs.len())
        }
        None => err,
    }
}

fn settle(chunk: &FutureState, results: Vec<Option<Result<OutputBytes>>>) {
    let items = results
        .into_iter()
        .map(|r| r.expect("every item has its result"))
        .collect();
    chunk.settle(Ok(Arc::new(RawOutput::Items(items))));
}

/// The results of a chunk, gathered as its items' own calls end.
struct Assembly {
    state: Mutex<Parts>,
}

struct Parts {
    results: Vec<Option<Result<OutputBytes>>>,
    left: usize,
    /// The chunk's call, kept until its future settles: dropping an
    /// unsettled call fails its future.
    chunk: Option<WorkItem>,
}

/// Wakes when the call of one item ends.
struct Part {
    index: usize,
    future: Arc<FutureState>,
    assembly: Arc<Assembly>,
}

impl Wake for Part {
    fn wake(self: Arc<Self>) {
        let result = match self.future.wait(None) {
            Ok(raw) => match &*raw {
                RawOutput::Value(bytes) => Ok(bytes.clone()),
                RawOutput::Items(_) => Err(Error::broken("a chunk reply for a single call")),
            },
            Err(err) => Err(err),
        };
        let done = {
            let mut parts = self
                .assembly
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            parts.results[self.index] = Some(result);
            parts.left -= 1;
            if parts.left > 0 {
                return;
            }
            let results = std::mem::take(&mut parts.results);
            parts.chunk.take().map(|chunk| (chunk, results))
        };
        if let Some((chunk, results)) = done {
            settle(&chunk.future, results);
        }
    }
}
