//! The executor builder and worker program discovery.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::config::{Config, CrashPolicy, Initializer, Shutdown};
use crate::error::{Error, Result, SerializationError, SpawnError, WorkerNotFound};
use loky_proto::{Task, env};

/// How long a thread blocked on a result of a short call checks for it
/// before it sleeps, by default: see [`ExecutorBuilder::wait_spin`].
const DEFAULT_WAIT_SPIN: Duration = Duration::from_micros(100);

#[cfg(feature = "remote")]
mod remote;

/// Default nesting limit; `LOKY_MAX_DEPTH` overrides it.
pub const DEFAULT_MAX_DEPTH: u32 = 10;

/// Which program the workers run.
///
/// The default is [`CurrentExe`](WorkerProgram::CurrentExe) in a program
/// that called [`loky::init()`](https://docs.rs/loky/latest/loky/fn.init.html)
/// (or `serve_if_worker`) before building the executor, and
/// [`Discover`](WorkerProgram::Discover) otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WorkerProgram {
    /// Find one: the `LOKY_WORKER` environment variable (a path); else a file
    /// `loky-worker` in the directory of the current executable or its
    /// parent; else `loky-worker` on `PATH`. A `LOKY_WORKER` naming no file
    /// is [`Error::WorkerNotFound`]: the other places are not tried.
    #[default]
    Discover,
    /// The program at this path.
    Path(PathBuf),
    /// The current executable, which calls
    /// [`loky::init()`](https://docs.rs/loky/latest/loky/fn.init.html) (or
    /// `serve_if_worker`) first thing in `main`. The only worker program
    /// that can run functions sent with
    /// [`submit_fn`](crate::ProcessPoolExecutor::submit_fn): they must run in the
    /// very same program build.
    CurrentExe,
    /// A program of this name (`.exe` added on Windows), found as
    /// [`Discover`](WorkerProgram::Discover) finds `loky-worker`: in the
    /// directory of the current executable, its parent directory, then on
    /// `PATH` (`LOKY_WORKER` is not consulted). Lets each application ship
    /// a worker binary of its own name, so that two applications installed
    /// side by side do not share one `loky-worker`.
    Named(String),
}

/// Builds a [`ProcessPoolExecutor`](crate::ProcessPoolExecutor); from
/// [`ProcessPoolExecutor::builder`](crate::ProcessPoolExecutor::builder).
///
// Compile-only: it names a worker program of the reader's, which does not exist here.
/// ```no_run
/// use std::time::Duration;
/// use loky::{ProcessPoolExecutor, WorkerProgram};
///
/// let ex = ProcessPoolExecutor::builder()
///     .max_workers(4)
///     .worker_program(WorkerProgram::Path("bin/my-worker".into()))
///     .env("RUST_LOG", "info")
///     .idle_timeout(Duration::from_secs(300))
///     .max_tasks_per_child(1000)
///     .build()?;
/// # Ok::<(), loky::Error>(())
/// ```
#[derive(Clone)]
#[must_use]
pub struct ExecutorBuilder {
    pub(crate) max_workers: Option<usize>,
    /// `None`: the default of [`WorkerProgram`] at `build`.
    program: Option<WorkerProgram>,
    env: Vec<(OsString, OsString)>,
    pub(crate) idle_timeout: Option<Option<Duration>>,
    initializer: Option<std::result::Result<Initializer, Error>>,
    max_tasks_per_child: Option<usize>,
    crash_policy: CrashPolicy,
    task_timeout: Option<Duration>,
    memory_limit: Option<u64>,
    kill_grace: Duration,
    start_timeout: Duration,
    max_frame: usize,
    shm_threshold: usize,
    wait_spin: Duration,
    pub(crate) kill_workers: bool,
    on_drop: Shutdown,
    #[cfg(feature = "remote")]
    pub(crate) remote: remote::RemoteOptions,
}

impl fmt::Debug for ExecutorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecutorBuilder")
            .field("max_workers", &self.max_workers)
            .field("program", &self.program)
            .field("crash_policy", &self.crash_policy)
            .finish_non_exhaustive()
    }
}

