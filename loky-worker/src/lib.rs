//! The worker side of loky-rs: the runtime of a worker program, and the
//! stock `loky-worker` binary with built-in diagnostic tasks.
//!
//! A worker program binds [`Task`](loky_proto::Task) names to functions in a
//! [`Registry`] and hands it to [`serve`](fn@serve). An executor starts the program
//! with a private channel (a Unix socket at the fd named by
//! [`loky_proto::env::CHANNEL`]); the worker greets it with its task table,
//! then runs the calls it receives one at a time, in order, and answers each.
//!
// Compile-only: run by hand, a program that calls `serve` exits with code 2.
//! ```no_run
//! use loky::Task;
//! use loky::Registry;
//!
//! pub const SQUARE: Task<i64, i64> = Task::new("square");
//! pub const CONCAT: Task<(String, u32), String> = Task::new("concat");
//!
//! fn main() {
//!     let registry = Registry::new()
//!         .register(SQUARE, |x: i64| x * x)
//!         .register(CONCAT, |(s, n): (String, u32)| s.repeat(n as usize));
//!     loky::serve(registry)
//! }
//! ```
//!
//! # What the runtime guarantees
//!
//! - A task's panic is caught: its caller gets the message, location and
//!   backtrace, and the worker serves on. That holds even for a panic whose
//!   message's `Display` panics, which std turns into an abort: the caller
//!   then gets a placeholder message, and the lost thread stays parked
//!   (with whatever locks the task held) while a new one serves on. The runtime prints nothing on
//!   stdout or stderr (they belong to the tasks) except one line before a
//!   fatal error.
//! - The worker ends as soon as its channel reaches end of file or its
//!   parent dies (Linux: SIGHUP as the parent-death signal, armed first
//!   thing), even while a task runs; a worker that leads its process group
//!   (as an executor starts it) then takes the whole group with it, so
//!   nothing a task spawned outlives it. A worker whose executor died before
//!   it could arm that signal ends quietly instead of serving.
//! - Signals others send end the worker as they end any process (SIGTERM
//!   from its executor's deadlines and kills included); its executor reports
//!   the signal and kills the rest of the group as it reaps the worker.
//!   That holds for SIGSEGV and SIGBUS too, which Rust's runtime handles to
//!   report stack overflows (which it still does).
//! - A worker holds no descriptor of its executor but its channel and
//!   stdio: any other it inherited (a pipe without close-on-exec, say) is
//!   closed at spawn or, failing that, first thing in the worker, so a
//!   pipe's reader sees its end when the executor closes it.
//! - Malformed input, a failed channel and a panic of the runtime itself end
//!   the worker with the documented [`loky_proto::exit_code`]s.
//! - Like loky, a worker whose resident memory grew by more than
//!   [`loky_proto::env::MAX_MEMORY_LEAK_SIZE`] since its first call asks to
//!   retire.
//!
//! # The stock program's layout (feature `link-order`, default)
//!
//! The stock `loky-worker` program is linked with `link/hot-text.ld`, which
//! gathers the functions a worker runs (start-up, serving calls, waiting
//! for the next) in front of the rest of its code, so that an idle worker
//! keeps less of it resident (the kernel maps code 64 KiB around each page
//! first run). Only the layout changes. The script is given to lld and GNU
//! ld; with another linker chosen by hand the build warns and leaves the
//! layout alone. Programs of your own that call [`serve`](fn@serve) are
//! not affected.
//!
//! # Workers on other machines (feature `remote`)
//!
//! Started by an executor's launcher (`srun`, `ssh`, any command) with the
//! argument `--loky-connect-back`, a worker program reads its credentials on
//! standard input, connects back to its executor over TCP with mutual TLS,
//! and serves through that link: [`serve`](fn@serve) and [`serve_if_worker`]
//! do it without any change to the program. The process started by the
//! launcher stays as the worker's agent on that machine: it starts the
//! worker as a local worker of its own (so the memory limit, the process
//! group and the task's output work as above), reports how it ended, and
//! kills it and exits when it loses its executor (connection lost, or no
//! heartbeat for the timeout), since a parent-death signal does not cross
//! machines.
//!
//! # Platform support
//!
//! Unix; tested on Linux only. Resident memory (for leak recycling) is
//! measured on Linux only.

#![deny(missing_docs)]

mod before_main;
mod call;
mod channel;
pub mod diagnostics;
mod executing;
#[cfg(fuzzing)]
pub mod fuzzing;
mod memory;
mod os;
mod outbox;
mod panic;
mod progress;
mod registry;
#[cfg(feature = "remote")]
mod remote;
mod serve;

pub use registry::Registry;
// For the stock worker program's `#[global_allocator]`.
#[doc(hidden)]
pub use os::ExitOnMemoryLimit;
pub use serve::{init, is_worker, serve, serve_if_worker};
