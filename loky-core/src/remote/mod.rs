//! Workers on other machines (feature `remote`): the launcher, the
//! listener that admits connect-back workers, and the supervisor's launcher
//! that starts them.
//!
//! How a remote worker comes to be, seen from the executor:
//!
//! 1. the supervisor launches worker `id` ([`RemoteLauncher`]): the
//!    `Listener` expects the launch (`Listener::expect`), which issues its
//!    credentials in a [`Ticket`](loky_proto::remote::Ticket) and makes its
//!    channel, a local socket pair;
//! 2. the launcher command starts (`launch::launcher_command`,
//!    `launch::start`), with the ticket on its standard input; the worker's
//!    reader and writer threads start on the executor's end of the channel,
//!    as for a local worker (`transport`);
//! 3. the command starts the worker program in connect-back mode, here or
//!    elsewhere; the program dials back and authenticates, and the
//!    listener joins the other end of the channel to the worker's TLS link
//!    with a relay, and hands the launch an `Arrival`: the relay's handle
//!    (signals, exit status, how the link ended) and the worker's host. The
//!    worker's hello is the first thing on the channel.

mod launch;
mod listener;
mod transport;
mod workers;

pub(crate) use workers::RemoteLauncher;
