//! One call on its way through the pool: queued as a [`WorkItem`], then
//! [`InFlight`] on a worker until its reply settles the future. A call runs
//! a [`Target`]: a task named in the worker, or a function of this program.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::{Duration, Instant};

use loky_proto::shm::{EncodedFrame, FrameBuf};
use loky_proto::{CallError, CallKind, FnRef, FrameError, Hello, Outcome, PanicInfo, Signature};

use crate::error::{Error, RemoteError, SerializationError, UnknownTask};
use crate::future::{FutureState, RawOutput, Settled};
use crate::output::{OutputBytes, ReplyFrame};
use crate::pool_thread;
use crate::program::stale_note;

/// What a call runs: a task registered by name in the worker, or a function
/// of this program (sent only to workers of this very program build).
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Task(Signature),
    Function {
        /// Named by its type, `fn(I) -> O`, with `I` and `O`.
        sig: Signature,
        /// Shared by the calls of one `map`.
        function: Arc<FnRef>,
    },
}

impl Target {
    /// The name (the task's, or the function's type) and the types.
    pub(crate) fn signature(&self) -> Signature {
        match self {
            Target::Task(sig) | Target::Function { sig, .. } => *sig,
        }
    }

    /// Appends the frame of call `id` to `out`, its arguments written by
    /// `encode_args`.
    fn encode_frame<E>(
        &self,
        id: u64,
        kind: CallKind,
        out: &mut FrameBuf,
        max: usize,
        encode_args: impl FnOnce(&mut FrameBuf) -> Result<(), E>,
    ) -> Result<Result<(), E>, FrameError> {
        match self {
            Target::Task(sig) => {
                loky_proto::encode_call_frame(id, sig.name, kind, out, max, encode_args)
            }
            Target::Function { function, .. } => {
                loky_proto::encode_fn_call_frame(id, function, kind, out, max, encode_args)
            }
        }
    }
}

/// How a pool encodes its calls' frames: as its workers' channels take
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// Bytes only, for any channel: shared buffers travel as bytes.
    Plain,
    /// For workers on this machine (a Unix socket): a frame whose body
    /// exceeds `threshold` bytes goes in a sealed memory file, and shared
    /// buffers as descriptors.
    Local { threshold: usize },
}

impl Encoding {
    /// A buffer for one call's frame, in `spare`'s memory.
    fn buffer(self, spare: Vec<u8>) -> FrameBuf {
        match self {
            Encoding::Plain => FrameBuf::plain_in(spare),
            Encoding::Local { threshold } => FrameBuf::local_in(threshold, spare),
        }
    }
}

thread_local! {
    /// The memory this thread encodes its calls' frames in: a small frame
    /// is copied out of it, in place in its shared handle, so one
    /// allocation per call holds the frame. (Taken while in use: a call
    /// made while encoding another, by a `Serialize` impl, makes its own.)
    static SPARE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Spare memory kept for the next frame: more is given back.
const KEEP_SPARE: usize = 4 << 10;

/// A submitted call waiting for a worker.
pub(crate) struct WorkItem {
    pub(crate) future: Arc<FutureState>,
    pub(crate) sig: Signature,
    /// The function of this program it runs, if it is not a named task.
    pub(crate) function: Option<Arc<FnRef>>,
    /// Unique within the pool; echoed by the worker's reply.
    pub(crate) id: u64,
    /// The whole frame of the call, encoded on the submitting thread; kept
    /// until the reply so the call can be sent again to a replacement
    /// worker.
    pub(crate) frame: Arc<EncodedFrame>,
    /// One argument, or a `map` chunk of them.
    pub(crate) kind: CallKind,
    /// Kill the worker if the call runs longer than this.
    pub(crate) timeout: Option<Duration>,
    /// The worker initializer, not a user call.
    pub(crate) initializer: bool,
}

impl WorkItem {
    /// A call of `target` numbered `id` whose arguments `encode_args` writes
    /// straight into the call's frame, as `encoding` says (large arguments
    /// are never copied; for a local worker they go straight into shared
    /// memory).
    pub(crate) fn new<E: std::error::Error + Send + Sync + 'static>(
        future: Arc<FutureState>,
        target: &Target,
        kind: CallKind,
        id: u64,
        (encoding, max_frame): (Encoding, usize),
        encode_args: impl FnOnce(&mut FrameBuf) -> Result<(), E>,
    ) -> Result<WorkItem, Error> {
        let sig = target.signature();
        let mut frame = encoding.buffer(SPARE.take());
        let encoded = target.encode_frame(id, kind, &mut frame, max_frame, encode_args);
        let failed = match encoded {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(SerializationError::new(sig.name, "encode the arguments", e)),
            Err(e) => Some(SerializationError::new(sig.name, "send the arguments", e)),
        };
        if let Some(err) = failed {
            return Err(Error::Serialization(err));
        }
        let encoded = Arc::new(frame.take_frame());
        let spare = frame.into_spare();
        if spare.capacity() <= KEEP_SPARE {
            SPARE.set(spare);
        }
        Ok(WorkItem {
            future,
            sig,
            function: match target {
                Target::Task(_) => None,
                Target::Function { function, .. } => Some(function.clone()),
            },
            id,
            frame: encoded,
            kind,
            timeout: None,
            initializer: false,
        })
    }
}

