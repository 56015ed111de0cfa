//! Everything this crate asks of the operating system, and all of its
//! `unsafe`.
//!
//! Unix only for now. Functions called from signal handlers
//! ([`terminate`], [`exit_now`]) use only async-signal-safe calls.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::ptr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, Ordering};

use loky_proto::exit_code;
use loky_proto::shm::DeathNote;

/// The pid of this process's parent.
pub(crate) fn parent_pid() -> u32 {
    // SAFETY: getppid has no preconditions and cannot fail.
    let pid = unsafe { libc::getppid() };
    pid as u32
}

/// The process group this worker was started in, when it led it (the
/// executor starts every worker so; a test or a shell may not), else 0.
/// Recorded before any task runs: a task may move the worker to another
/// group (`setpgid`), and what it started before stays in this one.
static OWN_GROUP: AtomicI32 = AtomicI32::new(0);

/// Records the group this process leads, if it leads one.
fn remember_own_group() {
    // SAFETY: getpgrp and getpid have no preconditions and cannot fail.
    let (group, pid) = unsafe { (libc::getpgrp(), libc::getpid()) };
    if group == pid {
        OWN_GROUP.store(pid, Ordering::Relaxed);
    }
}

/// The group this worker was started in and led, if any. Async-signal-safe.
fn own_group() -> Option<libc::pid_t> {
    match OWN_GROUP.load(Ordering::Relaxed) {
        0 => None,
        group => Some(group),
    }
}

/// What woke [`wait_for_hangup_or`].
pub(crate) enum Woken {
    /// The peer of the channel hung up (closed or shut down its writing
    /// side), or the socket failed.
    HangUp,
    /// The executing thread was lost and parked: it needs a replacement.
    Rescue,
    /// The timer fired.
    Timer,
}

/// Blocks until the peer of `stream` hangs up, `rescue` is signalled or
/// `timer` fires. Does not consume data from `stream`.
pub(crate) fn wait_for_hangup_or(
    stream: &UnixStream,
    rescue: &RescuePipe,
    timer: Option<&Timer>,
) -> Woken {
    #[cfg(target_os = "linux")]
    let events = libc::POLLRDHUP;
    #[cfg(not(target_os = "linux"))]
    let events = 0;
    let mut fds = [
        libc::pollfd {
            fd: stream.as_raw_fd(),
            events,
            revents: 0,
        },
        libc::pollfd {
            fd: rescue.read.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            // Ignored by poll while negative.
            fd: timer.map_or(-1, |timer| timer.fd.as_raw_fd()),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: fds is an array of three valid pollfd for the whole call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 3, -1) };
        if n <= 0 {
            continue;
        }
        if fds[0].revents != 0 {
            return Woken::HangUp;
        }
        if fds[1].revents != 0 {
            let mut byte = 0u8;
            // SAFETY: byte is a valid one-byte buffer for the call.
            unsafe { libc::read(rescue.read.as_raw_fd(), (&raw mut byte).cast(), 1) };
            if PARKED.swap(false, Ordering::AcqRel) {
                return Woken::Rescue;
            }
        }
        if fds[2].revents != 0 && timer.is_some_and(Timer::fired) {
            return Woken::Timer;
        }
    }
}

/// A one-shot timer for the watcher's poll (a `timerfd`, Linux only).
#[derive(Debug)]
pub(crate) struct Timer {
    fd: OwnedFd,
}

impl Timer {
    /// A disarmed timer.
    #[cfg(target_os = "linux")]
    pub(crate) fn new() -> io::Result<Timer> {
        // SAFETY: timerfd_create takes no pointers; a non-negative result is
        // a fresh descriptor that nothing else owns.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_CLOEXEC | libc::TFD_NONBLOCK,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Timer { fd })
    }

