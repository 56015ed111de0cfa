//! `cargo xtask bench`: the `loky-bench` binary of `loky-tests`, built with
//! the profile [`PROFILE`] as everything it runs, after building the stock
//! `loky-worker` program it measures (also linked statically, and with the
//! feature `remote`, for the rows that compare) and, with `--peers`, the
//! procspawn peer (a bench target of `loky-tests`, so that procspawn stays
//! a dev-dependency).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::runner::{self, Workspace};
use crate::static_link;

/// Binary of `loky-tests` that measures the performance targets of DESIGN.md.
const BENCH_BIN: &str = "loky-bench";

/// The cargo profile of every program the bench runs: the workspace's
/// `release` with link-time optimization and one codegen unit, as README's
/// "Performance" advises applications whose calls are many and small.
pub(crate) const PROFILE: &str = "release-lto";

/// Tells the bench the command that ran it, for `BENCHMARKS.md`.
const COMMAND_ENV: &str = "LOKY_BENCH_COMMAND";

/// The bench target of `loky-tests` that measures procspawn.
const PROCSPAWN_PEER: &str = "procspawn-peer";

/// Tells the bench where the procspawn peer's executable is.
const PROCSPAWN_ENV: &str = "LOKY_BENCH_PROCSPAWN_PEER";

/// Tells the bench where the statically linked stock worker is.
const STATIC_WORKER_ENV: &str = "LOKY_BENCH_STATIC_WORKER";

/// Tells the bench where the stock worker built with `remote` is.
const REMOTE_WORKER_ENV: &str = "LOKY_BENCH_REMOTE_WORKER";

/// The name the stock worker built with `remote` is kept under, beside the
/// stock worker (which takes its place when built after it).
const REMOTE_WORKER: &str = "loky-worker-remote";

/// Runs the benchmark with `args` (`--peers` included) passed through.
pub(crate) fn run(workspace: &Workspace, args: &[String]) -> ExitCode {
    if !workspace.has_test_bin(BENCH_BIN) {
        eprintln!("no benchmark is defined yet (expected tests/src/bin/{BENCH_BIN}.rs)");
        return ExitCode::FAILURE;
    }
    // Rows 1r, 3r and 9r: workers that connect back need the feature
    // `remote`; that build is kept under another name before the stock
    // build (as users ship it for local pools) takes its place.
    let remote_worker = match build_remote_worker(workspace) {
        Ok(path) => path,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The bench runs the stock worker from beside its own binary; `cargo run`
    // builds only the bench's package, not other packages' binaries.
    let mut build = workspace.cargo(&["build", "--profile", PROFILE]);
    build.args(static_link::STOCK_WORKER);
    let (built, _) = runner::timed(&runner::display(&build), || runner::run(&mut build));
    if let Err(error) = built {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    // Rows 1s, 7ds and 9s: the same worker linked statically. Not every
    // toolchain can (a target other than glibc's, a missing `libc.a`): the
    // rows then say it was not built, and the rest runs.
    let static_worker = build_static_worker(workspace)
        .inspect_err(|why| eprintln!("note: no statically linked worker: {why}"))
        .ok();
    let procspawn = if args.iter().any(|a| a == "--peers") {
        match build_procspawn_peer(workspace) {
            Ok(path) => Some(path),
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let mut command = workspace.cargo(&[
        "run",
        "--profile",
        PROFILE,
        "-p",
        "loky-tests",
        "--features",
        "remote",
        "--bin",
        BENCH_BIN,
        "--",
    ]);
    command.args(args);
    let header = runner::display(&command);
    command.env(COMMAND_ENV, invocation(args));
    command.env(REMOTE_WORKER_ENV, remote_worker);
    if let Some(path) = procspawn {
        command.env(PROCSPAWN_ENV, path);
    }
    if let Some(path) = static_worker {
        command.env(STATIC_WORKER_ENV, path);
    }
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

/// Builds the procspawn peer with [`PROFILE`]; returns its executable (a
/// bench target's name carries a hash, which cargo reports).
fn build_procspawn_peer(workspace: &Workspace) -> Result<String, String> {
    let mut build = workspace.cargo(&[
        "build",
        "--profile",
        PROFILE,
        "-p",
        "loky-tests",
        "--bench",
        PROCSPAWN_PEER,
        "--message-format=json-render-diagnostics",
    ]);
    let (messages, _) = runner::timed(&runner::display(&build), || {
        runner::run_capturing(&mut build)
    });
    executable(&messages?, PROCSPAWN_PEER)
        .ok_or_else(|| format!("cargo named no executable for {PROCSPAWN_PEER}"))
}

/// Builds the stock worker with [`PROFILE`] and the feature `remote`, and
/// keeps a copy of it as [`REMOTE_WORKER`]; returns the copy's path.
fn build_remote_worker(workspace: &Workspace) -> Result<PathBuf, String> {
    let mut build = workspace.cargo(&["build", "--profile", PROFILE]);
    build.args(static_link::STOCK_WORKER);
    build.args(["--features", "remote"]);
    let (built, _) = runner::timed(&runner::display(&build), || runner::run(&mut build));
    built?;
    let dir = workspace.target_dir().join(PROFILE);
    let exe = std::env::consts::EXE_SUFFIX;
    let kept = dir.join(format!("{REMOTE_WORKER}{exe}"));
    std::fs::copy(dir.join(format!("loky-worker{exe}")), &kept)
        .map_err(|e| format!("cannot copy the worker to {}: {e}", kept.display()))?;
    Ok(kept)
}

/// Builds the stock worker with [`PROFILE`], linked statically; returns
/// its path.
fn build_static_worker(workspace: &Workspace) -> Result<PathBuf, String> {
    let (mut build, program) = static_link::worker_build(workspace, PROFILE)?;
    let (built, _) = runner::timed(&runner::display(&build), || runner::run(&mut build));
    built.map(|()| program)
}

/// The `"executable"` of target `name` in cargo's JSON `messages` (a bench
/// build also builds the package's binaries, which have one too).
fn executable(messages: &str, name: &str) -> Option<String> {
    const KEY: &str = "\"executable\":\"";
    let target = format!("\"name\":\"{name}\"");
    messages
        .lines()
        .filter(|line| line.contains(&target))
        .find_map(|line| {
            let start = line.find(KEY)? + KEY.len();
            let end = start + line[start..].find('"')?;
            Some(line[start..end].to_owned())
        })
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
    fn the_executable_comes_from_the_message_that_names_one() {
        let messages = concat!(
            r#"{"reason":"compiler-artifact","target":{"name":"serde"},"executable":null}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"name":"loky-test-parent"},"executable":"/t/release/loky-test-parent"}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"name":"procspawn-peer"},"executable":"/t/release/deps/procspawn_peer-1a"}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
        );
        assert_eq!(
            executable(messages, "procspawn-peer").as_deref(),
            Some("/t/release/deps/procspawn_peer-1a")
        );
        assert_eq!(executable("{}", "procspawn-peer"), None);
    }

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
