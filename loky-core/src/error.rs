//! The one error type of loky-rs.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::exit::{WorkerExit, WorkerLost};

mod program;

pub use program::{MissingInit, ProgramMismatch};

/// `Result` with [`Error`] as its error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong with an executor, a future or a task.
///
/// Match the variants to tell cases apart, as Python code catches
/// `BrokenProcessPool`, `TerminatedWorkerError`, `CancelledError` and so on.
/// [`Error::is_broken_pool`] is true for both broken-pool variants, as
/// `TerminatedWorkerError` is a `BrokenProcessPool` in Python.
///
/// ```
/// use std::time::Duration;
/// use loky::{Error, ProcessPoolExecutor, Task};
///
/// const PARSE: Task<String, Result<u64, String>> = Task::new("parse");
///
/// # // Runs where LOKY_WORKER names a worker program (`cargo xtask test` sets it).
/// # if std::env::var_os("LOKY_WORKER").is_none() { return Ok(()); }
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
    /// `chunksize == 0`, nesting too deep), or a function cannot be sent
    /// (it is not in this program's code).
    #[error("{0}")]
    InvalidArgument(String),
    /// A function was not sent to a worker because the worker runs another
    /// program build; the pool is not broken.
    #[error(transparent)]
    ProgramMismatch(ProgramMismatch),
    /// The worker program's `main` builds an executor before calling
    /// `loky::init()`: its workers end at once and the pool is broken.
    #[error(transparent)]
    MissingInit(MissingInit),
}

impl Error {
    /// True for [`Error::BrokenProcessPool`] and [`Error::TerminatedWorker`]
    /// (and [`Error::MissingInit`], which breaks the pool too).
    pub fn is_broken_pool(&self) -> bool {
        matches!(
            self,
            Error::BrokenProcessPool(_) | Error::TerminatedWorker(_) | Error::MissingInit(_)
        )
    }

    pub(crate) fn broken(reason: impl Into<String>) -> Error {
        Error::BrokenProcessPool(BrokenProcessPool {
            reason: reason.into(),
            source: None,
        })
    }

    /// A broken pool whose `reason` has a `cause` (kept as its source).
    pub(crate) fn broken_by(
        reason: impl Into<String>,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        Error::BrokenProcessPool(BrokenProcessPool {
            reason: reason.into(),
            source: Some(Arc::from(cause.into())),
        })
    }

    pub(crate) fn shutdown() -> Error {
        Error::ShutdownExecutor(ShutdownError { killed: false })
    }

    pub(crate) fn killed_by_shutdown() -> Error {
        Error::ShutdownExecutor(ShutdownError { killed: true })
    }
}

/// The cause of an error, shared so that errors stay `Clone`.
pub(crate) type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// `": {cause}"` for a cause, nothing without one: the message names what
/// the user can act on, while `source()` keeps the chain.
fn colon_cause(cause: Option<&Cause>) -> String {
    cause
        .map(|c| format!(": {}", chain(&**c)))
        .unwrap_or_default()
}

/// An error and each of its sources, on one line.
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // A message that already ends with its cause (as ours do) is not
        // repeated.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The pool cannot run tasks any more.
#[derive(Debug, Clone)]
pub struct BrokenProcessPool {
    reason: String,
    source: Option<Cause>,
}

impl fmt::Display for BrokenProcessPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cause = colon_cause(self.source.as_ref());
        write!(f, "the process pool is broken: {}{cause}", self.reason)
    }
}

/// The cause itself (not the `Arc` that shares it), so that it downcasts.
impl std::error::Error for BrokenProcessPool {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|c| c as _)
    }
}

impl BrokenProcessPool {
    /// Why the pool broke (without the cause, which
    /// [`source`](std::error::Error::source) returns).
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// A worker process died unexpectedly while holding a task.
///
/// Its message is loky's, paragraphs included (users search for it), with
/// the pid and the task that was running. For a worker started by a
/// launcher (feature `remote`), it also names the worker's host, and for a
/// worker whose connection was lost, the reason ([`WorkerExit::Lost`]).
#[derive(Debug, Clone)]
pub struct TerminatedWorker {
    pub(crate) pid: u32,
    pub(crate) exit: WorkerExit,
    pub(crate) task: Option<String>,
    pub(crate) exit_codes: Vec<WorkerExit>,
    pub(crate) memory_limit: Option<u64>,
    /// For a `map` chunk: which of its items was running.
    pub(crate) item: Option<ChunkItem>,
    /// Where a worker started by a launcher ran.
    pub(crate) remote: Option<Box<RemoteWorker>>,
}

/// Where a worker started by a launcher ran, for [`TerminatedWorker`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteWorker {
    /// The host it ran on.
    pub(crate) host: String,
    /// How its launcher process ended, if it had (only a diagnostic: a
    /// launcher may end well while its worker's machine fails).
    pub(crate) launcher_exit: Option<WorkerExit>,
}