    #[cfg(not(target_os = "linux"))]
    pub(crate) fn new() -> io::Result<Timer> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Fires once `after` from now (`ZERO`: never, the timer is disarmed);
    /// either way, a firing not yet seen is forgotten.
    #[cfg(target_os = "linux")]
    pub(crate) fn set(&self, after: std::time::Duration) {
        let value = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as _,
            },
        };
        // SAFETY: `value` is a valid itimerspec for the call; the old value
        // is not asked for. It cannot fail on a timerfd we own.
        unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &value, ptr::null_mut()) };
    }

    #[cfg(not(target_os = "linux"))]
    pub(crate) fn set(&self, _after: std::time::Duration) {}

    #[cfg(test)]
    pub(crate) fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Whether the timer fired since it was last set (and forgets it).
    fn fired(&self) -> bool {
        let mut count = 0u64;
        // SAFETY: count is a valid 8-byte buffer for the call.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), (&raw mut count).cast(), 8) };
        n == 8
    }
}

/// The write end of the [`RescuePipe`], for the SIGABRT handler.
static RESCUE_WRITE: AtomicI32 = AtomicI32::new(-1);

/// Set (release) by the SIGABRT handler as it parks the executing thread,
/// taken (acquire) by the watcher: everything the parked thread did happens
/// before its replacement starts.
static PARKED: AtomicBool = AtomicBool::new(false);

/// The SIGABRT action in place before ours, for every abort that is not a
/// lost executing thread.
static PREVIOUS_ABORT_ACTION: AtomicPtr<libc::sigaction> = AtomicPtr::new(ptr::null_mut());

/// How the SIGABRT handler asks for a new executing thread: a pipe the
/// watcher polls.
pub(crate) struct RescuePipe {
    read: OwnedFd,
    /// Kept open for the handler, which writes to it by number.
    _write: OwnedFd,
}

impl RescuePipe {
    /// Makes the pipe and installs the SIGABRT handler that parks a lost
    /// executing thread and writes to it (see [`crate::executing`]); any
    /// other abort goes to the handler in place before (the memory limit's)
    /// or kills the process as usual. Call once, after the other signal
    /// handlers.
    pub(crate) fn install() -> io::Result<RescuePipe> {
        let mut fds = [0; 2];
        // SAFETY: fds is an array of two ints for pipe to fill.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors are fresh and owned by nothing else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // pipe2 is not on every Unix; no process is started meanwhile.
        set_cloexec(read.as_raw_fd())?;
        set_cloexec(write.as_raw_fd())?;
        RESCUE_WRITE.store(write.as_raw_fd(), Ordering::Release);
        install_chained(libc::SIGABRT, on_abort, &PREVIOUS_ABORT_ACTION)?;
        Ok(RescuePipe {
            read,
            _write: write,
        })
    }
}

/// SIGABRT: parks a lost executing thread (see [`crate::executing`]) and
/// asks the watcher for a new one; hands any other abort on.
extern "C" fn on_abort(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    if crate::panic::lost_in_panic_hook() {
        // SAFETY: sigfillset, pthread_sigmask, write and pause are
        // async-signal-safe; the mask is a valid local. Blocking every signal
        // here lets the other threads take the process's signals.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, ptr::null_mut());
            PARKED.store(true, Ordering::Release);
            let byte = 1u8;
            libc::write(
                RESCUE_WRITE.load(Ordering::Acquire),
                (&raw const byte).cast(),
                1,
            );
            loop {
                libc::pause();
            }
        }
    }
    if !call_previous(&PREVIOUS_ABORT_ACTION, signal, info, context) {
        die_of_on_return(signal);
    } else if dies_of_it_on_return(signal) {
        // The handler before ours set the default action back (and raised
        // the signal again, as abort does): raised once more, it is
        // certain to end the process.
        die_of_on_return(signal);
    }
}

/// Arms this process's parent-death signal (Linux), then makes sure the
/// parent is still `executor`: had it died before, the signal would never
/// come, and the worker ends at once as on its channel's end.
pub(crate) fn die_with_parent(executor: u32) -> io::Result<()> {
    remember_own_group();
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number only.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, PARENT_DEATH_SIGNAL) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    if parent_pid() != executor {
        terminate(0);
    }
    Ok(())
}

