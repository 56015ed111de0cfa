//! Per-task deadlines: a task past its deadline is killed with its worker's
//! process group (SIGTERM, grace period, SIGKILL), fails with
//! `DeadlineExceeded`, and the pool goes on.

mod common;

use std::time::{Duration, Instant};

use loky::diagnostics::{ECHO_I64, NOOP, SLEEP, SLEEP_IGNORING_TERM};
use loky::{CallOptions, Error};
use loky_tests::SPAWN_AND_SLEEP;

const LONG: Duration = Duration::from_secs(60);

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

#[test]
fn a_task_past_its_deadline_fails_within_a_second() {
    // A long grace period: the task must die of the polite SIGTERM alone.
    let ex = common::builder(1)
        .kill_grace_period(Duration::from_secs(5))
        .build()
        .unwrap();
    ex.submit(NOOP, ()).unwrap().result().unwrap();
    let worker = ex.worker_pids()[0];

    let start = Instant::now();
    let timeout = Duration::from_millis(200);
    let fut = ex.submit_with(SLEEP, LONG, deadline(timeout)).unwrap();
    expect_deadline(fut.result(), "sleep", timeout);
    let took = start.elapsed();
    assert!(took >= timeout, "failed before its deadline: {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");

    assert!(!ex.is_broken());
    assert!(!common::alive(worker), "the worker was killed");
    assert_eq!(ex.submit(ECHO_I64, 5).unwrap().result().unwrap(), 5);
    assert!(
        !ex.worker_pids().contains(&worker),
        "the worker was replaced"
    );
}

#[test]
fn a_task_ignoring_sigterm_is_killed_after_the_grace_period() {
    let grace = Duration::from_millis(300);
    let ex = common::builder(1).kill_grace_period(grace).build().unwrap();
    ex.submit(NOOP, ()).unwrap().result().unwrap();

    let start = Instant::now();
    let timeout = Duration::from_millis(200);
    let fut = ex
        .submit_with(SLEEP_IGNORING_TERM, LONG, deadline(timeout))
        .unwrap();
    expect_deadline(fut.result(), "sleep_ignoring_term", timeout);
    let took = start.elapsed();
    assert!(took >= timeout + grace, "killed before the grace: {took:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");

    assert!(!ex.is_broken());
    assert_eq!(ex.submit(ECHO_I64, 6).unwrap().result().unwrap(), 6);
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
    expect_deadline(fut.result(), "spawn_and_sleep", timeout);
    assert!(
        common::eventually(Duration::from_secs(5), || !common::alive(sleeper)),
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

    expect_deadline(doomed.result(), "sleep", timeout);
    for fut in short {
        fut.result().unwrap();
    }
    for (i, fut) in echoes.into_iter().enumerate() {
        assert_eq!(fut.result().unwrap(), i as i64);
    }
    late_sleep.result().unwrap();
    assert!(!ex.is_broken());
    assert!(
        common::eventually(Duration::from_secs(10), || ex.worker_pids().len() == 2),
        "{:?}",
        ex.worker_pids()
    );
}

#[test]
fn the_builder_task_timeout_applies_to_every_call_and_a_call_may_override_it() {
    let timeout = Duration::from_millis(300);
    let ex = common::builder(1).task_timeout(timeout).build().unwrap();
    ex.submit(NOOP, ()).unwrap().result().unwrap();

    let start = Instant::now();
    expect_deadline(ex.submit(SLEEP, LONG).unwrap().result(), "sleep", timeout);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );

    // Under the deadline: fine.
    ex.submit(SLEEP, Duration::from_millis(10))
        .unwrap()
        .result()
        .unwrap();
    // A longer per-call deadline overrides the builder's.
    ex.submit_with(SLEEP, Duration::from_millis(600), deadline(LONG))
        .unwrap()
        .result()
        .unwrap();
    // A shorter one too.
    let short = Duration::from_millis(100);
    expect_deadline(
        ex.submit_with(SLEEP, Duration::from_secs(5), deadline(short))
            .unwrap()
            .result(),
        "sleep",
        short,
    );
    assert!(!ex.is_broken());
}
