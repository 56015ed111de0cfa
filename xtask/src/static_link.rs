//! Programs linked statically against glibc, as README's "A statically
//! linked worker" builds them: the stock worker the bench's rows 1s, 7ds
//! and 9s measure, and the tests of the `static worker` step of `cargo
//! xtask test`.

use std::path::PathBuf;
use std::process::Command;

use crate::runner::{self, Workspace};

/// What links a Rust program statically against glibc.
const CRT_STATIC: &str = "-C target-feature=+crt-static";

/// A cargo command `words` (a subcommand that builds, such as `build`,
/// `test` or `nextest run`) for the host target, linking every program
/// statically against glibc, with the host's name; or why this toolchain
/// cannot. `--target` keeps `RUSTFLAGS` from the build's proc-macros, which
/// cannot be static.
pub(crate) fn cargo(workspace: &Workspace, words: &[&str]) -> Result<(Command, String), String> {
    let host = host_triple()?;
    if !host.ends_with("-linux-gnu") {
        return Err(format!("{host} is not a Linux target with glibc"));
    }
    let mut command = workspace.cargo(words);
    command.args(["--target", &host]);
    let flags = std::env::var("RUSTFLAGS").unwrap_or_default();
    command.env("RUSTFLAGS", format!("{flags} {CRT_STATIC}").trim_start());
    Ok((command, host))
}

/// What cargo builds the stock worker with: `loky-worker`'s binary, with
/// its default features, as users ship it for local pools.
pub(crate) const STOCK_WORKER: &[&str] = &["-p", "loky-worker", "--bin", "loky-worker"];

/// The stock worker's build with the cargo profile `profile`, linked
/// statically, and where it puts the program.
pub(crate) fn worker_build(
    workspace: &Workspace,
    profile: &str,
) -> Result<(Command, PathBuf), String> {
    let (mut command, host) = cargo(workspace, &["build", "--profile", profile])?;
    command.args(STOCK_WORKER);
    let program = workspace
        .target_dir()
        .join(host)
        .join(profile)
        .join("loky-worker");
    Ok((command, program))
}

/// The toolchain's host target, from `rustc -vV`.
fn host_triple() -> Result<String, String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut command = Command::new(rustc);
    command.arg("-vV");
    host_of(&runner::run_capturing(&mut command)?)
        .map(str::to_owned)
        .ok_or_else(|| "`rustc -vV` names no host".to_owned())
}

/// The `host:` line of `rustc -vV`'s `version`.
fn host_of(version: &str) -> Option<&str> {
    version
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_comes_from_its_line_of_rustc_version() {
        let version = "rustc 1.95.0 (abc 2026-01-01)\n\
                       binary: rustc\n\
                       host: x86_64-unknown-linux-gnu\n\
                       release: 1.95.0\n";
        assert_eq!(host_of(version), Some("x86_64-unknown-linux-gnu"));
        assert_eq!(host_of("rustc 1.95.0\n"), None);
    }

    #[test]
    fn the_worker_is_built_for_the_host_with_crt_static_and_found_under_it() {
        let workspace = Workspace::locate();
        let Ok((command, program)) = worker_build(&workspace, "release-lto") else {
            return; // Not a glibc host: nothing to build.
        };
        let args: Vec<_> = command.get_args().collect();
        let after = |flag: &str| args[args.iter().position(|a| *a == flag).unwrap() + 1];
        let host = after("--target");
        assert_eq!(after("--profile"), "release-lto");
        assert!(program.ends_with(PathBuf::from(host).join("release-lto/loky-worker")));
        let flags = command
            .get_envs()
            .find(|(key, _)| *key == "RUSTFLAGS")
            .and_then(|(_, value)| value)
            .unwrap();
        assert!(flags.to_string_lossy().ends_with(CRT_STATIC));
    }
}