/// Caps this process's address space at `bytes` (`RLIMIT_AS`).
pub(crate) fn limit_address_space(bytes: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: limit is a valid rlimit for the duration of the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `fd` is a Unix socket that process `pid` created: the channel
/// an executor gives its worker, which nothing else puts at that number.
/// Linux only (the creator's pid comes from `SO_PEERCRED`); elsewhere
/// false.
pub(crate) fn is_channel_from(fd: RawFd, pid: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: zeroed is a valid ucred; getsockopt writes at most `len`
        // bytes into it and fails cleanly on a descriptor that is closed or
        // not a socket.
        unsafe {
            let mut cred: libc::ucred = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
            let ok = libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&raw mut cred).cast(),
                &mut len,
            ) == 0;
            ok && cred.pid as u32 == pid
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (fd, pid);
        false
    }
}

/// Ends the process at once with `code`, running no destructors, flushing
/// nothing and running no `atexit` handlers. Async-signal-safe.
pub(crate) fn exit_now(code: i32) -> ! {
    await_announced_death();
    // SAFETY: _exit has no preconditions and is async-signal-safe.
    unsafe { libc::_exit(code) }
}

/// Ends the worker because its executor is gone or told it to: a worker
/// started as a group leader SIGKILLs that group (itself, unless a task
/// moved it out, and whatever its tasks spawned there); then it
/// `_exit`s with `code`. Async-signal-safe.
///
/// A process that was not started leading its group never signals a group:
/// it would hit processes it does not own (in tests, the test runner
/// itself). Neither does a worker signal the group a task moved it to.
pub(crate) fn terminate(code: i32) -> ! {
    await_announced_death();
    if let Some(group) = own_group() {
        // SAFETY: kill has no memory-safety preconditions and is
        // async-signal-safe; the group is the one this process created.
        unsafe { libc::kill(-group, libc::SIGKILL) };
    }
    exit_now(code)
}

/// Ends the worker with a documented `code` the executor must see: a group
/// leader first sends SIGTERM to the rest of its group (ignoring it itself,
/// since a SIGKILL to the group would also replace `code` with a signal);
/// then `_exit(code)`. The executor kills what is left of the group when it
/// reaps the worker.
pub(crate) fn exit_with_code(code: i32) -> ! {
    await_announced_death();
    if let Some(group) = own_group() {
        // SAFETY: signal and kill have no memory-safety preconditions;
        // SIG_IGN is a valid disposition and the group is the one this
        // process created.
        unsafe {
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
            libc::kill(-group, libc::SIGTERM);
        }
    }
    exit_now(code)
}

/// Closes every descriptor above `channel` that this process inherited
/// across `exec` (those without close-on-exec: the ones it opened itself
/// have it, as Rust opens everything so). The executor closes them at
/// spawn where the C library can; this covers the rest, so that a worker
/// never keeps a pipe of its executor's open. Where the open descriptors
/// cannot be listed, nothing is done.
pub(crate) fn close_inherited_fds(channel: RawFd) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd").or_else(|_| std::fs::read_dir("/dev/fd"))
    else {
        return;
    };
    let fds: Vec<RawFd> = dir
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > channel)
        .collect();
    for fd in fds {
        // SAFETY: F_GETFD only reads a descriptor's flags and fails with
        // EBADF on a closed one (such as the directory listed above, now
        // closed). A descriptor without close-on-exec was inherited: no
        // code of this process owns it, so closing it breaks nothing here.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::close(fd);
            }
        }
    }
}

