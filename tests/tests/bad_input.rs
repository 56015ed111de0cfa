//! Bad input gets a clear, typed error and loses nothing.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::FutureExt;
use loky::diagnostics::SQUARE;
use loky::{Error, ProcessPoolExecutor, WorkerProgram};
use loky_tests::{SQUARE_AS_STRING, UNKNOWN};

/// A fresh directory for one test's files, removed with everything in it
/// when the test ends (it may hold copies of worker programs).
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh directory for this test's files.
fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("loky-bad-input-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

fn script(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("worker.sh");
    let mut file = std::fs::File::create(&path).unwrap();
    writeln!(file, "#!/bin/sh\n{body}").unwrap();
    drop(file);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn pool_of(program: impl Into<PathBuf>) -> loky::ExecutorBuilder {
    ProcessPoolExecutor::builder()
        .max_workers(1)
        .worker_program(WorkerProgram::Path(program.into()))
}

/// The error of a task submitted to `ex`, whose workers cannot serve: a
/// broken pool, within 20 s.
fn broken_pool_error(ex: &ProcessPoolExecutor) -> Error {
    let err = ex.submit(SQUARE, 2).unwrap().result_bounded().unwrap_err();
    assert!(matches!(err, Error::BrokenProcessPool(_)), "{err:?}");
    err
}

#[test]
fn unknown_task_is_a_typed_error_and_the_pool_stays_usable() {
    let ex = common::pool(1);
    match common::run(&ex, UNKNOWN, ()) {
        Err(Error::UnknownTask(e)) => {
            assert_eq!(e.task(), "no_such_task");
            assert!(
                e.to_string().contains("square"),
                "lists the known tasks: {e}"
            );
        }
        other => panic!("expected UnknownTask, got {other:?}"),
    }
    assert_eq!(common::run(&ex, SQUARE, 5).unwrap(), 25);
}

#[test]
fn mismatched_task_types_name_both_signatures_and_the_pool_stays_usable() {
    let ex = common::pool(1);
    match common::run(&ex, SQUARE_AS_STRING, "x".into()) {
        Err(Error::TaskMismatch(e)) => {
            assert_eq!(e.task(), "square");
            assert_eq!(
                e.handle_signature(),
                "alloc::string::String -> alloc::string::String"
            );
            assert_eq!(e.worker_signature(), "i64 -> i64");
        }
        other => panic!("expected TaskMismatch, got {other:?}"),
    }
    assert_eq!(common::run(&ex, SQUARE, 6).unwrap(), 36);
}

#[test]
fn a_program_that_is_not_a_worker_breaks_the_pool_with_the_reason() {
    let ex = pool_of("/bin/true").build().unwrap();
    let text = broken_pool_error(&ex).to_string();
    assert!(text.contains("/bin/true"), "{text}");
    assert!(text.contains("before its hello"), "{text}");
    assert!(text.contains("EXIT(0)"), "{text}");
    assert!(ex.submit(SQUARE, 2).unwrap_err().is_broken_pool());
}

#[test]
fn a_program_that_never_says_hello_is_stopped_at_the_start_deadline() {
    let dir = scratch("silent");
    let program = script(&dir, "exec sleep 60");
    let ex = pool_of(&program)
        .start_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = broken_pool_error(&ex);
    assert!(err.to_string().contains("no hello within"), "{err}");
    common::shutdown_bounded(&ex);
    assert!(ex.worker_pids().is_empty());
}

#[test]
fn a_worker_sending_garbage_is_treated_as_broken() {
    let dir = scratch("garbage");
    let program = script(&dir, "printf 'garbage, not a frame' >&3\nexec sleep 60");
    let ex = pool_of(&program).max_frame_size(1 << 20).build().unwrap();
    let err = broken_pool_error(&ex);
    assert!(
        err.to_string().contains("exceeds the maximum frame size"),
        "{err}"
    );
}

#[test]
fn a_missing_program_is_a_spawn_error_at_build() {
    let err = pool_of("/nonexistent/loky-worker").build().unwrap_err();
    assert!(matches!(err, Error::Spawn(_)), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/loky-worker"),
        "{err}"
    );
}

#[test]
fn a_file_that_is_not_executable_is_a_spawn_error_at_build() {
    let dir = scratch("not-executable");
    let path = dir.join("worker");
    std::fs::write(&path, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = pool_of(&path).build().unwrap_err();
    match &err {
        Error::Spawn(e) => {
            let source = std::error::Error::source(e).unwrap().to_string();
            assert!(source.contains("not executable"), "{source}");
        }
        other => panic!("expected Spawn, got {other:?}"),
    }
}

#[test]
fn no_worker_program_found_lists_every_place_looked_at() {
    // A copy of the parent program alone in a directory, with no
    // LOKY_WORKER and an empty PATH, finds no worker.
    let scratch = scratch("discovery");
    let dir = scratch.join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    let parent = dir.join("loky-test-parent");
    std::fs::copy(env!("CARGO_BIN_EXE_loky-test-parent"), &parent).unwrap();
    let out = common::output_within(
        Command::new(&parent)
            .arg("discover")
            .env_remove("LOKY_WORKER")
            .env("PATH", ""),
        common::RESULT_TIMEOUT,
        "loky-test-parent discover",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("error: no loky worker program found"),
        "{text}"
    );
    assert!(text.contains("$LOKY_WORKER (not set)"), "{text}");
    assert!(
        text.contains(&dir.join("loky-worker").display().to_string()),
        "{text}"
    );
    assert!(
        text.contains(
            &dir.parent()
                .unwrap()
                .join("loky-worker")
                .display()
                .to_string()
        ),
        "{text}"
    );
    assert!(text.contains("loky-worker on $PATH"), "{text}");
}

#[test]
fn a_worker_program_beside_the_executable_is_found_by_default() {
    let dir = scratch("discovery-found");
    let parent = dir.join("loky-test-parent");
    std::fs::copy(env!("CARGO_BIN_EXE_loky-test-parent"), &parent).unwrap();
    std::fs::copy(common::worker_program(), dir.join("loky-worker")).unwrap();
    let out = common::output_within(
        Command::new(&parent)
            .arg("discover")
            .env_remove("LOKY_WORKER"),
        common::RESULT_TIMEOUT,
        "loky-test-parent discover",
    );
    assert_found_and_ran(&out);
}

/// `loky-test-parent discover` found a worker program and ran a task there.
fn assert_found_and_ran(out: &std::process::Output) {
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        ["found a worker program", "square of 7: Ok(49)"],
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{}", out.status);
}

/// A copy of `loky-test-parent` in a fresh directory of its own, with a
/// `loky-worker` beside it that is no worker (it exits at once): a pool
/// that used it would break.
fn parent_beside_a_decoy(name: &str) -> (Scratch, PathBuf) {
    let dir = scratch(name);
    let parent = dir.join("loky-test-parent");
    std::fs::copy(env!("CARGO_BIN_EXE_loky-test-parent"), &parent).unwrap();
    let decoy = script(&dir, "exit 1");
    std::fs::rename(decoy, dir.join("loky-worker")).unwrap();
    (dir, parent)
}

#[test]
fn the_loky_worker_variable_is_used_before_any_other_place() {
    let (_dir, parent) = parent_beside_a_decoy("discovery-env");
    let out = common::output_within(
        Command::new(&parent)
            .arg("discover")
            .env("LOKY_WORKER", common::worker_program())
            .env("PATH", ""),
        common::RESULT_TIMEOUT,
        "loky-test-parent discover",
    );
    assert_found_and_ran(&out);
}

#[test]
fn a_loky_worker_variable_naming_no_file_is_worker_not_found_listing_the_places_looked_at() {
    // Alone in its directory and with an empty PATH, the parent finds no
    // worker program anywhere, whether or not it looks past LOKY_WORKER.
    let dir = scratch("discovery-env-missing");
    let parent = dir.join("loky-test-parent");
    std::fs::copy(env!("CARGO_BIN_EXE_loky-test-parent"), &parent).unwrap();
    let missing = dir.join("no-such-worker");
    let out = common::output_within(
        Command::new(&parent)
            .arg("discover")
            .env("LOKY_WORKER", &missing)
            .env("PATH", ""),
        common::RESULT_TIMEOUT,
        "loky-test-parent discover",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("error: "), "{text}");
    assert!(text.contains("\nkind: WorkerNotFound\n"), "{text}");
    let looked: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("looked in: "))
        .collect();
    let missing = missing.display().to_string();
    assert!(
        looked
            .iter()
            .any(|place| place.contains("$LOKY_WORKER") && place.contains(&missing)),
        "{text}"
    );
}

#[test]
fn a_huge_payload_round_trips() {
    let ex = common::pool(1);
    let data = serde_bytes::ByteBuf::from(vec![0xa5u8; 64 << 20]);
    let back = common::run(&ex, loky::diagnostics::ECHO_BYTES, data.clone());
    assert_eq!(back.unwrap(), data);
}

#[test]
fn a_payload_over_the_frame_limit_fails_alone() {
    let ex = common::builder(1).max_frame_size(1 << 20).build().unwrap();
    let data = serde_bytes::ByteBuf::from(vec![1u8; 2 << 20]);
    let err = ex.submit(loky::diagnostics::ECHO_BYTES, data).unwrap_err();
    assert!(matches!(err, Error::Serialization(_)), "{err:?}");
    assert!(
        err.to_string().contains("exceeds the maximum frame size"),
        "{err}"
    );
    assert_eq!(common::run(&ex, SQUARE, 3).unwrap(), 9);
}
