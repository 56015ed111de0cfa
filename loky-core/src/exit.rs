//! How a worker process ended, written the way loky writes it.

use std::fmt;

/// The end of a worker process: an exit code or a signal, or, for a worker
/// on another machine, the loss of its connection before its end was known.
///
/// Displayed as loky does: `EXIT(3)` for an exit code, `SIGSEGV(-11)` for a
/// signal; `LOST(...)` for a lost worker.
///
/// ```
/// use loky::WorkerExit;
/// assert_eq!(WorkerExit::Code(3).to_string(), "EXIT(3)");
/// assert_eq!(WorkerExit::Signal(11).to_string(), "SIGSEGV(-11)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WorkerExit {
    /// The process exited with this code.
    Code(i32),
    /// The process was killed by this signal number.
    Signal(i32),
    /// A worker started by a launcher (feature `remote`) whose executor
    /// lost it before learning how it ended: its machine, the network to it
    /// or its agent failed. The worker exits on its own when it loses its
    /// executor.
    Lost(WorkerLost),
}

/// How an executor lost a worker on another machine; see
/// [`WorkerExit::Lost`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WorkerLost {
    /// Its connection ended or failed without its agent closing it: the
    /// agent was killed, or its machine or the network failed in a way that
    /// reached this one.
    ConnectionLost,
    /// Nothing came from it for its heartbeat timeout: its machine, or
    /// the network to it, went silent.
    HeartbeatsStopped,
}

impl fmt::Display for WorkerLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkerLost::ConnectionLost => f.write_str("connection lost"),
            WorkerLost::HeartbeatsStopped => f.write_str("heartbeats stopped"),
        }
    }
}

impl WorkerExit {
    /// The exit code, if the process exited.
    pub fn code(self) -> Option<i32> {
        match self {
            WorkerExit::Code(code) => Some(code),
            WorkerExit::Signal(_) | WorkerExit::Lost(_) => None,
        }
    }

    /// The signal number, if a signal killed the process.
    pub fn signal(self) -> Option<i32> {
        match self {
            WorkerExit::Signal(sig) => Some(sig),
            WorkerExit::Code(_) | WorkerExit::Lost(_) => None,
        }
    }

    /// How the executor lost the worker, if it did.
    pub fn lost(self) -> Option<WorkerLost> {
        match self {
            WorkerExit::Lost(lost) => Some(lost),
            WorkerExit::Code(_) | WorkerExit::Signal(_) => None,
        }
    }

    pub(crate) fn from_status(status: std::process::ExitStatus) -> WorkerExit {
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            if let Some(sig) = status.signal() {
                return WorkerExit::Signal(sig);
            }
        }
        WorkerExit::Code(status.code().unwrap_or(-1))
    }
}

impl fmt::Display for WorkerExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WorkerExit::Code(code) => write!(f, "EXIT({code})"),
            WorkerExit::Signal(sig) => match signal_name(sig) {
                Some(name) => write!(f, "{name}(-{sig})"),
                None => write!(f, "SIGNAL(-{sig})"),
            },
            WorkerExit::Lost(lost) => write!(f, "LOST({lost})"),
        }
    }
}

/// The conventional name of a signal number on this platform.
pub(crate) fn signal_name(sig: i32) -> Option<&'static str> {
    #[cfg(unix)]
    {
        let names: &[(i32, &str)] = &[
            (libc::SIGHUP, "SIGHUP"),
            (libc::SIGINT, "SIGINT"),
            (libc::SIGQUIT, "SIGQUIT"),
            (libc::SIGILL, "SIGILL"),
            (libc::SIGTRAP, "SIGTRAP"),
            (libc::SIGABRT, "SIGABRT"),
            (libc::SIGBUS, "SIGBUS"),
            (libc::SIGFPE, "SIGFPE"),
            (libc::SIGKILL, "SIGKILL"),
            (libc::SIGUSR1, "SIGUSR1"),
            (libc::SIGSEGV, "SIGSEGV"),
            (libc::SIGUSR2, "SIGUSR2"),
            (libc::SIGPIPE, "SIGPIPE"),
            (libc::SIGALRM, "SIGALRM"),
            (libc::SIGTERM, "SIGTERM"),
            (libc::SIGXCPU, "SIGXCPU"),
            (libc::SIGXFSZ, "SIGXFSZ"),
            (libc::SIGSYS, "SIGSYS"),
        ];
        names.iter().find(|(n, _)| *n == sig).map(|(_, name)| *name)
    }
    #[cfg(not(unix))]
    {
        let _ = sig;
        None
    }
}