impl WorkItem {
    /// What this call runs, to make another call of it.
    pub(crate) fn target(&self) -> Target {
        match &self.function {
            None => Target::Task(self.sig),
            Some(function) => Target::Function {
                sig: self.sig,
                function: function.clone(),
            },
        }
    }
}

/// Every future resolves: a call dropped before its future was settled
/// (only a panic unwinding through the pool's own code does that) fails.
/// On a pool thread that panics, it fails once the thread's guard has
/// marked the pool broken (see [`take_orphans`]), so that whoever sees the
/// failure and submits again is refused.
impl Drop for WorkItem {
    fn drop(&mut self) {
        if self.future.is_done() {
            return;
        }
        if std::thread::panicking() && pool_thread::is_pool_thread() {
            ORPHANS.with(|o| o.borrow_mut().push(self.future.clone()));
            return;
        }
        let reason = pool_thread::internal_error(
            pool_thread::current_role(),
            None,
            "a call was dropped before its end",
        );
        self.future.settle(Err(Error::broken(reason)));
    }
}

thread_local! {
    static ORPHANS: RefCell<Vec<Arc<FutureState>>> = const { RefCell::new(Vec::new()) };
}

/// The futures of the calls a panic of this thread dropped unsettled: its
/// guard fails them once the pool is marked broken.
pub(crate) fn take_orphans() -> Vec<Arc<FutureState>> {
    ORPHANS.with(|o| std::mem::take(&mut *o.borrow_mut()))
}

/// A call sent to a worker and not answered yet.
pub(crate) struct InFlight {
    pub(crate) item: WorkItem,
    pub(crate) sent: Instant,
    /// How many calls its worker could hold when it was sent (1: its task
    /// was not known to be short; nothing may queue behind it).
    pub(crate) depth: usize,
}

#[cfg(test)]
impl InFlight {
    /// A call `id` of a task `t` taking and giving `()`, sent now, its
    /// worker able to hold `depth` calls.
    pub(crate) fn of_unit_task(id: u64, depth: usize) -> InFlight {
        let task: loky_proto::Task<(), ()> = loky_proto::Task::new("t");
        let item = WorkItem::new(
            FutureState::new("t", None),
            &Target::Task(task.signature()),
            CallKind::Single,
            id,
            (Encoding::Plain, loky_proto::DEFAULT_MAX_FRAME),
            |out| loky_proto::encode_payload_into(&(), out),
        )
        .expect("encodes");
        InFlight {
            item,
            sent: Instant::now(),
            depth,
        }
    }
}

/// What the reader knows of the worker, to word errors.
pub(crate) struct WorkerInfo {
    pub(crate) pid: u32,
    pub(crate) program: String,
    pub(crate) tasks: Vec<String>,
    /// Said of a value that fails to decode: the worker runs another build
    /// of the program, which may be out of date.
    pub(crate) stale_note: Option<Arc<str>>,
}

impl WorkerInfo {
    /// What the hello of worker `pid` tells.
    pub(crate) fn new(pid: u32, hello: &Hello) -> WorkerInfo {
        WorkerInfo {
            pid,
            program: hello.program.clone(),
            tasks: hello.tasks.iter().map(|t| t.name.clone()).collect(),
            stale_note: stale_note(&hello.identity, &hello.program).map(Arc::from),
        }
    }
}