/// Which item of a `map` chunk a worker was running when it died: the
/// first one it had not reported done. Exact when it was the chunk's last
/// one without a result; otherwise one of the items from it to the end of
/// the chunk (items too fast to be reported one by one may have finished
/// after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkItem {
    /// Items of the chunk reported done.
    pub(crate) finished: usize,
    pub(crate) len: usize,
    /// The index of the chunk's first input among the map's, once the map
    /// knows it.
    pub(crate) first_input: Option<usize>,
}

impl ChunkItem {
    pub(crate) fn new(finished: usize, len: usize) -> ChunkItem {
        ChunkItem {
            finished,
            len,
            first_input: None,
        }
    }

    /// The map's inputs among which the running one was.
    fn inputs(&self) -> std::ops::Range<usize> {
        let first = self.first_input.unwrap_or(0);
        first + self.finished..first + self.len
    }
}

impl TerminatedWorker {
    /// A worker of pid `pid` that ended with `exit`, holding no task.
    pub(crate) fn new(pid: u32, exit: WorkerExit) -> TerminatedWorker {
        TerminatedWorker {
            pid,
            exit,
            task: None,
            exit_codes: vec![exit],
            memory_limit: None,
            item: None,
            remote: None,
        }
    }

    /// The pid of the worker that died (on its own host, for a worker
    /// started by a launcher; 0 for one that died before saying hello, whose
    /// pid never reached the executor).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The host the worker ran on, for a worker started by a launcher
    /// (feature `remote`); `None` for the executor's own child processes.
    pub fn host(&self) -> Option<&str> {
        self.remote.as_ref().map(|remote| remote.host.as_str())
    }

    /// Its exit code, if it exited.
    pub fn exit_code(&self) -> Option<i32> {
        self.exit.code()
    }

    /// The signal that killed it, if one did.
    pub fn signal(&self) -> Option<i32> {
        self.exit.signal()
    }

    /// How it ended; [`WorkerExit::Lost`] for a worker on another machine
    /// whose connection was lost or whose heartbeats stopped.
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

    /// For an item of a `map`: the indices of the inputs among which the
    /// one that was running when the worker died is, a single index when
    /// it is known exactly.
    pub fn map_inputs(&self) -> Option<std::ops::Range<usize>> {
        self.item
            .filter(|item| item.first_input.is_some())
            .map(|item| item.inputs())
    }

    /// Says which input of a map this is about: the chunk starting at input
    /// `first`; `at` is the item's position in it when the error is the
    /// item's own (it ran alone).
    pub(crate) fn in_map(&mut self, first: usize, at: Option<usize>) {
        match (&mut self.item, at) {
            (Some(item), _) => item.first_input = Some(first),
            (None, Some(at)) => {
                self.item = Some(ChunkItem {
                    finished: at,
                    len: at + 1,
                    first_input: Some(first),
                });
            }
            (None, None) => {}
        }
    }
}

impl TerminatedWorker {
    /// The worker, for the message: its pid, and its host if remote.
    fn who(&self) -> String {
        match &self.remote {
            Some(remote) => format!("pid {} on host {}", self.pid, remote.host),
            None => format!("pid {}", self.pid),
        }
    }

    /// The first paragraph for a worker whose end is unknown.
    fn write_lost(&self, f: &mut fmt::Formatter<'_>, lost: WorkerLost) -> fmt::Result {
        let host = self.host().unwrap_or("another machine");
        write!(
            f,
            "The executor lost a worker process on host {host} ({lost}): its machine, the \
             network to it or the process that relayed its connection failed, and how the \
             worker ended is unknown. It exits on its own when it loses its executor."
        )?;
        match self.remote.as_ref().and_then(|remote| remote.launcher_exit) {
            Some(exit) => write!(f, " Its launcher ended with {exit}."),
            None => Ok(()),
        }
    }
}

