//! Worker recycling: `max_tasks_per_child`, and loky's memory-leak check
//! (`LOKY_MAX_MEMORY_LEAK_SIZE`): a worker retires cleanly, is replaced, and
//! no future fails; the leak is reported once per executor through the
//! `log` facade.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::FutureExt;
use loky::ProcessPoolExecutor;
use loky::diagnostics::{LEAK, PID};

#[test]
fn a_worker_retires_after_max_tasks_per_child() {
    let ex = common::builder(1).max_tasks_per_child(3).build().unwrap();
    let mut pids = Vec::new();
    for _ in 0..10 {
        pids.push(ex.submit(PID, ()).unwrap().result_bounded().unwrap());
    }
    let mut runs: HashMap<u32, usize> = HashMap::new();
    for &pid in &pids {
        *runs.entry(pid).or_default() += 1;
    }
    assert!(runs.len() >= 4, "10 tasks ran on {runs:?}");
    assert!(runs.values().all(|&n| n <= 3), "{runs:?}");
    assert!(!ex.is_broken());
    assert!(common::shutdown_within(&ex, common::RESULT_TIMEOUT));
}

#[test]
fn concurrent_tasks_respect_max_tasks_per_child() {
    let ex = common::builder(2).max_tasks_per_child(3).build().unwrap();
    let futs: Vec<_> = (0..30).map(|_| ex.submit(PID, ()).unwrap()).collect();
    let mut runs: HashMap<u32, usize> = HashMap::new();
    for fut in futs {
        *runs.entry(fut.result_bounded().unwrap()).or_default() += 1;
    }
    assert!(runs.len() >= 10, "{runs:?}");
    assert!(runs.values().all(|&n| n <= 3), "{runs:?}");
    assert!(!ex.is_broken());
    assert!(common::shutdown_within(&ex, common::RESULT_TIMEOUT));
}

/// How much a worker may leak before it retires (`LOKY_MAX_MEMORY_LEAK_SIZE`).
const LEAK_LIMIT: u64 = 20_000_000;

/// What one `LEAK` call leaks (it touches every page: resident memory grows
/// by at least that much).
const FIVE_MB: u64 = 5_000_000;

/// The most leaking calls a worker runs after its first call (its baseline):
/// it retires after the call that takes its growth past the limit, the
/// fifth at the latest since each adds at least [`FIVE_MB`]; the margin is
/// that one call. A threshold read at twice its scale would let it run
/// eight.
const MOST_LEAKS: usize = (LEAK_LIMIT / FIVE_MB) as usize + 1;

/// The fewest leaking calls a retired worker surely ran (as counted by
/// [`sure_leaks`]): growth past the limit takes four calls (besides the
/// leaks, a worker's memory grows by far less than [`FIVE_MB`]), less the
/// last one, which [`sure_leaks`] cannot place. A threshold read at half
/// its scale would retire a worker after two calls.
const FEWEST_LEAKS: usize = (LEAK_LIMIT / FIVE_MB) as usize - 1;

/// How long one call may take before the test fails instead of hanging.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A pool of one worker that retires once it leaked [`LEAK_LIMIT`],
/// checking after every call.
fn leak_checked_pool() -> ProcessPoolExecutor {
    common::builder(1)
        .env("LOKY_MEMORY_CHECK_INTERVAL", "0")
        .env("LOKY_MAX_MEMORY_LEAK_SIZE", LEAK_LIMIT.to_string())
        .build()
        .unwrap()
}

/// The pid of the worker that serves the next call.
fn next_pid(ex: &ProcessPoolExecutor) -> u32 {
    ex.submit(PID, ())
        .unwrap()
        .result_within(CALL_TIMEOUT)
        .unwrap()
}

/// Leaks [`FIVE_MB`] `n` times, one call at a time, asking for the worker's
/// pid first and after every leak: leak `i` ran between `pids[i]` and
/// `pids[i + 1]`. Every future succeeds.
fn leak(ex: &ProcessPoolExecutor, n: usize) -> Vec<u32> {
    let mut pids = vec![next_pid(ex)];
    for _ in 0..n {
        let leaked = ex
            .submit(LEAK, FIVE_MB)
            .unwrap()
            .result_within(CALL_TIMEOUT);
        assert_eq!(leaked.unwrap(), FIVE_MB);
        pids.push(next_pid(ex));
    }
    pids
}

/// The workers that served `pids`, in order: all but the last retired.
fn workers(pids: &[u32]) -> Vec<u32> {
    let mut workers = pids.to_vec();
    workers.dedup();
    workers
}

/// For each worker of `pids` (see [`leak`]), in order, the leaks it surely
/// ran: those with its pid before and after. One with different pids
/// around it straddles a retirement: either worker may have run it.
fn sure_leaks(pids: &[u32]) -> Vec<(u32, usize)> {
    workers(pids)
        .into_iter()
        .map(|worker| {
            let sure = pids
                .windows(2)
                .filter(|around| around == &[worker, worker])
                .count();
            (worker, sure)
        })
        .collect()
}

