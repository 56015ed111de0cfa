//! Unix: spawning workers with a private channel on fd 3, watching their
//! exit with a pidfd, and signalling their process groups.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use loky_proto::env;

/// A started worker process and the parent's end of its channel.
pub(crate) struct SpawnedWorker {
    pub(crate) process: Process,
    pub(crate) channel: UnixStream,
    /// A descriptor that becomes readable when the process exits, where the
    /// kernel has pidfds.
    pub(crate) pidfd: Option<OwnedFd>,
}

/// A worker process this crate started, in a process group of its own
/// whose id is its pid. Dropped before it was reaped, it is killed and
/// reaped: it never outlives its handle as a zombie.
#[derive(Debug)]
pub(crate) struct Process {
    pid: u32,
    /// Set once reaped; signals are sent under this lock, so that a signal
    /// never reaches a reused pid or group.
    reaped: Mutex<bool>,
}

impl Process {
    pub(crate) fn id(&self) -> u32 {
        self.pid
    }

    fn lock(&self) -> MutexGuard<'_, bool> {
        self.reaped.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `signal` to the process and to the group it was started in,
    /// unless it was reaped. Both: a task may move its worker to another
    /// group, and what the task started stays in the first one. Errors
    /// (nothing left to signal) are ignored.
    pub(crate) fn signal(&self, signal: i32) {
        let reaped = self.lock();
        if !*reaped {
            kill_process_and_group(self.pid, signal);
        }
    }

    /// Blocks until the process has exited, without reaping it (its pid
    /// stays reserved, so signals stay safe without holding the lock here);
    /// how it ended.
    pub(crate) fn wait_exited(&self) -> io::Result<ExitStatus> {
        loop {
            // SAFETY: info is a valid siginfo_t for the call to fill; the
            // pid is our unreaped child, and WNOWAIT leaves it unreaped.
            let (ret, info) = unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                let ret = libc::waitid(
                    libc::P_PID,
                    self.pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT,
                );
                (ret, info)
            };
            if ret == 0 {
                // SAFETY: filled by a successful waitid for a child's exit,
                // whose si_status is set.
                let status = unsafe { info.si_status() };
                return Ok(wait_status(info.si_code, status));
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// Whether the process has exited (or was reaped), without waiting and
    /// without reaping it.
    #[cfg(feature = "remote")]
    pub(crate) fn has_exited(&self) -> bool {
        let reaped = self.lock();
        if *reaped {
            return true;
        }
        // SAFETY: info is a valid siginfo_t for the call to fill; the pid
        // is our unreaped child (checked under the lock), and WNOWAIT leaves
        // it unreaped. WNOHANG returns at once, with si_pid 0 if it has not
        // exited.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let ret = libc::waitid(
                libc::P_PID,
                self.pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            );
            ret == 0 && info.si_pid() != 0
        }
    }

