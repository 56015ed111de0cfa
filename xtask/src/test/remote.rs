//! The steps of `cargo xtask test` for the feature `remote` (workers on
//! other machines), which the default build leaves out.
//!
//! - `remote clippy`, `remote doc`: the workspace with the feature on.
//! - `remote test`: the feature's tests (the loopback ones).
//! - `netns`: a worker in another network namespace, a link taken down;
//!   needs root and iproute2 (`ip`), skipped otherwise.
//! - `slurm` (with `--slurm`): the Slurm tests, against a single-node
//!   cluster that `cargo xtask slurm` starts and stops; `slurm allocation`:
//!   the executors' Slurm tests again inside an allocation (`salloc`), as
//!   in an `sbatch` script, where each worker is a step of the job.
//! - `ssh` (with `--ssh`): the tests of `Launcher::ssh`, against an ssh
//!   server that `cargo xtask ssh` starts on a loopback port and stops.

use std::process::{Command, Stdio};

use super::{Options, deadline, test_command};
use crate::runner::Workspace;
use crate::steps::Step;
use crate::system::is_root;

/// Turns the feature on in every crate of the workspace, and the
/// end-to-end tests of remote executors.
const FEATURES: &str = "loky/remote,loky-tests/remote";

/// The feature's tests: its test binaries and its unit tests.
const FILTER: &str = "binary(connect_back) | binary(remote_link) | binary(remote) \
                      | binary(remote_functions) | test(/^remote::/)";

/// Where the tests that need root or Slurm live, marked `#[ignore]`: the
/// worker's own, and those of whole executors.
const IGNORED_TESTS: &[&str] = &[
    "-p",
    "loky-worker",
    "-p",
    "loky-tests",
    "--features",
    "loky-worker/remote,loky-tests/remote",
    "--test",
    "connect_back",
    "--test",
    "remote_cluster",
];

/// The executors' tests among them, for the run inside an allocation (the
/// worker's own cancel a whole job, which would end the allocation).
const EXECUTOR_TESTS: &[&str] = &[
    "-p",
    "loky-tests",
    "--features",
    "loky-tests/remote",
    "--test",
    "remote_cluster",
];

/// The tests of the ssh launcher, marked `#[ignore]`.
const SSH_TESTS: &[&str] = &[
    "-p",
    "loky-tests",
    "--features",
    "loky-tests/remote",
    "--test",
    "remote_ssh",
];

/// An allocation of two tasks (the single-node cluster has at least two
/// CPUs' worth of them, as the machines that run the tests do).
const ALLOCATION: &[&str] = &["salloc", "--ntasks=2", "--quiet"];

/// The feature's steps, its tests run with nextest or not.
pub(super) fn steps(workspace: &Workspace, options: Options, nextest: bool) -> Vec<Step> {
    let mut steps = Vec::new();
    if options.quick {
        for name in ["remote clippy", "remote doc"] {
            steps.push(Step::skip(name, "--quick"));
        }
    } else {
        let clippy = [
            "clippy",
            "--workspace",
            "--all-targets",
            "--features",
            FEATURES,
            "--",
            "-D",
            "warnings",
        ];
        steps.push(Step::run(
            "remote clippy",
            deadline::REMOTE,
            vec![workspace.cargo(&clippy)],
        ));
        let mut doc = workspace.cargo(&["doc", "--workspace", "--no-deps", "--features", FEATURES]);
        doc.env("RUSTDOCFLAGS", "-D warnings");
        steps.push(Step::run("remote doc", deadline::REMOTE, vec![doc]));
    }
    let mut test = test_command(workspace, nextest);
    test.args(["--features", FEATURES]);
    if nextest {
        test.args(["-E", FILTER]);
    }
    steps.push(Step::run("remote test", deadline::REMOTE, vec![test]));
    steps.push(netns_step(workspace, nextest));
    let all = ignored_tests(workspace, IGNORED_TESTS, "slurm", nextest);
    steps.push(daemon_step(Daemon::Slurm, options, "slurm", &[], &all));
    let executors = ignored_tests(workspace, EXECUTOR_TESTS, "slurm", nextest);
    steps.push(daemon_step(
        Daemon::Slurm,
        options,
        "slurm allocation",
        ALLOCATION,
        &executors,
    ));
    let ssh = ignored_tests(workspace, SSH_TESTS, "ssh_", nextest);
    steps.push(daemon_step(Daemon::Ssh, options, "ssh", &[], &ssh));
    steps
}

