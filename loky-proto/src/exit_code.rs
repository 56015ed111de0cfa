//! Exit codes with a meaning, used by worker programs.
//!
//! Any other exit of a worker is its task's doing (`std::process::exit`,
//! a signal, the OOM killer) and is reported as such.

/// The worker program was started by hand, not by an executor: it printed
/// what it is and left.
pub const NOT_STARTED_BY_EXECUTOR: i32 = 2;

/// The worker's runtime itself failed (a bug, not a task's panic).
pub const INTERNAL_ERROR: i32 = 70;

/// The worker's channel failed with an I/O error other than end of file.
pub const CHANNEL_ERROR: i32 = 74;

/// A connect-back worker (one a launcher started on another machine) got no
/// usable launch ticket, could not reach or authenticate its executor, or
/// lost it.
pub const NO_EXECUTOR: i32 = 75;

/// The worker received a frame it could not read: garbage, an oversized or
/// truncated frame, or a message of another protocol.
pub const PROTOCOL_ERROR: i32 = 76;

/// The worker ran out of memory under its memory limit.
pub const MEMORY_LIMIT: i32 = 77;

/// An executor started this program as a worker, and its `main` built an
/// executor (or submitted work) before calling `loky::init()` (or
/// `loky::serve_if_worker`): the worker leaves at once rather than start
/// workers of its own, which would do the same without end. The parent
/// reports that `main` must call `loky::init()` first.
pub const NOT_INITIALIZED: i32 = 78;

/// A short description of a documented exit code, if `code` is one.
pub fn describe(code: i32) -> Option<&'static str> {
    match code {
        NOT_STARTED_BY_EXECUTOR => Some("the worker was not started by an executor"),
        INTERNAL_ERROR => Some("the worker runtime failed"),
        CHANNEL_ERROR => Some("the worker's channel failed"),
        NO_EXECUTOR => Some("the connect-back worker could not reach its executor, or lost it"),
        PROTOCOL_ERROR => Some("the worker received a malformed frame"),
        MEMORY_LIMIT => Some("the worker exceeded its memory limit"),
        NOT_INITIALIZED => {
            Some("the worker program built an executor before calling `loky::init()`")
        }
        _ => None,
    }
}
