//! The initializer: a registered task run once in every new worker before
//! any other; a failing one breaks the pool with a message naming it.

mod common;

use std::time::Duration;

use common::FutureExt;
use loky::diagnostics::{ECHO_I64, EXIT, PID};
use loky::{CrashPolicy, Error};
use loky_tests::{GATE, Gate, INIT, INIT_PANIC, INIT_REPORT, INIT_VALUE};

/// Catches an initializer run on one worker only (the first, say): each of
/// the two workers is made to serve an `INIT_REPORT` by holding the other
/// one at a gate, and both report the initializer's value.
#[test]
fn the_initializer_state_is_visible_to_tasks_on_every_worker() {
    let ex = common::builder(2)
        .initializer(INIT, "config".into())
        .build()
        .unwrap();
    let gate = Gate::new();
    let first_hold = ex.submit(GATE, gate.arg()).unwrap();
    let first = gate.entered(common::RESULT_TIMEOUT);
    let (other, value) = ex
        .submit(INIT_REPORT, ())
        .unwrap()
        .result_bounded()
        .unwrap();
    assert_ne!(other, first.pid, "the held worker ran a call");
    assert_eq!(value.as_deref(), Some("config"), "worker {other}");
    // Hold the other worker, release the first: the next call runs there.
    let second_hold = ex.submit(GATE, gate.arg()).unwrap();
    let second = gate.entered(common::RESULT_TIMEOUT);
    assert_eq!(second.pid, other);
    let first_pid = first.pid;
    first.release();
    first_hold.result_bounded().unwrap();
    let (pid, value) = ex
        .submit(INIT_REPORT, ())
        .unwrap()
        .result_bounded()
        .unwrap();
    assert_eq!(pid, first_pid);
    assert_eq!(value.as_deref(), Some("config"), "worker {pid}");
    let mut workers = ex.worker_pids();
    workers.sort_unstable();
    let mut served = vec![first_pid, other];
    served.sort_unstable();
    assert_eq!(workers, served);
    second.release();
    second_hold.result_bounded().unwrap();
}

/// Catches an initializer that runs in the first workers only, not in
/// their replacements.
#[test]
fn every_replacement_worker_runs_the_initializer_too() {
    // One task per worker: each task runs on a fresh worker.
    let ex = common::builder(1)
        .initializer(INIT, "config".into())
        .max_tasks_per_child(1)
        .build()
        .unwrap();
    let mut pids = Vec::new();
    for _ in 0..4 {
        let (pid, value) = ex
            .submit(INIT_REPORT, ())
            .unwrap()
            .result_bounded()
            .unwrap();
        assert_eq!(value.as_deref(), Some("config"), "worker {pid}");
        pids.push(pid);
        pids.push(ex.submit(PID, ()).unwrap().result_bounded().unwrap());
    }
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 8, "{pids:?}");
}

#[test]
fn without_an_initializer_there_is_no_state() {
    let ex = common::pool(1);
    assert_eq!(
        ex.submit(INIT_VALUE, ()).unwrap().result_bounded().unwrap(),
        None
    );
}

/// The documented error of a failed initializer: `BrokenProcessPool` with
/// a reason that names it; its message (the reason and its cause).
fn expect_initializer_error(err: &Error, name: &str) -> String {
    match err {
        Error::BrokenProcessPool(broken) => {
            let reason = broken.reason();
            assert!(reason.contains(&format!("`{name}`")), "{reason}");
            broken.to_string()
        }
        other => panic!("expected BrokenProcessPool naming `{name}`, got {other:?}"),
    }
}

/// Catches a failed initializer reported as another error (such as a
/// `TerminatedWorker` of the call that was waiting), or one that lets the
/// call run anyway.
#[test]
fn a_panicking_initializer_breaks_the_pool_naming_it() {
    let ex = common::builder(2)
        .initializer(INIT_PANIC, "the initializer refuses".into())
        .build()
        .unwrap();
    let fut = ex.submit(ECHO_I64, 1).unwrap();
    let err = fut
        .result_bounded()
        .expect_err("a task ran after a failed initializer");
    let reason = expect_initializer_error(&err, "init_panic");
    assert!(reason.contains("the initializer refuses"), "{reason}");

    assert!(ex.is_broken());
    let again = ex.submit(ECHO_I64, 2).expect_err("submit to a broken pool");
    expect_initializer_error(&again, "init_panic");
    assert!(
        common::eventually(common::RESULT_TIMEOUT, || ex.worker_pids().is_empty()),
        "{:?}",
        ex.worker_pids()
    );
}

/// Catches the death of a worker in its initializer taken for an ordinary
/// crash (`TerminatedWorker`, loky's confusing `EXIT(0)`).
#[test]
fn an_initializer_that_kills_its_worker_breaks_the_pool_naming_it() {
    let ex = common::builder(1).initializer(EXIT, 3).build().unwrap();
    let err = ex
        .submit(ECHO_I64, 1)
        .unwrap()
        .result_bounded()
        .expect_err("a task ran after a failed initializer");
    let reason = expect_initializer_error(&err, "exit");
    assert!(reason.contains("EXIT(3)"), "{reason}");
    assert!(ex.is_broken());
}

/// Catches a pool that, under `Respawn`, replaces a worker dying in its
/// initializer again and again instead of breaking.
#[test]
fn an_initializer_that_kills_its_worker_breaks_the_pool_even_with_respawn() {
    let ex = common::builder(1)
        .initializer(EXIT, 3)
        .on_worker_crash(CrashPolicy::Respawn)
        .build()
        .unwrap();
    let result = ex
        .submit(ECHO_I64, 1)
        .unwrap()
        .result_timeout(Duration::from_secs(10));
    let broken = ex.is_broken();
    // Never wait for a pool that respawns forever.
    ex.shutdown_with(loky::Shutdown {
        wait: false,
        kill_workers: true,
        cancel_futures: true,
    });
    let err = result.expect_err("a task ran after a failed initializer");
    expect_initializer_error(&err, "exit");
    assert!(broken);
}
