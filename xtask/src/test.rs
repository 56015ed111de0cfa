//! `cargo xtask test`: every check, in order, stopping at the first failure.
//!
//! The steps are fmt, clippy, doc, test, doctest, chaos, one step per
//! entry of [`EXAMPLES`], and a short run of each fuzz target. A summary table of every step with its status and
//! wall time ends the run, failed or not.

use std::fmt;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use crate::runner::{self, Workspace};

mod remote;

/// An example of the `loky` package that `cargo xtask test` runs and checks.
struct Example {
    /// Example name (`loky/examples/NAME.rs`).
    name: &'static str,
    /// Arguments after `--`.
    args: &'static [&'static str],
    /// Substrings that its stdout must contain, each anywhere.
    expect: &'static [&'static str],
}

/// The examples run by `cargo xtask test`, each as
/// `cargo run -p loky --example NAME -- ARGS` whose stdout must contain
/// every `expect` substring.
///
/// To add one, append an entry, for instance
/// `Example { name: "quick_start", args: &["--workers", "2"], expect: &["done: 42"] }`.
/// Prefer output that does not depend on timing or the machine (no counts of
/// CPUs, no durations), so the check is stable on a 2-core CI machine.
const EXAMPLES: &[Example] = &[
    Example {
        name: "async_service",
        args: &[],
        expect: &[
            "200 requests: 188 answered, 4 crashed their worker, 4 past their deadline, \
             4 rejected by the handler\n",
            "the pool is not broken: true\n",
            "batch of 50: 50 results streamed, sum = 122650\n",
            "a request whose client gave up after 1 ms: its task still finished: Ok(99)\n",
            "shut down: true, workers left: 0\n",
        ],
    },
    Example {
        name: "progress",
        args: &[],
        expect: &["2000 items mapped, 0 failed, sum = 7996000\n"],
    },
    Example {
        name: "tour",
        args: &[],
        expect: &[
            "square(7) = 49",
            "parse(\"forty-two\") = Err(\"invalid digit found in string\")",
            "divide(1, 0) panicked: task `fn((i64, i64)) -> i64` panicked in worker",
            "attempt to divide by zero",
            "the workers survived",
            "The exit codes of the workers are {SIGABRT(-6)}",
            "submit on the broken pool fails at once: true",
            "get_reusable() replaced the broken pool: square(8) = 64",
            "exit(3) -> EXIT(3), then square(9) = 81, pool broken: false",
            "exceeded its deadline of 300ms",
            "pool broken: false; square(10) = 100",
            "400/400",
            "sum of squares = 21253400",
        ],
    },
    Example {
        name: "crash_recovery",
        args: &[],
        // Whether tasks 0-2 and 4 succeed depends on timing, as in Python.
        expect: &[
            "Task 3 failed: A worker process managed by the executor was unexpectedly terminated.",
            "The exit codes of the workers are {EXIT(1)}",
            "New executor created successfully",
            "New executor: problematic_task(4) = 8",
        ],
    },
    Example {
        name: "worker_termination",
        args: &[],
        expect: &[
            "Size 1M: Success (0)",
            "Size 10M: Success (0)",
            "Size 100M: Success (0)",
            "Size 1000M: Worker terminated (A worker process managed by the executor exceeded \
             its memory limit of 1073741824 bytes",
            "The exit codes of the workers are {EXIT(77)}",
            "Size 10000M: Worker terminated (",
        ],
    },
    Example {
        name: "shutdown_error",
        args: &[],
        expect: &[
            "Before shutdown: 10\n",
            "Cannot use shutdown executor: cannot schedule new futures after shutdown\n",
            "With new executor: 20\n",
        ],
    },
    Example {
        name: "timeouts",
        args: &["--quick"],
        expect: &[
            "Task (0.5s, timeout 1.5s): Completed after 0.5 seconds\n",
            "Task (2.5s, timeout 1s): Timed out\n",
            "Task (1s, timeout 2s): Completed after 1 seconds\n",
        ],
    },
    Example {
        name: "cancellation",
        args: &["--quick"],
        expect: &[
            "Could not cancel task 1 (already running)\n",
            "Successfully cancelled task 3\n",
            "Task 0: Task 0 result\n",
            "Task 1: Task 1 result\n",
            "Task 2: Task 2 result\n",
            "Task 3: Was cancelled\n",
            "Cancelled 1 tasks\n",
        ],
    },
    Example {
        name: "retries",
        args: &["--quick"],
        // Seeded: every attempt's fate, hence the whole run, is reproducible.
        expect: &[
            "✗ Task 1: Timeout (retry 3)\n✗ Task 1: Gave up after 2 retries\n",
            "✗ Task 8: Timeout (retry 1)\n✗ Task 8: Timeout (retry 2)\n\
             ✗ Task 8: Application error (Task 8: Intentional error)\n",
            "Final Results:\n\
             Task 0: Task 0: Success\n\
             Task 1: Failed after 2 retries\n\
             Task 2: Error: Task 2: Intentional error\n\
             Task 3: Task 3: Success\n\
             Task 4: Task 4: Success\n\
             Task 5: Error: Task 5: Intentional error\n\
             Task 6: Task 6: Success\n\
             Task 7: Task 7: Success\n\
             Task 8: Error: Task 8: Intentional error\n\
             Task 9: Error: Task 9: Intentional error\n",
        ],
    },
];

