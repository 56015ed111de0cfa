//! Process groups and signals: what std does not offer. All of xtask's
//! `unsafe` is here.
//!
//! Each step runs in a process group of its own, so that a step past its
//! deadline can be stopped with everything it started (cargo, rustc, test
//! binaries). A step's group is not the terminal's foreground group, so
//! xtask forwards the terminal's interrupt (and SIGTERM, SIGHUP) to it
//! before dying of the signal itself: Ctrl-C still stops everything.

use std::io;
use std::sync::Once;
use std::sync::atomic::{AtomicI32, Ordering};

/// The process group of the step running now, 0 when none: where the
/// signal handler forwards what xtask receives.
static RUNNING_GROUP: AtomicI32 = AtomicI32::new(0);

/// Records `pgid` as the group to forward signals to (0: none), installing
/// the forwarding handler on first use.
pub(crate) fn set_running_group(pgid: u32) {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(install_forwarding);
    RUNNING_GROUP.store(i32::try_from(pgid).unwrap_or(0), Ordering::SeqCst);
}

/// Sends `signal` to every process of group `pgid`; a group with no
/// process left is not an error.
pub(crate) fn signal_group(pgid: u32, signal: i32) -> io::Result<()> {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    // SAFETY: kill takes plain integers and touches no memory of ours; a
    // negative pid names the process group.
    let rc = unsafe { libc::kill(-pgid, signal) };
    if rc == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(error)
    }
}

/// Whether child `pid` has exited, without reaping it: while it is a
/// zombie its pid, which is also its group's id, cannot be reused, so the
/// group can still be signalled safely.
pub(crate) fn has_exited(pid: u32) -> io::Result<bool> {
    let id: libc::id_t = pid;
    // SAFETY: an all-zero siginfo_t is a valid value of this plain C struct.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable siginfo_t for the whole call;
    // WNOWAIT leaves the child waitable for std's `Child::wait`.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            id,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: waitid filled `info`; si_pid is 0 when the child has not
    // exited yet (WNOHANG).
    Ok(unsafe { info.si_pid() } != 0)
}

/// The signals xtask forwards to the running step before dying of them.
const FORWARDED: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

fn install_forwarding() {
    for signal in FORWARDED {
        // SAFETY: `forward` only calls async-signal-safe functions (kill,
        // signal, raise) and reads an atomic; the handler value is a valid
        // `extern "C" fn(c_int)` for the whole life of the process.
        unsafe { libc::signal(signal, forward as *const () as libc::sighandler_t) };
    }
}

extern "C" fn forward(signal: libc::c_int) {
    let pgid = RUNNING_GROUP.load(Ordering::SeqCst);
    // SAFETY: kill, signal and raise are async-signal-safe and take plain
    // integers. With the default disposition restored, raise ends xtask
    // the way the signal would have without the handler.
    unsafe {
        if pgid > 0 {
            libc::kill(-pgid, signal);
        }
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}
