//! `cargo xtask test`: every check, in order, stopping at the first failure.
//!
//! The steps are fmt, clippy, doc, doc examples (no example on `loky`'s
//! pages names an inner crate), build, test, doctest, package (the
//! published crates build and pass `loky`'s doc tests as packed), the
//! steps of the feature `remote` ([`remote`]), static (tests and their
//! worker linked statically), chaos, one step per entry of
//! [`EXAMPLES`], and a short run of each fuzz target (which builds its
//! instrumented targets itself). Each runs in a process group of its own under
//! a deadline: past it, the step is stopped with its whole group and fails
//! as hung, naming itself. The deadlines are generous for a loaded two-core
//! machine; compilation happens in the steps with the long ones (clippy,
//! doc, build), so the steps that run tests have tight ones. Within the
//! test step, nextest's `ci` profile (`.config/nextest.toml`) stops a
//! single hung test; without nextest each test binary has a deadline of its
//! own ([`libtest`](crate::libtest)). A summary table of every step with its
//! status and wall time ends the run, failed or not.

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use crate::examples::EXAMPLES;
use crate::runner::Workspace;
use crate::static_link;
use crate::steps::{self, Action, Step};

mod remote;

/// Binary of `loky-tests` that runs the chaos suite, if it exists.
const CHAOS_BIN: &str = "loky-chaos";

/// Binary of `loky-tests` that runs the map scenario of the chaos suite
/// (maps whose items crash, hang or panic at random).
const MAP_CHAOS_BIN: &str = "loky-map-chaos";

/// Arguments passed to each chaos binary after `--`: a fixed budget of
/// rounds (about a minute on two cores) with a fresh seed each run (printed;
/// `--seed N` replays it).
const CHAOS_ARGS: &[&str] = &["--rounds", "400"];

/// The nextest profile the test step uses (in `.config/nextest.toml`).
const NEXTEST_PROFILE: &str = "ci";

/// Deadlines of the steps (see the module docs).
mod deadline {
    use super::Duration;

    pub(super) const FMT: Duration = Duration::from_secs(5 * 60);
    /// Checks every target of the workspace from scratch on a clean checkout.
    pub(super) const CLIPPY: Duration = Duration::from_secs(60 * 60);
    pub(super) const DOC: Duration = Duration::from_secs(30 * 60);
    /// Builds every test binary, program and example, and the release chaos
    /// program.
    pub(super) const BUILD: Duration = Duration::from_secs(60 * 60);
    /// Runs the tests, built already (nextest stops a single test sooner).
    pub(super) const TEST: Duration = Duration::from_secs(30 * 60);
    /// One test binary, where nextest is not installed.
    pub(super) const TEST_BINARY: Duration = Duration::from_secs(10 * 60);
    /// Compiles and runs the doctests.
    pub(super) const DOCTEST: Duration = Duration::from_secs(30 * 60);
    /// Packs the published crates, builds them from the packages and runs
    /// `loky`'s doc tests: about a minute, dependencies built already.
    pub(super) const PACKAGE: Duration = Duration::from_secs(20 * 60);
    /// The chaos run, built already: about a minute unloaded.
    pub(super) const CHAOS: Duration = Duration::from_secs(20 * 60);
    /// One example, built already.
    pub(super) const EXAMPLE: Duration = Duration::from_secs(5 * 60);
    /// A step of the feature `remote` (it compiles the workspace with the
    /// feature on).
    pub(super) const REMOTE: Duration = Duration::from_secs(60 * 60);
    /// Builds a few test binaries and the test worker for the host target
    /// (their dependencies again, in a directory of their own) and runs
    /// them: about a minute.
    pub(super) const STATIC: Duration = Duration::from_secs(30 * 60);
    /// Builds the instrumented fuzz targets (about 10 minutes of wall time
    /// on a loaded machine) and runs each briefly.
    pub(super) const FUZZ: Duration = Duration::from_secs(45 * 60);
}

/// Options of `cargo xtask test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Options {
    /// Skip fmt, clippy, doc and doc examples (`--quick`).
    quick: bool,
    /// Run the chaos step (cleared by `--no-chaos`).
    chaos: bool,
    /// Use nextest where installed (cleared by `--no-nextest`).
    nextest: bool,
    /// Run the Slurm tests (`--slurm`).
    slurm: bool,
    /// Run the ssh launcher's tests (`--ssh`).
    ssh: bool,
}

impl Options {
    /// Parses the arguments after `test`.
    pub(crate) fn parse(args: &[String]) -> Result<Self, String> {
        let mut options = Options {
            quick: false,
            chaos: true,
            nextest: true,
            slurm: false,
            ssh: false,
        };
        for arg in args {
            match arg.as_str() {
                "--quick" => options.quick = true,
                "--no-chaos" => options.chaos = false,
                "--no-nextest" => options.nextest = false,
                "--slurm" => options.slurm = true,
                "--ssh" => options.ssh = true,
                other => return Err(format!("unknown option `{other}` for `test`")),
            }
        }
        Ok(options)
    }
}

