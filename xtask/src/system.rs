//! What the steps that bring up daemons of their own (a Slurm cluster, an
//! ssh server) ask of the machine: root, Debian packages, and a bounded
//! wait for a daemon to answer.

use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::runner;

/// Whether xtask runs as root.
pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// Where `program` is on the path (or in the system directories, which a
/// non-login root shell may lack), as an absolute path.
pub(crate) fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_absolute() && candidate.is_file())
}

/// Whether `program` is installed (see [`find`]).
pub(crate) fn installed(program: &str) -> bool {
    find(program).is_some()
}

/// Installs Debian's `packages` (as root, with `apt-get`) unless every one
/// of `programs` is there already; `what` names them in the error a user
/// other than root gets.
pub(crate) fn install(what: &str, programs: &[&str], packages: &[&str]) -> Result<(), String> {
    if programs.iter().all(|program| installed(program)) {
        return Ok(());
    }
    if !is_root() {
        return Err(format!(
            "{what} is not installed and only root can install it (apt-get install {})",
            packages.join(" ")
        ));
    }
    let mut update = Command::new("apt-get");
    update.args(["update", "-qq"]).stdin(Stdio::null());
    runner::run(&mut update)?;
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null());
    runner::run(&mut install)
}

/// Polls `ready` with a short backoff until it holds or `within` passes:
/// the daemons offer nothing to wait on but their answers.
pub(crate) fn wait_until(
    within: Duration,
    what: &str,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    let mut backoff = Duration::from_millis(20);
    while !ready() {
        if Instant::now() >= deadline {
            return Err(format!("timed out after {within:?} waiting for {what}"));
        }
        thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
    Ok(())
}

/// How long a daemon may take to stop before it is killed.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(10);

/// The COMMAND of `cargo xtask SUBCOMMAND -- COMMAND [ARGS...]`, or the
/// exit code of a usage error (printed).
pub(crate) fn command_after_dashes<'a>(
    subcommand: &str,
    args: &'a [String],
) -> Result<&'a [String], ExitCode> {
    match args.split_first() {
        Some((dashes, command)) if dashes == "--" && !command.is_empty() => Ok(command),
        _ => {
            eprintln!("usage: cargo xtask {subcommand} -- COMMAND [ARGS...]");
            Err(ExitCode::from(2))
        }
    }
}

/// The exit code of a subcommand that ended with `result`, its error
/// printed.
pub(crate) fn exit_code(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Stops the daemon `name` that runs as `child`: SIGTERM, then SIGKILL
/// after [`STOP_GRACE`]; reaped either way.
pub(crate) fn stop(name: &str, child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = wait_until(STOP_GRACE, &format!("{name} to stop"), || {
        !matches!(child.try_wait(), Ok(None))
    });
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
    }
    let _ = child.wait();
    println!("stopped {name}");
}
