//! The reusable executor: one process-wide pool, reused while its settings
//! match, resized in place when only `max_workers` differs, replaced when
//! other settings differ or it is broken or shut down.
//!
//! The reusable executor is shared by the whole test binary, so every test
//! of this file holds [`SERIAL`] while it runs.

mod common;

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use common::FutureExt;
use loky::diagnostics::{EXIT, NOOP, PID, SLEEP, SQUARE};
use loky::{Error, ExecutorBuilder, Future, ProcessPoolExecutor, Shutdown};
use loky_tests::SPAWN_AND_SLEEP;

static SERIAL: Mutex<()> = Mutex::new(());

/// The bound on what must happen at once (a replacement that kills, the
/// death of what a killed task started): wide for a loaded machine, far
/// below the minute-long tasks it must not wait for.
const PROMPTLY: Duration = Duration::from_secs(10);

/// Shuts down at once, killing the workers: always returns.
const KILL: Shutdown = Shutdown {
    wait: true,
    kill_workers: true,
    cancel_futures: true,
};

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The builder every test uses, so that only what a test changes differs.
/// The idle timeout is long enough that no worker leaves during a test.
fn reusable(n: usize) -> ExecutorBuilder {
    common::builder(n).idle_timeout(Duration::from_secs(120))
}

fn get(n: usize) -> ProcessPoolExecutor {
    reusable(n).get_reusable().unwrap()
}

/// Runs a few no-op tasks per worker, which starts every worker; returns
/// the pids of the workers.
fn warm_up(ex: &ProcessPoolExecutor) -> HashSet<u32> {
    let futs: Vec<_> = (0..ex.max_workers() * 4)
        .map(|_| ex.submit(NOOP, ()).unwrap())
        .collect();
    for fut in futs {
        fut.result_bounded().unwrap();
    }
    ex.worker_pids().into_iter().collect()
}

/// The pids of the workers that ran `n` tasks submitted behind `n` short
/// sleeps.
fn pids_of_work(ex: &ProcessPoolExecutor, n: usize) -> HashSet<u32> {
    let sleeps: Vec<_> = (0..n)
        .map(|_| ex.submit(SLEEP, Duration::from_millis(20)).unwrap())
        .collect();
    let pids: Vec<_> = (0..n).map(|_| ex.submit(PID, ()).unwrap()).collect();
    for fut in sleeps {
        fut.result_bounded().unwrap();
    }
    pids.into_iter()
        .map(|f| f.result_bounded().unwrap())
        .collect()
}

/// Submits a task that spawns a `sleep` and sleeps for `duration`; returns
/// its future once it runs in a worker, and the pid of the `sleep`.
fn running_sleep(ex: &ProcessPoolExecutor, duration: Duration) -> (Future<()>, u32) {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = common::pid_file("reusable", &n.to_string());
    let fut = ex
        .submit(SPAWN_AND_SLEEP, (path.display().to_string(), duration))
        .unwrap();
    (fut, common::wait_for_pid(&path))
}

/// A fresh reusable pool of `n` ready workers, whatever the earlier tests
/// left behind.
fn fresh(n: usize) -> ProcessPoolExecutor {
    let ex = get(n);
    ex.shutdown_with(KILL);
    let ex = get(n);
    warm_up(&ex);
    ex
}

#[test]
fn the_same_settings_give_the_same_pool_and_workers() {
    let _serial = serial();
    let ex = fresh(2);
    let pids = warm_up(&ex);
    assert_eq!(pids.len(), 2);

    let again = get(2);
    assert!(ex.same_pool(&again));
    assert_eq!(warm_up(&again), pids);
    assert!(pids_of_work(&again, 8).is_subset(&pids));
    assert!(get(2).same_pool(&ex));
}

#[test]
fn growing_keeps_the_workers_and_adds_new_ones() {
    let _serial = serial();
    let ex = fresh(2);
    let old = warm_up(&ex);

    let grown = get(4);
    assert!(ex.same_pool(&grown));
    assert_eq!(grown.max_workers(), 4);
    // The new workers are listed at once: `worker_pids` waits for the
    // resize to be handled and its workers spawned.
    let listed: HashSet<u32> = grown.worker_pids().into_iter().collect();
    assert_eq!(listed.len(), 4, "{listed:?}");
    let now = warm_up(&grown);
    assert_eq!(now, listed);
    assert_eq!(now.len(), 4, "{now:?}");
    assert!(old.is_subset(&now), "{old:?} not in {now:?}");
    assert!(old.iter().all(|&pid| common::alive(pid)));
}

