//! Workers on other machines (feature `remote`): the launcher, the
//! listener that admits connect-back workers, and starting a launcher
//! command with its ticket.
//!
//! How a remote worker comes to be, seen from the executor:
//!
//! 1. the supervisor asks the `Listener` to expect a launch
//!    (`Listener::expect`), which issues the launch's credentials and
//!    returns its [`Ticket`](loky_proto::remote::Ticket);
//! 2. it starts the launcher command (`launch::launcher_command`, `launch::start`),
//!    which gets the ticket on its standard input;
//! 3. the command starts the worker program in connect-back mode, here or
//!    elsewhere; the program dials back and authenticates, and the
//!    listener hands the launch an `Arrival`: the worker's channel (a
//!    local socket, relayed over TLS), the relay's handle (signals, exit
//!    status, how the link ended) and the host the worker runs on.

#[cfg_attr(
    not(test),
    expect(dead_code, reason = "the supervisor starts remote workers next")
)]
mod launch;
mod launcher;
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "the supervisor starts remote workers next")
)]
mod listener;

pub use launcher::{Launcher, LauncherError};
