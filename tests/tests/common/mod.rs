//! Helpers shared by the scenario tests.

#![allow(dead_code, unreachable_pub, unused_imports)]

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use loky::{ExecutorBuilder, ProcessPoolExecutor, Shutdown, WorkerProgram};

pub mod bounded;
pub mod logs;

pub use bounded::{FutureExt, MapExt, bounded, output_within, shutdown_bounded};

/// The state letter and parent pid of `pid`, if it exists.
pub use loky_tests::chaos::probe::stat;

/// The test worker program.
pub fn worker_program() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_loky-test-worker"))
}

/// A builder for `n` test workers.
pub fn builder(n: usize) -> ExecutorBuilder {
    ProcessPoolExecutor::builder()
        .max_workers(n)
        .worker_program(WorkerProgram::Path(worker_program()))
}

/// An executor of `n` test workers.
pub fn pool(n: usize) -> ProcessPoolExecutor {
    builder(n)
        .build()
        .expect("the test worker program is built")
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// `(pid, state)` of every process whose parent is this process.
pub fn children() -> Vec<(u32, char)> {
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Some((state, ppid)) = stat(pid)
            && ppid == me
        {
            found.push((pid, state));
        }
    }
    found
}

/// Whether `pid` is a running (not zombie) process.
pub fn alive(pid: u32) -> bool {
    matches!(stat(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

/// Polls `condition` until it holds or `timeout` passes. For events of
/// other processes that give no notification (a grandchild's exit); never
/// used where a handshake exists.
pub fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_micros(200);
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// A path for a pid file, unique to this test process, `prefix` (the test
/// file) and `name`; any stale file there is removed.
pub fn pid_file(prefix: &str, name: &str) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("loky-{prefix}-{}-{name}.pid", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// The pid a task wrote to `path`, once it did: the task is running. The
/// file is removed.
pub fn wait_for_pid(path: &Path) -> u32 {
    let mut pid = None;
    let written = eventually(RESULT_TIMEOUT, || {
        pid = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.parse().ok());
        pid.is_some()
    });
    assert!(
        written,
        "hang: no task wrote its pid to {} within {RESULT_TIMEOUT:?}",
        path.display()
    );
    let _ = std::fs::remove_file(path);
    pid.unwrap()
}

/// Shuts `ex` down waiting for its work; false if that took longer than
/// `timeout`, in which case its workers are killed so that the test fails
/// instead of hanging.
pub fn shutdown_within(ex: &ProcessPoolExecutor, timeout: Duration) -> bool {
    let (done_tx, done) = mpsc::channel();
    let waiting = ex.clone();
    std::thread::spawn(move || {
        waiting.shutdown(true);
        let _ = done_tx.send(());
    });
    let in_time = done.recv_timeout(timeout).is_ok();
    if !in_time {
        ex.shutdown_with(Shutdown {
            wait: true,
            kill_workers: true,
            cancel_futures: false,
        });
    }
    in_time
}

/// The bound on waiting for one result in the scenario tests (see
/// [`bounded`]).
pub const RESULT_TIMEOUT: Duration = bounded::WAIT_LIMIT;

/// Whether every process of `pids` is reaped (gone, not even a zombie)
/// within `timeout`.
pub fn reaped_within(pids: &[u32], timeout: Duration) -> bool {
    eventually(timeout, || pids.iter().all(|&pid| stat(pid).is_none()))
}

/// Whether every process of `pids` has stopped running (gone or a zombie)
/// within `timeout`: for grandchildren, which someone else reaps.
pub fn dead_within(pids: &[u32], timeout: Duration) -> bool {
    eventually(timeout, || pids.iter().all(|&pid| !alive(pid)))
}

/// Submits `task(args)` to `ex` and waits up to [`RESULT_TIMEOUT`] for its
/// result.
///
/// # Panics
///
/// If the submit fails, or as a hang if no result comes in time.
pub fn run<I, O>(ex: &ProcessPoolExecutor, task: loky::Task<I, O>, args: I) -> loky::Result<O>
where
    I: serde::Serialize,
    O: serde::de::DeserializeOwned,
{
    ex.submit(task, args).expect("submit").result_bounded()
}

/// The pids of the workers of `ex` once every one of them has answered a
/// call, sorted: none is still starting (and closing what it inherited).
/// A pool starts its other workers once its first said hello, and the
/// first can answer every call meanwhile, so calls go on, bounded, until
/// each worker has answered one.
pub fn every_worker_serving(ex: &ProcessPoolExecutor) -> Vec<u32> {
    let mut answered = std::collections::BTreeSet::new();
    let all_served = eventually(RESULT_TIMEOUT, || {
        let calls: Vec<_> = (0..ex.max_workers())
            .map(|_| ex.submit(loky::diagnostics::PID, ()).unwrap())
            .collect();
        answered.extend(calls.into_iter().map(|call| call.result_bounded().unwrap()));
        answered.len() == ex.max_workers()
    });
    assert!(all_served, "hang: only workers {answered:?} answered");
    let mut pids = ex.worker_pids();
    pids.sort_unstable();
    assert_eq!(pids, answered.into_iter().collect::<Vec<_>>());
    pids
}