impl Default for ExecutorBuilder {
    fn default() -> Self {
        ExecutorBuilder {
            max_workers: None,
            program: None,
            env: Vec::new(),
            idle_timeout: None,
            initializer: None,
            max_tasks_per_child: None,
            crash_policy: CrashPolicy::BreakPool,
            task_timeout: None,
            memory_limit: None,
            kill_grace: Duration::from_millis(500),
            start_timeout: Duration::from_secs(30),
            max_frame: loky_proto::DEFAULT_MAX_FRAME,
            shm_threshold: loky_proto::shm::DEFAULT_SHM_THRESHOLD,
            wait_spin: DEFAULT_WAIT_SPIN,
            kill_workers: false,
            on_drop: Shutdown::default(),
            #[cfg(feature = "remote")]
            remote: remote::RemoteOptions::default(),
        }
    }
}

impl ExecutorBuilder {
    /// Number of worker processes; default [`cpu_count`](crate::cpu_count).
    /// Zero is an error at `build`.
    pub fn max_workers(mut self, n: usize) -> Self {
        self.max_workers = Some(n);
        self
    }

    /// The worker program; by default this program after
    /// [`loky::init()`](https://docs.rs/loky/latest/loky/fn.init.html),
    /// else [`WorkerProgram::Discover`] (see [`WorkerProgram`]).
    pub fn worker_program(mut self, program: WorkerProgram) -> Self {
        self.program = Some(program);
        self
    }