/// Runs `cargo xtask test` with `options`.
pub(crate) fn run(workspace: &Workspace, options: Options) -> ExitCode {
    let reports = steps::execute(plan(workspace, options));
    steps::print_summary(&reports);
    if reports.iter().any(steps::Report::failed) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The steps to take, in order.
fn plan(workspace: &Workspace, options: Options) -> Vec<Step> {
    let nextest = options.nextest && nextest_installed(workspace);
    plan_with(workspace, options, nextest)
}

/// The steps to take, in order, running the tests with nextest or not.
fn plan_with(workspace: &Workspace, options: Options, nextest: bool) -> Vec<Step> {
    let mut steps = Vec::new();
    if options.quick {
        for name in ["fmt", "clippy", "doc", "doc examples"] {
            steps.push(Step::skip(name, "--quick"));
        }
    } else {
        steps.extend(lint_steps(workspace));
    }
    steps.push(build_step(workspace, options, nextest));
    steps.push(test_step(workspace, nextest));
    steps.push(doctest_step(workspace));
    steps.push(Step::run(
        "package",
        deadline::PACKAGE,
        vec![xtask(&["package"])],
    ));
    steps.extend(remote::steps(workspace, options, nextest));
    steps.push(static_step(workspace, nextest));
    steps.push(chaos_step(workspace, options, CHAOS_BIN, "chaos"));
    steps.push(chaos_step(workspace, options, MAP_CHAOS_BIN, "map-chaos"));
    steps.extend(example_steps(workspace));
    steps.push(Step::run(
        "fuzz",
        deadline::FUZZ,
        vec![crate::fuzz::ci_command(workspace)],
    ));
    steps
}

/// fmt, clippy, doc, and the check of the rendered examples.
fn lint_steps(workspace: &Workspace) -> [Step; 4] {
    let fmt = workspace.cargo(&["fmt", "--all", "--", "--check"]);
    let clippy = workspace.cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    let mut doc = workspace.cargo(&["doc", "--workspace", "--no-deps"]);
    doc.env("RUSTDOCFLAGS", "-D warnings");
    [
        Step::run("fmt", deadline::FMT, vec![fmt]),
        Step::run("clippy", deadline::CLIPPY, vec![clippy]),
        Step::run("doc", deadline::DOC, vec![doc]),
        Step::run(
            "doc examples",
            deadline::FMT,
            vec![xtask(&["doc-examples"])],
        ),
    ]
}

/// This very xtask program, with `args`.
pub(super) fn xtask(args: &[&str]) -> Command {
    let program = std::env::current_exe().unwrap_or_else(|_| "cargo-xtask".into());
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null());
    command
}