    /// Reaps the process, waiting for it to exit if it has not.
    pub(crate) fn reap(&self) -> io::Result<ExitStatus> {
        let mut reaped = self.lock();
        if *reaped {
            return Err(io::Error::other("the worker process was reaped already"));
        }
        let mut status = 0;
        loop {
            // SAFETY: status is a valid int for the call; the pid is our
            // unreaped child (checked under the lock), so it cannot belong
            // to another process.
            let pid = unsafe { libc::waitpid(self.pid as libc::pid_t, &mut status, 0) };
            if pid >= 0 {
                *reaped = true;
                return Ok(ExitStatus::from_raw(status));
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if !*self.lock() {
            kill_process_and_group(self.pid, libc::SIGKILL);
            let _ = self.reap();
        }
    }
}

/// Takes over `child`, started with [`Command`] in a process group of its
/// own (`process_group(0)`): from now on it is signalled and reaped only
/// through the returned [`Process`] (which reaps it if dropped first), and
/// its exit makes the returned pidfd readable, where the kernel has pidfds.
#[cfg(feature = "remote")]
pub(crate) fn adopt(child: std::process::Child) -> (Process, Option<OwnedFd>) {
    let pid = child.id();
    let pidfd = pidfd_open(pid);
    // Dropping a `Child` neither kills nor reaps it: its pid stays ours.
    drop(child);
    let process = Process {
        pid,
        reaped: Mutex::new(false),
    };
    (process, pidfd)
}

/// The exit status that `waitpid` would give for a child that `waitid`
/// described with `code` (`CLD_*`) and `status` (its exit code or signal).
fn wait_status(code: libc::c_int, status: libc::c_int) -> ExitStatus {
    const CORE_DUMPED: libc::c_int = 0x80;
    ExitStatus::from_raw(match code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_DUMPED => status | CORE_DUMPED,
        _ => status,
    })
}

/// The highest niceness: the lowest priority a process can be given.
const LOWEST_PRIORITY: libc::c_int = 19;

/// Sends `signal` to `pid` and to the process group `pid` (errors ignored).
/// Before a `SIGKILL`, gives every thread of the group the lowest priority
/// (nice 19): the kernel frees a killed process's memory on its way out,
/// which then yields to this process and the pool's other workers instead
/// of holding a core while they have work.
fn kill_process_and_group(pid: u32, signal: i32) {
    // SAFETY: kill and setpriority have no memory-safety preconditions.
    // The caller holds the process unreaped, so neither the pid nor the
    // group id it made (its own pid) can have been reused.
    unsafe {
        if signal == libc::SIGKILL {
            libc::setpriority(libc::PRIO_PGRP, pid as libc::id_t, LOWEST_PRIORITY);
        }
        libc::kill(-(pid as libc::pid_t), signal);
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// Starts `command` (its program, arguments and environment; nothing else
/// of it is used) as a worker: its channel end as fd 3, its reply journal
/// (if given) as fd 4, stdin from
/// `/dev/null`, stdout and stderr inherited, in its own process group, with
/// default signal dispositions and an empty signal mask. No other
/// descriptor of this process reaches the worker, even one without
/// close-on-exec (a pipe made by C code, a descriptor inherited from the
/// shell), where the C library can close them at spawn; elsewhere the
/// worker closes them itself first thing.
///
/// With `posix_spawn`, which does not copy the parent's page tables nor
/// leave its memory copy-on-write while the child starts: the cost of a
/// spawn does not grow with the parent's memory. The worker arms its
/// parent-death signal and its memory limit itself, from its environment.
/// Call from a thread that lives as long as the workers it starts: the
/// parent-death signal fires when that thread ends.
pub(crate) fn spawn_worker(
    command: &Command,
    journal: Option<&OwnedFd>,
) -> io::Result<SpawnedWorker> {
    let (parent_end, child_end) = UnixStream::pair()?;
    // dup2 onto fd 3 clears close-on-exec there, unless the source already
    // is fd 3: then it stays close-on-exec, so move it first.
    let child_end = if child_end.as_raw_fd() == env::CHANNEL_FD_NUMBER {
        let moved = fcntl_dupfd_cloexec(child_end.as_raw_fd(), env::CHANNEL_FD_NUMBER + 1)?;
        drop(child_end);
        moved
    } else {
        OwnedFd::from(child_end)
    };
    // The journal goes to fd 4 after the channel went to fd 3: from
    // neither of them (fd 3 would be overwritten first; a dup2 onto itself
    // keeps close-on-exec).
    let moved_journal = match journal {
        Some(fd) if fd.as_raw_fd() <= env::JOURNAL_FD_NUMBER => Some(fcntl_dupfd_cloexec(
            fd.as_raw_fd(),
            env::JOURNAL_FD_NUMBER + 1,
        )?),
        _ => None,
    };
    let journal = moved_journal.as_ref().or(journal).map(AsRawFd::as_raw_fd);
    let channel = env::channel_value(env::CHANNEL_FD_NUMBER, std::process::id());
    let argv = c_strings(std::iter::once(command.get_program()).chain(command.get_args()))?;
    let envp = c_strings(
        environment(command, &channel, journal.is_some())
            .iter()
            .map(OsString::as_os_str),
    )?;
    let program = CString::new(command.get_program().as_bytes())?;
    let fds = ChildFds {
        channel: child_end.as_raw_fd(),
        journal,
    };
    let pid = posix_spawnp(&program, fds, &argv, &envp)?;
    drop(moved_journal);
    let process = Process {
        pid,
        reaped: Mutex::new(false),
    };
    drop(child_end);
    let pidfd = pidfd_open(process.id());
    Ok(SpawnedWorker {
        process,
        channel: parent_end,
        pidfd,
    })
}

/// The parent's environment with `command`'s changes and the channel's
/// variable (and the journal's, if it has one), as `KEY=VALUE` strings.
fn environment(command: &Command, channel: &str, journal: bool) -> Vec<OsString> {
    let mut vars: BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => vars.insert(key.to_owned(), value.to_owned()),
            None => vars.remove(key),
        };
    }
    vars.insert(env::CHANNEL.into(), channel.into());
    if journal {
        vars.insert(
            env::JOURNAL.into(),
            env::JOURNAL_FD_NUMBER.to_string().into(),
        );
    } else {
        vars.remove(OsStr::new(env::JOURNAL));
    }
    vars.into_iter()
        .map(|(mut key, value)| {
            key.push("=");
            key.push(value);
            key
        })
        .collect()
}

/// NUL-terminated copies of `strings`, for a C array of pointers.
fn c_strings<'a>(strings: impl Iterator<Item = &'a OsStr>) -> io::Result<Vec<CString>> {
    strings
        .map(|s| CString::new(s.as_bytes()).map_err(io::Error::from))
        .collect()
}

