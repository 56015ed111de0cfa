//! The steps of `cargo xtask test`: what each does, how it ended, and the
//! summary table that ends the run.

use std::fmt;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::libtest;
use crate::runner::{self, Failure};

/// What a step does.
pub(crate) enum Action {
    /// Run the commands in turn; success is a zero exit of each.
    Run(Vec<Command>),
    /// Run a command; success is a zero exit and stdout containing every
    /// substring.
    Expect(Command, &'static [&'static str]),
    /// Build the test binaries with the command (cargo's JSON messages on
    /// stdout), then run each within the given deadline of its own.
    Libtest(Command, Duration),
    /// Do nothing, for the given reason.
    Skip(String),
}

/// One row of the run.
pub(crate) struct Step {
    /// Short name, shown in headers and the summary.
    pub(crate) name: String,
    /// Past this, the step is stopped with its process group and fails as
    /// hung.
    pub(crate) deadline: Duration,
    /// What it does.
    pub(crate) action: Action,
}

impl Step {
    /// Runs `commands` in turn within `deadline`.
    pub(crate) fn run(name: &str, deadline: Duration, commands: Vec<Command>) -> Self {
        Step {
            name: name.to_owned(),
            deadline,
            action: Action::Run(commands),
        }
    }

    /// A step not taken, for `reason`.
    pub(crate) fn skip(name: &str, reason: &str) -> Self {
        Step {
            name: name.to_owned(),
            deadline: Duration::ZERO,
            action: Action::Skip(reason.to_owned()),
        }
    }
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Status {
    /// Ran and succeeded.
    Passed,
    /// Ran and failed.
    Failed,
    /// Something it ran (the command shown) was still running at its
    /// deadline: it hung, and was stopped.
    Hung(String, Duration),
    /// Not run, for the given reason.
    Skipped(String),
    /// An earlier step failed.
    NotRun,
}

impl Status {
    fn is_failure(&self) -> bool {
        matches!(self, Status::Failed | Status::Hung(..))
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Passed => f.write_str("ok"),
            Status::Failed => f.write_str("FAILED"),
            Status::Hung(_, deadline) => write!(
                f,
                "HUNG (stopped at its {} deadline)",
                runner::format_deadline(*deadline)
            ),
            Status::Skipped(reason) => write!(f, "skipped ({reason})"),
            Status::NotRun => f.write_str("not run"),
        }
    }
}

/// The outcome of one step, for the summary.
pub(crate) struct Report {
    /// The step's name.
    pub(crate) name: String,
    /// How it ended.
    pub(crate) status: Status,
    /// Wall time; zero when it did not run.
    pub(crate) elapsed: Duration,
}

impl Report {
    /// Whether the step failed or hung.
    pub(crate) fn failed(&self) -> bool {
        self.status.is_failure()
    }
}

/// Takes the steps in order; after a failure the rest are not run.
pub(crate) fn execute(steps: Vec<Step>) -> Vec<Report> {
    let count = steps.len();
    let mut failed = false;
    let mut reports = Vec::with_capacity(count);
    for (index, step) in steps.into_iter().enumerate() {
        let header = format!("[{}/{count}] {}", index + 1, step.name);
        let (status, elapsed) = if failed {
            (Status::NotRun, Duration::ZERO)
        } else {
            take(&header, step.deadline, step.action)
        };
        failed |= status.is_failure();
        reports.push(Report {
            name: step.name,
            status,
            elapsed,
        });
    }
    reports
}

/// Takes one step under `header`.
fn take(header: &str, deadline: Duration, action: Action) -> (Status, Duration) {
    let limit = runner::format_deadline(deadline);
    match action {
        Action::Skip(reason) => {
            println!("\n==> {header}: skipped ({reason})");
            (Status::Skipped(reason), Duration::ZERO)
        }
        Action::Run(mut commands) => {
            let shown: Vec<String> = commands.iter().map(runner::display).collect();
            let header = format!("{header} (deadline {limit}): {}", shown.join(" && "));
            let (result, elapsed) = runner::timed(&header, || run_in_turn(&mut commands, deadline));
            (status_of(result), elapsed)
        }
        Action::Expect(mut command, expect) => {
            let header = format!("{header} (deadline {limit}): {}", runner::display(&command));
            let (result, elapsed) = runner::timed(&header, || {
                runner::capture_within(&mut command, deadline)
                    .and_then(|stdout| check_output(&stdout, expect).map_err(Failure::Failed))
            });
            (status_of(result), elapsed)
        }
        Action::Libtest(mut build, per_binary) => {
            let header = format!(
                "{header} (deadline {limit}, {} per test binary): {}, then each test binary",
                runner::format_deadline(per_binary),
                runner::display(&build)
            );
            let (result, elapsed) = runner::timed(&header, || {
                libtest::build_and_run(&mut build, deadline, per_binary)
            });
            (status_of(result), elapsed)
        }
    }
}

