//! What the supervisor reacts to: one channel of [`Event`]s from callers
//! (submissions, shutdown, kills) and from each worker's threads (hello,
//! replies, retirement, death).

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use loky_proto::{FrameError, Hello, RetireReason};

use crate::call::WorkItem;
use crate::config::Shutdown;
use crate::error::Error;
use crate::exit::WorkerExit;
use crate::future::FutureState;
use crate::link::UnexpectedReply;
use crate::pool_thread::Role;

/// Identifies a worker within its pool (pids can be reused; these are not).
pub(crate) type WorkerId = u64;

/// Calls submitted together: one on its own (as `submit` sends when no
/// worker is free, with no vector allocated for it), or several in order.
pub(crate) enum Calls {
    One(WorkItem),
    Many(Vec<WorkItem>),
}

impl Calls {
    pub(crate) fn len(&self) -> usize {
        match self {
            Calls::One(_) => 1,
            Calls::Many(items) => items.len(),
        }
    }
}

impl IntoIterator for Calls {
    type Item = WorkItem;
    type IntoIter = std::iter::Chain<std::option::IntoIter<WorkItem>, std::vec::IntoIter<WorkItem>>;

    fn into_iter(self) -> Self::IntoIter {
        let (one, many) = match self {
            Calls::One(item) => (Some(item), Vec::new()),
            Calls::Many(items) => (None, items),
        };
        one.into_iter().chain(many)
    }
}

/// What the supervisor reacts to.
pub(crate) enum Event {
    /// Calls to run, in order.
    Submit(Calls),
    /// A worker's process started (its pid is known); its hello is to
    /// come.
    Spawned { worker: WorkerId },
    /// A worker could not be started: nothing is left of it.
    LaunchFailed { worker: WorkerId, error: Error },
    /// A worker sent its hello.
    Ready { worker: WorkerId, hello: Hello },
    /// A worker never became ready; it is reaped.
    StartFailed {
        worker: WorkerId,
        failure: StartFailure,
        exit: WorkerExit,
    },
    /// A worker answered `replies` calls.
    Completed { worker: WorkerId, replies: usize },
    /// A worker asked to leave.
    Retiring {
        worker: WorkerId,
        reason: RetireReason,
    },
    /// A worker is dead, or said which signal it is dying of: how it
    /// ended is known. Its reader reaps it next, then sends [`Reaped`].
    ///
    /// [`Reaped`]: Event::Reaped
    Died {
        worker: WorkerId,
        exit: WorkerExit,
        end: End,
    },
    /// The reader of a dead worker reaped it and is ending: the worker's
    /// handle can be released without waiting.
    Reaped { worker: WorkerId },
    /// A runtime thread of a worker panicked (a bug); the reader's own
    /// panics arrive as [`End::Internal`] instead.
    ThreadPanicked {
        worker: WorkerId,
        role: Role,
        message: String,
    },
    /// `shutdown` was called.
    Shutdown(Shutdown),
    /// `max_workers` changed.
    Resize(usize),
    /// `Future::kill` on a running future.
    Kill(Arc<FutureState>),
}

/// Why a worker never became ready.
#[derive(Debug)]
pub(crate) enum StartFailure {
    /// Its channel ended before its hello: it died, or is no worker.
    Died,
    /// No hello within the start timeout.
    NoHello(Duration),
    /// Its first message was not a valid hello.
    NotAWorker(FrameError),
    /// It speaks another protocol version.
    Protocol { theirs: u32, ours: u32 },
    /// Its first message was another message than a hello.
    NoHelloFirst,
    /// Its channel, or the wait for it, failed.
    Channel(io::Error),
    /// The reader thread panicked (a bug).
    Internal(String),
}

impl fmt::Display for StartFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartFailure::Died => f.write_str(
                "it closed its channel before its hello: it is not a loky worker program, or \
                 it failed at start-up",
            ),
            StartFailure::NoHello(timeout) => write!(
                f,
                "it sent no hello within {timeout:?}: it is not a loky worker program"
            ),
            StartFailure::NotAWorker(err) => write!(
                f,
                "its first message was not a hello ({}): it is not a loky worker program",
                crate::error::chain(err)
            ),
            StartFailure::Protocol { theirs, ours } => write!(
                f,
                "it speaks protocol version {theirs}, this executor speaks version {ours}"
            ),
            StartFailure::NoHelloFirst => f.write_str("its first message was not a hello"),
            StartFailure::Channel(err) => write!(f, "its channel failed: {err}"),
            StartFailure::Internal(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for StartFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartFailure::NotAWorker(err) => Some(err),
            StartFailure::Channel(err) => Some(err),
            _ => None,
        }
    }
}

/// Why a worker's reader stopped reading after the hello.
pub(crate) enum End {
    /// The channel ended: the worker left or died.
    Closed,
    /// The process exited (its channel may live on in a process it forked).
    Exited,
    /// It broke the protocol (or its channel failed): a broken worker.
    Protocol(LinkError),
    /// The reader thread panicked (a bug of loky-rs), with the futures of
    /// the calls the panic dropped.
    Internal {
        reason: String,
        orphans: Vec<Arc<FutureState>>,
    },
}

/// How a worker broke the protocol after its hello.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    /// A frame that does not decode, or is too large.
    #[error(transparent)]
    Frame(FrameError),
    /// A reply for a call that is not the one running.
    #[error(transparent)]
    Reply(UnexpectedReply),
    /// A second hello.
    #[error("it sent a second hello")]
    SecondHello,
    /// Its channel failed.
    #[error("its channel failed: {0}")]
    Channel(#[source] io::Error),
    /// The wait on its channel or process failed.
    #[error("could not watch the worker: {0}")]
    Watch(#[source] io::Error),
}
