//! # loky-rs: a robust process pool for Rust
//!
//! Python's `concurrent.futures.ProcessPoolExecutor` with loky's reusable
//! executor: tasks run in separate worker processes, so a segfault, abort,
//! out-of-memory kill or runaway task in a worker is detected at once,
//! reported as a precise [`Error`], and never hangs, corrupts or outlives
//! the application. Arguments and results are any serde types.
//!
//! ## Quick start
//!
//! Call [`init()`] first in `main`: the program becomes its own worker
//! program, and any function or non-capturing closure of it can be sent to
//! its workers as it is.
//!
//! ```standalone_crate
//! use loky::ProcessPoolExecutor;
//!
//! fn square(x: i64) -> i64 {
//!     x * x
//! }
//!
//! fn main() -> loky::Result<()> {
//!     loky::init(); // started as a worker, this program serves here
//!
//!     let ex = ProcessPoolExecutor::new(2)?; // its workers run this program
//!     assert_eq!(ex.submit_fn(square, 7)?.result()?, 49);
//!     let k = 3; // what a closure would capture travels as its argument
//!     assert_eq!(ex.submit_fn(|(k, x): (i64, i64)| k * x, (k, 7))?.result()?, 21);
//!     let squares: Vec<i64> = ex.map_fn(square, 0..1000).chunksize(100).collect::<loky::Result<_>>()?;
//!     assert_eq!(squares[999], 998_001);
//!     Ok(())
//! }
//! ```
//!
//! A function is only ever sent to a worker running the very same program
//! build (see [`ProcessPoolExecutor::submit_fn`]); the test binaries of the
//! libtest harness become their own workers with [`init_before_main!`].
//!
//! ## Named tasks and separate worker programs
//!
//! A task can also be a typed name that the application and a worker
//! program share, for workers that are not the application itself:
//!
//! ```standalone_crate
//! use loky::{ProcessPoolExecutor, Registry, Task};
//!
//! pub const SQUARE: Task<i64, i64> = Task::new("square");
//!
//! fn main() -> loky::Result<()> {
//!     // This binary serves the named task too (as a separate worker
//!     // binary would with `loky::serve`).
//!     loky::serve_if_worker(&Registry::new().register(SQUARE, |x: i64| x * x));
//!
//!     let ex = ProcessPoolExecutor::new(2)?;
//!     assert_eq!(ex.submit(SQUARE, 7)?.result()?, 49);
//!     Ok(())
//! }
//! ```
//!
//! A separate worker binary shipped beside the application is found by
//! name with [`WorkerProgram::Named`], or as `loky-worker` by default
//! discovery ([`WorkerProgram::Discover`]):
//!
// Compile-only: run by hand, a program that calls `serve` exits with code 2.
//! ```no_run
//! # use loky::Task;
//! # pub const SQUARE: Task<i64, i64> = Task::new("square");
//! // src/bin/my-app-worker.rs
//! fn main() {
//!     loky::serve(loky::Registry::new().register(SQUARE, |x: i64| x * x))
//! }
//! ```
//!
//! ## Examples
//!
//! `cargo run --release --example tour` is a guided tour in a few seconds.
//! The other examples port the programs of loky's documentation, each with
//! its output next to Python's in its doc comment: `crash_recovery`,
//! `worker_termination`, `shutdown_error`, `timeouts`, `cancellation` and
//! `retries` (`cargo run --example NAME`). Every example is its own worker
//! program and submits plain functions, as in the quick start.
//!
//! ## Crash semantics
//!
//! By default a worker's unexpected death breaks the pool, as in loky: every
//! unfinished future fails with [`Error::TerminatedWorker`] (naming the exit
//! code or signal, the pid and the task), later submits fail with the same
//! error, and [`get_reusable_executor`] hands out a fresh pool.
//! [`CrashPolicy::Respawn`] instead fails only the call that was running and
//! replaces the worker. A task's panic never harms its worker: the caller
//! gets [`Error::Task`] with the message and the worker's backtrace.
//!
//! ## Large payloads
//!
//! [`SharedBytes`] is an immutable byte buffer in shared memory for payloads
//! of megabytes (arrays, images, model weights): inside any argument or
//! output type, only its file descriptor travels to and from a local worker.
//! Other frames larger than [`ExecutorBuilder::shm_threshold`] travel to and
//! from local workers through sealed shared memory rather than the socket.
//!
//! ## Crate layout
//!
//! - `loky-proto`: the wire protocol, the [`Task`] handle, function
//!   references and program identity.
//! - `loky-worker`: the worker runtime ([`Registry`], [`serve`]) and the
//!   stock `loky-worker` binary with [`diagnostics`] tasks.
//! - `loky-core`: the executor, futures and supervision.
//! - `loky` (this crate): the public API, re-exported from those three.
//!
//! ## Cargo features
//!
//! - `remote` (off by default): workers on other machines, started by a
//!   `Launcher` such as `srun` or `ssh` and connecting back to the executor
//!   over TCP with mutual TLS. Without it, none of that is compiled.
//!
//! ## Platform support
//!
//! Tested on Linux (x86_64) only, which it relies on for pidfd,
//! `PR_SET_PDEATHSIG` and cgroups. Other Unixes are written for, without
//! those refinements, but never built or tested. Windows is not supported.

#![deny(missing_docs)]

// The application as its own worker.
pub use loky_worker::{init, init_before_main};

// Tasks and the worker side.
pub use loky_proto::program::ProgramId;
pub use loky_proto::{Signature, Task, TaskInfo};

// Large payloads.
pub use loky_proto::SharedBytes;
pub use loky_worker::{Registry, is_worker, serve, serve_if_worker};

pub use loky_proto::exit_code;
pub use loky_worker::diagnostics;

// The executor.
pub use loky_core::{
    CallOptions, CrashPolicy, DEFAULT_MAX_DEPTH, ExecutorBuilder, Map, MapUnordered,
    ProcessPoolExecutor, Shutdown, WorkerProgram, get_reusable_executor,
};

// Futures.
pub use loky_core::{AsCompleted, DoneAndNotDone, Future, ReturnWhen, as_completed, wait};

// Async.
pub use loky_core::{
    AsCompletedStream, MapStream, MapUnorderedStream, WaitAsync, as_completed_stream,
};

// Errors.
pub use loky_core::{
    BrokenProcessPool, DeadlineExceeded, Error, MissingInit, ProgramMismatch, RemoteError, Result,
    SerializationError, ShutdownError, SpawnError, TaskMismatch, TerminatedWorker, UnknownTask,
    WorkerExit, WorkerLost, WorkerNotFound,
};

// Workers on other machines.
#[cfg(feature = "remote")]
pub use loky_core::{Launcher, LauncherError};

// Utilities.
pub use loky_core::{cpu_count, cpu_count_physical};

/// The README's Rust examples, compiled and run as doctests
/// (`cargo test -p loky --doc`) so that the first example a user reads
/// keeps working. Hidden: it exists only when rustdoc collects doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
