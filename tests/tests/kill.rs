//! `Future::kill`: a running task's worker is killed and replaced, the future
//! fails with `Cancelled`; a pending future is simply cancelled.

mod common;

use std::time::Duration;

use common::FutureExt;
use loky::Error;
use loky::diagnostics::{ECHO_I64, SLEEP};
use loky_tests::SPAWN_AND_SLEEP;

/// What the killed tasks would run for: far past every bound below.
const LONG: Duration = Duration::from_secs(60);

/// The bound on a kill's effects (the future failing, the worker and what
/// its task started dying): wide for a loaded machine, far below [`LONG`].
const PROMPTLY: Duration = Duration::from_secs(10);

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

    // Catches a kill that waits for the task to end by itself.
    let killing = fut.clone();
    assert!(
        common::bounded("Future::kill", PROMPTLY, move || killing.kill()),
        "kill of a running future"
    );
    match fut.result_timeout(PROMPTLY) {
        Err(Error::Cancelled) => {}
        other => panic!("expected Cancelled within {PROMPTLY:?}, got {other:?}"),
    }
    assert!(fut.done());
    assert!(!fut.kill(), "kill of a finished future");

    assert!(!ex.is_broken());
    assert!(!common::alive(worker), "the worker was killed");
    assert!(
        common::dead_within(&[sleeper], PROMPTLY),
        "the process the task spawned outlived the kill"
    );
    assert_eq!(ex.submit(ECHO_I64, 3).unwrap().result_bounded().unwrap(), 3);
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
    match pending.result_timeout(Duration::ZERO) {
        Err(Error::Cancelled) => {}
        other => panic!("expected Cancelled at once, got {other:?}"),
    }
    assert_eq!(ex.worker_pids(), vec![worker], "no worker was touched");
    assert!(common::alive(worker));
    assert!(running.running());

    assert!(running.kill());
    assert!(matches!(
        running.result_timeout(PROMPTLY),
        Err(Error::Cancelled)
    ));
    assert_eq!(ex.submit(ECHO_I64, 4).unwrap().result_bounded().unwrap(), 4);
}
