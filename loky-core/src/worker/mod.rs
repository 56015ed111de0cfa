//! How the supervisor starts and reaches workers: the seam between its
//! state machine and the operating system.
//!
//! Two small traits, seen from the supervisor:
//!
//! - [`Launcher`] starts a worker and hands back its [`WorkerHandle`]. From
//!   then on everything the supervisor learns of that worker (its hello, its
//!   replies, its wish to leave, its death) arrives as
//!   [`Event`](crate::events::Event)s on the pool's one channel, and the
//!   calls it holds are in its [`Link`](crate::link::Link), which the
//!   supervisor creates and shares with whoever reads the worker's replies.
//! - [`WorkerHandle`] is what the supervisor may do to a started worker:
//!   send it a frame, end its input (it then leaves), stop it (politely or
//!   not), and release it once it is reported dead.
//!
//! The supervisor's unit tests drive it through a fake of both (no process,
//! no thread). The real launcher is [`local`]: `posix_spawn`, a socketpair
//! on fd 3, a pidfd, a process group. It runs each worker's reader and
//! writer threads from [`io`], which are written against a third trait,
//! [`Transport`](io::Transport): a byte channel plus the worker's process
//! (or whatever stands for it). A new way to reach workers (say over TCP,
//! started by a cluster's launcher) implements `Transport` for its
//! connection, and a `Launcher` that starts the worker, builds the transport
//! and calls [`io::start`]: the supervisor does not change.
//!
//! Frames that pass file descriptors (large payloads in sealed shared
//! memory, shared buffers, sent with `SCM_RIGHTS`) are a capability of the
//! way workers are reached, not of the supervisor: a launcher says how its
//! pool encodes calls ([`Launcher::encoding`]), and only the local
//! launcher asks for frames with descriptors. Such a frame
//! ([`DescriptorFrame`](loky_proto::shm::DescriptorFrame)) can only be
//! sent on a Unix socket, which only a local transport has
//! ([`Transport::local_socket`](io::Transport::local_socket)); a TCP
//! transport moves bytes, and its pool's frames are bytes.

use std::sync::Arc;

use crossbeam_channel::Sender;
use loky_proto::shm::EncodedFrame;

use crate::call::{Encoding, InFlight};
use crate::error::Error;
use crate::events::{Event, WorkerId};
use crate::exit::WorkerExit;
use crate::link::Link;

pub(crate) mod io;
pub(crate) mod local;
mod spawner;

/// How to stop a worker (and everything it started).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Ask it to stop (`SIGTERM`); it may clean up during the grace period.
    Term,
    /// Stop it now (`SIGKILL`).
    Kill,
}

/// Starts workers for a pool.
pub(crate) trait Launcher: Send {
    /// How the pool encodes calls for the workers this launcher starts:
    /// plain bytes unless they take descriptors.
    fn encoding(&self) -> Encoding {
        Encoding::Plain
    }

    /// Whether the workers it starts share this machine's cores: a pool
    /// none of whose workers said hello then starts one alone (see
    /// `Supervisor::top_up`).
    fn starts_here(&self) -> bool {
        false
    }

    /// Called once the pool is done, every worker reported dead and
    /// released: whatever the launcher still does for them (freeing what
    /// is left of them) is done, and what it holds for new workers (a
    /// listener) freed, when this returns.
    fn finish(&mut self) {}

    /// Starts worker `worker`: news of it arrive on `events`, replies settle
    /// the calls recorded in `link`. An error means no worker was started
    /// (nothing to release, no event will come).
    fn launch(
        &mut self,
        worker: WorkerId,
        link: Arc<Link>,
        events: Sender<Event>,
    ) -> Result<Box<dyn WorkerHandle>, Error>;
}

/// What the supervisor may do to a started worker. No method blocks.
pub(crate) trait WorkerHandle: Send {
    /// The worker's process id, for messages and `worker_pids`; 0 while it
    /// is not known (a worker started by a launcher, before its hello).
    fn pid(&self) -> u32;

    /// Sends one frame (a call). Frames arrive in the order sent; a frame
    /// sent after [`close`](Self::close) is dropped.
    fn send(&mut self, frame: Arc<EncodedFrame>);

    /// Ends the worker's input once every frame sent is written: the worker
    /// leaves when it reads that end.
    fn close(&mut self);

    /// Whether [`close`](Self::close) was called.
    fn is_closed(&self) -> bool;

    /// Stops the worker and whatever it started; does nothing once it is
    /// reaped (a signal must never reach a reused pid).
    fn stop(&self, how: Stop);

    /// Frees what is left of a worker reported dead (or never started):
    /// disconnects its channel so that nothing a peer does can block a
    /// thread of it, then joins those threads.
    fn release(self: Box<Self>);

    /// Where the worker runs, for one started through a launcher command
    /// (for messages); `None` for the executor's own child processes.
    fn whereabouts(&self) -> Option<Whereabouts> {
        None
    }

    /// The worker's input as callers may share it, once the worker is
    /// started: the supervisor then sends through it too, so that the
    /// calls of both reach the worker in the order of its link. `None`
    /// (the default) where only the supervisor sends.
    fn port(&self) -> Option<Arc<dyn Port>> {
        None
    }
}

/// A worker's input, shared by the supervisor and the callers that send
/// their calls themselves (see `supervisor/direct.rs`).
pub(crate) trait Port: Send + Sync {
    /// Records `call` in `link` and sends its frame, as one step with
    /// respect to every other send through this port: the order of the
    /// link is the order on the channel, whichever thread sends. Once the
    /// input is closed, it only records the call (the worker's end then
    /// settles it).
    ///
    /// `recorded` runs once the call is in the link, before its frame is
    /// written: a caller lets go there of what it held to record it (the
    /// record of free workers), which the reader of the reply, which may
    /// come before the write returns, takes.
    fn send(&self, link: &Link, call: InFlight, recorded: &mut dyn FnMut());

    /// Records and sends `calls`, in order, as [`send`](Self::send) does
    /// each; a port may write their frames together.
    fn send_all(&self, link: &Link, calls: Vec<InFlight>);
}

/// Where a worker started through a launcher command runs, as far as its
/// executor knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Whereabouts {
    /// The host it runs on; `None` until it connected back.
    pub(crate) host: Option<String>,
    /// The launcher command that started it.
    pub(crate) launcher: String,
    /// The launcher's process id (on this machine).
    pub(crate) launcher_pid: u32,
    /// How the launcher process ended, once it has.
    pub(crate) launcher_exit: Option<WorkerExit>,
}
