//! The entry points of a worker program and the worker loop.

use std::os::fd::{AsRawFd, RawFd};

use loky_proto::program::{self, ProgramId};
use loky_proto::shm::JournalWriter;
use loky_proto::{DEFAULT_MAX_FRAME, Hello, PROTOCOL_VERSION, Response, env, exit_code};

use crate::channel::{CallReader, fatal};
use crate::executing::Executing;
use crate::{Registry, os, panic};

/// Makes this program its own worker program: the first line of `main`.
///
/// Started by an executor as a worker, the program serves here (any
/// function of the program that the executor sends it) and never returns.
/// Run any other way, it returns at once, and every executor built
/// afterwards without an explicit worker program starts this very
/// executable as its workers (`WorkerProgram::CurrentExe`), so that
/// `submit_fn` and `map_fn` can send it any `fn` or non-capturing closure.
///
/// Call it before anything else in `main`: a worker runs `main` from the
/// start, and whatever comes before this call runs in every worker. A
/// program started as a worker that builds an executor without having
/// called it exits at once with [`exit_code::NOT_INITIALIZED`], and its
/// parent's error says that `main` must call `loky::init()` first. To also
/// serve named tasks, call [`serve_if_worker`] instead; for `#[test]`s,
/// see [`init_before_main!`](crate::init_before_main).
///
/// ```no_run
/// fn main() {
///     loky::init();
///     // Only the application gets here.
///     run_the_application();
/// }
///
/// fn run_the_application() { /* build executors, submit functions... */ }
/// ```
pub fn init() {
    serve_if_worker(&Registry::new());
}

/// Runs the worker loop if an executor started this process, and never
/// returns.
///
/// Started by an executor, the program serves calls until the executor
/// closes its channel, then exits. Run by hand, it prints what it is, its
/// protocol version, its path and its task table on stdout, and exits with
/// [`exit_code::NOT_STARTED_BY_EXECUTOR`].
///
// Compile-only: run by hand, a program that calls `serve` exits with code 2.
/// ```no_run
/// use loky::Task;
///
/// const SQUARE: Task<i64, i64> = Task::new("square");
///
/// fn main() {
///     loky::serve(loky::Registry::new().register(SQUARE, |x: i64| x * x))
/// }
/// ```
pub fn serve(registry: Registry) -> ! {
    #[cfg(feature = "remote")]
    crate::remote::serve_if_requested();
    match worker_channel() {
        Some((fd, executor)) => run(&registry, fd, executor),
        None => introduce(&registry),
    }
}

/// Returns at once unless an executor started this process as a worker;
/// then serves the registry's tasks (and, as [`init`], any function of the
/// program) and never returns.
///
/// Call it first in `main` to let an application binary be its own worker
/// program: as after [`init`], executors built afterwards without an
/// explicit worker program run `WorkerProgram::CurrentExe`. Run any other
/// way, the program goes on as usual.
///
/// ```
/// use loky::Task;
/// use loky::Registry;
///
/// const SQUARE: Task<i64, i64> = Task::new("square");
///
/// fn main() {
///     loky::serve_if_worker(&Registry::new().register(SQUARE, |x: i64| x * x));
///     // Only the application gets here: start executors, submit SQUARE...
/// }
/// ```
pub fn serve_if_worker(registry: &Registry) {
    program::set_own_worker();
    #[cfg(feature = "remote")]
    crate::remote::serve_if_requested();
    if let Some((fd, executor)) = worker_channel() {
        run(registry, fd, executor)
    }
}

/// Whether an executor started this process as a worker: the environment
/// names a channel ([`env::CHANNEL`]) and the parent process is the
/// executor that set it. A process a task spawns inherits the environment
/// but has another parent, so it is never a worker.
///
/// A worker whose executor died while it started ends here at once (with
/// status 0), as in [`serve`] and [`serve_if_worker`].
pub fn is_worker() -> bool {
    #[cfg(feature = "remote")]
    if crate::remote::requested() {
        return true;
    }
    worker_channel().is_some()
}

/// The channel's fd and the executor's pid, if this process is a worker.
///
/// A process that holds its executor's channel but whose parent is no
/// longer that executor was started as a worker and orphaned before it
/// could arm its parent-death signal: it ends here, quietly, whether or not
/// the channel has hung up yet (another process may still hold the
/// executor's end for a moment, such as a sibling worker being spawned).
/// Run as the application instead, it would outlive its executor. A process
/// that a task started inherited the variable but not the channel, and
/// runs as usual.
fn worker_channel() -> Option<(RawFd, u32)> {
    let value = std::env::var(env::CHANNEL).ok()?;
    let (fd, executor) = env::parse_channel_value(&value)?;
    if os::parent_pid() == executor {
        return Some((fd, executor));
    }
    if os::is_channel_from(fd, executor) {
        os::exit_now(0);
    }
    None
}

/// What a worker program run by hand prints.
fn introduce(registry: &Registry) -> ! {
    println!(
        "this is a loky-rs worker program (protocol {PROTOCOL_VERSION}); an executor starts it \
         and talks to it over a private channel; run by hand it does nothing"
    );
    println!("protocol: {PROTOCOL_VERSION}");
    println!("program: {}", program());
    println!("identity: {}", ProgramId::current());
    println!("tasks:");
    for signature in registry.signatures() {
        println!("  {signature}");
    }
    std::process::exit(exit_code::NOT_STARTED_BY_EXECUTOR)
}

