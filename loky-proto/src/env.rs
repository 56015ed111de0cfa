//! Environment variables an executor sets for the worker programs it starts.

/// Set by an executor for each worker it starts, as `"<fd>:<parent pid>"`:
/// the file descriptor of the worker's private channel and the pid of the
/// executor's process. A program is a worker only when this is set *and* its
/// parent process is that pid, so a process that a task starts (which
/// inherits the environment but not the channel) never mistakes itself for
/// a worker.
pub const CHANNEL: &str = "LOKY_WORKER_CHANNEL";

/// How deep in nested executors the worker runs (1 for a worker of a
/// top-level executor).
pub const DEPTH: &str = "LOKY_DEPTH";

/// The memory limit of the worker in bytes, when the executor sets one.
pub const MEMORY_LIMIT: &str = "LOKY_WORKER_MEMORY_LIMIT";

/// Set by an executor for a local worker whose channel takes descriptor
/// frames (see [`shm`](crate::shm)): the body size in bytes past which the
/// worker sends a reply in shared memory. Unset, the worker sends every
/// byte over its channel and attaches nothing (it always accepts
/// descriptor frames from its executor). Never set for remote workers.
pub const SHM_THRESHOLD: &str = "LOKY_WORKER_SHM_THRESHOLD";

/// Set by an executor for a local worker it gave a reply journal (see
/// [`JournalWriter`](crate::shm::JournalWriter)): the journal's fd number
/// in the worker, [`JOURNAL_FD_NUMBER`]. Unset, the worker sends every
/// reply as soon as it is ready.
pub const JOURNAL: &str = "LOKY_WORKER_JOURNAL";

/// The largest frame body, in bytes, that the worker may read or send: the
/// executor's `max_frame_size`, so both sides use the same limit. Unset:
/// [`DEFAULT_MAX_FRAME`](crate::DEFAULT_MAX_FRAME).
pub const MAX_FRAME: &str = "LOKY_WORKER_MAX_FRAME";

/// The path of a worker program; read by default worker discovery and set
/// for workers so that a nested executor finds the same program.
pub const WORKER_PROGRAM: &str = "LOKY_WORKER";

/// Resident memory growth (bytes) after which a worker retires as leaking;
/// default 300 MB.
pub const MAX_MEMORY_LEAK_SIZE: &str = "LOKY_MAX_MEMORY_LEAK_SIZE";

/// Seconds between two memory-leak checks of a worker; default 1.
pub const MEMORY_CHECK_INTERVAL: &str = "LOKY_MEMORY_CHECK_INTERVAL";

/// The fd number the channel gets in the worker on Unix.
pub const CHANNEL_FD_NUMBER: i32 = 3;

/// The fd number a local worker's journal gets (see [`JOURNAL`]).
pub const JOURNAL_FD_NUMBER: i32 = 4;

/// The value of [`CHANNEL`] for a worker whose channel is `fd` and whose
/// parent is `parent_pid`.
pub fn channel_value(fd: i32, parent_pid: u32) -> String {
    format!("{fd}:{parent_pid}")
}

/// Parses a [`CHANNEL`] value into `(fd, parent pid)`.
pub fn parse_channel_value(value: &str) -> Option<(i32, u32)> {
    let (fd, pid) = value.split_once(':')?;
    Some((fd.parse().ok()?, pid.parse().ok()?))
}

/// The channel fd and executor pid of [`CHANNEL`] if an executor started
/// this process as a worker: the variable is set and names this process's
/// parent. A process that a task starts inherits the variable but has
/// another parent, so it is never taken for a worker.
pub fn executor_channel() -> Option<(i32, u32)> {
    let value = std::env::var(CHANNEL).ok()?;
    let (fd, executor) = parse_channel_value(&value)?;
    (std::os::unix::process::parent_id() == executor).then_some((fd, executor))
}