/// Runs `commands` one after the other, all within `deadline`.
fn run_in_turn(commands: &mut [Command], deadline: Duration) -> Result<(), Failure> {
    let start = Instant::now();
    for command in commands {
        let left = deadline.saturating_sub(start.elapsed());
        match runner::run_within(command, left) {
            // The deadline is the step's, not the command's.
            Err(Failure::TimedOut { command, .. }) => {
                return Err(Failure::TimedOut { command, deadline });
            }
            other => other?,
        }
    }
    Ok(())
}

/// The status of a step that ended with `result`, reporting a failure.
fn status_of(result: Result<(), Failure>) -> Status {
    match result {
        Ok(()) => Status::Passed,
        Err(failure @ Failure::TimedOut { .. }) => {
            eprintln!("error: {failure}");
            let Failure::TimedOut { command, deadline } = failure else {
                unreachable!("matched above")
            };
            Status::Hung(command, deadline)
        }
        Err(Failure::Failed(message)) => {
            eprintln!("error: {message}");
            Status::Failed
        }
    }
}

/// Checks that `stdout` contains every `expect` substring; on failure the
/// error names the missing ones and shows the output.
pub(crate) fn check_output(stdout: &str, expect: &[&str]) -> Result<(), String> {
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

/// Prints one row per step and the total, then, if a step hung, a line
/// naming it.
pub(crate) fn print_summary(reports: &[Report]) {
    let failed = reports.iter().any(Report::failed);
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
            Status::Passed | Status::Failed | Status::Hung(..) => format_duration(*elapsed),
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
    for report in reports {
        if let Status::Hung(what, deadline) = &report.status {
            println!(
                "step `{}` hung: `{what}` was still running after its {} deadline and was \
                 stopped with its process group",
                report.name,
                runner::format_deadline(*deadline)
            );
        }
    }
}

/// Seconds with one decimal, such as `12.3s`.
fn format_duration(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_check_names_missing_substrings() {
        assert_eq!(check_output("sum = 42\ndone\n", &["42", "done"]), Ok(()));
        let error = check_output("sum = 41\n", &["42", "sum"]).unwrap_err();
        assert!(error.contains("[\"42\"]"), "{error}");
    }

    fn statuses(steps: Vec<Step>) -> Vec<Status> {
        execute(steps)
            .into_iter()
            .map(|report| report.status)
            .collect()
    }

    #[test]
    fn failure_stops_later_steps() {
        let minute = Duration::from_secs(60);
        let steps = vec![
            Step::skip("fmt", "--quick"),
            Step::run("a", minute, vec![Command::new("false")]),
            Step::run("b", minute, vec![Command::new("true")]),
        ];
        let skipped = Status::Skipped("--quick".into());
        assert_eq!(statuses(steps), [skipped, Status::Failed, Status::NotRun]);
    }

    /// Catches a deadline that is not enforced (the step would take 60 s)
    /// or that leaves the step's process group running: the `sleep` that
    /// the shell started in the background must die with it.
    #[test]
    fn a_step_past_its_deadline_hangs_and_its_process_group_is_killed() {
        let dir = std::env::temp_dir().join(format!("xtask-hang-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pid_file = dir.join("sleeper");
        let mut shell = Command::new("sh");
        shell
            .arg("-c")
            .arg(r#"sleep 60 & echo $! > "$1"; wait"#)
            .arg("sh")
            .arg(&pid_file);
        let deadline = Duration::from_millis(500);
        let start = Instant::now();
        let steps = vec![
            Step::run("hangs", deadline, vec![shell]),
            Step::run("after", deadline, vec![Command::new("true")]),
        ];
        let hung = match &statuses(steps)[..] {
            [Status::Hung(what, d), Status::NotRun] if *d == deadline => what.clone(),
            other => panic!("{other:?}"),
        };
        assert!(hung.starts_with("sh -c "), "{hung}");
        // TERM reaches the shell and the sleep at once; the grace is not
        // waited out in full.
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{:?}",
            start.elapsed()
        );
        let sleeper = std::fs::read_to_string(&pid_file).unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", sleeper.trim()));
        let alive = stat.is_ok_and(|s| !s.contains(") Z ") && !s.contains(") X "));
        assert!(!alive, "the step's background sleep {sleeper} survived");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_summary_names_a_hung_step() {
        let status = Status::Hung("cargo test".into(), Duration::from_secs(1800));
        assert_eq!(status.to_string(), "HUNG (stopped at its 30m deadline)");
        assert!(status.is_failure());
    }
}