#[test]
fn a_worker_is_recycled_once_its_leaks_pass_the_threshold_and_every_future_succeeds() {
    let ex = leak_checked_pool();
    let pids = leak(&ex, 12);
    let leaks = sure_leaks(&pids);
    // Four leaks per worker: three workers retire.
    assert!(leaks.len() >= 3, "recycled fewer than twice: {leaks:?}");
    assert!(
        leaks.iter().all(|&(_, n)| n <= MOST_LEAKS),
        "a worker ran more than {MOST_LEAKS} leaks: {leaks:?}"
    );
    let (_, retired) = leaks.split_last().unwrap();
    assert!(
        retired.iter().all(|&(_, n)| n >= FEWEST_LEAKS),
        "a worker retired after fewer than {FEWEST_LEAKS} leaks: {leaks:?}"
    );
    assert!(!ex.is_broken());
    assert!(
        common::shutdown_within(&ex, common::RESULT_TIMEOUT),
        "shutdown(wait = true) hangs"
    );
}

#[test]
fn a_retired_leaking_worker_exits_and_shutdown_completes() {
    let ex = leak_checked_pool();
    let pids = workers(&leak(&ex, 12));
    let current = *pids.last().unwrap();
    let retired = &pids[..pids.len() - 1];
    assert!(!retired.is_empty(), "never recycled: {pids:?}");
    let gone = common::eventually(common::RESULT_TIMEOUT, || {
        retired.iter().all(|&pid| !common::alive(pid)) && ex.worker_pids() == [current]
    });
    let live = ex.worker_pids();
    let shut = common::shutdown_within(&ex, common::RESULT_TIMEOUT);
    assert!(gone, "retired workers {retired:?} still there: {live:?}");
    assert!(shut, "shutdown(wait = true) hangs");
}

/// The warnings logged so far that name one of `workers`. Tests running
/// beside this one (under `cargo test`) have workers of their own.
fn warnings_naming(workers: &[u32]) -> Vec<String> {
    common::logs::records(|level, message| {
        level == log::Level::Warn
            && workers
                .iter()
                .any(|pid| message.contains(&format!("worker {pid} ")))
    })
    .into_iter()
    .map(|(_, message)| message)
    .collect()
}

/// Recycles the worker of a new leak-checked pool at least twice, shuts the
/// pool down (after which its supervisor has handled every retirement) and
/// returns the warnings that name its workers, and its retired workers.
fn warnings_of_a_recycling_pool() -> (Vec<String>, Vec<u32>) {
    let ex = leak_checked_pool();
    let mut workers = workers(&leak(&ex, 12));
    assert!(workers.len() >= 3, "recycled fewer than twice: {workers:?}");
    assert!(common::shutdown_within(&ex, common::RESULT_TIMEOUT));
    let warnings = warnings_naming(&workers);
    workers.pop();
    (warnings, workers)
}

#[test]
fn a_leak_is_logged_as_one_warning_per_executor() {
    common::logs::capture();
    for executor in ["first", "second"] {
        let (warnings, retired) = warnings_of_a_recycling_pool();
        assert_eq!(warnings.len(), 1, "{executor} executor: {warnings:#?}");
        let warning = &warnings[0];
        assert!(
            warning.contains("LOKY_MAX_MEMORY_LEAK_SIZE") && warning.contains("memory leak"),
            "{warning}"
        );
        assert!(
            retired
                .iter()
                .any(|pid| warning.contains(&format!("worker {pid} is being replaced"))),
            "{warning} names none of the retired workers {retired:?}"
        );
    }
}

/// Catches a default leak threshold other than loky's 300 MB (3e8 bytes):
/// a worker that grew by 290 MB serves on, one that grew by 310 MB retires.
/// 310 MB is under 300 MiB, so a threshold read in MiB fails too; the
/// margins (10 MB each way) are twice what a worker grows by besides its
/// leaks.
#[test]
fn the_default_leak_threshold_is_300_mb() {
    assert!(
        std::env::var_os("LOKY_MAX_MEMORY_LEAK_SIZE").is_none(),
        "LOKY_MAX_MEMORY_LEAK_SIZE is set for the tests: the default cannot be checked"
    );
    const MB: u64 = 1_000_000;
    let ex = common::builder(1)
        .env("LOKY_MEMORY_CHECK_INTERVAL", "0")
        .build()
        .unwrap();
    let worker = next_pid(&ex);
    let leak = |bytes: u64| {
        let leaked = ex.submit(LEAK, bytes).unwrap().result_within(CALL_TIMEOUT);
        assert_eq!(leaked.unwrap(), bytes);
    };
    leak(290 * MB);
    // A worker asks to retire right after the call that took it past the
    // threshold; a call already on its way may still reach it, the next
    // one would not.
    for _ in 0..2 {
        assert_eq!(next_pid(&ex), worker, "retired after leaking 290 MB");
    }
    leak(20 * MB);
    assert!(
        common::dead_within(&[worker], common::RESULT_TIMEOUT),
        "still serving after leaking 310 MB"
    );
    assert_ne!(next_pid(&ex), worker);
    assert!(common::shutdown_within(&ex, common::RESULT_TIMEOUT));
}