    /// An environment variable for the workers, on top of this process's
    /// environment.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Idle workers leave after `timeout` and are started again on demand.
    /// A worker counts as idle only while no call waits in the pool's
    /// queue, so `Duration::ZERO` means "leave as soon as there is nothing
    /// to do". Default: none (10 s for the reusable executor).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(Some(timeout));
        self
    }

    /// A registered task run once in every new worker before any other; if
    /// it fails the pool is broken with a message naming it.
    pub fn initializer<I: Serialize>(mut self, task: Task<I, ()>, args: I) -> Self {
        let sig = task.signature();
        let mut encoded = Vec::new();
        self.initializer = Some(
            crate::codec::encode_into(&args, &mut encoded)
                .map(|()| Initializer { sig, args: encoded })
                .map_err(|e| {
                    Error::Serialization(SerializationError::new(
                        sig.name,
                        "encode the initializer's arguments",
                        e,
                    ))
                }),
        );
        self
    }

    /// Replaces a worker after it ran `n` tasks.
    pub fn max_tasks_per_child(mut self, n: usize) -> Self {
        self.max_tasks_per_child = Some(n.max(1));
        self
    }

    /// What a worker's unexpected death does; default
    /// [`CrashPolicy::BreakPool`] (loky's).
    pub fn on_worker_crash(mut self, policy: CrashPolicy) -> Self {
        self.crash_policy = policy;
        self
    }

    /// Kills a task (and its worker, which is replaced) that runs longer than
    /// `timeout`; its future fails with
    /// [`Error::DeadlineExceeded`](crate::Error::DeadlineExceeded).
    /// `Duration::MAX` means no limit, as does every duration of this
    /// builder too long to be added to an `Instant`.
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.task_timeout = Some(timeout);
        self
    }

    /// A hard cap on each worker's memory (address space), in bytes.
    ///
    /// A worker whose allocation fails under it exits with
    /// `loky::exit_code::MEMORY_LIMIT` and its
    /// task's future fails with
    /// [`Error::TerminatedWorker`](crate::Error::TerminatedWorker), saying
    /// that it exceeded its memory limit of `bytes` bytes. On stderr the
    /// worker leaves one line naming the limit. The stock `loky-worker`
    /// prints that line alone; a program that is its own worker
    /// ([`loky::init()`](https://docs.rs/loky/latest/loky/fn.init.html))
    /// has std's `memory allocation of N bytes failed` first, then that
    /// line. With `RUST_BACKTRACE` set, std prints a backtrace there
    /// instead, and such a worker dies of SIGABRT (`TerminatedWorker`
    /// without the memory-limit sentence).
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// Time between the polite `SIGTERM` and the `SIGKILL` when a task is
    /// stopped; default 500 ms. `Duration::MAX`: no `SIGKILL`.
    pub fn kill_grace_period(mut self, grace: Duration) -> Self {
        self.kill_grace = grace;
        self
    }

    /// How long a new worker may take to say hello; default 30 s.
    /// `Duration::MAX`: as long as it takes.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Largest frame, in bytes, sent to or accepted from a worker; default
    /// 2 GiB, at most 4 GiB - 1. Workers are told the same limit: an
    /// argument over it fails at `submit`, and a result over it fails that
    /// call alone, both with [`Error::Serialization`](crate::Error::Serialization).
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame = bytes.min(loky_proto::ABSOLUTE_MAX_FRAME);
        self
    }

    /// Frames (arguments, results) whose body exceeds `bytes` travel
    /// between the executor and its local workers through shared memory
    /// instead of the socket: encoded straight into a sealed memory file,
    /// whose descriptor alone crosses, and decoded from it. Default 1 MiB;
    /// `usize::MAX`: never. Whatever the threshold,
    /// `loky::SharedBytes` cross to local workers as
    /// descriptors, never copied.
    ///
    /// A memory file is fresh memory for every frame, and on a kernel
    /// without huge pages for shared memory, allocating its pages costs
    /// about as much as the socket's copies it saves: for plain bytes
    /// (`Vec<u8>`, `ByteBuf`), which are copied in and out either way, the
    /// socket can be as fast or faster, as it overlaps the sender's copy
    /// with the receiver's (row 5 of the repository's `BENCHMARKS.md`
    /// measures both). The memory file keeps the socket free for other
    /// messages while a large frame crosses; for large buffers sent as they
    /// are (arrays, images, model weights), `SharedBytes` avoids the copies
    /// altogether. Freeing the pages of a memory file (when its last
    /// mapping of 1 MiB or more goes) is left to a background thread of
    /// the process, started at the first, so that the thread that drops a
    /// large argument or result does not wait for it.
    ///
    /// ```no_run
    /// use loky::ProcessPoolExecutor;
    ///
    /// // Payloads over 256 KiB skip the socket.
    /// let ex = ProcessPoolExecutor::builder().shm_threshold(256 << 10).build()?;
    /// # Ok::<(), loky::Error>(())
    /// ```
    pub fn shm_threshold(mut self, bytes: usize) -> Self {
        self.shm_threshold = bytes;
        self
    }

    /// How long a thread blocked on a result
    /// ([`result`](crate::Future::result), `result_timeout`, `exception`)
    /// keeps checking for it before it goes to sleep, when the call is
    /// expected that soon: it runs on a worker, its task's calls typically
    /// take no longer (counting those queued before it on that worker),
    /// and fewer of the pool's workers hold calls than there are CPUs (a
    /// CPU is left for the thread that checks). Default 100 µs;
    /// `Duration::ZERO`: sleep at once.
    ///
    /// Waking a sleeping thread takes from a few microseconds on bare metal
    /// to some 30 µs on a virtual machine, as long as a whole short call
    /// takes; a thread that keeps checking has the result as soon as the
    /// worker's reply is read, which brings a round trip of a short call
    /// down to about that of a bare socket. For a call its own thread sent
    /// straight to an idle worker on this machine, the checking thread
    /// reads the worker's reply from the channel itself, with no other
    /// thread in between. The price is CPU time: up to
    /// this long per wait, for short calls only. Across the process, at
    /// most one thread fewer than [`cpu_count`](crate::cpu_count) checks at
    /// a time (none on a single CPU: the worker needs it), the others
    /// sleep at once; awaiting a future (`.await`) never checks. Where CPU
    /// time is worth more than latency, set it to zero.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use loky::ProcessPoolExecutor;
    ///
    /// // Threads waiting for results sleep at once.
    /// let ex = ProcessPoolExecutor::builder().wait_spin(Duration::ZERO).build()?;
    /// # Ok::<(), loky::Error>(())
    /// ```
    pub fn wait_spin(mut self, spin: Duration) -> Self {
        self.wait_spin = spin;
        self
    }

    /// For [`get_reusable`](ExecutorBuilder::get_reusable): when the shared
    /// executor must be replaced, kill its running tasks instead of waiting.
    pub fn kill_workers(mut self, kill: bool) -> Self {
        self.kill_workers = kill;
        self
    }

    /// What dropping the last handle of the executor does (the last of its
    /// clones and of the maps made from it). The default,
    /// [`Shutdown::default()`], waits for every submitted task and reaps
    /// the workers, as Python's `with` block does.
    ///
    /// An early return (`?`) or a panic that unwinds past the executor
    /// then waits for the tasks it leaves behind. To leave at once instead:
    ///
    /// - `Shutdown { wait: false, ..Shutdown::default() }`: the drop
    ///   returns at once and the tasks run to the end in the background;
    ///   futures still held get their results.
    /// - `Shutdown { kill_workers: true, ..Shutdown::default() }`: the
    ///   workers (and their process groups) are killed, and the drop returns
    ///   once they are reaped; unfinished futures fail with
    ///   [`Error::ShutdownExecutor`](crate::Error::ShutdownExecutor).
    /// - `cancel_futures: true`: the tasks that have not started are
    ///   cancelled rather than run.
    ///
    /// The drop is a call of
    /// [`shutdown_with`](crate::ProcessPoolExecutor::shutdown_with)`(how)`,
    /// after any explicit one: whatever is still running or pending then
    /// is treated as `how` says. As with `shutdown`, a drop on a thread of
    /// the pool (in a done callback) never waits.
    ///
    /// ```
    /// use std::time::Duration;
    /// use loky::{Error, ProcessPoolExecutor, Shutdown, diagnostics::SLEEP};
    ///
    /// # // Runs where LOKY_WORKER names a worker program (`cargo xtask test` sets it).
    /// # if std::env::var_os("LOKY_WORKER").is_none() { return Ok(()); }
    /// let ex = ProcessPoolExecutor::builder()
    ///     .max_workers(1)
    ///     .on_drop(Shutdown { kill_workers: true, ..Shutdown::default() })
    ///     .build()?;
    /// let slow = ex.submit(SLEEP, Duration::from_secs(3600))?;
    /// drop(ex); // kills the worker rather than wait an hour
    /// assert!(matches!(slow.result(), Err(Error::ShutdownExecutor(_))));
    /// # Ok::<(), loky::Error>(())
    /// ```
    pub fn on_drop(mut self, how: Shutdown) -> Self {
        self.on_drop = how;
        self
    }

    pub(crate) fn config(&self) -> Result<Config> {
        // A worker whose `main` builds an executor before `loky::init()`
        // ends here rather than start workers of its own.
        crate::program::exit_if_worker_without_init();
        let max_workers = self.max_workers.unwrap_or_else(crate::cpu::cpu_count);
        if max_workers == 0 {
            return Err(Error::InvalidArgument(
                "max_workers must be greater than 0".to_owned(),
            ));
        }
        let depth = nesting_depth()? + 1;
        let program = match self.program.clone().unwrap_or_else(default_program) {
            WorkerProgram::Discover => discover()?,
            WorkerProgram::Path(path) => checked_program(&path)?,
            WorkerProgram::CurrentExe => std::env::current_exe()
                .map_err(|e| spawn_error(Path::new("<current executable>"), e))?,
            WorkerProgram::Named(name) => find_named(&name)?,
        };
        let initializer = self.initializer.clone().transpose()?;
        #[cfg(feature = "remote")]
        let remote = self.remote.resolve(&program)?;
        Ok(Config {
            max_workers,
            program,
            env: self.env.clone(),
            idle_timeout: self.idle_timeout.flatten(),
            initializer,
            max_tasks_per_child: self.max_tasks_per_child,
            crash_policy: self.crash_policy,
            task_timeout: self.task_timeout,
            memory_limit: self.memory_limit,
            kill_grace: self.kill_grace,
            start_timeout: self.start_timeout,
            max_frame: self.max_frame,
            shm_threshold: self.shm_threshold,
            wait_spin: self.wait_spin,
            depth,
            on_drop: self.on_drop,
            #[cfg(feature = "remote")]
            remote,
        })
    }
}

