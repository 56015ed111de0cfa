//! Connect-back mode (feature `remote`): the worker program started by a
//! launcher on another machine.
//!
//! Started with [`CONNECT_BACK_ARG`] first, the program does not serve
//! itself: it becomes the worker's *agent* on this machine. It reads its
//! launch ticket from standard input, dials and authenticates to the
//! executor, starts the same program as an ordinary local worker of its
//! own (the worker's memory limit, process group and channel work as they
//! do under a local executor), and relays that worker's channel over the
//! TLS link, with heartbeats both ways.
//!
//! - The worker's exit status goes back to the executor, so a crash reads
//!   as it would on the executor's machine; the agent then exits with the
//!   worker's code (128 + the signal for a signal), which the launcher
//!   reports.
//! - When the agent loses its executor (the connection ends or fails, or
//!   nothing arrives for the heartbeat timeout), it kills the worker's
//!   process group, prints one line on stderr and exits with
//!   [`exit_code::NO_EXECUTOR`]: a parent-death signal does not cross
//!   machines. The worker dies with the agent, too (its parent-death
//!   signal), should the agent itself be killed.
//! - A ticket that does not arrive, or an executor that cannot be reached
//!   or refuses the ticket, ends the agent the same way, before any worker
//!   starts.

mod agent;

use loky_proto::exit_code;
use loky_proto::remote::CONNECT_BACK_ARG;

/// Whether this process was started in connect-back mode.
pub(crate) fn requested() -> bool {
    std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == CONNECT_BACK_ARG)
}

/// Runs the agent if this process was started in connect-back mode, and
/// then never returns; returns at once otherwise.
pub(crate) fn serve_if_requested() {
    if !requested() {
        return;
    }
    let code = match agent::run() {
        Ok(code) => code,
        Err(message) => {
            eprintln!("loky-worker: {message}");
            exit_code::NO_EXECUTOR
        }
    };
    std::process::exit(code)
}
