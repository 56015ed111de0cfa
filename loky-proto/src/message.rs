//! The messages parent and worker exchange, one per frame.
//!
//! Parent to worker: [`Request`]. Worker to parent: [`Response`], starting
//! with exactly one [`Hello`]. Payloads (task arguments and outputs) are
//! MessagePack values encoded by the side that knows their type and carried
//! here as opaque bytes, borrowed from the frame when decoding.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::function::FnRef;
use crate::program::ProgramId;
use crate::task::Signature;
use crate::typename::same_type_name;

/// Version of this protocol; a worker speaking another one is refused.
/// Version 2 added descriptor frames on local channels; version 3,
/// progress reports of long chunks; version 4, the program identity in the
/// hello and calls of functions.
pub const PROTOCOL_VERSION: u32 = 4;

/// The first message of every worker: who it is and what it can run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The worker's [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The worker's process id.
    pub pid: u32,
    /// The worker program, as the worker sees itself (for messages).
    pub program: String,
    /// The identity of the worker's program build: the parent sends
    /// functions only to workers of its own identity.
    pub identity: ProgramId,
    /// Every task the worker has registered.
    pub tasks: Vec<TaskInfo>,
}

/// One entry of a worker's task table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskInfo {
    /// The registered name.
    pub name: String,
    /// The argument type name.
    pub input: String,
    /// The output type name.
    pub output: String,
}

impl From<Signature> for TaskInfo {
    fn from(sig: Signature) -> Self {
        TaskInfo {
            name: sig.name.to_owned(),
            input: sig.input.to_owned(),
            output: sig.output.to_owned(),
        }
    }
}

impl TaskInfo {
    /// Whether `sig` names this task with the same argument and output
    /// types. Type names are compared without the crate name that starts
    /// each path (see [`without_crate_names`](crate::without_crate_names)),
    /// so that a task module compiled into two binaries matches itself.
    pub fn matches(&self, sig: &Signature) -> bool {
        self.name == sig.name
            && same_type_name(&self.input, sig.input)
            && same_type_name(&self.output, sig.output)
    }
}

/// A message from the parent to a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request<'a> {
    /// Run a task.
    #[serde(borrow)]
    Call(Call<'a>),
    /// Run a function of the worker's program (which is the parent's).
    #[serde(borrow)]
    CallFn(FnCall<'a>),
}

/// How a call's argument bytes are to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallKind {
    /// The bytes are one argument; the reply is one outcome.
    Single,
    /// The bytes are a sequence of arguments (a `map` chunk); the reply is
    /// the sequence of outputs, or one outcome per item if any item failed.
    Chunk,
}

/// Run the task `task` on `args`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call<'a> {
    /// Chosen by the parent; echoed in the [`Reply`].
    pub id: u64,
    /// The registered task name.
    #[serde(borrow)]
    pub task: Cow<'a, str>,
    /// One argument or a chunk of them.
    pub kind: CallKind,
    /// The MessagePack-encoded argument(s).
    #[serde(with = "serde_bytes", borrow)]
    pub args: Cow<'a, [u8]>,
}

/// Run the function `function` on `args`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FnCall<'a> {
    /// Chosen by the parent; echoed in the [`Reply`].
    pub id: u64,
    /// The function, as the parent's program names it.
    pub function: FnRef,
    /// One argument or a chunk of them.
    pub kind: CallKind,
    /// The MessagePack-encoded argument(s).
    #[serde(with = "serde_bytes", borrow)]
    pub args: Cow<'a, [u8]>,
}

/// A message from a worker to its parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response<'a> {
    /// Sent once, first.
    Hello(Hello),
    /// The outcome of a call. Replies come in the order of the calls.
    #[serde(borrow)]
    Reply(Reply<'a>),
    /// Items of the running chunk call done so far, sent while it runs
    /// long, before its [`Reply`] (which still carries every item): should
    /// the worker die before the reply, these results are kept.
    #[serde(borrow)]
    Progress(Progress<'a>),
    /// The worker wants to leave on purpose once its calls are answered: the
    /// parent stops sending it work and closes the channel, and the worker
    /// exit that follows is not a crash.
    Retiring(RetireReason),
}

/// The outcome of call `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply<'a> {
    /// The id of the [`Call`].
    pub id: u64,
    /// What became of it.
    #[serde(borrow)]
    pub outcome: Outcome<'a>,
}

/// Items of the chunk call `id` done since its previous [`Progress`]
/// (from its first item, for the first one), in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress<'a> {
    /// The id of the [`Call`], which is running.
    pub id: u64,
    /// One outcome per item, as in [`Outcome::Items`].
    #[serde(borrow)]
    pub items: Vec<Outcome<'a>>,
}

/// What became of a call, or of one item of a chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome<'a> {
    /// The MessagePack-encoded output (for a chunk: the sequence of outputs).
    #[serde(with = "serde_bytes", borrow)]
    Value(Cow<'a, [u8]>),
    /// A chunk in which some item failed: one outcome per item, in order.
    #[serde(borrow)]
    Items(Vec<Outcome<'a>>),
    /// The task panicked; the worker lives on.
    Panic(PanicInfo),
    /// The call could not be run; the worker lives on.
    Failed(CallError),
}

impl Outcome<'_> {
    /// The same outcome, owning its bytes.
    pub fn into_owned(self) -> Outcome<'static> {
        match self {
            Outcome::Value(bytes) => Outcome::Value(Cow::Owned(bytes.into_owned())),
            Outcome::Items(items) => {
                Outcome::Items(items.into_iter().map(Outcome::into_owned).collect())
            }
            Outcome::Panic(info) => Outcome::Panic(info),
            Outcome::Failed(err) => Outcome::Failed(err),
        }
    }
}

/// A panic inside a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PanicInfo {
    /// The panic message.
    pub message: String,
    /// Where it panicked (`file:line:column`), if known.
    pub location: Option<String>,
    /// The worker thread's backtrace at the panic.
    pub backtrace: String,
}

/// Why a worker could not run a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CallError {
    /// No task of that name is registered in the worker.
    #[error("task `{task}` is not registered in the worker")]
    UnknownTask {
        /// The requested name.
        task: String,
    },
    /// The argument bytes did not decode as the registered argument type.
    #[error("the worker could not decode the arguments of `{task}` as {expected}: {message}")]
    DecodeArgs {
        /// The task name.
        task: String,
        /// The registered argument type.
        expected: String,
        /// The decoder's message.
        message: String,
    },
    /// The output could not be encoded.
    #[error("the worker could not encode the output of `{task}`: {message}")]
    EncodeOutput {
        /// The task name.
        task: String,
        /// The encoder's message.
        message: String,
    },
    /// The worker refused a function reference (not made by its own
    /// program, or not pointing into its code); nothing was called.
    #[error("the worker refused to run the function: {message}")]
    Function {
        /// Why.
        message: String,
    },
}

/// Why a worker leaves on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RetireReason {
    /// Its resident memory grew past the leak threshold since its first task.
    MemoryLeak {
        /// Resident memory after its first task, in bytes.
        baseline: u64,
        /// Resident memory now, in bytes.
        current: u64,
    },
}
