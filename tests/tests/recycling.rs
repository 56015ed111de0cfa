//! Worker recycling: `max_tasks_per_child`, and loky's memory-leak check
//! (`LOKY_MAX_MEMORY_LEAK_SIZE`): a worker retires cleanly, is replaced, and
//! no future fails.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use loky::ProcessPoolExecutor;
use loky::diagnostics::{LEAK, PID};

#[test]
fn a_worker_retires_after_max_tasks_per_child() {
    let ex = common::builder(1).max_tasks_per_child(3).build().unwrap();
    let mut pids = Vec::new();
    for _ in 0..10 {
        pids.push(ex.submit(PID, ()).unwrap().result().unwrap());
    }
    let mut runs: HashMap<u32, usize> = HashMap::new();
    for &pid in &pids {
        *runs.entry(pid).or_default() += 1;
    }
    assert!(runs.len() >= 4, "10 tasks ran on {runs:?}");
    assert!(runs.values().all(|&n| n <= 3), "{runs:?}");
    assert!(!ex.is_broken());
    assert!(common::shutdown_within(&ex, Duration::from_secs(10)));
}

#[test]
fn concurrent_tasks_respect_max_tasks_per_child() {
    let ex = common::builder(2).max_tasks_per_child(3).build().unwrap();
    let futs: Vec<_> = (0..30).map(|_| ex.submit(PID, ()).unwrap()).collect();
    let mut runs: HashMap<u32, usize> = HashMap::new();
    for fut in futs {
        *runs.entry(fut.result().unwrap()).or_default() += 1;
    }
    assert!(runs.len() >= 10, "{runs:?}");
    assert!(runs.values().all(|&n| n <= 3), "{runs:?}");
    assert!(!ex.is_broken());
    assert!(common::shutdown_within(&ex, Duration::from_secs(10)));
}

/// A pool of one worker that retires once it leaked 20 MB, checking after
/// every call.
fn leak_checked_pool() -> ProcessPoolExecutor {
    common::builder(1)
        .env("LOKY_MEMORY_CHECK_INTERVAL", "0")
        .env("LOKY_MAX_MEMORY_LEAK_SIZE", "20000000")
        .build()
        .unwrap()
}

const FIVE_MB: u64 = 5_000_000;

/// Leaks 5 MB twelve times, asking for the worker's pid after each leak;
/// returns the pids in order, runs of the same worker folded into one.
fn leak_twelve_times(ex: &ProcessPoolExecutor) -> Vec<u32> {
    let mut pids = Vec::new();
    for _ in 0..12 {
        assert_eq!(ex.submit(LEAK, FIVE_MB).unwrap().result().unwrap(), FIVE_MB);
        pids.push(ex.submit(PID, ()).unwrap().result().unwrap());
    }
    pids.dedup();
    pids
}

#[test]
fn a_leaking_worker_is_recycled_and_every_future_succeeds() {
    let ex = leak_checked_pool();
    let pids = leak_twelve_times(&ex);
    assert!(pids.len() >= 2, "never recycled: {pids:?}");
    assert!(!ex.is_broken());
    assert!(
        common::shutdown_within(&ex, Duration::from_secs(10)),
        "shutdown(wait = true) hangs"
    );
}

#[test]
fn a_retired_leaking_worker_exits_and_shutdown_completes() {
    let ex = leak_checked_pool();
    let pids = leak_twelve_times(&ex);
    let current = *pids.last().unwrap();
    let retired = &pids[..pids.len() - 1];
    assert!(!retired.is_empty(), "never recycled: {pids:?}");
    let gone = common::eventually(Duration::from_secs(10), || {
        retired.iter().all(|&pid| !common::alive(pid)) && ex.worker_pids() == [current]
    });
    let live = ex.worker_pids();
    let shut = common::shutdown_within(&ex, Duration::from_secs(10));
    assert!(gone, "retired workers {retired:?} still there: {live:?}");
    assert!(shut, "shutdown(wait = true) hangs");
}