#[test]
fn shrinking_leaves_only_old_workers() {
    let _serial = serial();
    let ex = fresh(4);
    let old = warm_up(&ex);
    assert_eq!(old.len(), 4);

    let shrunk = get(2);
    assert!(ex.same_pool(&shrunk));
    assert_eq!(shrunk.max_workers(), 2);
    assert!(
        common::eventually(common::RESULT_TIMEOUT, || shrunk.worker_pids().len() == 2),
        "{:?}",
        shrunk.worker_pids()
    );
    let left: HashSet<u32> = shrunk.worker_pids().into_iter().collect();
    assert!(left.is_subset(&old), "{left:?} not in {old:?}");
    let retired: Vec<u32> = old.difference(&left).copied().collect();
    assert!(
        common::eventually(common::RESULT_TIMEOUT, || retired
            .iter()
            .all(|&pid| !common::alive(pid))),
        "retired workers {retired:?} still run"
    );
    assert!(pids_of_work(&shrunk, 8).is_subset(&left));
}

#[test]
fn shrinking_a_busy_pool_retires_workers_after_their_work() {
    let _serial = serial();
    let ex = fresh(4);
    let old = warm_up(&ex);
    // Every worker runs a task when the pool shrinks.
    let sleeps: Vec<_> = (0..4)
        .map(|_| running_sleep(&ex, Duration::from_millis(500)).0)
        .collect();

    let shrunk = get(2);
    for fut in &sleeps {
        fut.result_bounded()
            .expect("work of a retired worker completes");
    }
    let shrank = common::eventually(common::RESULT_TIMEOUT, || shrunk.worker_pids().len() == 2);
    let live = shrunk.worker_pids();
    let shut = common::shutdown_within(&shrunk, common::RESULT_TIMEOUT);
    assert!(shrank, "still {live:?} after shrinking to 2");
    assert!(live.iter().all(|pid| old.contains(pid)));
    assert!(shut, "shutdown(wait = true) hangs after a shrink");
}

#[test]
fn a_changed_setting_gives_a_new_pool() {
    let _serial = serial();
    let ex = fresh(2);
    let old = warm_up(&ex);

    let other = reusable(2)
        .env("LOKY_TEST_SETTING", "changed")
        .get_reusable()
        .unwrap();
    assert!(!ex.same_pool(&other));
    assert!(ex.is_shutdown(), "the old pool was shut down");
    assert!(matches!(
        ex.submit(NOOP, ()),
        Err(Error::ShutdownExecutor(_))
    ));
    let new = warm_up(&other);
    assert!(new.is_disjoint(&old), "{new:?} vs {old:?}");
    assert!(old.iter().all(|&pid| !common::alive(pid)));

    // And back: the default settings replace it again.
    let back = get(2);
    assert!(!back.same_pool(&other));
    assert!(other.is_shutdown());
}

#[test]
fn a_broken_pool_is_replaced() {
    let _serial = serial();
    for round in 0..10 {
        let ex = fresh(2);
        let err = ex.submit(EXIT, 3).unwrap().result_bounded().unwrap_err();
        assert!(err.is_broken_pool(), "{err:?}");
        // Right after its future failed, the pool counts as broken.
        let replacement = get(2);
        assert!(
            !replacement.same_pool(&ex),
            "round {round}: the broken pool was reused"
        );
        assert_eq!(
            replacement
                .submit(SQUARE, 4)
                .unwrap()
                .result_bounded()
                .unwrap(),
            16
        );
    }
}