/// Takes ownership of the inherited channel `fd`: marks it close-on-exec
/// first (so processes tasks spawn do not inherit it, and its EOF comes when
/// the worker dies), then checks that it is a Unix socket and makes it
/// blocking.
pub(crate) fn take_channel(fd: RawFd) -> io::Result<UnixStream> {
    let stream = UnixStream::from(take_inherited(fd)?);
    // Fails for anything but a Unix socket.
    stream.local_addr()?;
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// Takes ownership of the inherited descriptor `fd`, marking it
/// close-on-exec (processes that tasks spawn do not inherit it).
pub(crate) fn take_inherited(fd: RawFd) -> io::Result<OwnedFd> {
    set_cloexec(fd)?;
    // SAFETY: the fd is open (set_cloexec succeeded), and the executor
    // handed it to this process for the worker's sole use: nothing else in
    // this process owns or closes it, so the owner may close it on drop.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl(F_GETFD/F_SETFD) only reads and sets a descriptor's
    // flags, and fails with EBADF if `fd` is not open.
    let ok = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) >= 0
    };
    if ok {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The parent-death signal: not SIGTERM, which the worker must die of
/// (so that its executor reports it) when someone else sends it.
const PARENT_DEATH_SIGNAL: libc::c_int = libc::SIGHUP;

/// Exit status of a worker that ended on its parent's death without leading
/// a process group: 128 + SIGHUP, what a shell reports for that signal.
const EXIT_ON_PARENT_DEATH: i32 = 128 + PARENT_DEATH_SIGNAL;

/// On the parent-death signal, end the worker as on the channel's end: a
/// group leader takes its group with it, as there is no executor left to
/// kill it.
pub(crate) fn install_parent_death_handler() -> io::Result<()> {
    // SAFETY: the action calls only `terminate`, which is async-signal-safe
    // (getpgrp, getpid, kill, _exit).
    unsafe {
        signal_hook::low_level::register(PARENT_DEATH_SIGNAL, || terminate(EXIT_ON_PARENT_DEATH))?;
    }
    Ok(())
}

/// The fault handlers in place before ours (std's for SIGSEGV and SIGBUS,
/// which report stack overflows), for real faults.
static PREVIOUS_FAULT_ACTIONS: [AtomicPtr<libc::sigaction>; 4] = [
    AtomicPtr::new(ptr::null_mut()),
    AtomicPtr::new(ptr::null_mut()),
    AtomicPtr::new(ptr::null_mut()),
    AtomicPtr::new(ptr::null_mut()),
];

const FAULT_SIGNALS: [libc::c_int; 4] = [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE];

/// Makes a SIGSEGV or SIGBUS sent by another process kill the worker, as it
/// kills any C program. Rust's std handles both signals to report stack
/// overflows, and after a signal that is no fault of the process its
/// handler returns and the process runs on. Real faults still go to std's
/// handler. Every fault (SIGILL and SIGFPE too) that kills the worker is
/// announced first (see [`announce_deaths`]).
pub(crate) fn install_sent_fault_handlers() -> io::Result<()> {
    for (signal, previous) in FAULT_SIGNALS.into_iter().zip(&PREVIOUS_FAULT_ACTIONS) {
        install_chained(signal, on_fault_signal, previous)?;
    }
    Ok(())
}

/// An `SA_SIGINFO` signal handler.
type SigInfoHandler = extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);

/// Installs `handler` for `signal`, keeping the action in place before in
/// `previous` (leaked, so that it lives as long as the process) for
/// [`call_previous`]. `handler` must be async-signal-safe.
fn install_chained(
    signal: libc::c_int,
    handler: SigInfoHandler,
    previous: &AtomicPtr<libc::sigaction>,
) -> io::Result<()> {
    // SAFETY: both sigaction structs are valid for the call (zeroed is a
    // valid sigaction); `handler` has the SA_SIGINFO signature; the old
    // action is stored before the new handler (which reads it) can run.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut action.sa_mask);
        let old = Box::into_raw(Box::new(std::mem::zeroed::<libc::sigaction>()));
        previous.store(old, Ordering::Release);
        if libc::sigaction(signal, &action, old) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Calls the handler of the action in `previous` (see [`install_chained`]);
/// false, doing nothing, when that action is the default or to ignore.
/// Async-signal-safe.
fn call_previous(
    previous: &AtomicPtr<libc::sigaction>,
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) -> bool {
    // SAFETY: the pointer is null or points to the leaked old action, never
    // freed.
    let Some(previous) = (unsafe { previous.load(Ordering::Acquire).as_ref() }) else {
        return false;
    };
    let handler = previous.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        return false;
    }
    if previous.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: an SA_SIGINFO handler has this signature.
        let f: SigInfoHandler = unsafe { std::mem::transmute(handler) };
        f(signal, info, context);
    } else {
        // SAFETY: a plain handler has this signature.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        f(signal);
    }
    true
}

