//! Workers on other machines (feature `remote`): what an executor and its
//! connect-back workers share.
//!
//! A launcher command (`srun`, `ssh`, any command) starts the worker program
//! with the argument [`CONNECT_BACK_ARG`]. The program then acts as the
//! worker's *agent* on that machine:
//!
//! 1. it reads its [`Ticket`] (the executor's addresses, the executor's
//!    certificate authority, a client certificate and key made for this
//!    launch alone) from its standard input;
//! 2. it dials the executor and authenticates with mutual TLS
//!    ([`connect`]): each side proves itself with a certificate of the
//!    executor's own [`Authority`], and the executor admits each launch's
//!    certificate once;
//! 3. it starts the worker as a local worker of its own (a process group,
//!    a private channel, the memory limit applied by the worker itself), and
//!    a [`Relay`] moves the frames between that channel and the TLS stream,
//!    with heartbeats both ways ([`link`]);
//! 4. when the worker exits, it reports the exit status ([`WorkerStatus`])
//!    and closes the link; when it loses its executor (the connection ends,
//!    or heartbeats stop), it kills the worker's process group and exits,
//!    since a parent-death signal does not cross machines.
//!
//! At the executor, a [`Relay`] does the same between the TLS stream and a
//! local socket, which the supervisor uses as the worker's channel.

mod authority;
mod connect;
pub mod link;
mod relay;
mod session;
mod ticket;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use authority::{Authority, CredentialError, Identity, client_config, server_name};
pub use connect::{ConnectError, Connected, connect};
pub use link::{Control, WorkerStatus};
pub use relay::{
    EndReason, Endpoint, ExecutorEnd, LinkEnd, Relay, RelayHandle, spawn_executor_relay,
};
pub use session::{HandshakeError, configure_socket, handshake, receive_control, send_control};
pub use ticket::{MAX_TICKET, TICKET_MAGIC, Ticket, TicketError};

/// The argument, first after the program, that tells a worker program it
/// was started by a launcher and must read a [`Ticket`] on its standard
/// input. It carries no secret.
pub const CONNECT_BACK_ARG: &str = "--loky-connect-back";

/// The name in the executor's certificate, checked by workers.
pub const SERVER_NAME: &str = "loky-executor";

/// How a link notices that its peer is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Liveness {
    /// Each side sends a heartbeat when it has sent nothing for this long.
    pub interval: Duration,
    /// A side that has received nothing for this long takes its peer for
    /// dead. Longer than `interval`.
    pub timeout: Duration,
}

impl Liveness {
    /// A heartbeat every second; a peer silent for five is dead.
    pub const DEFAULT: Liveness = Liveness {
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(5),
    };
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness::DEFAULT
    }
}