fn fcntl_dupfd_cloexec(fd: RawFd, lowest: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC duplicates an open descriptor we own.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, lowest) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Turns a `posix_spawn*` return value into a result.
fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(ret))
    }
}

/// The descriptors a worker gets: its channel as fd 3, its journal (if
/// any) as fd 4.
#[derive(Clone, Copy)]
struct ChildFds {
    channel: RawFd,
    journal: Option<RawFd>,
}

/// The spawn itself: `program` (searched on `PATH` if it has no slash) with
/// `fds` in place and `/dev/null` as stdin.
fn posix_spawnp(
    program: &CStr,
    fds: ChildFds,
    argv: &[CString],
    envp: &[CString],
) -> io::Result<u32> {
    let argv_ptrs = null_terminated(argv);
    let envp_ptrs = null_terminated(envp);
    let mut pid: libc::pid_t = 0;
    // SAFETY: the attribute and file-action objects are initialised before
    // use and destroyed on every path; every pointer passed (program, the
    // NULL-terminated argv and envp arrays, the strings they point to, the
    // signal sets) is valid for the whole of posix_spawnp, which copies
    // what it needs before it returns.
    unsafe {
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        check(libc::posix_spawnattr_init(&mut attr))?;
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        if let Err(err) = check(libc::posix_spawn_file_actions_init(&mut actions)) {
            libc::posix_spawnattr_destroy(&mut attr);
            return Err(err);
        }
        let result = configure(&mut attr, &mut actions, fds).and_then(|()| {
            check(libc::posix_spawnp(
                &mut pid,
                program.as_ptr(),
                &actions,
                &attr,
                argv_ptrs.as_ptr(),
                envp_ptrs.as_ptr(),
            ))
        });
        libc::posix_spawn_file_actions_destroy(&mut actions);
        libc::posix_spawnattr_destroy(&mut attr);
        result?;
    }
    Ok(pid as u32)
}