fn nextest_installed(workspace: &Workspace) -> bool {
    workspace
        .cargo(&["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Compiles everything later steps run, so that their deadlines measure
/// running alone: the test binaries, every program (the stock worker the
/// doctests use among them), the examples and the release chaos program.
fn build_step(workspace: &Workspace, options: Options, nextest: bool) -> Step {
    let tests = if nextest {
        workspace.cargo(&["nextest", "run", "--workspace", "--no-run"])
    } else {
        workspace.cargo(&[
            "test",
            "--workspace",
            "--lib",
            "--bins",
            "--tests",
            "--no-run",
        ])
    };
    // The examples are built as `cargo run -p loky` builds them: with the
    // features of `loky`'s dependencies alone, which a workspace build
    // unifies differently (it would leave the example steps to compile).
    let mut commands = vec![
        tests,
        workspace.cargo(&["build", "--workspace", "--bins"]),
        workspace.cargo(&["build", "-p", "loky", "--examples"]),
    ];
    let chaos_bins: Vec<&str> = [CHAOS_BIN, MAP_CHAOS_BIN]
        .into_iter()
        .filter(|bin| options.chaos && workspace.has_test_bin(bin))
        .collect();
    if !chaos_bins.is_empty() {
        let mut release = workspace.cargo(&["build", "--release", "-p", "loky-tests"]);
        for bin in chaos_bins {
            release.args(["--bin", bin]);
        }
        commands.push(release);
    }
    Step::run("build", deadline::BUILD, commands)
}

/// The command that runs the workspace's tests: `cargo nextest run` with
/// the `ci` profile, or `cargo test` (the tests of the feature `remote` add
/// their options to it).
fn test_command(workspace: &Workspace, nextest: bool) -> Command {
    if nextest {
        workspace.cargo(&[
            "nextest",
            "run",
            "--workspace",
            "--no-fail-fast",
            "--profile",
            NEXTEST_PROFILE,
        ])
    } else {
        workspace.cargo(&["test", "--workspace", "--lib", "--bins", "--tests"])
    }
}

/// `cargo nextest run` with the `ci` profile when nextest is installed,
/// else each test binary of `cargo test` under a deadline of its own.
fn test_step(workspace: &Workspace, nextest: bool) -> Step {
    if nextest {
        let command = test_command(workspace, true);
        return Step::run("test", deadline::TEST, vec![command]);
    }
    let build = workspace.cargo(&[
        "test",
        "--workspace",
        "--lib",
        "--bins",
        "--tests",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]);
    Step {
        name: "test".to_owned(),
        deadline: deadline::TEST,
        action: Action::Libtest(build, deadline::TEST_BINARY),
    }
}

/// The doctests (nextest does not run them). Those that start a pool find
/// the stock `loky-worker` through `LOKY_WORKER`.
fn doctest_step(workspace: &Workspace) -> Step {
    let mut command = workspace.cargo(&["test", "--workspace", "--doc"]);
    command.env("LOKY_WORKER", stock_worker(workspace));
    Step::run("doctest", deadline::DOCTEST, vec![command])
}

/// Where the build step puts the stock `loky-worker` program.
fn stock_worker(workspace: &Workspace) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace.root().join("target"), PathBuf::from);
    workspace
        .root()
        .join(target)
        .join("debug")
        .join("loky-worker")
}

/// The test binaries of `loky-tests` run linked statically, the test
/// worker with them: its crashes, its memory files and memory limit, its
/// parent's death, its descriptors, its connecting back (by host name
/// among others), and a test binary that is its own worker (`submit_fn`,
/// `loky::init`), locally and through a launcher.
const STATIC_TESTS: &[&str] = &[
    "crash",
    "respawn",
    "shared_memory",
    "memory_limit",
    "parent_death",
    "hygiene",
    "remote",
    "functions",
    "remote_functions",
    "init",
];

/// [`STATIC_TESTS`], built for the host target with every program linked
/// statically, as README shows; skipped where the toolchain does not
/// target glibc.
fn static_step(workspace: &Workspace, nextest: bool) -> Step {
    const NAME: &str = "static";
    let words: &[&str] = if nextest {
        &["nextest", "run", "--profile", NEXTEST_PROFILE]
    } else {
        &["test"]
    };
    let mut test = match static_link::cargo(workspace, words) {
        Ok((test, _)) => test,
        Err(why) => return Step::skip(NAME, &why),
    };
    test.args([
        "--no-fail-fast",
        "-p",
        "loky-tests",
        "--features",
        "loky-tests/remote",
    ]);
    for name in STATIC_TESTS {
        test.args(["--test", name]);
    }
    Step::run(NAME, deadline::STATIC, vec![test])
}

/// The chaos run of `bin`, as step `name`, when enabled and the binary
/// exists.
fn chaos_step(workspace: &Workspace, options: Options, bin: &str, name: &str) -> Step {
    if !options.chaos {
        return Step::skip(name, "--no-chaos");
    }
    if !workspace.has_test_bin(bin) {
        return Step::skip(name, &format!("no {bin} binary"));
    }
    let mut command =
        workspace.cargo(&["run", "--release", "-p", "loky-tests", "--bin", bin, "--"]);
    command.args(CHAOS_ARGS);
    Step::run(name, deadline::CHAOS, vec![command])
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
                deadline: deadline::EXAMPLE,
                action: Action::Expect(command, example.expect),
            }
        })
        .collect()
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
                nextest: true,
                slurm: false,
                ssh: false,
            })
        );
        assert_eq!(
            parse(&["--quick", "--no-chaos", "--no-nextest", "--slurm", "--ssh"]),
            Ok(Options {
                quick: true,
                chaos: false,
                nextest: false,
                slurm: true,
                ssh: true,
            })
        );
        assert!(parse(&["--fast"]).is_err());
    }

    /// Catches a step without a deadline (zero would fail it at once) and
    /// a plan in which the test step runs without nextest's `ci` profile.
    #[test]
    fn every_step_taken_has_a_deadline_and_the_tests_use_the_ci_profile() {
        let workspace = Workspace::locate();
        for nextest in [true, false] {
            let options = Options {
                quick: false,
                chaos: true,
                nextest,
                slurm: true,
                ssh: true,
            };
            let steps = plan_with(&workspace, options, nextest);
            for step in &steps {
                assert!(step.deadline >= Duration::from_secs(60), "{}", step.name);
            }
            let test = steps.iter().find(|s| s.name == "test").unwrap();
            match &test.action {
                Action::Run(commands) if nextest => {
                    let shown = crate::runner::display(&commands[0]);
                    assert!(shown.ends_with("--profile ci"), "{shown}");
                }
                Action::Libtest(_, per_binary) if !nextest => {
                    assert!(*per_binary < test.deadline);
                }
                _ => panic!("unexpected test step (nextest: {nextest})"),
            }
        }
    }
}
