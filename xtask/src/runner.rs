//! Running child commands from the workspace root, with a header and timing.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
