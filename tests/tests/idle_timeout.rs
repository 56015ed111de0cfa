//! Idle timeout: idle workers leave cleanly (never taken for a crash, nor
//! logged as a problem) and the next submit starts new ones.

mod common;

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use common::FutureExt;
use loky::diagnostics::{PID, SLEEP, SQUARE};

/// Runs the tests of this file one at a time (under `cargo test` they
/// share one process and its logger) and captures the log records of the
/// calling test alone.
fn serial_with_logs() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    common::logs::capture();
    let serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    common::logs::clear();
    serial
}

/// The warnings and errors logged since [`serial_with_logs`].
fn problems_logged() -> Vec<(log::Level, String)> {
    common::logs::records(|level, _| level <= log::Level::Warn)
}

#[test]
fn idle_workers_leave_and_the_next_submit_respawns_them() {
    let _serial = serial_with_logs();
    let ex = common::builder(2)
        .idle_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let first: Vec<_> = (0..4).map(|_| ex.submit(PID, ()).unwrap()).collect();
    for fut in &first {
        fut.result_bounded().unwrap();
    }
    let old = ex.worker_pids();
    assert!(!old.is_empty());

    assert!(
        common::eventually(common::RESULT_TIMEOUT, || {
            ex.worker_pids().is_empty() && old.iter().all(|&pid| !common::alive(pid))
        }),
        "workers still there: {:?}",
        ex.worker_pids()
    );
    let mine: Vec<u32> = common::children().iter().map(|&(pid, _)| pid).collect();
    assert!(
        old.iter().all(|pid| !mine.contains(pid)),
        "the idle workers were not reaped: {mine:?}"
    );

    // Not a crash: the pool is whole and earlier futures keep their values.
    assert!(!ex.is_broken());
    assert!(!ex.is_shutdown());
    for fut in &first {
        assert!(old.contains(&fut.result_bounded().unwrap()));
    }

    assert_eq!(ex.submit(SQUARE, 9).unwrap().result_bounded().unwrap(), 81);
    let new = ex.worker_pids();
    assert!(!new.is_empty());
    assert!(
        new.iter().all(|pid| !old.contains(pid)),
        "{new:?} vs {old:?}"
    );
    common::shutdown_bounded(&ex);
    assert!(ex.worker_pids().is_empty());
    // The supervisor handled the idle exits before the submit above: had
    // it taken them for crashes or problems, it would have logged by now.
    let logged = problems_logged();
    assert!(logged.is_empty(), "idle exits were logged: {logged:#?}");
}

/// Catches an idle timer that runs while the worker is busy: the worker
/// would be retired under its three-timeouts-long task, and the call that
/// follows the task at once (well within one idle timeout) would run on
/// another pid.
#[test]
fn a_busy_worker_does_not_time_out() {
    let _serial = serial_with_logs();
    let idle = Duration::from_secs(1);
    let ex = common::builder(1).idle_timeout(idle).build().unwrap();
    let worker = ex.submit(PID, ()).unwrap().result_bounded().unwrap();
    ex.submit(SLEEP, idle * 3)
        .unwrap()
        .result_bounded()
        .unwrap();
    let next = ex.submit(PID, ()).unwrap().result_bounded().unwrap();
    assert_eq!(next, worker, "the busy worker left");
    assert!(!ex.is_broken());
    common::shutdown_bounded(&ex);
    let logged = problems_logged();
    assert!(logged.is_empty(), "{logged:#?}");
}
