//! `Future::kill`: a running task's worker is killed and replaced, the future
//! fails with `Cancelled`; a pending future is simply cancelled.

mod common;

use std::time::{Duration, Instant};

use loky::Error;
use loky::diagnostics::{ECHO_I64, SLEEP};
use loky_tests::SPAWN_AND_SLEEP;

const LONG: Duration = Duration::from_secs(60);

#[test]
fn killing_a_running_future_replaces_its_worker() {
    let ex = common::builder(1).build().unwrap();
    let path = common::pid_file("kill", "running");
    let fut = ex
        .submit(SPAWN_AND_SLEEP, (path.display().to_string(), LONG))
        .unwrap();
    let sleeper = common::wait_for_pid(&path);
    let worker = ex.worker_pids()[0];
    assert!(fut.running());

    let start = Instant::now();
    assert!(fut.kill(), "kill of a running future");
    assert!(
        start.elapsed() < Duration::from_millis(100),
        "kill took {:?}",
        start.elapsed()
    );
    match fut.result_timeout(Duration::from_secs(1)) {
        Err(Error::Cancelled) => {}
        other => panic!("expected Cancelled within 1 s, got {other:?}"),
    }
    assert!(fut.done());
    assert!(!fut.kill(), "kill of a finished future");

    assert!(!ex.is_broken());
    assert!(!common::alive(worker), "the worker was killed");
    assert!(
        common::eventually(Duration::from_secs(5), || !common::alive(sleeper)),
        "the process the task spawned outlived the kill"
    );
    assert_eq!(ex.submit(ECHO_I64, 3).unwrap().result().unwrap(), 3);
    let pids = ex.worker_pids();
    assert_eq!(pids.len(), 1, "{pids:?}");
    assert_ne!(pids[0], worker, "the worker was replaced");
}

#[test]
fn killing_a_pending_future_cancels_it() {
    let ex = common::builder(1).build().unwrap();
    let path = common::pid_file("kill", "pending");
    let running = ex
        .submit(SPAWN_AND_SLEEP, (path.display().to_string(), LONG))
        .unwrap();
    common::wait_for_pid(&path);
    let worker = ex.worker_pids()[0];
    // The only worker is busy for a minute: this one waits in the queue.
    let pending = ex.submit(SLEEP, LONG).unwrap();
    assert!(!pending.running());

    assert!(pending.kill());
    assert!(pending.cancelled());
    match pending.result_timeout(Duration::from_secs(1)) {
        Err(Error::Cancelled) => {}
        other => panic!("expected Cancelled, got {other:?}"),
    }
    assert_eq!(ex.worker_pids(), vec![worker], "no worker was touched");
    assert!(common::alive(worker));
    assert!(running.running());

    assert!(running.kill());
    assert!(matches!(
        running.result_timeout(Duration::from_secs(5)),
        Err(Error::Cancelled)
    ));
    assert_eq!(ex.submit(ECHO_I64, 4).unwrap().result().unwrap(), 4);
}
