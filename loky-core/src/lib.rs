//! The executor of loky-rs: a pool of worker processes with the contract of
//! Python's `concurrent.futures.ProcessPoolExecutor` and loky's robustness.
//!
//! Most users depend on the `loky` facade crate, which re-exports all of
//! this together with the worker runtime. This crate never runs a task
//! itself: tasks run in worker programs (see the `loky-worker` crate), and a
//! worker's crash, abort, runaway or out-of-memory death is detected at once
//! and reported as a typed [`Error`].
//!
//! # Layout
//!
//! - [`ProcessPoolExecutor`] and [`ExecutorBuilder`]: submit, map, shutdown.
//! - [`Future`], [`wait`], [`as_completed`]: results, as in `concurrent.futures`.
//! - [`Error`]: one error type, variants as loky's exception classes.
//! - [`get_reusable_executor`]: loky's process-wide shared executor.
//! - [`cpu_count`], [`cpu_count_physical`]: usable CPUs.
//!
//! Internally, one supervisor thread per pool owns the queue and the
//! workers; each worker has a reader thread (replies, death detection,
//! reaping) and a writer thread (frames out). See `supervisor.md`.

#![deny(missing_docs)]

mod builder;
mod call;
mod config;
mod cpu;
mod error;
mod executor;
mod exit;
mod future;
mod map;
mod os;
mod reusable;
mod supervisor;
mod wait;
mod worker;

pub use builder::{DEFAULT_MAX_DEPTH, ExecutorBuilder, WorkerProgram};
pub use config::{CrashPolicy, Shutdown};
pub use cpu::{cpu_count, cpu_count_physical};
pub use error::{
    BrokenProcessPool, DeadlineExceeded, Error, RemoteError, Result, SerializationError,
    ShutdownError, SpawnError, TaskMismatch, TerminatedWorker, UnknownTask, WorkerNotFound,
};
pub use executor::{CallOptions, ProcessPoolExecutor};
pub use exit::WorkerExit;
pub use future::Future;
pub use loky_proto::Task;
pub use map::Map;
pub use reusable::get_reusable_executor;
pub use wait::{AsCompleted, DoneAndNotDone, ReturnWhen, as_completed, wait};

/// The message of a caught panic payload.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_owned()
    }
}