/// The nesting depth of this process (0 outside any worker), checked
/// against `LOKY_MAX_DEPTH`.
fn nesting_depth() -> Result<u32> {
    let depth = std::env::var(env::DEPTH)
        .ok()
        .and_then(|d| d.parse::<u32>().ok())
        .unwrap_or(0);
    // As loky: zero or a negative value means no limit.
    let max = std::env::var("LOKY_MAX_DEPTH")
        .ok()
        .and_then(|d| d.trim().parse::<i64>().ok())
        .unwrap_or(i64::from(DEFAULT_MAX_DEPTH));
    if max > 0 && i64::from(depth) + 1 > max {
        return Err(Error::InvalidArgument(format!(
            "Could not spawn extra nested processes at depth superior to MAX_DEPTH={max}. \
             If this is intended, you can change this limit with the LOKY_MAX_DEPTH \
             environment variable."
        )));
    }
    Ok(depth)
}

fn spawn_error(program: &Path, source: io::Error) -> Error {
    Error::Spawn(SpawnError::new(program, source))
}

/// `path` if it is an executable file, else a `Spawn` error saying why not.
fn checked_program(path: &Path) -> Result<PathBuf> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() && is_executable(&meta) => Ok(path.to_owned()),
        Ok(meta) if meta.is_file() => Err(spawn_error(
            path,
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the file is not executable",
            ),
        )),
        Ok(_) => Err(spawn_error(
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "not a file"),
        )),
        Err(e) => Err(spawn_error(path, e)),
    }
}

