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
//! - [`ProcessPoolExecutor`] and [`ExecutorBuilder`]: submit, map, shutdown;
//!   `submit_fn`, `submit_fn_with`, `map_fn` and `map_unordered_fn` for
//!   functions of this program, sent only to workers of this very build.
//! - [`Future`], [`wait`], [`as_completed`]: results, as in `concurrent.futures`.
//! - Async: `.await` on a [`Future`], [`Map::into_stream`],
//!   [`MapUnordered`], [`as_completed_stream`],
//!   [`ProcessPoolExecutor::shutdown_async`]; no runtime required.
//! - [`Error`]: one error type, variants as loky's exception classes.
//! - [`get_reusable_executor`]: loky's process-wide shared executor.
//! - [`cpu_count`], [`cpu_count_physical`]: usable CPUs.
//!
//! Internally, one supervisor thread per pool owns the queue and the
//! workers; each worker has a reader thread (replies, death detection,
//! reaping) and a writer thread (frames out). A call submitted to an idle
//! pool goes from the caller's thread straight to a free worker. See
//! `supervisor.md`.
//!
//! Modules, from the bottom up (each uses only those above it):
//! `exit`, `deadline`, `pool_thread`, `error`, `program` (which workers may
//! receive functions), `config`, `options`, `callbacks`, `codec`, `output`,
//! `future`, `completions`, `timer`, `call`, `durations`, `link`, `events`,
//! `os`, `worker` (the seam to the operating system), `supervisor`,
//! `builder`, `map`, `executor`, `function` (`submit_fn` and kin), `wait`,
//! `reusable`, `cpu`.

#![deny(missing_docs)]

mod builder;
mod call;
mod callbacks;
mod codec;
mod completions;
mod config;
mod cpu;
mod deadline;
mod durations;
mod error;
mod events;
mod executor;
mod exit;
mod function;
mod future;
#[cfg(feature = "remote")]
mod launcher;
mod link;
mod map;
mod options;
mod os;
mod output;
mod pool_thread;
mod program;
#[cfg(feature = "remote")]
mod remote;
mod rerun;
mod reusable;
mod supervisor;
mod timer;
mod wait;
mod worker;

#[cfg(test)]
mod layering;

pub use builder::{DEFAULT_MAX_DEPTH, ExecutorBuilder, WorkerProgram};
pub use config::{CrashPolicy, Shutdown};
pub use cpu::{cpu_count, cpu_count_physical};
pub use error::{
    BrokenProcessPool, DeadlineExceeded, Error, MissingInit, ProgramMismatch, RemoteError, Result,
    SerializationError, ShutdownError, SpawnError, TaskMismatch, TerminatedWorker, UnknownTask,
    WorkerNotFound,
};
pub use executor::ProcessPoolExecutor;
pub use exit::{WorkerExit, WorkerLost};
pub use future::{Future, WaitAsync};
#[cfg(feature = "remote")]
pub use launcher::{Launcher, LauncherError};
pub use loky_proto::Task;
pub use loky_proto::program::ProgramId;
pub use map::{Map, MapStream, MapUnordered, MapUnorderedStream};
pub use options::CallOptions;
pub use reusable::get_reusable_executor;
pub use wait::{
    AsCompleted, AsCompletedStream, DoneAndNotDone, ReturnWhen, as_completed, as_completed_stream,
    wait,
};
