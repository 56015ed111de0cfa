//! What the suite asks of the operating system: the descriptor table and
//! process table of `/proc`, and signals through pidfds (so a signal never
//! reaches a process that merely reuses a dead worker's pid). All of the
//! suite's `unsafe` is here.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count())
}

/// The state letter and parent pid of `pid`, if it exists.
pub fn stat(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// The command name of `pid`, if it exists.
pub fn comm(pid: u32) -> Option<String> {
    let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(name.trim_end().to_owned())
}

/// `(pid, state)` of every child of this process.
pub fn children() -> Vec<(u32, char)> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| match stat(pid) {
            Some((state, ppid)) if ppid == me => Some((pid, state)),
            _ => None,
        })
        .collect()
}

/// A handle on one process that stays with it even if its pid is reused.
#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
    pid: u32,
}

impl PidFd {
    /// A handle on the process that has `pid` now, if there is one.
    pub fn open(pid: u32) -> Option<PidFd> {
        let pid_t = libc::pid_t::try_from(pid).ok()?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new
        // descriptor or -1; it touches no memory of ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid_t, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns
        // (pidfd_open sets close-on-exec).
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        Some(PidFd { fd, pid })
    }

    /// The pid it was opened for.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `signal`; true if it was delivered to a live process.
    pub fn send(&self, signal: i32) -> bool {
        // SAFETY: pidfd_send_signal on a descriptor we own, with no siginfo
        // (a null pointer is allowed) and no flags.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        rc == 0
    }

    /// Waits up to `timeout` for the process to exit; true if it has.
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut fds = [libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            let ms = left.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
            // SAFETY: fds is a valid array of one pollfd for the whole call.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
            match rc {
                1.. => return true,
                0 if Instant::now() >= deadline => return false,
                0 => {}
                _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
                _ => return false,
            }
        }
    }
}

/// Points this process's stdout at `/dev/null`, so that children started
/// from now on do not hold the original stdout open.
pub fn detach_stdout() -> std::io::Result<()> {
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    // SAFETY: dup2 between two descriptors that are open (`null` lives
    // until the end of this function); it touches no memory of ours.
    if unsafe { libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `signal` to `pid` if it is a live child of this process; true if
/// it was sent. Safe against pid reuse: the pidfd is opened first, then the
/// pid is checked to be our child, so the signal goes to that process or,
/// if it died in between, nowhere.
pub fn signal_child(pid: u32, signal: i32) -> bool {
    let Some(handle) = PidFd::open(pid) else {
        return false;
    };
    let me = std::process::id();
    match stat(pid) {
        Some((state, ppid)) if ppid == me && state != 'Z' && state != 'X' => handle.send(signal),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_seen_signalled_and_waited_for() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(children().iter().any(|&(p, _)| p == pid));
        assert_eq!(comm(pid).as_deref(), Some("sleep"));
        let handle = PidFd::open(pid).unwrap();
        assert!(!handle.wait_exit(Duration::ZERO));
        assert!(signal_child(pid, libc::SIGKILL));
        assert!(handle.wait_exit(Duration::from_secs(10)));
        child.wait().unwrap();
        assert!(!signal_child(pid, libc::SIGKILL));
    }

    #[test]
    fn a_process_that_is_not_a_child_is_never_signalled() {
        assert!(!signal_child(1, 0));
        assert!(open_fds() > 0);
    }
}