/// Turns a worker's outcome for `item`, which came in `frame`, into the
/// future's result.
pub(crate) fn settle_outcome(
    item: &WorkItem,
    outcome: Outcome<'_>,
    worker: &WorkerInfo,
    frame: &ReplyFrame,
) -> Settled {
    match outcome {
        Outcome::Value(bytes) => Ok(Arc::new(RawOutput::Value(frame.output(bytes)))),
        Outcome::Items(items) => Ok(Arc::new(RawOutput::Items(item_results(
            item, items, worker, frame,
        )))),
        Outcome::Panic(info) => Err(panicked(item, info, worker)),
        Outcome::Failed(err) => Err(failed(item, err, worker)),
    }
}

/// The results of the items of the chunk call `item`, which came in
/// `frame`.
pub(crate) fn item_results(
    item: &WorkItem,
    items: Vec<Outcome<'_>>,
    worker: &WorkerInfo,
    frame: &ReplyFrame,
) -> Vec<Result<OutputBytes, Error>> {
    items
        .into_iter()
        .map(|item_outcome| match item_outcome {
            Outcome::Value(bytes) => Ok(frame.output(bytes)),
            Outcome::Items(_) => Err(protocol_error(item, "a nested chunk in a chunk reply")),
            Outcome::Panic(info) => Err(panicked(item, info, worker)),
            Outcome::Failed(err) => Err(failed(item, err, worker)),
        })
        .collect()
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
            let mut error = SerializationError::new(item.sig.name, "run the call", err);
            if let Some(note) = &worker.stale_note {
                error.message = format!("{}; {note}", error.message);
            }
            Error::Serialization(error)
        }
        err @ CallError::Function { .. } => {
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
    Error::Serialization(SerializationError::described(
        item.sig.name,
        "read the reply",
        what,
    ))
}

#[cfg(test)]
mod tests {
    use loky_proto::{SharedBytes, Task};

    use super::*;

    /// A call of `(shared, bytes)` encoded as `encoding` says.
    fn encoded(encoding: Encoding, shared: &SharedBytes, bytes: &[u8]) -> Arc<EncodedFrame> {
        let task: Task<(SharedBytes, Vec<u8>), ()> = Task::new("t");
        let future = FutureState::new("t", None);
        let item = WorkItem::new(
            future.clone(),
            &Target::Task(task.signature()),
            CallKind::Single,
            1,
            (encoding, loky_proto::DEFAULT_MAX_FRAME),
            |out| loky_proto::encode_payload_into(&(shared, bytes), out),
        )
        .expect("encodes");
        future.settle(Err(Error::Cancelled));
        item.frame.clone()
    }

    #[test]
    fn only_a_pool_of_local_workers_makes_frames_with_descriptors() {
        let shared = SharedBytes::from(vec![1u8; 1 << 20]);
        assert!(shared.is_shared());
        let large = vec![2u8; 2 << 20];
        // Workers reached otherwise (over TCP): every byte in the frame,
        // the shared buffer and the large body included.
        match &*encoded(Encoding::Plain, &shared, &large) {
            EncodedFrame::Bytes(bytes) => assert!(bytes.len() > 3 << 20),
            EncodedFrame::Descriptors(_) => panic!("descriptors for a plain pool"),
        }
        let local = Encoding::Local { threshold: 1 << 20 };
        match &*encoded(local, &shared, &large) {
            EncodedFrame::Descriptors(frame) => {
                assert!(frame.body_in_shared_memory());
                assert_eq!(frame.descriptors(), 2, "the body and the shared buffer");
            }
            EncodedFrame::Bytes(_) => panic!("no descriptor for a local pool"),
        }
        // Under the threshold, only the shared buffer travels aside.
        match &*encoded(local, &shared, &large[..100]) {
            EncodedFrame::Descriptors(frame) => {
                assert!(!frame.body_in_shared_memory());
                assert_eq!(frame.descriptors(), 1);
            }
            EncodedFrame::Bytes(_) => panic!("the shared buffer went as bytes"),
        }
    }
}