#[test]
fn a_broken_pool_whose_last_handle_the_registry_held_still_reaps_its_workers() {
    let _serial = serial();
    let ex = fresh(2);
    let pids = ex.worker_pids();
    assert_eq!(pids.len(), 2);
    let err = ex.submit(EXIT, 3).unwrap().result_bounded().unwrap_err();
    assert!(err.is_broken_pool(), "{err:?}");
    // The registry now holds the broken pool's last handle: `get` lets it
    // go without waiting, and the pool finishes in the background.
    drop(ex);
    assert_eq!(common::run(&get(2), SQUARE, 4).unwrap(), 16);
    assert!(
        common::reaped_within(&pids, common::RESULT_TIMEOUT),
        "the broken pool's workers {pids:?} were not all reaped"
    );
}

#[test]
fn a_shut_down_pool_is_replaced() {
    let _serial = serial();
    let ex = fresh(2);
    common::shutdown_bounded(&ex);
    let replacement = get(2);
    assert!(!replacement.same_pool(&ex));
    assert_eq!(
        replacement
            .submit(SQUARE, 5)
            .unwrap()
            .result_bounded()
            .unwrap(),
        25
    );
}

#[test]
fn kill_workers_replaces_a_busy_pool_at_once() {
    let _serial = serial();
    let ex = fresh(1);
    let worker = warm_up(&ex).into_iter().next().unwrap();
    let (long, sleeper) = running_sleep(&ex, Duration::from_secs(60));

    let start = Instant::now();
    let other = reusable(1)
        .env("LOKY_TEST_SETTING", "killing")
        .kill_workers(true)
        .get_reusable()
        .unwrap();
    let took = start.elapsed();
    // Catches a replacement that waits for the old pool's minute-long task.
    assert!(took < PROMPTLY, "the replacement took {took:?}");
    assert!(!other.same_pool(&ex));
    match long.result_timeout(PROMPTLY) {
        Err(Error::ShutdownExecutor(e)) => assert!(e.workers_killed(), "{e}"),
        other => panic!("expected ShutdownExecutor, got {other:?}"),
    }
    assert!(!common::alive(worker));
    assert!(common::eventually(PROMPTLY, || { !common::alive(sleeper) }));
    assert_eq!(
        other.submit(SQUARE, 6).unwrap().result_bounded().unwrap(),
        36
    );
}

#[test]
fn without_kill_workers_the_replacement_waits_for_the_old_tasks() {
    let _serial = serial();
    let ex = fresh(1);
    let task = ex.submit(SLEEP, Duration::from_millis(300)).unwrap();
    let other = reusable(1)
        .env("LOKY_TEST_SETTING", "waiting")
        .get_reusable()
        .unwrap();
    assert!(
        task.done(),
        "the replacement returned before the old task ended"
    );
    task.result_bounded().unwrap();
    assert!(!other.same_pool(&ex));
}

#[test]
fn many_threads_get_and_use_the_reusable_executor_at_once() {
    let _serial = serial();
    fresh(2);
    let (done_tx, done) = mpsc::channel();
    for t in 0..8i64 {
        let done_tx = done_tx.clone();
        std::thread::spawn(move || {
            let outcome = std::panic::catch_unwind(|| {
                for round in 0..10i64 {
                    let n = 1 + ((t + round) % 4) as usize;
                    let ex = get(n);
                    let x = t * 100 + round;
                    let futs: Vec<_> = (0..5).map(|i| ex.submit(SQUARE, x + i).unwrap()).collect();
                    for (i, fut) in (0..).zip(futs) {
                        let y = x + i;
                        match fut.result_bounded() {
                            Ok(square) => assert_eq!(square, y * y),
                            Err(err) => panic!("thread {t}, round {round}: {err:?}"),
                        }
                    }
                }
            });
            let _ = done_tx.send((t, outcome.is_ok()));
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for _ in 0..8 {
        let left = deadline.saturating_duration_since(Instant::now());
        let (t, ok) = done
            .recv_timeout(left)
            .expect("deadlock: a thread never finished");
        assert!(ok, "thread {t} failed");
    }
    // After all those resizes, the pool still works and shuts down cleanly.
    let ex = get(2);
    assert_eq!(ex.submit(SQUARE, 7).unwrap().result_bounded().unwrap(), 49);
    assert!(
        common::shutdown_within(&ex, common::RESULT_TIMEOUT),
        "shutdown(wait = true) hangs after concurrent resizes"
    );
}
