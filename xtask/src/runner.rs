//! Running child commands from the workspace root, with a header and timing,
//! each in a process group of its own and, for the steps of `cargo xtask
//! test`, under a deadline.

use std::ffi::OsString;
use std::fmt;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use crate::os;

/// The workspace being worked on and the cargo that drives it.
pub(crate) struct Workspace {
    /// Directory of the root `Cargo.toml`.
    root: PathBuf,
    /// The cargo that runs xtask (`$CARGO`), so children use the same toolchain.
    cargo: OsString,
}

impl Workspace {
    /// The workspace that contains this xtask, whatever the current directory.
    pub(crate) fn locate() -> Self {
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        Workspace { root, cargo }
    }

    /// Directory of the root `Cargo.toml`.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// A `cargo` command with `args`, run from the workspace root with stdin
    /// closed, so nothing can wait for input on an unattended machine.
    pub(crate) fn cargo(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.cargo);
        command
            .args(args)
            .current_dir(&self.root)
            .stdin(Stdio::null());
        command
    }

    /// Cargo's target directory (`CARGO_TARGET_DIR`, else `target/`).
    pub(crate) fn target_dir(&self) -> PathBuf {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map(|dir| self.root.join(dir))
            .unwrap_or_else(|| self.root.join("target"))
    }

    /// Whether package `loky-tests` has the binary `name` at one of cargo's
    /// conventional paths (`tests/src/bin/NAME.rs`, `tests/src/bin/NAME/main.rs`).
    pub(crate) fn has_test_bin(&self, name: &str) -> bool {
        let bin_dir = self.root.join("tests/src/bin");
        bin_dir.join(format!("{name}.rs")).is_file() || bin_dir.join(name).join("main.rs").is_file()
    }
}

/// Runs `command` with inherited stdout and stderr; `Err` describes a
/// failure to start or an unsuccessful exit.
pub(crate) fn run(command: &mut Command) -> Result<(), String> {
    let status = command
        .status()
        .map_err(|error| format!("cannot run `{}`: {error}", display(command)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed: {status}", display(command)))
    }
}

/// Runs `command`, capturing its stdout (stderr is inherited), and returns
/// that stdout when the command succeeds.
pub(crate) fn run_capturing(command: &mut Command) -> Result<String, String> {
    let output = command
        .stdout(Stdio::piped())
        .output()
        .map_err(|error| format!("cannot run `{}`: {error}", display(command)))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        print!("{stdout}");
        Err(format!("`{}` failed: {}", display(command), output.status))
    }
}

/// Why a command run under a deadline did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// It could not start, or it exited unsuccessfully: what happened.
    Failed(String),
    /// It was still running at its deadline: it and its process group were
    /// stopped.
    TimedOut {
        /// The command, as [`display`] renders it.
        command: String,
        /// The deadline it ran past.
        deadline: Duration,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Failed(message) => f.write_str(message),
            Failure::TimedOut { command, deadline } => write!(
                f,
                "`{command}` hung: still running after {}, stopped with its process group",
                format_deadline(*deadline)
            ),
        }
    }
}

/// How long a command past its deadline has, after SIGTERM to its process
/// group, to stop by itself (nextest uses it to stop its tests) before the
/// group is SIGKILLed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How often a running command is checked on.
const POLL: Duration = Duration::from_millis(50);

/// How long the output of a command that ended may take to be read to its
/// end.
const READ_GRACE: Duration = Duration::from_secs(10);

/// Runs `command` (stdout and stderr inherited) in a process group of its
/// own, stopping the group if it runs past `deadline`.
pub(crate) fn run_within(command: &mut Command, deadline: Duration) -> Result<(), Failure> {
    let mut child = spawn_in_group(command)?;
    let status = wait_within(&mut child, deadline, &display(command))?;
    check_status(command, status)
}

/// Runs `command` as [`run_within`] does, capturing its stdout (stderr is
/// inherited); its stdout when it succeeds. On failure what it printed is
/// shown.
pub(crate) fn capture_within(command: &mut Command, deadline: Duration) -> Result<String, Failure> {
    command.stdout(Stdio::piped());
    let mut child = spawn_in_group(command)?;
    let captured = Arc::new(Mutex::new(Vec::new()));
    let (ended_tx, ended) = mpsc::channel::<()>();
    if let Some(mut stdout) = child.stdout.take() {
        let sink = captured.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 8192];
            while let Ok(n @ 1..) = stdout.read(&mut buffer) {
                lock(&sink).extend_from_slice(&buffer[..n]);
            }
            drop(ended_tx);
        });
    }
    let finished = wait_within(&mut child, deadline, &display(command));
    // The reader may not have read the end of the output yet. Stdout may
    // also stay open in a process that left the group (a worker about to
    // die with its parent): after a grace, take what arrived.
    let _ = ended.recv_timeout(READ_GRACE);
    let stdout = String::from_utf8_lossy(&lock(&captured)).into_owned();
    let result = finished.and_then(|status| check_status(command, status));
    if result.is_err() {
        print!("{stdout}");
    }
    result.map(|()| stdout)
}