/// The ignored tests of `targets` (cargo's arguments) whose names contain
/// `name`.
fn ignored_tests(workspace: &Workspace, targets: &[&str], name: &str, nextest: bool) -> Command {
    if nextest {
        let mut command = workspace.cargo(&["nextest", "run"]);
        command
            .args(targets)
            .args(["--run-ignored", "only", "--no-fail-fast", "-E"])
            .arg(format!("test(/{name}/)"));
        command
    } else {
        let mut command = workspace.cargo(&["test"]);
        command.args(targets).args(["--", "--ignored", name]);
        command
    }
}

fn netns_step(workspace: &Workspace, nextest: bool) -> Step {
    if !is_root() {
        return Step::skip("netns", "needs root");
    }
    let ip = Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !ip {
        return Step::skip("netns", "needs iproute2 (ip)");
    }
    Step::run(
        "netns",
        deadline::REMOTE,
        vec![ignored_tests(workspace, IGNORED_TESTS, "netns", nextest)],
    )
}

/// The daemons that xtask brings up for the tests that need them.
#[derive(Debug, Clone, Copy)]
enum Daemon {
    /// A single-node Slurm cluster (`cargo xtask slurm`, `--slurm`).
    Slurm,
    /// An ssh server (`cargo xtask ssh`, `--ssh`).
    Ssh,
}

/// `tests`, run by `cargo xtask slurm` or `cargo xtask ssh` (after the
/// words of `prefix`) when the option that asks for them is given.
fn daemon_step(
    daemon: Daemon,
    options: Options,
    name: &str,
    prefix: &[&str],
    tests: &Command,
) -> Step {
    let (subcommand, wanted) = match daemon {
        Daemon::Slurm => ("slurm", options.slurm),
        Daemon::Ssh => ("ssh", options.ssh),
    };
    if !wanted {
        return Step::skip(name, &format!("needs --{subcommand}"));
    }
    let xtask = std::env::current_exe().unwrap_or_else(|_| "cargo-xtask".into());
    let mut command = Command::new(xtask);
    command
        .args([subcommand, "--"])
        .args(prefix)
        .arg(tests.get_program())
        .args(tests.get_args())
        .stdin(Stdio::null());
    if let Some(dir) = tests.get_current_dir() {
        command.current_dir(dir);
    }
    Step::run(name, deadline::REMOTE, vec![command])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::Action;

    fn names(steps: &[Step]) -> Vec<&str> {
        steps.iter().map(|step| step.name.as_str()).collect()
    }

    #[test]
    fn the_feature_gets_its_own_checks_and_slurm_waits_for_its_flag() {
        let workspace = Workspace::locate();
        let options = Options::parse(&[]).unwrap();
        let steps = steps(&workspace, options, true);
        assert_eq!(
            names(&steps),
            [
                "remote clippy",
                "remote doc",
                "remote test",
                "netns",
                "slurm",
                "slurm allocation",
                "ssh"
            ]
        );
        assert!(matches!(&steps[4].action, Action::Skip(reason) if reason == "needs --slurm"));
        assert!(matches!(&steps[6].action, Action::Skip(reason) if reason == "needs --ssh"));
        let slurm = Options::parse(&["--slurm".into()]).unwrap();
        let steps = super::steps(&workspace, slurm, true);
        let Action::Run(commands) = &steps[4].action else {
            panic!("the slurm step runs with --slurm");
        };
        let command = &commands[0];
        let args: Vec<_> = command.get_args().map(|a| a.to_string_lossy()).collect();
        assert_eq!(args[..2], ["slurm", "--"]);
        assert!(args.iter().any(|a| a.contains("slurm")), "{args:?}");
        let Action::Run(commands) = &steps[5].action else {
            panic!("the allocation step runs with --slurm");
        };
        let args: Vec<_> = commands[0]
            .get_args()
            .map(|a| a.to_string_lossy())
            .collect();
        assert_eq!(args[..3], ["slurm", "--", "salloc"]);
        assert!(args.iter().any(|a| a == "remote_cluster"), "{args:?}");
        assert!(!args.iter().any(|a| a == "connect_back"), "{args:?}");
        assert!(
            matches!(&steps[6].action, Action::Skip(_)),
            "ssh waits for --ssh"
        );
        let ssh = Options::parse(&["--ssh".into()]).unwrap();
        let steps = super::steps(&workspace, ssh, true);
        let Action::Run(commands) = &steps[6].action else {
            panic!("the ssh step runs with --ssh");
        };
        let args: Vec<_> = commands[0]
            .get_args()
            .map(|a| a.to_string_lossy())
            .collect();
        assert_eq!(args[..2], ["ssh", "--"]);
        assert!(args.iter().any(|a| a == "remote_ssh"), "{args:?}");
        assert!(
            matches!(&steps[4].action, Action::Skip(_)),
            "slurm waits for --slurm"
        );
    }
}