/// Dies of `signal` with its default action once the current handler
/// returns (the signal is blocked until then), and says so first.
/// Async-signal-safe.
fn die_of_on_return(signal: libc::c_int) {
    // SAFETY: signal and raise are async-signal-safe and the default
    // disposition is valid for every signal handled here.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
    announce_death(signal);
}

/// Whether `signal`'s action is the default one, which for every signal
/// handled here ends the process: a fault that runs again, or a signal
/// raised again, once the handler returns kills it. Async-signal-safe.
fn dies_of_it_on_return(signal: libc::c_int) -> bool {
    // SAFETY: sigaction with no new action only reads the current one into
    // a valid local.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, ptr::null(), &mut current) == 0
            && current.sa_sigaction == libc::SIG_DFL
    }
}

/// Where a worker that is certain to die of a signal says so before it
/// dies: its journal's death note, and its channel, whose writing side it
/// then shuts.
struct Dying {
    note: DeathNote,
    channel: RawFd,
}

static DYING: OnceLock<Dying> = OnceLock::new();

/// Set once the worker announced its death (see [`announce_deaths`]).
static ANNOUNCED: AtomicBool = AtomicBool::new(false);

/// From now on, a worker certain to die of a signal (a fault or an abort
/// its handlers let through) writes the signal to `note`, then shuts the
/// writing side of `channel`, a descriptor kept open for as long as the
/// worker runs. Its executor sees the channel's end at once, instead of
/// once the kernel has stopped the worker's other threads and freed its
/// memory, and takes how it ended from the note.
///
/// Not while the worker may leave a core dump (its core-file size limit is
/// not 0): its executor would kill it in the middle of the dump.
pub(crate) fn announce_deaths(note: DeathNote, channel: RawFd) {
    let _ = DYING.set(Dying { note, channel });
}

/// Says that the worker is about to die of `signal` (see
/// [`announce_deaths`]), and lowers its priority (see [`step_aside`]).
/// Async-signal-safe: an atomic load, getrlimit, an atomic store,
/// shutdown, and what `step_aside` calls.
fn announce_death(signal: libc::c_int) {
    step_aside();
    let Some(dying) = DYING.get() else {
        return;
    };
    // SAFETY: getrlimit fills a valid local; shutdown takes any descriptor
    // (the channel's stays open for the worker's whole life).
    unsafe {
        let mut core: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_CORE, &mut core) != 0 || core.rlim_cur != 0 {
            return;
        }
        ANNOUNCED.store(true, Ordering::Release);
        dying.note.write(signal);
        libc::shutdown(dying.channel, libc::SHUT_WR);
    }
}

/// Gives a worker certain to die the lowest priority (nice 19), every
/// thread of it if it leads its process group (as its executor starts
/// it), else the calling thread: the kernel's freeing of its memory, done
/// by its last thread on its way out, then yields to the executor and
/// its other workers instead of holding a core while they have work.
/// Async-signal-safe: getpgrp, getpid and setpriority.
fn step_aside() {
    // SAFETY: getpgrp, getpid and setpriority have no memory-safety
    // preconditions. Niceness only lowers this process's claim to CPU time.
    unsafe {
        if libc::getpgrp() == libc::getpid() {
            // Every thread of every process in the group: this worker's
            // and what its tasks started, which die with it.
            libc::setpriority(libc::PRIO_PGRP, 0, LOWEST_PRIORITY);
        } else {
            libc::setpriority(libc::PRIO_PROCESS, 0, LOWEST_PRIORITY);
        }
    }
}

/// The highest niceness: the lowest priority a process can give itself.
const LOWEST_PRIORITY: libc::c_int = 19;

/// Once the worker announced its death, a thread that would end it (its
/// writes now fail, and a failed write ends the worker) waits for that
/// death instead: ending the worker itself would change how it ended, and
/// its executor, which takes the announced signal, kills it anyway once
/// the channel ended. Async-signal-safe.
fn await_announced_death() {
    if ANNOUNCED.load(Ordering::Acquire) {
        loop {
            // SAFETY: pause has no preconditions and is async-signal-safe.
            unsafe { libc::pause() };
        }
    }
}