fn lock(bytes: &Mutex<Vec<u8>>) -> std::sync::MutexGuard<'_, Vec<u8>> {
    bytes.lock().unwrap_or_else(PoisonError::into_inner)
}

fn spawn_in_group(command: &mut Command) -> Result<Child, Failure> {
    command
        .process_group(0)
        .spawn()
        .map_err(|error| Failure::Failed(format!("cannot run `{}`: {error}", display(command))))
}

fn check_status(command: &Command, status: ExitStatus) -> Result<(), Failure> {
    if status.success() {
        Ok(())
    } else {
        Err(Failure::Failed(format!(
            "`{}` failed: {status}",
            display(command)
        )))
    }
}

/// Waits for `child`, the leader of its own process group, until
/// `deadline`; past it, stops the group (SIGTERM, [`STOP_GRACE`], SIGKILL).
/// Whatever is left of the group once the leader exits is killed, then the
/// leader is reaped.
fn wait_within(child: &mut Child, deadline: Duration, shown: &str) -> Result<ExitStatus, Failure> {
    let pgid = child.id();
    os::set_running_group(pgid);
    let end = Instant::now() + deadline;
    let mut timed_out = false;
    while !os::has_exited(pgid).unwrap_or(true) {
        if Instant::now() >= end {
            timed_out = true;
            eprintln!(
                "error: `{shown}` is still running after {}: stopping its process group",
                format_deadline(deadline)
            );
            stop_group(pgid);
            break;
        }
        std::thread::sleep(POLL);
    }
    // The leader's zombie keeps the group's id from being reused.
    let _ = os::signal_group(pgid, libc::SIGKILL);
    let status = child.wait();
    os::set_running_group(0);
    if timed_out {
        return Err(Failure::TimedOut {
            command: shown.to_owned(),
            deadline,
        });
    }
    status.map_err(|error| Failure::Failed(format!("cannot wait for `{shown}`: {error}")))
}

/// SIGTERM to group `pgid`, up to [`STOP_GRACE`] for it to empty, then SIGKILL.
fn stop_group(pgid: u32) {
    let _ = os::signal_group(pgid, libc::SIGTERM);
    let end = Instant::now() + STOP_GRACE;
    while group_alive(pgid) && Instant::now() < end {
        std::thread::sleep(POLL);
    }
    let _ = os::signal_group(pgid, libc::SIGKILL);
}

/// Whether a process of group `pgid` still runs (zombies do not count).
fn group_alive(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // After the command name in parentheses: state, ppid, pgrp.
        let mut fields = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace();
        let state = fields.next().unwrap_or("Z");
        let group = fields.nth(1).and_then(|g| g.parse::<u32>().ok());
        group == Some(pgid) && state != "Z" && state != "X"
    })
}

/// A deadline for messages: whole minutes when it is some, else seconds.
pub(crate) fn format_deadline(deadline: Duration) -> String {
    let secs = deadline.as_secs();
    if secs >= 60 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{:.1}s", deadline.as_secs_f64())
    }
}

/// Runs `action` under a header line naming the step, and times it.
pub(crate) fn timed<T>(header: &str, action: impl FnOnce() -> T) -> (T, Duration) {
    println!("\n==> {header}");
    let start = Instant::now();
    let result = action();
    (result, start.elapsed())
}

/// A shell-like rendering of `command` for headers and errors: the
/// environment it sets, then `cargo` (not the toolchain's full path), then
/// the arguments.
pub(crate) fn display(command: &Command) -> String {
    let mut words = Vec::new();
    for (key, value) in command.get_envs() {
        let value = value.map(|v| v.to_string_lossy()).unwrap_or_default();
        words.push(format!("{}={}", key.to_string_lossy(), quote(&value)));
    }
    let program = Path::new(command.get_program());
    words.push(
        program
            .file_stem()
            .unwrap_or(program.as_os_str())
            .to_string_lossy()
            .into_owned(),
    );
    words.extend(command.get_args().map(|arg| quote(&arg.to_string_lossy())));
    words.join(" ")
}

/// Quotes `word` when it contains a space or is empty.
fn quote(word: &str) -> String {
    if word.is_empty() || word.contains(' ') {
        format!("\"{word}\"")
    } else {
        word.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Catches a capture that takes the output before the reader read it
    /// to its end: a command that prints and exits at once must be seen
    /// whole, every time.
    #[test]
    fn the_whole_output_of_a_command_that_ends_at_once_is_captured() {
        for round in 0..50 {
            let mut command = Command::new("sh");
            command.args(["-c", "echo first; echo second"]);
            let stdout = capture_within(&mut command, Duration::from_secs(60));
            assert_eq!(stdout.as_deref(), Ok("first\nsecond\n"), "round {round}");
        }
    }
}
