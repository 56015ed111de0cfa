//! The one error type of loky-rs.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::exit::WorkerExit;

/// `Result` with [`Error`] as its error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong with an executor, a future or a task.
///
/// Match the variants to tell cases apart, as Python code catches
/// `BrokenProcessPool`, `TerminatedWorkerError`, `CancelledError` and so on.
/// [`Error::is_broken_pool`] is true for both broken-pool variants, as
/// `TerminatedWorkerError` is a `BrokenProcessPool` in Python.
///
/// ```no_run
/// use std::time::Duration;
/// use loky_core::{Error, ProcessPoolExecutor, Task};
///
/// const PARSE: Task<String, Result<u64, String>> = Task::new("parse");
///
/// let ex = ProcessPoolExecutor::new(2)?;
/// let fut = ex.submit(PARSE, "42".to_owned())?;
/// match fut.result_timeout(Duration::from_secs(5)) {
///     Ok(Ok(n)) => println!("parsed {n}"),
///     Ok(Err(e)) => println!("the task returned an error: {e}"),
///     Err(Error::Timeout) => println!("still running"),
///     Err(Error::Task(panic)) => println!("the task panicked: {}", panic.message()),
///     Err(Error::TerminatedWorker(dead)) => println!("its worker died: {:?}", dead.exit()),
///     Err(e) if e.is_broken_pool() => println!("the pool is broken: {e}"),
///     Err(e) => println!("{e}"),
/// }
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The pool cannot run tasks any more; later submits fail with it.
    #[error(transparent)]
    BrokenProcessPool(BrokenProcessPool),
    /// A worker died while running (or holding) this task; the pool is broken
    /// unless its crash policy is [`CrashPolicy::Respawn`](crate::CrashPolicy::Respawn).
    #[error(transparent)]
    TerminatedWorker(TerminatedWorker),
    /// The executor was shut down: `submit` after `shutdown`, or the task was
    /// dropped by a shutdown with `kill_workers`.
    #[error(transparent)]
    ShutdownExecutor(ShutdownError),
    /// The future was cancelled.
    #[error("the future was cancelled")]
    Cancelled,
    /// A deadline passed: a `*_timeout` call, a `map` timeout, or a
    /// `wait`/`as_completed` deadline. The future itself is untouched.
    #[error("the operation timed out")]
    Timeout,
    /// The task panicked in the worker; the worker lives on.
    #[error(transparent)]
    Task(RemoteError),
    /// Arguments or a result could not be encoded or decoded; the pool stays
    /// usable.
    #[error(transparent)]
    Serialization(SerializationError),
    /// The worker program does not register the task.
    #[error(transparent)]
    UnknownTask(UnknownTask),
    /// The worker program registers the task with other types than the handle.
    #[error(transparent)]
    TaskMismatch(TaskMismatch),
    /// No worker program was found.
    #[error(transparent)]
    WorkerNotFound(WorkerNotFound),
    /// The worker program could not be started.
    #[error(transparent)]
    Spawn(SpawnError),
    /// The task ran past its deadline and was killed, with its worker.
    #[error(transparent)]
    DeadlineExceeded(DeadlineExceeded),
    /// An argument of an executor call is out of range (`max_workers == 0`,
    /// `chunksize == 0`, nesting too deep).
    #[error("{0}")]
    InvalidArgument(String),
}

impl Error {
    /// True for [`Error::BrokenProcessPool`] and [`Error::TerminatedWorker`].
    pub fn is_broken_pool(&self) -> bool {
        matches!(
            self,
            Error::BrokenProcessPool(_) | Error::TerminatedWorker(_)
        )
    }

    pub(crate) fn broken(reason: impl Into<String>) -> Error {
        Error::BrokenProcessPool(BrokenProcessPool {
            reason: reason.into(),
        })
    }

    pub(crate) fn shutdown() -> Error {
        Error::ShutdownExecutor(ShutdownError { killed: false })
    }

    pub(crate) fn killed_by_shutdown() -> Error {
        Error::ShutdownExecutor(ShutdownError { killed: true })
    }
}

/// The pool cannot run tasks any more.
#[derive(Debug, Clone)]
pub struct BrokenProcessPool {
    reason: String,
}

impl BrokenProcessPool {
    /// Why the pool broke.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for BrokenProcessPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the process pool is broken: {}", self.reason)
    }
}

impl std::error::Error for BrokenProcessPool {}

/// A worker process died unexpectedly while holding a task.
#[derive(Debug, Clone)]
pub struct TerminatedWorker {
    pub(crate) pid: u32,
    pub(crate) exit: WorkerExit,
    pub(crate) task: Option<String>,
    pub(crate) exit_codes: Vec<WorkerExit>,
    pub(crate) memory_limit: Option<u64>,
}

impl TerminatedWorker {
    /// The pid of the worker that died.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Its exit code, if it exited.
    pub fn exit_code(&self) -> Option<i32> {
        self.exit.code()
    }

    /// The signal that killed it, if one did.
    pub fn signal(&self) -> Option<i32> {
        self.exit.signal()
    }

    /// How it ended.
    pub fn exit(&self) -> WorkerExit {
        self.exit
    }

    /// The task it was running, if it was running one.
    pub fn task(&self) -> Option<&str> {
        self.task.as_deref()
    }

    /// The memory limit it ran out of, if it died of exceeding it.
    pub fn memory_limit_exceeded(&self) -> Option<u64> {
        self.memory_limit
    }
}