/// # Safety
///
/// `attr` and `actions` must be initialised.
unsafe fn configure(
    attr: &mut libc::posix_spawnattr_t,
    actions: &mut libc::posix_spawn_file_actions_t,
    fds: ChildFds,
) -> io::Result<()> {
    const DEV_NULL: &CStr = c"/dev/null";
    let flags =
        libc::POSIX_SPAWN_SETPGROUP | libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF;
    // SAFETY: the caller initialised both objects; the signal sets are
    // valid locals, copied by the calls.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        check(libc::posix_spawnattr_setflags(attr, flags as _))?;
        check(libc::posix_spawnattr_setpgroup(attr, 0))?;
        check(libc::posix_spawnattr_setsigmask(attr, &empty))?;
        // Dispositions the parent set to "ignore" (std ignores SIGPIPE)
        // would otherwise pass to the worker.
        check(libc::posix_spawnattr_setsigdefault(attr, &all))?;
        check(libc::posix_spawn_file_actions_adddup2(
            actions,
            fds.channel,
            env::CHANNEL_FD_NUMBER,
        ))?;
        if let Some(journal) = fds.journal {
            check(libc::posix_spawn_file_actions_adddup2(
                actions,
                journal,
                env::JOURNAL_FD_NUMBER,
            ))?;
        }
        check(libc::posix_spawn_file_actions_addopen(
            actions,
            libc::STDIN_FILENO,
            DEV_NULL.as_ptr(),
            libc::O_RDONLY,
            0,
        ))?;
        if let Some(addclosefrom) = addclosefrom_np() {
            let last = match fds.journal {
                Some(_) => env::JOURNAL_FD_NUMBER,
                None => env::CHANNEL_FD_NUMBER,
            };
            check(addclosefrom(actions, last + 1))?;
        }
    }
    Ok(())
}

/// `posix_spawn_file_actions_addclosefrom_np(actions, lowest)`: close every
/// descriptor from `lowest` up in the child.
type AddCloseFrom =
    unsafe extern "C" fn(*mut libc::posix_spawn_file_actions_t, libc::c_int) -> libc::c_int;

/// The C library's `posix_spawn_file_actions_addclosefrom_np` (glibc 2.34,
/// FreeBSD 13.1, Solaris), looked up when first needed rather than linked,
/// so that a program built here still runs on an older C library; there the
/// worker closes what it inherited itself.
fn addclosefrom_np() -> Option<AddCloseFrom> {
    static FUNCTION: OnceLock<Option<AddCloseFrom>> = OnceLock::new();
    *FUNCTION.get_or_init(|| {
        const NAME: &CStr = c"posix_spawn_file_actions_addclosefrom_np";
        // SAFETY: dlsym takes the default-namespace handle and a
        // NUL-terminated name, and returns null when there is no such symbol.
        let symbol = unsafe { libc::dlsym(libc::RTLD_DEFAULT, NAME.as_ptr()) };
        // SAFETY: every C library that defines this symbol defines it as a
        // function with the signature of `AddCloseFrom`.
        (!symbol.is_null())
            .then(|| unsafe { std::mem::transmute::<*mut libc::c_void, AddCloseFrom>(symbol) })
    })
}

fn null_terminated(strings: &[CString]) -> Vec<*mut libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect()
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

/// What a worker's reader waits on: its channel and its process's pidfd,
/// in an epoll set. A thread that reads the channel itself for a moment
/// (a caller waiting for its reply) [pauses](Self::pause) the channel's
/// readiness there, so that the data it takes does not also wake the
/// reader; the end of the channel (a hang-up) still does.
#[cfg(target_os = "linux")]
pub(crate) struct ChannelWatch {
    epoll: OwnedFd,
    channel: RawFd,
    /// Watched; closed with the watch.
    _pidfd: Option<OwnedFd>,
}