/// Binary of `loky-tests` that runs the chaos suite, if it exists.
const CHAOS_BIN: &str = "loky-chaos";

/// Arguments passed to the chaos binary after `--`: a fixed budget of
/// rounds (about a minute on two cores) with a fresh seed each run (printed;
/// `--seed N` replays it).
const CHAOS_ARGS: &[&str] = &["--rounds", "400"];

/// Options of `cargo xtask test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Options {
    /// Skip fmt, clippy and doc (`--quick`).
    quick: bool,
    /// Run the chaos step (cleared by `--no-chaos`).
    chaos: bool,
    /// Run the Slurm tests (`--slurm`).
    slurm: bool,
}

impl Options {
    /// Parses the arguments after `test`.
    pub(crate) fn parse(args: &[String]) -> Result<Self, String> {
        let mut options = Options {
            quick: false,
            chaos: true,
            slurm: false,
        };
        for arg in args {
            match arg.as_str() {
                "--quick" => options.quick = true,
                "--no-chaos" => options.chaos = false,
                "--slurm" => options.slurm = true,
                other => return Err(format!("unknown option `{other}` for `test`")),
            }
        }
        Ok(options)
    }
}

/// What a step does.
enum Action {
    /// Run a command; success is a zero exit.
    Run(Command),
    /// Run a command; success is a zero exit and stdout containing every substring.
    Expect(Command, &'static [&'static str]),
    /// Do nothing, for the given reason.
    Skip(String),
}

/// One row of the run.
struct Step {
    /// Short name, shown in headers and the summary.
    name: String,
    /// What it does.
    action: Action,
}

impl Step {
    fn run(name: &str, command: Command) -> Self {
        Step {
            name: name.to_owned(),
            action: Action::Run(command),
        }
    }

    fn skip(name: &str, reason: &str) -> Self {
        Step {
            name: name.to_owned(),
            action: Action::Skip(reason.to_owned()),
        }
    }
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    /// Ran and succeeded.
    Passed,
    /// Ran and failed.
    Failed,
    /// Not run, for the given reason.
    Skipped(String),
    /// An earlier step failed.
    NotRun,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Passed => f.write_str("ok"),
            Status::Failed => f.write_str("FAILED"),
            Status::Skipped(reason) => write!(f, "skipped ({reason})"),
            Status::NotRun => f.write_str("not run"),
        }
    }
}

/// The outcome of one step, for the summary.
struct Report {
    /// The step's name.
    name: String,
    /// How it ended.
    status: Status,
    /// Wall time; zero when it did not run.
    elapsed: Duration,
}