/// Dies of a fault signal another process sent; hands a real fault to the
/// handler that was in place before. Async-signal-safe.
extern "C" fn on_fault_signal(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler.
    let sent = unsafe { (*info).si_code } <= 0; // SI_USER, SI_QUEUE, SI_TKILL
    let slot = FAULT_SIGNALS.iter().position(|&s| s == signal);
    match slot {
        Some(i) if !sent => {
            if !call_previous(&PREVIOUS_FAULT_ACTIONS[i], signal, info, context) {
                // The faulting instruction runs again and kills the process.
                // SAFETY: the default disposition is valid for this signal.
                unsafe { libc::signal(signal, libc::SIG_DFL) };
            }
            // std's handler, had it found a stack overflow, would have
            // aborted; else it set the default action back.
            if dies_of_it_on_return(signal) {
                announce_death(signal);
            }
        }
        _ => die_of_on_return(signal),
    }
}

/// The line that ends a worker whose allocation failed under its memory
/// limit, set once the limit is known.
static MEMORY_LIMIT_LINE: OnceLock<&'static [u8]> = OnceLock::new();

/// Under a memory limit of `limit` bytes, turns a failed allocation into the
/// documented exit code [`exit_code::MEMORY_LIMIT`], after one line on
/// stderr that names the limit.
///
/// A program whose global allocator is [`ExitOnMemoryLimit`] (the stock
/// `loky-worker`) exits there, at the failed allocation, and that line is
/// all it prints. Any other program gets std's own handling first: std
/// prints `memory allocation of N bytes failed` (and, by some versions, a
/// note about `RUST_BACKTRACE`), and nothing stable lets a library replace
/// that (the allocation-error hook and handler are unstable); std then
/// aborts, and the SIGABRT handler installed here prints the line, saying
/// that the note does not apply, and exits with the code.
///
/// Rust's allocation-failure path prints a line and calls `abort()` right
/// after `malloc`/`mmap` failed with `ENOMEM`, so `errno` is `ENOMEM` when
/// SIGABRT arrives. Any other SIGABRT gets the default disposition back and
/// is raised again, so the process dies of SIGABRT as it would have.
///
/// That handler is a heuristic, right in the common case only: with
/// `RUST_BACKTRACE` set, std prints a backtrace between the failed
/// allocation and the abort, which clobbers `errno`, so the worker dies of
/// SIGABRT; the same happens when the failure message cannot be written
/// (stderr closed). And an `abort()` while a stale `ENOMEM` sits in `errno`
/// is taken for the limit.
pub(crate) fn install_memory_limit_handler(limit: u64) -> io::Result<()> {
    let line = format!(
        "loky-worker: an allocation failed: the worker reached its memory limit of {limit} \
         bytes and exits with code {}",
        exit_code::MEMORY_LIMIT
    );
    let _ = MEMORY_LIMIT_LINE.set(format!("{line}\n").into_bytes().leak());
    let after_std: &'static [u8] = format!("{line} (the note above does not apply)\n")
        .into_bytes()
        .leak();
    // SAFETY: the action first reads errno (signal-hook saved it on entry
    // and nothing ran since), then calls only async-signal-safe functions
    // (poll and write in write_stderr, on a buffer made beforehand; _exit;
    // signal and raise).
    unsafe {
        signal_hook::low_level::register(libc::SIGABRT, move || {
            if io::Error::last_os_error().raw_os_error() == Some(libc::ENOMEM) {
                write_stderr(after_std);
                exit_now(exit_code::MEMORY_LIMIT);
            }
            libc::signal(libc::SIGABRT, libc::SIG_DFL);
            libc::raise(libc::SIGABRT);
        })?;
    }
    Ok(())
}

