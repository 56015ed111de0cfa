//! `cargo xtask package`: the published packages, as crates.io would get
//! them, build and pass `loky`'s doc tests.
//!
//! 1. `cargo package` packs `loky-proto`, `loky-worker`, `loky-core` and
//!    `loky` (the unpublished `loky-tests` and `xtask` are left out: they
//!    depend on `loky` by path alone).
//! 2. The `.crate` files are unpacked side by side into
//!    `target/package-check`, made a workspace of their own whose
//!    dependencies on each other resolve to the unpacked packages (they are
//!    not on crates.io), with the workspace's `Cargo.lock`.
//! 3. `cargo build` builds each package's library and programs from what was
//!    packed, and `cargo test --doc -p loky` runs the doc tests of the
//!    packaged `loky` (the README's examples among them, from the README
//!    packed inside it), its pools on the packaged stock `loky-worker`.
//!
//! The build shares the workspace's target directory, so the dependencies
//! from crates.io are not compiled again: about a minute on two loaded
//! cores.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::{Command, ExitCode};

use crate::runner::{self, Workspace};

/// The published packages, dependencies first.
const PACKAGES: &[&str] = &["loky-proto", "loky-worker", "loky-core", "loky"];

/// The workspace's packages that are not published.
const UNPUBLISHED: &[&str] = &["loky-tests", "xtask"];

/// Runs the check; failures are printed.
pub(crate) fn run(workspace: &Workspace) -> ExitCode {
    match check(workspace) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("package: {message}");
            ExitCode::FAILURE
        }
    }
}

fn check(workspace: &Workspace) -> Result<(), String> {
    let version = workspace_version(workspace)?;
    let mut pack = workspace.cargo(&["package", "--workspace", "--no-verify", "--allow-dirty"]);
    for package in UNPUBLISHED {
        pack.args(["--exclude", package]);
    }
    runner::run(&mut pack)?;
    let target = workspace.target_dir();
    let dir = target.join("package-check");
    unpack(&target.join("package"), &dir, &version)?;
    let lock = workspace.root().join("Cargo.lock");
    fs::copy(&lock, dir.join("Cargo.lock"))
        .map_err(|err| format!("cannot copy {}: {err}", lock.display()))?;
    let mut build = cargo_in(workspace, &dir, &["build", "--workspace"]);
    runner::run(&mut build)?;
    let mut doctest = cargo_in(workspace, &dir, &["test", "--doc", "-p", "loky"]);
    doctest.env("LOKY_WORKER", target.join("debug").join("loky-worker"));
    runner::run(&mut doctest)
}

/// The version in `[workspace.package]` of the root manifest.
fn workspace_version(workspace: &Workspace) -> Result<String, String> {
    let path = workspace.root().join("Cargo.toml");
    let manifest = fs::read_to_string(&path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    manifest
        .split("[workspace.package]")
        .nth(1)
        .and_then(|section| {
            section
                .lines()
                .take_while(|line| !line.starts_with('['))
                .find_map(|line| line.strip_prefix("version = \""))
        })
        .and_then(|rest| rest.strip_suffix('"'))
        .map(str::to_owned)
        .ok_or_else(|| format!("no version in [workspace.package] of {}", path.display()))
}

/// Unpacks the packages' `.crate` files from `packed` into a fresh `dir`
/// and makes it a workspace of them.
fn unpack(packed: &Path, dir: &Path, version: &str) -> Result<(), String> {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|err| format!("cannot clear {}: {err}", dir.display()))?;
    }
    fs::create_dir_all(dir).map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
    for package in PACKAGES {
        let file = packed.join(format!("{package}-{version}.crate"));
        let mut tar = Command::new("tar");
        tar.arg("-xzf").arg(&file).arg("-C").arg(dir);
        runner::run(&mut tar)?;
    }
    let manifest = dir.join("Cargo.toml");
    fs::write(&manifest, manifest_text(version))
        .map_err(|err| format!("cannot write {}: {err}", manifest.display()))?;
    Ok(())
}

/// The manifest of the unpacked packages' workspace.
fn manifest_text(version: &str) -> String {
    let mut text = String::from(
        "# Written by `cargo xtask package`: the packages as published.\n\
         [workspace]\nresolver = \"3\"\nmembers = [",
    );
    for package in PACKAGES {
        let _ = write!(text, "\"{package}-{version}\", ");
    }
    text.push_str("]\n\n[patch.crates-io]\n");
    for package in PACKAGES {
        let _ = writeln!(text, "{package} = {{ path = \"{package}-{version}\" }}");
    }
    text
}

/// `cargo ARGS` run in `dir`, building into the workspace's target directory.
fn cargo_in(workspace: &Workspace, dir: &Path, args: &[&str]) -> Command {
    let mut command = workspace.cargo(args);
    command
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", workspace.target_dir());
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unpacked_packages_resolve_to_each_other() {
        let text = manifest_text("1.2.3");
        assert!(text.contains("members = [\"loky-proto-1.2.3\", "), "{text}");
        assert!(
            text.contains("loky-core = { path = \"loky-core-1.2.3\" }\n"),
            "{text}"
        );
        assert!(
            text.contains("loky = { path = \"loky-1.2.3\" }\n"),
            "{text}"
        );
    }

    #[test]
    fn the_workspace_version_is_read_from_the_root_manifest() {
        let version = workspace_version(&Workspace::locate()).unwrap();
        assert_eq!(version, env!("CARGO_PKG_VERSION"));
    }
}