impl fmt::Display for TerminatedWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.exit.lost(), self.memory_limit) {
            (Some(lost), _) => self.write_lost(f, lost)?,
            (None, Some(limit)) => write!(
                f,
                "A worker process managed by the executor exceeded its memory limit of \
                 {limit} bytes and was terminated."
            )?,
            (None, None) => f.write_str(
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
                "\n\nThe worker ({}) was running task `{task}`",
                self.who()
            )?,
            None => return write!(f, "\n\nThe worker had {}.", self.who()),
        }
        let Some(item) = self.item else {
            return f.write_str(".");
        };
        let inputs = item.inputs();
        let whose = if item.first_input.is_some() {
            "input"
        } else {
            "item"
        };
        let of = if item.first_input.is_some() {
            "of the map"
        } else {
            "of its chunk"
        };
        if inputs.len() == 1 {
            write!(f, " on {whose} {} {of}.", inputs.start)
        } else {
            write!(
                f,
                " on one of {whose}s {} to {} {of} (those before {} had finished).",
                inputs.start,
                inputs.end - 1,
                inputs.start
            )
        }
    }
}

impl std::error::Error for TerminatedWorker {}

/// The executor was shut down.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", if *.killed {
    "The Executor was shutdown with `kill_workers=True` before this job could complete."
} else {
    "cannot schedule new futures after shutdown"
})]
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

/// A task that panicked in its worker.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "task `{task}` panicked in worker {pid}: {message}{}",
    .location.as_ref().map(|l| format!(" (at {l})")).unwrap_or_default()
)]
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

/// A value that could not be encoded or decoded.
#[derive(Debug, Clone)]
pub struct SerializationError {
    pub(crate) task: String,
    pub(crate) what: &'static str,
    /// The codec's message, its causes included.
    pub(crate) message: String,
    pub(crate) source: Option<Cause>,
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

impl std::error::Error for SerializationError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|c| c as _)
    }
}

impl SerializationError {
    /// `what` failed for `task` because of `cause` (kept as the source).
    pub(crate) fn new(
        task: &str,
        what: &'static str,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        SerializationError {
            task: task.to_owned(),
            what,
            message: chain(&cause),
            source: Some(Arc::new(cause)),
        }
    }

    /// `what` failed for `task`, for a reason that is no error value (a
    /// reply of the wrong shape).
    pub(crate) fn described(task: &str, what: &'static str, message: impl Into<String>) -> Self {
        SerializationError {
            task: task.to_owned(),
            what,
            message: message.into(),
            source: None,
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

/// The worker program does not register a task of that name.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "task `{task}` is not registered in worker program `{program}` (it registers: {})",
    .known.join(", ")
)]
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

/// The worker registers the task with other argument or output types.
///
/// Its message names the types by their last path segment
/// (`Vec<String> -> i64`) unless that would make the two signatures look
/// the same (two `Point`s of different modules); the accessors give the
/// full names.
#[derive(Debug, Clone, thiserror::Error)]
pub struct TaskMismatch {
    pub(crate) task: String,
    pub(crate) handle: String,
    pub(crate) worker: String,
}

impl fmt::Display for TaskMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (handle, worker) = (
            loky_proto::short_type_name(&self.handle),
            loky_proto::short_type_name(&self.worker),
        );
        let (handle, worker) = if handle == worker {
            (self.handle.as_str().into(), self.worker.as_str().into())
        } else {
            (handle, worker)
        };
        write!(
            f,
            "task `{}` is submitted as `{handle}` but the worker registers it as `{worker}`",
            self.task
        )
    }
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

/// No worker program was found by discovery.
#[derive(Debug, Clone)]
pub struct WorkerNotFound {
    /// The program name looked for, for `WorkerProgram::Named`.
    pub(crate) name: Option<String>,
    pub(crate) searched: Vec<String>,
}

impl fmt::Display for WorkerNotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let searched = self.searched.join("; ");
        match &self.name {
            Some(name) => write!(
                f,
                "worker program `{name}` not found (looked in: {searched}); install it beside \
                 the application or on PATH, or choose one with `worker_program`"
            ),
            None => write!(
                f,
                "no loky worker program found (looked in: {searched}); call `loky::init()` \
                 first in `main` to make this program its own worker, ship a `loky-worker` \
                 binary beside the application, set LOKY_WORKER, or choose one with \
                 `worker_program`"
            ),
        }
    }
}

impl std::error::Error for WorkerNotFound {}

