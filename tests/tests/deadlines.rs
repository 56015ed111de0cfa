//! Per-task deadlines: a task past its deadline is killed with its worker's
//! process group (SIGTERM, grace period, SIGKILL), fails with
//! `DeadlineExceeded`, and the pool goes on.

mod common;

use std::time::{Duration, Instant};

use common::FutureExt;

use loky::diagnostics::{ECHO_I64, NOOP, SLEEP, SLEEP_IGNORING_TERM};
use loky::{CallOptions, Error};
use loky_tests::SPAWN_AND_SLEEP;

/// What the tasks that must be stopped would run for: far past every bound
/// below, so that a deadline not enforced fails the test.
const LONG: Duration = Duration::from_secs(60);

/// The bound on how long a deadline takes to stop a task (beyond the
/// deadline and any grace period): wide for a loaded machine, far below
/// [`LONG`] and the long grace periods below.
const STOPPED_WITHIN: Duration = Duration::from_secs(10);

fn deadline(timeout: Duration) -> CallOptions {
    CallOptions::new().timeout(timeout)
}

fn expect_deadline(result: loky::Result<()>, task: &str, timeout: Duration) {
    match result {
        Err(Error::DeadlineExceeded(d)) => {
            assert_eq!(d.task(), task, "{d}");
            assert_eq!(d.timeout(), timeout, "{d}");
            assert!(d.to_string().contains("deadline"), "{d}");
        }
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
}

/// Catches a deadline that is not enforced, one enforced late, and a task
/// that is not sent SIGTERM first: with a grace period of a minute, only
/// the polite SIGTERM can stop it in time.
#[test]
fn a_task_past_its_deadline_dies_of_the_polite_sigterm() {
    let ex = common::builder(1).kill_grace_period(LONG).build().unwrap();
    ex.submit(NOOP, ()).unwrap().result_bounded().unwrap();
    let worker = ex.worker_pids()[0];

    let start = Instant::now();
    let timeout = Duration::from_millis(200);
    let fut = ex.submit_with(SLEEP, LONG, deadline(timeout)).unwrap();
    expect_deadline(fut.result_bounded(), "sleep", timeout);
    let took = start.elapsed();
    assert!(took >= timeout, "failed before its deadline: {took:?}");
    assert!(took < timeout + STOPPED_WITHIN, "took {took:?}");

    assert!(!ex.is_broken());
    assert!(!common::alive(worker), "the worker was killed");
    assert_eq!(ex.submit(ECHO_I64, 5).unwrap().result_bounded().unwrap(), 5);
    assert!(
        !ex.worker_pids().contains(&worker),
        "the worker was replaced"
    );
}

#[test]
fn a_task_ignoring_sigterm_is_killed_after_the_grace_period() {
    let grace = Duration::from_millis(300);
    let ex = common::builder(1).kill_grace_period(grace).build().unwrap();
    ex.submit(NOOP, ()).unwrap().result_bounded().unwrap();

    let start = Instant::now();
    let timeout = Duration::from_millis(200);
    let fut = ex
        .submit_with(SLEEP_IGNORING_TERM, LONG, deadline(timeout))
        .unwrap();
    expect_deadline(fut.result_bounded(), "sleep_ignoring_term", timeout);
    let took = start.elapsed();
    assert!(took >= timeout + grace, "killed before the grace: {took:?}");
    assert!(took < timeout + grace + STOPPED_WITHIN, "took {took:?}");

    assert!(!ex.is_broken());
    assert_eq!(ex.submit(ECHO_I64, 6).unwrap().result_bounded().unwrap(), 6);
}

#[test]
fn a_process_the_task_spawned_dies_with_it() {
    let ex = common::builder(1).build().unwrap();
    let path = common::pid_file("deadlines", "spawned");
    let timeout = Duration::from_secs(2);
    let fut = ex
        .submit_with(
            SPAWN_AND_SLEEP,
            (path.display().to_string(), LONG),
            deadline(timeout),
        )
        .unwrap();
    let sleeper = common::wait_for_pid(&path);
    assert!(common::alive(sleeper));
    expect_deadline(fut.result_bounded(), "spawn_and_sleep", timeout);
    assert!(
        common::dead_within(&[sleeper], STOPPED_WITHIN),
        "the process the task spawned ({sleeper}) outlived the deadline"
    );
    assert!(!ex.is_broken());
}

#[test]
fn other_tasks_in_flight_succeed() {
    let ex = common::builder(2).build().unwrap();
    let timeout = Duration::from_millis(300);
    let doomed = ex.submit_with(SLEEP, LONG, deadline(timeout)).unwrap();
    let short: Vec<_> = (0..10)
        .map(|_| ex.submit(SLEEP, Duration::from_millis(50)).unwrap())
        .collect();
    let echoes: Vec<_> = (0..200).map(|i| ex.submit(ECHO_I64, i).unwrap()).collect();
    let late_sleep = ex
        .submit_with(SLEEP, Duration::from_millis(100), deadline(LONG))
        .unwrap();

    expect_deadline(doomed.result_bounded(), "sleep", timeout);
    for fut in short {
        fut.result_bounded().unwrap();
    }
    for (i, fut) in echoes.into_iter().enumerate() {
        assert_eq!(fut.result_bounded().unwrap(), i as i64);
    }
    late_sleep.result_bounded().unwrap();
    assert!(!ex.is_broken());
    assert!(
        common::eventually(common::RESULT_TIMEOUT, || ex.worker_pids().len() == 2),
        "{:?}",
        ex.worker_pids()
    );
}

#[test]
fn the_builder_task_timeout_applies_to_every_call_and_a_call_may_override_it() {
    let timeout = Duration::from_millis(300);
    let ex = common::builder(1).task_timeout(timeout).build().unwrap();
    ex.submit(NOOP, ()).unwrap().result_bounded().unwrap();

    let start = Instant::now();
    expect_deadline(
        ex.submit(SLEEP, LONG).unwrap().result_bounded(),
        "sleep",
        timeout,
    );
    assert!(
        start.elapsed() < timeout + STOPPED_WITHIN,
        "{:?}",
        start.elapsed()
    );

    // Under the deadline: fine.
    ex.submit(SLEEP, Duration::from_millis(10))
        .unwrap()
        .result_bounded()
        .unwrap();
    // A longer per-call deadline overrides the builder's.
    ex.submit_with(SLEEP, Duration::from_millis(600), deadline(LONG))
        .unwrap()
        .result_bounded()
        .unwrap();
    // A shorter one too.
    let short = Duration::from_millis(100);
    expect_deadline(
        ex.submit_with(SLEEP, Duration::from_secs(5), deadline(short))
            .unwrap()
            .result_bounded(),
        "sleep",
        short,
    );
    assert!(!ex.is_broken());
}

/// The documented default grace period between SIGTERM and SIGKILL.
const DEFAULT_GRACE: Duration = Duration::from_millis(500);

/// Catches a default grace period shorter than 500 ms (the lower bound is
/// exact) or of several seconds (the upper bound leaves room for a loaded
/// machine): a task that ignores SIGTERM dies only of the SIGKILL that
/// follows the grace period.
#[test]
fn the_default_grace_period_is_half_a_second() {
    let ex = common::builder(1).build().unwrap();
    ex.submit(NOOP, ()).unwrap().result_bounded().unwrap();
    let timeout = Duration::from_millis(200);
    let start = Instant::now();
    let fut = ex
        .submit_with(SLEEP_IGNORING_TERM, LONG, deadline(timeout))
        .unwrap();
    expect_deadline(fut.result_bounded(), "sleep_ignoring_term", timeout);
    let took = start.elapsed();
    assert!(
        took >= timeout + DEFAULT_GRACE,
        "killed before 500 ms of grace: {took:?}"
    );
    assert!(
        took < timeout + DEFAULT_GRACE + Duration::from_secs(4),
        "a grace period of seconds: {took:?}"
    );
    assert!(!ex.is_broken());
}
