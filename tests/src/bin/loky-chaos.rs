//! `loky-chaos`: the chaos suite of loky-rs (see `loky_tests::chaos`).
//!
//! The program is also its own worker program and its own pool parent, so
//! a plain `cargo run --bin loky-chaos` has everything it needs.

use std::process::ExitCode;

/// In a worker under a memory limit, a failed allocation ends the worker
/// with one line naming the limit, as in the stock worker; elsewhere (the
/// parent, workers without a limit) it is the system allocator.
#[global_allocator]
static ALLOCATOR: loky_worker::ExitOnMemoryLimit = loky_worker::ExitOnMemoryLimit;

fn main() -> ExitCode {
    loky::serve_if_worker(&loky_tests::registry());
    let args: Vec<String> = std::env::args().skip(1).collect();
    loky_tests::chaos::main(&args)
}
