//! `cargo xtask bench`: the `loky-bench` binary of `loky-tests`, in release,
//! after building the stock `loky-worker` program it measures.

use std::process::ExitCode;

use crate::runner::{self, Workspace};

/// Binary of `loky-tests` that measures the performance targets of DESIGN.md.
const BENCH_BIN: &str = "loky-bench";

/// Tells the bench the command that ran it, for `BENCHMARKS.md`.
const COMMAND_ENV: &str = "LOKY_BENCH_COMMAND";

/// Runs the benchmark with `args` (`--peers` included) passed through.
pub(crate) fn run(workspace: &Workspace, args: &[String]) -> ExitCode {
    if !workspace.has_test_bin(BENCH_BIN) {
        eprintln!("no benchmark is defined yet (expected tests/src/bin/{BENCH_BIN}.rs)");
        return ExitCode::FAILURE;
    }
    // The bench runs the stock worker from beside its own binary; `cargo run`
    // builds only the bench's package, not other packages' binaries.
    let mut build = workspace.cargo(&[
        "build",
        "--release",
        "-p",
        "loky-worker",
        "--bin",
        "loky-worker",
    ]);
    let (built, _) = runner::timed(&runner::display(&build), || runner::run(&mut build));
    if let Err(error) = built {
        eprintln!("error: {error}");
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
    let header = runner::display(&command);
    command.env(COMMAND_ENV, invocation(args));
    let (result, elapsed) = runner::timed(&header, || runner::run(&mut command));
    println!("bench: {:.1}s", elapsed.as_secs_f64());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo xtask bench ARGS`, as a user would type it.
fn invocation(args: &[String]) -> String {
    let mut words = vec!["cargo xtask bench".to_owned()];
    words.extend(args.iter().map(|arg| {
        if arg.is_empty() || arg.contains(char::is_whitespace) {
            format!("\"{arg}\"")
        } else {
            arg.clone()
        }
    }));
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invocation_quotes_words_with_spaces() {
        let args = [
            "--peers".to_owned(),
            "--note".to_owned(),
            "busy box".to_owned(),
        ];
        assert_eq!(
            invocation(&args),
            "cargo xtask bench --peers --note \"busy box\""
        );
        assert_eq!(invocation(&[]), "cargo xtask bench");
    }
}