#[cfg(unix)]
fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &std::fs::Metadata) -> bool {
    true
}

fn is_program(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && is_executable(&m))
}

/// The worker program of a builder that names none: this program if it
/// called `loky::init()`, else discovery.
fn default_program() -> WorkerProgram {
    if loky_proto::program::is_own_worker() {
        WorkerProgram::CurrentExe
    } else {
        WorkerProgram::Discover
    }
}

/// Default worker discovery; the error lists every place looked at.
fn discover() -> Result<PathBuf> {
    let mut searched = Vec::new();
    if let Some(path) = std::env::var_os(env::WORKER_PROGRAM) {
        // An explicit setting that is wrong is an error, not a hint: no
        // other place is tried.
        let path = Path::new(&path);
        if std::fs::symlink_metadata(path).is_err() {
            searched.push(format!(
                "${} = {} (no such file)",
                env::WORKER_PROGRAM,
                path.display()
            ));
            return Err(Error::WorkerNotFound(WorkerNotFound {
                name: None,
                searched,
            }));
        }
        return checked_program(path);
    }
    searched.push(format!("${} (not set)", env::WORKER_PROGRAM));
    search("loky-worker", &mut searched).ok_or(Error::WorkerNotFound(WorkerNotFound {
        name: None,
        searched,
    }))
}

/// The program called `name`, as [`WorkerProgram::Named`] finds it.
fn find_named(name: &str) -> Result<PathBuf> {
    let mut searched = Vec::new();
    search(name, &mut searched).ok_or_else(|| {
        Error::WorkerNotFound(WorkerNotFound {
            name: Some(name.to_owned()),
            searched,
        })
    })
}

/// The program `name` in the directory of the current executable, its
/// parent, or on `PATH`; adds each place looked at to `searched`.
fn search(name: &str, searched: &mut Vec<String>) -> Option<PathBuf> {
    let suffix = std::env::consts::EXE_SUFFIX;
    let name = if name.ends_with(suffix) {
        name.to_owned()
    } else {
        format!("{name}{suffix}")
    };
    if let Ok(exe) = std::env::current_exe() {
        let dirs = exe
            .parent()
            .into_iter()
            .chain(exe.parent().and_then(Path::parent));
        for dir in dirs {
            let candidate = dir.join(&name);
            if is_program(&candidate) {
                return Some(candidate);
            }
            searched.push(candidate.display().to_string());
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join(&name);
            if is_program(&candidate) {
                return Some(candidate);
            }
        }
        searched.push(format!("{name} on $PATH"));
    }
    None
}