impl WorkerNotFound {
    /// Every place that was looked at, in order.
    pub fn searched(&self) -> &[String] {
        &self.searched
    }
}

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
            "could not start worker program `{}`: {}",
            self.program.display(),
            self.source
        )
    }
}

impl std::error::Error for SpawnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

impl SpawnError {
    pub(crate) fn new(program: impl Into<PathBuf>, source: io::Error) -> Self {
        SpawnError {
            program: program.into(),
            source: Arc::new(source),
        }
    }
}

/// A task that ran past its deadline; its worker was killed and replaced.
#[derive(Debug, Clone, thiserror::Error)]
#[error("task `{task}` exceeded its deadline of {timeout:?} and its worker (pid {pid}) was killed")]
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

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// The messages of `err` and of each of its sources.
    fn messages(err: &(dyn std::error::Error + 'static)) -> Vec<String> {
        let mut out = vec![err.to_string()];
        let mut source = err.source();
        while let Some(cause) = source {
            out.push(cause.to_string());
            source = cause.source();
        }
        out
    }

    #[test]
    fn a_spawn_error_names_its_cause_and_keeps_it_as_source() {
        let cause = io::Error::from_raw_os_error(libc::ENOENT);
        let err = Error::Spawn(SpawnError::new("/no/such", cause));
        assert_eq!(
            err.to_string(),
            "could not start worker program `/no/such`: No such file or directory (os error 2)"
        );
        let chain = messages(&err);
        assert_eq!(chain.len(), 2, "{chain:?}");
        assert_eq!(chain[1], "No such file or directory (os error 2)");
        let io = err.source().unwrap().downcast_ref::<io::Error>();
        assert_eq!(io.unwrap().raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn a_broken_pool_keeps_the_error_that_broke_it() {
        let spawn = SpawnError::new("/no/such", io::Error::from_raw_os_error(libc::EACCES));
        let err = Error::broken_by("a worker could not be started", spawn);
        let chain = messages(&err);
        assert_eq!(chain.len(), 3, "{chain:?}");
        assert!(
            chain[0].starts_with(
                "the process pool is broken: a worker could not be started: \
                 could not start worker program `/no/such`"
            ),
            "{}",
            chain[0]
        );
        assert!(chain[0].contains("Permission denied"), "{}", chain[0]);
        assert!(chain[1].starts_with("could not start worker program"));
        assert!(err.is_broken_pool());
        assert!(Error::broken("no cause").source().is_none());
    }

    #[test]
    fn a_task_mismatch_names_types_briefly_unless_that_hides_the_difference() {
        let mismatch = |handle: &str, worker: &str| {
            Error::TaskMismatch(TaskMismatch {
                task: "t".into(),
                handle: handle.into(),
                worker: worker.into(),
            })
            .to_string()
        };
        assert_eq!(
            mismatch(
                "alloc::vec::Vec<alloc::string::String> -> i64",
                "core::option::Option<app::Point> -> i64"
            ),
            "task `t` is submitted as `Vec<String> -> i64` but the worker registers it as \
             `Option<Point> -> i64`"
        );
        assert_eq!(
            mismatch("app::a::Point -> i64", "app::b::Point -> i64"),
            "task `t` is submitted as `app::a::Point -> i64` but the worker registers it as \
             `app::b::Point -> i64`"
        );
    }

    #[test]
    fn a_serialization_error_keeps_the_codec_error() {
        #[derive(Debug)]
        struct Refuses;
        impl serde::Serialize for Refuses {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("Refuses will not be encoded"))
            }
        }
        let codec = loky_proto::encode_payload(&Refuses).unwrap_err();
        let err = Error::Serialization(SerializationError::new("t", "encode the arguments", codec));
        let chain = messages(&err);
        assert!(chain.len() >= 2, "{chain:?}");
        assert!(
            chain[0].contains("Refuses will not be encoded"),
            "{chain:?}"
        );
        let source = err.source().expect("the codec's error is the source");
        assert!(source.to_string().contains("Refuses will not be encoded"));
    }

    #[test]
    fn every_message_is_one_line_but_loky_s_crash_message() {
        let errors = [
            Error::broken("x"),
            Error::shutdown(),
            Error::killed_by_shutdown(),
            Error::Cancelled,
            Error::Timeout,
            Error::DeadlineExceeded(DeadlineExceeded {
                task: "t".into(),
                timeout: Duration::from_secs(1),
                pid: 1,
            }),
        ];
        for err in errors {
            assert!(!err.to_string().contains('\n'), "{err}");
        }
    }
}
