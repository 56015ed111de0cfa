//! Unix: spawning workers with a private channel on fd 3, watching their
//! exit with a pidfd, and signalling their process groups.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use loky_proto::env;

/// A started worker process and the parent's end of its channel.
pub(crate) struct SpawnedWorker {
    pub(crate) child: Child,
    pub(crate) channel: UnixStream,
    /// A descriptor that becomes readable when the process exits, where the
    /// kernel has pidfds.
    pub(crate) pidfd: Option<OwnedFd>,
}

/// Starts `command` as a worker: its channel end as fd 3, stdin from
/// `/dev/null`, in its own process group, `SIGTERM` on the death of the
/// spawning thread, and an address-space limit if `memory_limit` is set.
///
/// Call from a thread that lives as long as the workers it starts: the
/// parent-death signal fires when that thread ends.
pub(crate) fn spawn_worker(
    mut command: Command,
    memory_limit: Option<u64>,
) -> io::Result<SpawnedWorker> {
    let (parent_end, child_end) = UnixStream::pair()?;
    let child_fd = child_end.as_raw_fd();
    let parent_pid = std::process::id();
    command
        .env(
            env::CHANNEL,
            env::channel_value(env::CHANNEL_FD_NUMBER, parent_pid),
        )
        .stdin(Stdio::null())
        .process_group(0);
    // SAFETY: the closure runs in the forked child before exec and only calls
    // async-signal-safe functions (dup2, fcntl, prctl, getppid, setrlimit);
    // it allocates nothing and touches no lock.
    unsafe {
        command.pre_exec(move || prepare_child(child_fd, parent_pid, memory_limit));
    }
    let child = command.spawn()?;
    drop(child_end);
    let pidfd = pidfd_open(child.id());
    Ok(SpawnedWorker {
        child,
        channel: parent_end,
        pidfd,
    })
}

/// Runs in the child between fork and exec.
fn prepare_child(child_fd: RawFd, parent_pid: u32, memory_limit: Option<u64>) -> io::Result<()> {
    let target = env::CHANNEL_FD_NUMBER;
    // SAFETY: plain syscalls on descriptors this child owns.
    unsafe {
        if child_fd == target {
            let flags = libc::fcntl(target, libc::F_GETFD);
            if flags < 0 || libc::fcntl(target, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(io::Error::last_os_error());
            }
        } else if libc::dup2(child_fd, target) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number only.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // The parent may have died before the death signal was armed.
    // SAFETY: getppid cannot fail.
    if unsafe { libc::getppid() } as u32 != parent_pid {
        // No allocation here (we are between fork and exec): a plain errno.
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    if let Some(limit) = memory_limit {
        let rlim = libc::rlimit {
            rlim_cur: limit as libc::rlim_t,
            rlim_max: limit as libc::rlim_t,
        };
        // SAFETY: rlim is a valid rlimit for the duration of the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_AS, &rlim) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // (or -1); the child is not reaped yet, so the pid is still ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd is a fresh descriptor we own. pidfd_open sets CLOEXEC.
    Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

#[cfg(not(target_os = "linux"))]
fn pidfd_open(_pid: u32) -> Option<OwnedFd> {
    None
}

/// What became readable in [`poll_channel`].
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Readiness {
    /// The channel has data, or reached its end.
    pub(crate) channel: bool,
    /// The process exited.
    pub(crate) exited: bool,
}

/// Waits until the channel is readable, the process exits, or `timeout`
/// passes (`None`: no limit).
pub(crate) fn poll_channel(
    channel: &UnixStream,
    pidfd: Option<&OwnedFd>,
    timeout: Option<Duration>,
) -> io::Result<Readiness> {
    let mut fds = [
        libc::pollfd {
            fd: channel.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: pidfd.map_or(-1, |fd| fd.as_raw_fd()),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let timeout_ms = timeout.map_or(-1, |t| {
        // Round up so that a short timeout does not become a busy loop.
        let ms = t.as_nanos().div_ceil(1_000_000);
        ms.min(i32::MAX as u128) as i32
    });
    loop {
        // SAFETY: fds is a valid array of two pollfd for the whole call; a
        // negative fd is ignored by poll.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if n >= 0 {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    let ready =
        |fd: &libc::pollfd| fd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0;
    Ok(Readiness {
        channel: ready(&fds[0]),
        exited: ready(&fds[1]),
    })
}

/// Sends `signal` to the process group `pgid` (the worker and whatever its
/// tasks started). Errors (the group is gone) are ignored.
pub(crate) fn signal_group(pgid: u32, signal: i32) {
    // SAFETY: kill with a negative pid signals a process group; the group
    // leader is our unreaped child, so the group id cannot have been reused.
    unsafe {
        libc::kill(-(pgid as libc::pid_t), signal);
    }
}

/// Writes as much of `bytes` as the socket takes without blocking; returns
/// how many bytes it took (0 when full or failed: the writer thread then
/// sends them, or finds the worker gone).
pub(crate) fn send_nonblocking(channel: &UnixStream, bytes: &[u8]) -> usize {
    let mut sent = 0;
    while sent < bytes.len() {
        let rest = &bytes[sent..];
        // SAFETY: rest is a valid buffer of rest.len() bytes for the whole
        // call; MSG_DONTWAIT makes this one call non-blocking without
        // changing the descriptor's flags, which other threads share.
        let n = unsafe {
            libc::send(
                channel.as_raw_fd(),
                rest.as_ptr().cast(),
                rest.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n > 0 {
            sent += n as usize;
        } else if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        } else {
            break;
        }
    }
    sent
}

/// `SIGKILL`.
pub(crate) const SIGKILL: i32 = libc::SIGKILL;
/// `SIGTERM`.
pub(crate) const SIGTERM: i32 = libc::SIGTERM;