impl fmt::Display for TerminatedWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.memory_limit {
            Some(limit) => write!(
                f,
                "A worker process managed by the executor exceeded its memory limit of \
                 {limit} bytes and was terminated."
            )?,
            None => f.write_str(
                "A worker process managed by the executor was unexpectedly terminated. \
                 This could be caused by a segmentation fault while calling the function \
                 or by an excessive memory usage causing the Operating System to kill the \
                 worker.",
            )?,
        }
        f.write_str("\n\nThe exit codes of the workers are {")?;
        for (i, exit) in self.exit_codes.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{exit}")?;
        }
        f.write_str("}")?;
        match &self.task {
            Some(task) => write!(
                f,
                "\n\nThe worker (pid {}) was running task `{task}`.",
                self.pid
            ),
            None => write!(f, "\n\nThe worker had pid {}.", self.pid),
        }
    }
}

impl std::error::Error for TerminatedWorker {}

/// The executor was shut down.
#[derive(Debug, Clone)]
pub struct ShutdownError {
    pub(crate) killed: bool,
}

impl ShutdownError {
    /// True when the task was dropped by a shutdown with `kill_workers`,
    /// false for a submit after shutdown.
    pub fn workers_killed(&self) -> bool {
        self.killed
    }
}

impl fmt::Display for ShutdownError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.killed {
            f.write_str(
                "The Executor was shutdown with `kill_workers=True` before this job could complete.",
            )
        } else {
            f.write_str("cannot schedule new futures after shutdown")
        }
    }
}

impl std::error::Error for ShutdownError {}

/// A task that panicked in its worker.
#[derive(Debug, Clone)]
pub struct RemoteError {
    pub(crate) task: String,
    pub(crate) pid: u32,
    pub(crate) message: String,
    pub(crate) location: Option<String>,
    pub(crate) backtrace: String,
}

impl RemoteError {
    /// The task that panicked.
    pub fn task(&self) -> &str {
        &self.task
    }

    /// The pid of the worker it ran in.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The panic message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Where it panicked (`file:line:column`), if known.
    pub fn location(&self) -> Option<&str> {
        self.location.as_deref()
    }

    /// The worker's backtrace at the panic.
    pub fn backtrace(&self) -> &str {
        &self.backtrace
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "task `{}` panicked in worker {}: {}",
            self.task, self.pid, self.message
        )?;
        if let Some(location) = &self.location {
            write!(f, " (at {location})")?;
        }
        Ok(())
    }
}

impl std::error::Error for RemoteError {}

/// A value that could not be encoded or decoded.
#[derive(Debug, Clone)]
pub struct SerializationError {
    pub(crate) task: String,
    pub(crate) what: &'static str,
    pub(crate) message: String,
}

impl SerializationError {
    pub(crate) fn new(task: &str, what: &'static str, message: impl fmt::Display) -> Self {
        SerializationError {
            task: task.to_owned(),
            what,
            message: message.to_string(),
        }
    }

    /// The task concerned.
    pub fn task(&self) -> &str {
        &self.task
    }

    /// The codec's message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for SerializationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "could not {} of task `{}`: {}",
            self.what, self.task, self.message
        )
    }
}

impl std::error::Error for SerializationError {}

/// The worker program does not register a task of that name.
#[derive(Debug, Clone)]
pub struct UnknownTask {
    pub(crate) task: String,
    pub(crate) program: String,
    pub(crate) known: Vec<String>,
}

impl UnknownTask {
    /// The requested task name.
    pub fn task(&self) -> &str {
        &self.task
    }
}

impl fmt::Display for UnknownTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "task `{}` is not registered in worker program `{}` (it registers: {})",
            self.task,
            self.program,
            self.known.join(", ")
        )
    }
}

impl std::error::Error for UnknownTask {}

/// The worker registers the task with other argument or output types.
#[derive(Debug, Clone)]
pub struct TaskMismatch {
    pub(crate) task: String,
    pub(crate) handle: String,
    pub(crate) worker: String,
}

impl TaskMismatch {
    /// The task name.
    pub fn task(&self) -> &str {
        &self.task
    }

    /// The signature of the handle used to submit (`I -> O`).
    pub fn handle_signature(&self) -> &str {
        &self.handle
    }

    /// The signature the worker registered (`I -> O`).
    pub fn worker_signature(&self) -> &str {
        &self.worker
    }
}

impl fmt::Display for TaskMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "task `{}` is submitted as `{}` but the worker registers it as `{}`",
            self.task, self.handle, self.worker
        )
    }
}

impl std::error::Error for TaskMismatch {}

/// No worker program was found by default discovery.
#[derive(Debug, Clone)]
pub struct WorkerNotFound {
    pub(crate) searched: Vec<String>,
}

impl WorkerNotFound {
    /// Every place that was looked at, in order.
    pub fn searched(&self) -> &[String] {
        &self.searched
    }
}

impl fmt::Display for WorkerNotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no loky worker program found (looked in: {}); ship a `loky-worker` binary beside \
             the application, set LOKY_WORKER, or choose one with `worker_program`",
            self.searched.join("; ")
        )
    }
}

impl std::error::Error for WorkerNotFound {}

/// The worker program could not be started.
#[derive(Debug, Clone)]
pub struct SpawnError {
    pub(crate) program: PathBuf,
    pub(crate) source: Arc<io::Error>,
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "could not start worker program `{}`",
            self.program.display()
        )
    }
}

impl std::error::Error for SpawnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// A task that ran past its deadline; its worker was killed and replaced.
#[derive(Debug, Clone)]
pub struct DeadlineExceeded {
    pub(crate) task: String,
    pub(crate) timeout: Duration,
    pub(crate) pid: u32,
}

impl DeadlineExceeded {
    /// The task.
    pub fn task(&self) -> &str {
        &self.task
    }

    /// The deadline it exceeded.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "task `{}` exceeded its deadline of {:?} and its worker (pid {}) was killed",
            self.task, self.timeout, self.pid
        )
    }
}

impl std::error::Error for DeadlineExceeded {}
