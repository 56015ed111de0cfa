//! A process started as a worker never runs the application's `main`, even
//! when its executor dies while it starts: it exits instead.
//!
//! `loky-orphan-app` is an application that is its own worker; a worker
//! that returns from its `serve_if_worker` writes a marker file, which
//! these tests look for.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const APP: &str = env!("CARGO_BIN_EXE_loky-orphan-app");

/// A fresh, empty marker directory for `name`.
fn marker_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loky-orphan-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn app(dir: &Path) -> Command {
    let mut command = Command::new(APP);
    command
        .env("LOKY_TEST_MARKER_DIR", dir)
        .env_remove("LOKY_WORKER_CHANNEL")
        .stdout(Stdio::piped());
    command
}

/// Pids of the live processes whose environment holds `needle`.
fn processes_with_env(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let has = environ
            .split(|&b| b == 0)
            .any(|var| var == needle.as_bytes());
        if has && common::alive(pid) {
            found.push(pid);
        }
    }
    found
}

fn markers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_worker_that_starts_orphaned_with_its_channel_still_open_exits() {
    let dir = marker_dir("one");
    // The helper and the worker inherit stdout: read the line, not to its end.
    let mut orphaner = app(&dir).arg("orphan").spawn().unwrap();
    let stdout = orphaner.stdout.take().unwrap();
    let line = common::bounded("the orphaner's line", common::RESULT_TIMEOUT, move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .unwrap();
    let exited = common::bounded("the orphaner's exit", common::RESULT_TIMEOUT, move || {
        orphaner.wait()
    });
    assert!(exited.unwrap().success());
    let words: Vec<u32> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let [worker, helper] = words[..] else {
        panic!("unexpected output {line:?}");
    };
    let gone = common::dead_within(&[worker], Duration::from_secs(30));
    // SAFETY: kill only sends a signal; the helper is a process this test
    // started (through the app) and that only waits to be killed.
    unsafe { libc::kill(helper as libc::pid_t, libc::SIGKILL) };
    assert!(gone, "the orphaned worker {worker} kept running");
    assert_eq!(markers(&dir), Vec::<String>::new(), "a worker ran main");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn workers_of_a_parent_killed_while_they_start_never_run_main() {
    const ROUNDS: usize = 150;
    const WORKERS: &str = "8";
    let dir = marker_dir("many");
    for _ in 0..ROUNDS {
        let mut parent = app(&dir).args(["spawn", WORKERS]).spawn().unwrap();
        let stdout = parent.stdout.take().unwrap();
        let line = common::bounded("the parent's line", common::RESULT_TIMEOUT, move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        })
        .unwrap();
        assert_eq!(line, "submitted\n");
        // At once: the workers are still starting.
        parent.kill().unwrap();
        parent.wait().unwrap();
    }
    let needle = format!("LOKY_TEST_MARKER_DIR={}", dir.display());
    assert!(
        common::eventually(Duration::from_secs(30), || processes_with_env(&needle)
            .is_empty()),
        "workers outlived their parents: {:?}",
        processes_with_env(&needle)
    );
    assert_eq!(markers(&dir), Vec::<String>::new(), "a worker ran main");
    let _ = std::fs::remove_dir_all(&dir);
}