#[cfg(target_os = "linux")]
impl ChannelWatch {
    /// Watches `channel`, which must outlive the watch, and `pidfd` if
    /// given.
    pub(crate) fn new(channel: &UnixStream, pidfd: Option<OwnedFd>) -> io::Result<ChannelWatch> {
        // SAFETY: epoll_create1 takes flags and returns a new descriptor
        // (or -1).
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let watch = ChannelWatch {
            epoll,
            channel: channel.as_raw_fd(),
            _pidfd: pidfd,
        };
        watch.control(libc::EPOLL_CTL_ADD, watch.channel, libc::EPOLLIN as u32, 0)?;
        if let Some(pidfd) = &watch._pidfd {
            watch.control(
                libc::EPOLL_CTL_ADD,
                pidfd.as_raw_fd(),
                libc::EPOLLIN as u32,
                1,
            )?;
        }
        Ok(watch)
    }

    fn control(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event { events, u64: token };
        // SAFETY: both descriptors are open; event is a valid epoll_event
        // for the duration of the call.
        let rc = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits until the channel is readable (data, unless paused, or its
    /// end), the process exits, or `timeout` passes (`None`: no limit);
    /// says which of the first two happened: `(channel, exited)`.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> io::Result<(bool, bool)> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 2];
        let timeout_ms = poll_timeout_ms(timeout);
        let n = loop {
            // SAFETY: events is a valid array of two epoll_event for the
            // whole call.
            let n = unsafe {
                libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), 2, timeout_ms)
            };
            if n >= 0 {
                break n as usize;
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        };
        let (mut channel, mut exited) = (false, false);
        for event in &events[..n] {
            match event.u64 {
                0 => channel = true,
                _ => exited = true,
            }
        }
        Ok((channel, exited))
    }

    /// Stops data on the channel from waking [`wait`](Self::wait) (its
    /// end still does), until [`resume`](Self::resume).
    pub(crate) fn pause(&self) -> io::Result<()> {
        self.control(libc::EPOLL_CTL_MOD, self.channel, 0, 0)
    }

    /// Data on the channel wakes [`wait`](Self::wait) again, at once if
    /// some is there.
    pub(crate) fn resume(&self) -> io::Result<()> {
        self.control(libc::EPOLL_CTL_MOD, self.channel, libc::EPOLLIN as u32, 0)
    }
}

/// What a worker's reader waits on, where epoll is not: `poll` on the
/// channel and the pidfd, which cannot be paused.
#[cfg(not(target_os = "linux"))]
pub(crate) struct ChannelWatch {
    channel: UnixStream,
    pidfd: Option<OwnedFd>,
}

#[cfg(not(target_os = "linux"))]
impl ChannelWatch {
    pub(crate) fn new(channel: &UnixStream, pidfd: Option<OwnedFd>) -> io::Result<ChannelWatch> {
        Ok(ChannelWatch {
            channel: channel.try_clone()?,
            pidfd,
        })
    }

    pub(crate) fn wait(&self, timeout: Option<Duration>) -> io::Result<(bool, bool)> {
        poll_channel(&self.channel, self.pidfd.as_ref(), timeout)
    }

    pub(crate) fn pause(&self) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    pub(crate) fn resume(&self) -> io::Result<()> {
        Ok(())
    }
}

/// A timeout for `poll` or `epoll_wait`, in milliseconds, rounded up so
/// that a short timeout does not become a busy loop; -1 for none.
fn poll_timeout_ms(timeout: Option<Duration>) -> libc::c_int {
    timeout.map_or(-1, |t| {
        let ms = t.as_nanos().div_ceil(1_000_000);
        ms.min(i32::MAX as u128) as i32
    })
}

/// Waits until the channel is readable (data, or its end), the process
/// exits, or `timeout` passes (`None`: no limit); says which of the first
/// two happened: `(channel, exited)`.
#[cfg(any(feature = "remote", not(target_os = "linux")))]
pub(crate) fn poll_channel(
    channel: &UnixStream,
    pidfd: Option<&OwnedFd>,
    timeout: Option<Duration>,
) -> io::Result<(bool, bool)> {
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
    let timeout_ms = poll_timeout_ms(timeout);
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
    Ok((ready(&fds[0]), ready(&fds[1])))
}