/// Runs `cargo xtask test` with `options`.
pub(crate) fn run(workspace: &Workspace, options: Options) -> ExitCode {
    let reports = execute(plan(workspace, options));
    print_summary(&reports);
    if reports.iter().any(|report| report.status == Status::Failed) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The steps to take, in order.
fn plan(workspace: &Workspace, options: Options) -> Vec<Step> {
    let mut steps = Vec::new();
    if options.quick {
        for name in ["fmt", "clippy", "doc"] {
            steps.push(Step::skip(name, "--quick"));
        }
    } else {
        steps.push(Step::run(
            "fmt",
            workspace.cargo(&["fmt", "--all", "--", "--check"]),
        ));
        let clippy = [
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ];
        steps.push(Step::run("clippy", workspace.cargo(&clippy)));
        let mut doc = workspace.cargo(&["doc", "--workspace", "--no-deps"]);
        doc.env("RUSTDOCFLAGS", "-D warnings");
        steps.push(Step::run("doc", doc));
    }
    steps.push(Step::run("test", test_command(workspace)));
    // nextest does not run doctests.
    steps.push(Step::run(
        "doctest",
        workspace.cargo(&["test", "--workspace", "--doc"]),
    ));
    steps.extend(remote::steps(workspace, options));
    steps.push(chaos_step(workspace, options));
    steps.push(map_chaos_step(workspace, options));
    steps.extend(example_steps(workspace));
    steps.push(Step::run("fuzz", crate::fuzz::ci_command(workspace)));
    steps
}

/// `cargo nextest run` when nextest is installed, else `cargo test`.
fn test_command(workspace: &Workspace) -> Command {
    let nextest = workspace
        .cargo(&["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if nextest {
        workspace.cargo(&["nextest", "run", "--workspace", "--no-fail-fast"])
    } else {
        workspace.cargo(&["test", "--workspace"])
    }
}

/// The chaos run, when enabled and its binary exists.
fn chaos_step(workspace: &Workspace, options: Options) -> Step {
    if !options.chaos {
        return Step::skip("chaos", "--no-chaos");
    }
    if !workspace.has_test_bin(CHAOS_BIN) {
        return Step::skip("chaos", "no loky-chaos binary yet");
    }
    let mut command = workspace.cargo(&[
        "run",
        "--release",
        "-p",
        "loky-tests",
        "--bin",
        CHAOS_BIN,
        "--",
    ]);
    command.args(CHAOS_ARGS);
    Step::run("chaos", command)
}

/// Binary of `loky-tests` that runs the map scenario of the chaos suite.
const MAP_CHAOS_BIN: &str = "loky-map-chaos";

/// Its rounds: maps whose items crash, hang or panic at random.
const MAP_CHAOS_ARGS: &[&str] = &["--rounds", "400"];

/// The map chaos run, with the chaos step.
fn map_chaos_step(workspace: &Workspace, options: Options) -> Step {
    if !options.chaos {
        return Step::skip("map-chaos", "--no-chaos");
    }
    if !workspace.has_test_bin(MAP_CHAOS_BIN) {
        return Step::skip("map-chaos", "no loky-map-chaos binary");
    }
    let mut command = workspace.cargo(&[
        "run",
        "--release",
        "-p",
        "loky-tests",
        "--bin",
        MAP_CHAOS_BIN,
        "--",
    ]);
    command.args(MAP_CHAOS_ARGS);
    Step::run("map-chaos", command)
}

/// One step per entry of [`EXAMPLES`], or a skipped row when there is none.
fn example_steps(workspace: &Workspace) -> Vec<Step> {
    if EXAMPLES.is_empty() {
        return vec![Step::skip("examples", "none listed")];
    }
    EXAMPLES
        .iter()
        .map(|example| {
            let mut command =
                workspace.cargo(&["run", "-p", "loky", "--example", example.name, "--"]);
            // Only stdout is checked; build errors, panics and what workers
            // write on stderr stay visible.
            command.args(example.args).stderr(Stdio::inherit());
            Step {
                name: format!("example {}", example.name),
                action: Action::Expect(command, example.expect),
            }
        })
        .collect()
}

/// Takes the steps in order; after a failure the rest are not run.
fn execute(steps: Vec<Step>) -> Vec<Report> {
    let count = steps.len();
    let mut failed = false;
    let mut reports = Vec::with_capacity(count);
    for (index, Step { name, action }) in steps.into_iter().enumerate() {
        let header = format!("[{}/{count}] {name}", index + 1);
        let (status, elapsed) = match action {
            _ if failed => (Status::NotRun, Duration::ZERO),
            Action::Skip(reason) => {
                println!("\n==> {header}: skipped ({reason})");
                (Status::Skipped(reason), Duration::ZERO)
            }
            Action::Run(mut command) => {
                let header = format!("{header}: {}", runner::display(&command));
                let (result, elapsed) = runner::timed(&header, || runner::run(&mut command));
                (status_of(result), elapsed)
            }
            Action::Expect(mut command, expect) => {
                let header = format!("{header}: {}", runner::display(&command));
                let (result, elapsed) = runner::timed(&header, || {
                    runner::run_capturing(&mut command)
                        .and_then(|stdout| check_output(&stdout, expect))
                });
                (status_of(result), elapsed)
            }
        };
        failed |= status == Status::Failed;
        reports.push(Report {
            name,
            status,
            elapsed,
        });
    }
    reports
}

/// Passed or failed, reporting the error of a failure.
fn status_of(result: Result<(), String>) -> Status {
    match result {
        Ok(()) => Status::Passed,
        Err(error) => {
            eprintln!("error: {error}");
            Status::Failed
        }
    }
}

/// Checks that `stdout` contains every `expect` substring; on failure the
/// error names the missing ones and shows the output.
fn check_output(stdout: &str, expect: &[&str]) -> Result<(), String> {
    let missing: Vec<&str> = expect
        .iter()
        .copied()
        .filter(|want| !stdout.contains(want))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("stdout lacks {missing:?}; it was:\n{stdout}"))
    }
}

