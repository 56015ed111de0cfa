//! `cargo xtask bench`: the `loky-bench` binary of `loky-tests`, in release.

use std::process::ExitCode;

use crate::runner::{self, Workspace};

/// Binary of `loky-tests` that measures the performance targets of DESIGN.md.
const BENCH_BIN: &str = "loky-bench";

/// Runs the benchmark with `args` (`--peers` included) passed through.
pub(crate) fn run(workspace: &Workspace, args: &[String]) -> ExitCode {
    if !workspace.has_test_bin(BENCH_BIN) {
        eprintln!("no benchmark is defined yet (expected tests/src/bin/{BENCH_BIN}.rs)");
        return ExitCode::FAILURE;
    }
    let mut command = workspace.cargo(&[
        "run",
        "--release",
        "-p",
        "loky-tests",
        "--bin",
        BENCH_BIN,
        "--",
    ]);
    command.args(args);
    let (result, elapsed) = runner::timed(&runner::display(&command), || runner::run(&mut command));
    println!("bench: {:.1}s", elapsed.as_secs_f64());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
