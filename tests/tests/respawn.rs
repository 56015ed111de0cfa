//! `CrashPolicy::Respawn`: a crashing task fails alone, its worker is
//! replaced and the pool never breaks.

mod common;

use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{FutureExt, RESULT_TIMEOUT};
use loky::diagnostics::{ECHO_I64, SEGFAULT};
use loky::{CrashPolicy, Error, ProcessPoolExecutor};

/// A pool of two test workers that respawns crashed workers.
fn respawning_pool() -> ProcessPoolExecutor {
    common::builder(2)
        .on_worker_crash(CrashPolicy::Respawn)
        .build()
        .unwrap()
}

/// `fut` fails alone: its worker died of SIGSEGV running `segfault`; the
/// dead worker's pid.
fn segfaulted(fut: &loky::Future<()>) -> u32 {
    match fut.result_bounded() {
        Err(Error::TerminatedWorker(t)) => {
            assert_eq!(t.task(), Some("segfault"), "{t}");
            assert_eq!(t.signal(), Some(libc::SIGSEGV), "{t}");
            assert!(t.to_string().contains("`segfault`"), "{t}");
            t.pid()
        }
        other => panic!("a segfault gave {other:?}"),
    }
}

/// Soon, `ex` is back to `n` live workers.
fn assert_back_to(ex: &ProcessPoolExecutor, n: usize) {
    assert!(
        common::eventually(RESULT_TIMEOUT, || {
            let pids = ex.worker_pids();
            pids.len() == n && pids.iter().all(|&pid| common::alive(pid))
        }),
        "back to {n} live workers, have {:?}",
        ex.worker_pids()
    );
}

#[test]
fn only_the_crashing_tasks_fail_and_the_workers_are_replaced() {
    let ex = respawning_pool();
    let mut echoes = Vec::new();
    let mut crashes = Vec::new();
    for i in 0..1000i64 {
        if i % 20 == 7 {
            crashes.push(ex.submit(SEGFAULT, ()).unwrap());
        } else {
            echoes.push((i, ex.submit(ECHO_I64, i).unwrap()));
        }
    }
    assert_eq!(crashes.len(), 50);
    assert_eq!(echoes.len(), 950);

    for (i, fut) in &echoes {
        let echo = fut.result_bounded();
        assert_eq!(echo.unwrap(), *i, "echo of {i}");
    }
    let mut dead_pids: Vec<u32> = crashes.iter().map(segfaulted).collect();
    dead_pids.sort_unstable();
    dead_pids.dedup();
    assert_eq!(dead_pids.len(), 50, "each crash killed its own worker");

    assert!(!ex.is_broken());
    assert_back_to(&ex, 2);
    assert!(dead_pids.iter().all(|pid| !ex.worker_pids().contains(pid)));
    assert_eq!(common::run(&ex, ECHO_I64, 42).unwrap(), 42);
    let last = ex.worker_pids();
    common::shutdown_bounded(&ex);
    // Catches a respawning pool that leaves its dead workers unreaped. Only
    // this pool's workers are looked at: whatever else runs in this test
    // process (`cargo test` runs tests side by side) has children of its own.
    let unreaped: Vec<u32> = dead_pids
        .iter()
        .chain(&last)
        .copied()
        .filter(|&pid| common::stat(pid).is_some())
        .collect();
    assert!(unreaped.is_empty(), "workers not reaped: {unreaped:?}");
}

/// How long one echo may take while another thread keeps crashing workers.
const ECHO_BOUND: Duration = RESULT_TIMEOUT;

/// Sets its flag when dropped, even by a panic.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Submits `n` segfaults one after the other, each once the previous one
/// failed; the pids of the workers they killed. Sets `done` at the end.
fn keep_crashing(
    ex: &ProcessPoolExecutor,
    n: usize,
    start: &Barrier,
    done: &AtomicBool,
) -> Vec<u32> {
    start.wait();
    let _done = SetOnDrop(done);
    (0..n)
        .map(|_| segfaulted(&ex.submit(SEGFAULT, ()).unwrap()))
        .collect()
}

/// Submits echoes one after the other, at least `n` and until `done`; each
/// must come back right within [`ECHO_BOUND`]. How many it made.
fn keep_echoing(ex: &ProcessPoolExecutor, n: i64, start: &Barrier, done: &AtomicBool) -> i64 {
    start.wait();
    let mut i = 0;
    while i < n || !done.load(Ordering::Relaxed) {
        let echo = ex.submit(ECHO_I64, i).unwrap().result_within(ECHO_BOUND);
        assert_eq!(echo.unwrap(), i, "echo of {i} while workers keep crashing");
        assert!(!ex.is_broken());
        i += 1;
    }
    i
}

#[test]
fn a_task_that_keeps_crashing_does_not_starve_the_others() {
    let ex = respawning_pool();
    let (start, done) = (Barrier::new(2), AtomicBool::new(false));
    let dead = std::thread::scope(|s| {
        let crasher = s.spawn(|| keep_crashing(&ex, 100, &start, &done));
        assert!(keep_echoing(&ex, 200, &start, &done) >= 200);
        crasher.join().unwrap()
    });
    let mut distinct = dead.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 100, "each crash killed its own worker");
    assert!(!ex.is_broken());
    assert_back_to(&ex, ex.max_workers());
    assert!(dead.iter().all(|pid| !ex.worker_pids().contains(pid)));
    common::shutdown_bounded(&ex);
    assert!(
        common::reaped_within(&dead, Duration::ZERO),
        "dead workers not reaped"
    );
}