/// A global allocator for worker programs: the system's, except that an
/// allocation failing under the executor's memory limit ends the worker at
/// once, with one line on stderr naming the limit and exit code
/// [`exit_code::MEMORY_LIMIT`], before std would print its own message.
/// Without a memory limit it is the system allocator, failures included.
///
/// The stock `loky-worker` uses it. It suits a program whose tasks never
/// recover from a failed allocation (`try_reserve` and the like): under a
/// limit, such a failure ends the worker too.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ExitOnMemoryLimit;

impl ExitOnMemoryLimit {
    /// `ptr`, unless it is null and a memory limit is set: then the line
    /// and the exit. Reads a `OnceLock` (an atomic load) and allocates
    /// nothing.
    fn checked(ptr: *mut u8) -> *mut u8 {
        if ptr.is_null()
            && let Some(line) = MEMORY_LIMIT_LINE.get()
        {
            write_stderr(line);
            exit_now(exit_code::MEMORY_LIMIT);
        }
        ptr
    }
}

// SAFETY: every method passes its arguments to the system allocator, whose
// contract is the same, and returns its result unchanged (or never returns).
unsafe impl GlobalAlloc for ExitOnMemoryLimit {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        Self::checked(unsafe { System.alloc(layout) })
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        Self::checked(unsafe { System.alloc_zeroed(layout) })
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract, and
        // `ptr` came from this allocator, that is from `System`.
        Self::checked(unsafe { System.realloc(ptr, layout, new_size) })
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract, and
        // `ptr` came from `System`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Dies of SIGSEGV as native code that writes where it may not: a write
/// to a page mapped without access.
pub(crate) fn raise_segfault() -> ! {
    // SAFETY: the page is this function's own, mapped without access: the
    // volatile write to it (memory outside any Rust allocation, as with a
    // device's registers) faults before it happens, and the handlers in
    // place let a real fault take its default action.
    unsafe {
        let page = libc::mmap(
            ptr::null_mut(),
            1,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if page != libc::MAP_FAILED {
            ptr::write_volatile(page.cast::<u8>(), 1);
        }
        // Without the page, die of the same signal.
        libc::signal(libc::SIGSEGV, libc::SIG_DFL);
        libc::raise(libc::SIGSEGV);
    }
    // The signal is delivered before raise returns; should it not be, still
    // die the way a crash does.
    std::process::abort()
}

/// Makes this process ignore SIGTERM.
pub(crate) fn ignore_sigterm() {
    // SAFETY: SIG_IGN is a valid disposition for SIGTERM.
    unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
}

/// Makes writes to a closed channel fail with `EPIPE` instead of killing
/// the worker, as std arranges before `main`; a worker started before
/// `main` (from a constructor, see `init_before_main!`) must do it itself.
pub(crate) fn ignore_sigpipe() {
    // SAFETY: SIG_IGN is a valid disposition for SIGPIPE.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// This process's resident memory in bytes, where the platform tells it.
#[cfg(target_os = "linux")]
pub(crate) fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages.saturating_mul(page_size()?))
}

/// This process's resident memory in bytes, where the platform tells it.
#[cfg(not(target_os = "linux"))]
pub(crate) fn resident_bytes() -> Option<u64> {
    None
}

#[cfg(target_os = "linux")]
fn page_size() -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|size| *size > 0)
}

/// Writes `msg` to stderr without taking std's stderr lock (a task may hold
/// it) and without blocking for long on a full pipe: fatal diagnostics must
/// never keep a dying worker alive. Best effort: gives up after 100 ms.
pub(crate) fn write_stderr(mut msg: &[u8]) {
    while !msg.is_empty() {
        let mut pollfd = libc::pollfd {
            fd: libc::STDERR_FILENO,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: `pollfd` is a valid, exclusively borrowed pollfd array of
        // length 1 for the duration of the call.
        if unsafe { libc::poll(&mut pollfd, 1, 100) } <= 0 {
            return;
        }
        // SAFETY: `msg` is valid for reads of `msg.len()` bytes.
        let written = unsafe { libc::write(libc::STDERR_FILENO, msg.as_ptr().cast(), msg.len()) };
        let Ok(written) = usize::try_from(written) else {
            return;
        };
        if written == 0 {
            return;
        }
        msg = &msg[written..];
    }
}
