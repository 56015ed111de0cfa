//! Dispatch: a call never waits behind a busy worker while another worker
//! sits idle, whether the calls before it were short (a worker may then
//! hold several calls at once) or long.
//!
//! A `GATE` task holds its worker until the test releases it; a call queued
//! behind a held gate cannot run, so a wrong dispatch shows as a call that
//! never starts (bounded waits turn it into a failure).

mod common;

use std::time::{Duration, Instant};

use common::{FutureExt, RESULT_TIMEOUT};
use loky::diagnostics::{ECHO_I64, PID};
use loky_tests::{GATE, Gate};

/// A pool of two workers, both started, that has just answered many short
/// calls: the state in which a worker may be sent several calls at once.
fn warm_pool() -> loky::ProcessPoolExecutor {
    let ex = common::pool(2);
    let calls: Vec<_> = (0..500).map(|i| ex.submit(ECHO_I64, i).unwrap()).collect();
    for (i, call) in (0..).zip(calls) {
        assert_eq!(call.result_bounded().unwrap(), i);
    }
    assert_eq!(ex.worker_pids().len(), 2);
    ex
}

/// Catches a long call sent to the busy worker (behind a held gate) while
/// the other one is idle: the second gate would never be entered.
#[test]
fn a_long_call_goes_to_the_idle_worker_not_behind_a_busy_one() {
    let ex = warm_pool();
    let gate = Gate::new();
    let first = ex.submit(GATE, gate.arg()).unwrap();
    let held_first = gate.entered(RESULT_TIMEOUT);
    // One worker is held, the other idle.
    let second = ex.submit(GATE, gate.arg()).unwrap();
    let held_second = gate.entered(RESULT_TIMEOUT);
    assert_ne!(held_first.pid, held_second.pid);
    held_first.release();
    held_second.release();
    first.result_bounded().unwrap();
    second.result_bounded().unwrap();
}

/// Catches a short call sent behind the held gate: it would not resolve
/// while the gate is held (here: ever).
#[test]
fn a_short_call_goes_to_the_idle_worker_not_behind_a_busy_one() {
    let ex = warm_pool();
    let gate = Gate::new();
    let held_call = ex.submit(GATE, gate.arg()).unwrap();
    let held = gate.entered(RESULT_TIMEOUT);
    let pid = ex.submit(PID, ()).unwrap().result_bounded().unwrap();
    assert_ne!(pid, held.pid);
    held.release();
    held_call.result_bounded().unwrap();
}

/// Catches a dispatch that fills one worker before the other, or that
/// goes by a count of calls in flight lagging behind the replies: right
/// after a burst of short calls both workers are idle, but a lagging count
/// still holds some of the burst and may send the second of two gates
/// submitted back to back behind the first. Both must be entered, on two
/// workers; rounds repeat the race.
#[test]
fn two_long_calls_submitted_together_run_on_two_workers() {
    let ex = warm_pool();
    let gate = Gate::new();
    for round in 0..20 {
        let burst: Vec<_> = (0..200).map(|i| ex.submit(ECHO_I64, i).unwrap()).collect();
        for (i, call) in (0..).zip(burst) {
            assert_eq!(call.result_bounded().unwrap(), i, "round {round}");
        }
        let first = ex.submit(GATE, gate.arg()).unwrap();
        let second = ex.submit(GATE, gate.arg()).unwrap();
        let a = gate.entered(RESULT_TIMEOUT);
        let b = gate.entered(RESULT_TIMEOUT);
        assert_ne!(a.pid, b.pid, "round {round}");
        a.release();
        b.release();
        first.result_bounded().unwrap();
        second.result_bounded().unwrap();
    }
}

/// How long each gate of [`short_calls_never_wait_behind_a_held_worker`]
/// is held at least: past the 2 ms under which the pool counts a task as
/// quick enough to queue calls behind (by design, a call of a task measured
/// quick may have a few calls sent behind it).
const LONG_HOLD: Duration = Duration::from_millis(10);

/// Catches short calls pipelined to a worker that is held by a long call:
/// they would wait behind the held gate (here, until the bound) while the
/// other worker could answer them all. Each of the rounds holds one worker
/// for at least [`LONG_HOLD`] and sends a burst of echoes.
#[test]
fn short_calls_never_wait_behind_a_held_worker() {
    let ex = warm_pool();
    let gate = Gate::new();
    for round in 0..20 {
        let first = ex.submit(GATE, gate.arg()).unwrap();
        let held = gate.entered(RESULT_TIMEOUT);
        let entered = Instant::now();
        let burst: Vec<_> = (0..100).map(|i| ex.submit(ECHO_I64, i).unwrap()).collect();
        for (i, call) in (0..).zip(burst) {
            assert_eq!(call.result_bounded().unwrap(), i, "round {round}");
        }
        // The gate's length is the task's duration, not a wait for
        // anything: a hold shorter than 2 ms would make GATE a quick task.
        std::thread::sleep(LONG_HOLD.saturating_sub(entered.elapsed()));
        held.release();
        first.result_bounded().unwrap();
    }
}