fn program() -> String {
    std::env::current_exe()
        .map(|path| path.display().to_string())
        .or_else(|_| std::env::args().next().ok_or(()))
        .unwrap_or_default()
}

/// The worker: set up, say hello, serve calls until the channel ends the
/// process.
fn run(registry: &Registry, fd: RawFd, executor: u32) -> ! {
    // From now on, tasks may build executors of their own (nesting).
    program::set_serving();
    os::ignore_sigpipe();
    if let Err(err) = os::die_with_parent(executor) {
        fatal(
            exit_code::INTERNAL_ERROR,
            &format!("cannot arm the parent-death signal: {err}"),
        );
    }
    if let Some(limit) = memory_limit()
        && let Err(err) = os::limit_address_space(limit)
    {
        fatal(
            exit_code::INTERNAL_ERROR,
            &format!("cannot set the memory limit of {limit} bytes: {err}"),
        );
    }
    // Before the descriptors inherited by mistake are closed: it is one.
    let journal = journal(fd);
    os::close_inherited_fds(fd);
    panic::install_hook();
    panic::set_runtime_thread();
    let stream = os::take_channel(fd).unwrap_or_else(|err| {
        fatal(
            exit_code::CHANNEL_ERROR,
            &format!("cannot use fd {fd} as the channel to the executor: {err}"),
        )
    });
    if let Some(journal) = &journal {
        os::announce_deaths(journal.death_note(), stream.as_raw_fd());
    }
    install_signal_handlers();
    let max_frame = max_frame();
    let calls = CallReader::new(&stream, max_frame).unwrap_or_else(|err| {
        fatal(
            exit_code::CHANNEL_ERROR,
            &format!("cannot read the channel: {err}"),
        )
    });
    let executing = Executing::new(registry, calls, stream, journal, shm_threshold(), max_frame);
    executing.say_hello(&Response::Hello(hello(registry)));
    executing.serve()
}

/// The memory limit the executor set, in bytes. A value that is not a
/// number ends the worker: the executor speaks another protocol.
fn memory_limit() -> Option<u64> {
    let value = std::env::var_os(env::MEMORY_LIMIT)?;
    match value.to_str().and_then(|v| v.parse().ok()) {
        Some(limit) => Some(limit),
        None => fatal(
            exit_code::PROTOCOL_ERROR,
            &format!("malformed {}: {value:?}", env::MEMORY_LIMIT),
        ),
    }
}

/// The reply journal the executor passed, if any (a descriptor after the
/// channel's, `channel`). A value that is not a number ends the worker (the
/// executor speaks another protocol); a descriptor that is not a journal
/// leaves the worker without one (it then sends every reply as soon as it
/// is ready).
fn journal(channel: RawFd) -> Option<JournalWriter> {
    let value = std::env::var_os(env::JOURNAL)?;
    let Some(fd) = value
        .to_str()
        .and_then(|v| v.parse().ok())
        .filter(|&fd| fd > channel)
    else {
        fatal(
            exit_code::PROTOCOL_ERROR,
            &format!("malformed {}: {value:?}", env::JOURNAL),
        )
    };
    let fd = os::take_inherited(fd).ok()?;
    JournalWriter::open(fd).ok()
}

/// The body size past which replies travel in shared memory, if the
/// executor takes descriptor frames. A value that is not a number ends the
/// worker: the executor speaks another protocol.
fn shm_threshold() -> Option<usize> {
    let value = std::env::var_os(env::SHM_THRESHOLD)?;
    match value.to_str().and_then(|v| v.parse().ok()) {
        Some(threshold) => Some(threshold),
        None => fatal(
            exit_code::PROTOCOL_ERROR,
            &format!("malformed {}: {value:?}", env::SHM_THRESHOLD),
        ),
    }
}

/// The executor's maximum frame size, in bytes. A value that is not a
/// number ends the worker: the executor speaks another protocol.
fn max_frame() -> usize {
    let Some(value) = std::env::var_os(env::MAX_FRAME) else {
        return DEFAULT_MAX_FRAME;
    };
    match value.to_str().and_then(|v| v.parse().ok()) {
        Some(max) => max,
        None => fatal(
            exit_code::PROTOCOL_ERROR,
            &format!("malformed {}: {value:?}", env::MAX_FRAME),
        ),
    }
}

fn install_signal_handlers() {
    if let Err(err) = os::install_sent_fault_handlers() {
        fatal(
            exit_code::INTERNAL_ERROR,
            &format!("cannot handle the fault signals: {err}"),
        );
    }
    if let Err(err) = os::install_parent_death_handler() {
        fatal(
            exit_code::INTERNAL_ERROR,
            &format!("cannot handle the parent-death signal: {err}"),
        );
    }
    if let Some(Err(err)) = memory_limit().map(os::install_memory_limit_handler) {
        fatal(
            exit_code::INTERNAL_ERROR,
            &format!("cannot handle SIGABRT: {err}"),
        );
    }
}

fn hello(registry: &Registry) -> Hello {
    Hello {
        protocol: PROTOCOL_VERSION,
        pid: std::process::id(),
        program: program(),
        identity: ProgramId::current().clone(),
        tasks: registry.tasks(),
    }
}
