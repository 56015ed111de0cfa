//! Done callbacks that block must never keep a result from being settled:
//! a callback that waits for another future of the same pool (pipelined on
//! the same worker, submitted from the callback on a one-worker pool, or
//! failed in the same loop as its own) returns.
//!
//! Each callback reports through a channel that the test reads with a
//! bounded wait; should one deadlock, the pool is shut down without
//! waiting and left behind, so that the test fails instead of hanging.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use loky::diagnostics::{ECHO_I64, EXIT, SQUARE};
use loky::{Error, ProcessPoolExecutor, ReturnWhen};
use loky_tests::{GATE, Gate};

/// Generous: for things that must happen.
const LONG: Duration = Duration::from_secs(20);

/// The value a callback sent, or a failed test (with the pool left behind).
fn reported<T>(rx: &mpsc::Receiver<T>, ex: ProcessPoolExecutor, what: &str) -> T {
    match rx.recv_timeout(LONG) {
        Ok(value) => value,
        Err(_) => {
            ex.shutdown(false);
            std::mem::forget(ex);
            panic!("{what}: the callback did not return within {LONG:?}");
        }
    }
}

#[test]
fn a_callback_may_wait_for_the_next_call_on_the_same_worker() {
    let ex = common::pool(1);
    // Warm: short calls get pipelined on the one worker.
    for i in 0..50 {
        assert_eq!(common::run(&ex, ECHO_I64, i).unwrap(), i);
    }
    let first = ex.submit(ECHO_I64, 1).unwrap();
    let second = ex.submit(ECHO_I64, 2).unwrap();
    let third = ex.submit(ECHO_I64, 3).unwrap();
    let (tx, rx) = mpsc::channel();
    let (next, after) = (second.clone(), third.clone());
    first.add_done_callback(move |_| {
        let waited = loky::wait(&[after], None, ReturnWhen::AllCompleted);
        let _ = tx.send((next.result(), waited.done.len()));
    });
    let (value, done) = reported(&rx, ex, "waiting for a pipelined call");
    assert_eq!(value.unwrap(), 2);
    assert_eq!(done, 1);
    assert_eq!(first.result().unwrap(), 1);
}

#[test]
fn a_callback_may_submit_on_a_one_worker_pool_and_wait_for_the_result() {
    let ex = common::pool(1);
    let fut = ex.submit(ECHO_I64, 1).unwrap();
    let (tx, rx) = mpsc::channel();
    let inner = ex.clone();
    fut.add_done_callback(move |_| {
        let result = inner.submit(SQUARE, 12).and_then(|f| f.result());
        let _ = tx.send(result);
    });
    assert_eq!(reported(&rx, ex, "a submit from a callback").unwrap(), 144);
}

/// Under `BreakPool`, the crash fails both futures in one loop: the first
/// one's callback waits for the second.
#[test]
fn a_callback_may_wait_for_a_sibling_failed_in_the_same_loop() {
    let ex = common::pool(1);
    let crashing = ex.submit(EXIT, 1).unwrap();
    let queued = ex.submit(ECHO_I64, 2).unwrap();
    let (tx, rx) = mpsc::channel();
    let sibling = queued.clone();
    crashing.add_done_callback(move |_| {
        let _ = tx.send(sibling.result());
    });
    let sibling_result = reported(&rx, ex, "waiting for a sibling");
    assert!(
        matches!(sibling_result, Err(Error::TerminatedWorker(_))),
        "{sibling_result:?}"
    );
    assert!(matches!(crashing.result(), Err(Error::TerminatedWorker(_))));
}

/// Two callbacks of futures settled by the same reader, where the first
/// waits for a message that only the second sends.
#[test]
fn a_callback_waiting_for_another_callback_does_not_stop_it() {
    let ex = common::pool(1);
    for i in 0..50 {
        assert_eq!(common::run(&ex, ECHO_I64, i).unwrap(), i);
    }
    // The one worker is held until both callbacks are added: a future
    // done before would run its callback at once, on this thread.
    let gate = Gate::new();
    let holding = ex.submit(GATE, gate.arg()).unwrap();
    let held = gate.entered(LONG);
    let first = ex.submit(ECHO_I64, 1).unwrap();
    let second = ex.submit(ECHO_I64, 2).unwrap();
    let (signal_tx, signal_rx) = mpsc::channel::<()>();
    let (tx, rx) = mpsc::channel();
    first.add_done_callback(move |_| {
        let _ = tx.send(signal_rx.recv_timeout(LONG).is_ok());
    });
    second.add_done_callback(move |_| {
        let _ = signal_tx.send(());
    });
    assert!(!first.done() && !second.done());
    held.release();
    holding.result_timeout(LONG).unwrap();
    assert!(reported(&rx, ex, "two callbacks"));
}