/// Prints one row per step and the total.
fn print_summary(reports: &[Report]) {
    let failed = reports.iter().any(|report| report.status == Status::Failed);
    let total: Duration = reports.iter().map(|report| report.elapsed).sum();
    let width = reports
        .iter()
        .map(|report| report.name.len())
        .max()
        .unwrap_or(0)
        .max("total".len());
    println!("\nsummary:");
    for Report {
        name,
        status,
        elapsed,
    } in reports
    {
        let time = match status {
            Status::Passed | Status::Failed => format_duration(*elapsed),
            Status::Skipped(_) | Status::NotRun => "-".to_owned(),
        };
        println!("  {name:<width$}  {time:>8}  {status}");
    }
    let overall = if failed { "FAILED" } else { "ok" };
    println!(
        "  {:<width$}  {:>8}  {overall}",
        "total",
        format_duration(total)
    );
}

/// Seconds with one decimal, such as `12.3s`.
fn format_duration(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, String> {
        Options::parse(&args.iter().map(|arg| arg.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn options() {
        assert_eq!(
            parse(&[]),
            Ok(Options {
                quick: false,
                chaos: true,
                slurm: false,
            })
        );
        assert_eq!(
            parse(&["--quick", "--no-chaos", "--slurm"]),
            Ok(Options {
                quick: true,
                chaos: false,
                slurm: true,
            })
        );
        assert!(parse(&["--fast"]).is_err());
    }

    #[test]
    fn output_check_names_missing_substrings() {
        assert_eq!(check_output("sum = 42\ndone\n", &["42", "done"]), Ok(()));
        let error = check_output("sum = 41\n", &["42", "sum"]).unwrap_err();
        assert!(error.contains("[\"42\"]"), "{error}");
    }

    #[cfg(unix)]
    #[test]
    fn failure_stops_later_steps() {
        let steps = vec![
            Step::skip("fmt", "--quick"),
            Step {
                name: "a".into(),
                action: Action::Run(Command::new("false")),
            },
            Step {
                name: "b".into(),
                action: Action::Run(Command::new("true")),
            },
        ];
        let statuses: Vec<Status> = execute(steps)
            .into_iter()
            .map(|report| report.status)
            .collect();
        let skipped = Status::Skipped("--quick".into());
        assert_eq!(statuses, [skipped, Status::Failed, Status::NotRun]);
    }

    #[test]
    fn examples_are_well_formed() {
        for example in EXAMPLES {
            assert!(
                !example.name.is_empty() && !example.expect.is_empty(),
                "{}",
                example.name
            );
        }
    }
}
