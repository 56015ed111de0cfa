//! One call on its way through the pool: queued as a [`WorkItem`], then
//! [`InFlight`] on a worker until its reply settles the future.

use std::sync::Arc;
use std::time::{Duration, Instant};

use loky_proto::{CallError, CallKind, Outcome, PanicInfo, Signature};

use crate::error::{Error, RemoteError, SerializationError, UnknownTask};
use crate::future::{Core, Payload, Settled};

/// A submitted call waiting for a worker.
pub(crate) struct WorkItem {
    pub(crate) core: Arc<Core>,
    pub(crate) sig: Signature,
    /// Unique within the pool; echoed by the worker's reply.
    pub(crate) id: u64,
    /// The whole frame of the call, encoded on the submitting thread; kept
    /// until the reply so the call can be sent again to a replacement
    /// worker.
    pub(crate) frame: Arc<Vec<u8>>,
    /// Kill the worker if the call runs longer than this.
    pub(crate) timeout: Option<Duration>,
    /// The future was already set running (the call is being sent again
    /// after its worker was replaced).
    pub(crate) resent: bool,
    /// The worker initializer, not a user call.
    pub(crate) initializer: bool,
}

impl WorkItem {
    /// A call of `sig` numbered `id` whose arguments `encode_args` writes
    /// straight into the call's frame (large arguments are never copied).
    pub(crate) fn new<E: std::fmt::Display>(
        core: Arc<Core>,
        sig: Signature,
        kind: CallKind,
        id: u64,
        max_frame: usize,
        encode_args: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<WorkItem, Error> {
        let serialization =
            |what, e: &dyn std::fmt::Display| SerializationError::new(sig.name, what, e);
        let mut frame = Vec::new();
        match loky_proto::encode_call_frame(id, sig.name, kind, &mut frame, max_frame, encode_args)
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(Error::Serialization(serialization(
                    "encode the arguments",
                    &e,
                )));
            }
            Err(e) => {
                return Err(Error::Serialization(serialization(
                    "send the arguments",
                    &e,
                )));
            }
        }
        Ok(WorkItem {
            core,
            sig,
            id,
            frame: Arc::new(frame),
            timeout: None,
            resent: false,
            initializer: false,
        })
    }
}

/// A call sent to a worker and not answered yet.
pub(crate) struct InFlight {
    pub(crate) item: WorkItem,
    pub(crate) sent: Instant,
}

/// What the reader knows of the worker, to word errors.
pub(crate) struct WorkerInfo {
    pub(crate) pid: u32,
    pub(crate) program: String,
    pub(crate) tasks: Vec<String>,
}

/// Turns a worker's outcome for `item` into the future's result.
pub(crate) fn settle_outcome(
    item: &WorkItem,
    outcome: Outcome<'_>,
    worker: &WorkerInfo,
) -> Settled {
    match outcome {
        Outcome::Value(bytes) => Ok(Arc::new(Payload::Value(bytes.into_owned()))),
        Outcome::Items(items) => Ok(Arc::new(Payload::Items(
            items
                .into_iter()
                .map(|item_outcome| match item_outcome {
                    Outcome::Value(bytes) => Ok(bytes.into_owned()),
                    Outcome::Items(_) => {
                        Err(protocol_error(item, "a nested chunk in a chunk reply"))
                    }
                    Outcome::Panic(info) => Err(panicked(item, info, worker)),
                    Outcome::Failed(err) => Err(failed(item, err, worker)),
                })
                .collect(),
        ))),
        Outcome::Panic(info) => Err(panicked(item, info, worker)),
        Outcome::Failed(err) => Err(failed(item, err, worker)),
    }
}

fn panicked(item: &WorkItem, info: PanicInfo, worker: &WorkerInfo) -> Error {
    Error::Task(RemoteError {
        task: item.sig.name.to_owned(),
        pid: worker.pid,
        message: info.message,
        location: info.location,
        backtrace: info.backtrace,
    })
}

fn failed(item: &WorkItem, err: CallError, worker: &WorkerInfo) -> Error {
    match err {
        CallError::UnknownTask { task } => Error::UnknownTask(UnknownTask {
            task,
            program: worker.program.clone(),
            known: worker.tasks.clone(),
        }),
        err @ CallError::DecodeArgs { .. } => {
            Error::Serialization(SerializationError::new(item.sig.name, "run the call", err))
        }
        err @ CallError::EncodeOutput { .. } => Error::Serialization(SerializationError::new(
            item.sig.name,
            "return the result",
            err,
        )),
    }
}

fn protocol_error(item: &WorkItem, what: &str) -> Error {
    Error::Serialization(SerializationError::new(
        item.sig.name,
        "read the reply",
        what,
    ))
}
