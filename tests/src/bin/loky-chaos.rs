//! `loky-chaos`: the chaos suite of loky-rs (see `loky_tests::chaos`).
//!
//! The program is also its own worker program and its own pool parent, so
//! a plain `cargo run --bin loky-chaos` has everything it needs.

use std::process::ExitCode;

fn main() -> ExitCode {
    loky::serve_if_worker(&loky_tests::registry());
    let args: Vec<String> = std::env::args().skip(1).collect();
    loky_tests::chaos::main(&args)
}