/// Writes as much of `bytes` as the socket takes without blocking; returns
/// how many bytes it took (0 when full or failed: the writer thread then
/// sends them, or finds the worker gone).
pub(crate) fn send_nonblocking(channel: &UnixStream, bytes: &[u8]) -> usize {
    let mut sent = 0;
    while sent < bytes.len() {
        // MSG_DONTWAIT makes this one call non-blocking without changing
        // the descriptor's flags, which other threads share.
        match send(channel, &bytes[sent..], libc::MSG_DONTWAIT) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    sent
}

/// Writes some of `bytes`, blocking until the socket takes some. A peer
/// that is gone is an error (`EPIPE`), never a `SIGPIPE`.
pub(crate) fn send_blocking(channel: &UnixStream, bytes: &[u8]) -> io::Result<usize> {
    loop {
        match send(channel, bytes, 0) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

fn send(channel: &UnixStream, bytes: &[u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: bytes is a valid buffer of bytes.len() bytes for the whole
    // call.
    let n = unsafe {
        libc::send(
            channel.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            flags | libc::MSG_NOSIGNAL,
        )
    };
    match n {
        n if n > 0 => Ok(n as usize),
        0 if bytes.is_empty() => Ok(0),
        0 => Err(io::ErrorKind::WriteZero.into()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// `SIGKILL`.
pub(crate) const SIGKILL: i32 = libc::SIGKILL;
/// `SIGTERM`.
pub(crate) const SIGTERM: i32 = libc::SIGTERM;

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts `sh -c script` as a worker (its channel unused).
    fn sh(script: &str) -> Process {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        spawn_worker(&command, None).expect("sh starts").process
    }

    #[test]
    fn the_status_seen_before_the_reap_is_the_one_the_reap_gives() {
        for (script, code, signal) in [
            ("exit 3", Some(3), None),
            ("exit 0", Some(0), None),
            ("kill -SEGV $$", None, Some(libc::SIGSEGV)),
            ("kill -KILL $$", None, Some(libc::SIGKILL)),
        ] {
            let process = sh(script);
            let seen = process.wait_exited().expect("waitid");
            let reaped = process.reap().expect("waitpid");
            assert_eq!(seen, reaped, "{script}");
            assert_eq!((seen.code(), seen.signal()), (code, signal), "{script}");
        }
    }

    /// The niceness of process `pid` (field 19 of `/proc/PID/stat`),
    /// which a zombie keeps until it is reaped.
    fn niceness(pid: u32) -> i32 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // The fields after the command name (in parentheses): state is
        // field 3.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        rest.split(' ').nth(19 - 3).unwrap().parse().unwrap()
    }

    #[test]
    fn a_killed_worker_dies_at_the_lowest_priority_and_a_stopped_one_does_not() {
        let ours = niceness(std::process::id());
        assert!(ours < 19, "this test runs at niceness {ours}");
        for (signal, expected) in [(libc::SIGKILL, LOWEST_PRIORITY), (libc::SIGTERM, ours)] {
            let process = sh("sleep 60");
            process.signal(signal);
            assert_eq!(
                process.wait_exited().expect("waitid").signal(),
                Some(signal)
            );
            assert_eq!(niceness(process.pid), expected, "signal {signal}");
            process.reap().expect("waitpid");
        }
        assert_eq!(niceness(std::process::id()), ours, "this process");
    }

    #[test]
    fn a_process_seen_exited_stays_unreaped_until_its_reap() {
        let process = sh("exit 7");
        process.wait_exited().expect("waitid");
        // Still ours to reap, however often its exit is looked at.
        assert_eq!(process.wait_exited().expect("waitid").code(), Some(7));
        assert_eq!(process.reap().expect("waitpid").code(), Some(7));
        assert!(process.reap().is_err(), "reaped once only");
    }
}
