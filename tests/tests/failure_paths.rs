//! Futures that fail: `wait` and `as_completed` over futures a crash
//! failed, done callbacks on every failure path, and a shutdown called
//! from a callback.
//!
//! A `GATE` task holds its worker until released (here usually never): a
//! future that completes while its gate is held did so by failing.

mod common;

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{FutureExt, RESULT_TIMEOUT};
use loky::diagnostics::{ECHO_I64, EXIT, SLEEP};
use loky::{CallOptions, CrashPolicy, Error, Future, ReturnWhen, Shutdown};
use loky_tests::{GATE, Gate, error_kind};

/// The `wait`/`as_completed` timeout: far beyond any crash's detection, so
/// a call that returns before it returned because of the crash.
const LONG: Duration = RESULT_TIMEOUT;

/// Catches a `wait(FirstException)` that does not count a crash's
/// `TerminatedWorker` as an exception (it would wait for the held gate,
/// until its timeout) and one that puts the held future among the done.
#[test]
fn wait_first_exception_returns_when_a_crash_fails_a_future() {
    let ex = common::builder(2)
        .on_worker_crash(CrashPolicy::Respawn)
        .build()
        .unwrap();
    let gate = Gate::new();
    let held = ex.submit(GATE, gate.arg()).unwrap();
    let _hold = gate.entered(LONG);
    let crash = ex.submit(EXIT, 3).unwrap();
    let start = Instant::now();
    let outcome = loky::wait(
        &[held.clone(), crash],
        Some(LONG),
        ReturnWhen::FirstException,
    );
    assert!(start.elapsed() < LONG, "waited until the timeout");
    assert_eq!(outcome.done.len(), 1);
    assert!(matches!(
        outcome.done[0].exception_timeout(Duration::ZERO),
        Some(Error::TerminatedWorker(_))
    ));
    assert_eq!(outcome.not_done.len(), 1);
    assert!(!held.done(), "the held gate is still running");
}

/// Futures of a broken pool: the held gate, the crash and calls queued
/// behind them, all failed by the crash alone.
fn broken_pool_futures() -> (Broken, Vec<Future<()>>) {
    let ex = common::pool(2);
    let gate = Gate::new();
    let mut futures = vec![ex.submit(GATE, gate.arg()).unwrap()];
    let held = gate.entered(LONG);
    futures.push(ex.submit(EXIT, 3).unwrap());
    futures.extend((0..3).map(|_| ex.submit(SLEEP, Duration::from_secs(60)).unwrap()));
    (
        Broken {
            _ex: ex,
            _gate: gate,
            _held: held,
        },
        futures,
    )
}

/// What must live while the futures of [`broken_pool_futures`] are looked
/// at (a dropped hold would open the gate).
struct Broken {
    _ex: loky::ProcessPoolExecutor,
    _gate: Gate,
    _held: loky_tests::Held,
}

/// Catches a `wait(AllCompleted)` that does not count failed futures as
/// completed (the gate is never released: only the crash completes it).
#[test]
fn wait_all_completed_returns_once_a_crash_failed_every_future() {
    let (_broken, futures) = broken_pool_futures();
    let start = Instant::now();
    let outcome = loky::wait(&futures, Some(LONG), ReturnWhen::AllCompleted);
    assert!(start.elapsed() < LONG, "waited until the timeout");
    assert!(outcome.not_done.is_empty());
    assert_eq!(outcome.done.len(), futures.len());
    for fut in &outcome.done {
        let exception = fut.exception_timeout(Duration::ZERO);
        assert!(
            matches!(exception, Some(Error::TerminatedWorker(_))),
            "{}: {exception:?}",
            fut.task_name()
        );
    }
}

/// Catches an `as_completed` that skips failed futures, yields one twice,
/// or yields `Timeout` for futures a crash failed.
#[test]
fn as_completed_yields_every_future_a_crash_failed_once() {
    let (_broken, futures) = broken_pool_futures();
    let mut yielded: HashMap<&str, usize> = HashMap::new();
    for fut in loky::as_completed(futures.clone(), Some(LONG)) {
        let fut = fut.expect("no timeout: the crash completes every future");
        assert!(fut.done());
        let exception = fut.exception_timeout(Duration::ZERO);
        assert!(
            matches!(exception, Some(Error::TerminatedWorker(_))),
            "{exception:?}"
        );
        *yielded.entry(fut.task_name()).or_default() += 1;
    }
    let want = HashMap::from([("gate", 1), ("exit", 1), ("sleep", 3)]);
    assert_eq!(yielded, want);
}

/// What the callback of a future reported: which future, whether it was
/// done, and the variant of its error.
type Report = (&'static str, bool, Option<&'static str>);

/// Adds a callback to `fut` that reports on `tx` as `name`.
fn watch<T: serde::de::DeserializeOwned + 'static>(
    fut: &Future<T>,
    name: &'static str,
    tx: &mpsc::Sender<Report>,
) {
    let tx = tx.clone();
    fut.add_done_callback(move |f| {
        let error = f.exception_timeout(Duration::ZERO);
        let _ = tx.send((name, f.done(), error.as_ref().map(error_kind)));
    });
}

/// The next `n` reports of `rx`, each within [`RESULT_TIMEOUT`], sorted.
fn reports(rx: &mpsc::Receiver<Report>, n: usize) -> Vec<Report> {
    let mut got: Vec<Report> = (0..n)
        .map(|i| {
            rx.recv_timeout(RESULT_TIMEOUT)
                .unwrap_or_else(|_| panic!("hang: callback {i} of {n} did not run"))
        })
        .collect();
    got.sort_unstable();
    got
}

/// Catches a failure path that skips the done callbacks (a future failed
/// by a crash, cancelled, killed, past its deadline or dropped by a
/// killing shutdown), runs them twice, or runs them before the future is
/// done.
#[test]
fn done_callbacks_run_once_on_every_failure_path() {
    let (tx, rx) = mpsc::channel();
    // A crash: the crashing call and the calls it failed.
    let (_broken, futures) = broken_pool_futures();
    let names = ["crash 0", "crash 1", "crash 2", "crash 3", "crash 4"];
    for (fut, name) in futures.iter().zip(names) {
        watch(fut, name, &tx);
    }
    let want: Vec<Report> = names
        .iter()
        .map(|&name| (name, true, Some("TerminatedWorker")))
        .collect();
    assert_eq!(reports(&rx, names.len()), want);

    let ex = common::builder(1).build().unwrap();
    let gate = Gate::new();
    let running = ex.submit(GATE, gate.arg()).unwrap();
    let _running_hold = gate.entered(LONG);
    let pending = ex.submit(ECHO_I64, 1).unwrap();
    let deadline = CallOptions::new().timeout(Duration::from_millis(100));
    let late = ex
        .submit_with(SLEEP, Duration::from_secs(60), deadline)
        .unwrap();
    watch(&pending, "cancelled", &tx);
    watch(&running, "killed", &tx);
    watch(&late, "late", &tx);
    // Cancelled while pending; the held gate killed; then the late call
    // runs on the replacement worker, past its deadline.
    assert!(pending.cancel());
    assert!(running.kill());
    let want: Vec<Report> = vec![
        ("cancelled", true, Some("Cancelled")),
        ("killed", true, Some("Cancelled")),
        ("late", true, Some("DeadlineExceeded")),
    ];
    assert_eq!(reports(&rx, 3), want);

    // A shutdown that kills the workers.
    let held = ex.submit(GATE, gate.arg()).unwrap();
    let _hold = gate.entered(LONG);
    watch(&held, "shut down", &tx);
    ex.shutdown_with(Shutdown {
        wait: true,
        kill_workers: true,
        cancel_futures: false,
    });
    assert_eq!(
        reports(&rx, 1),
        [("shut down", true, Some("ShutdownExecutor"))]
    );
    // Every future is done: a callback that ran twice would have by now.
    drop(tx);
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "a callback ran twice"
    );
}

/// A `shutdown(wait = true)` from a done callback, which runs on a thread
/// of the pool, returns without waiting: waiting there for the calls the
/// same thread must complete would deadlock the pool. The shutdown goes on
/// in the background: the pending call still completes, later submits are
/// refused, and a shutdown from outside waits as usual.
///
/// Catches a callback that deadlocks the pool (the pending call would
/// never complete and the callback never return) and a shutdown from a
/// callback that is ignored (later submits accepted).
#[test]
fn shutdown_with_wait_from_a_done_callback_returns_and_the_pool_winds_down() {
    let ex = common::pool(1);
    let gate = Gate::new();
    let first = ex.submit(GATE, gate.arg()).unwrap();
    let held = gate.entered(LONG);
    let pending = ex.submit(ECHO_I64, 7).unwrap();
    let (tx, rx) = mpsc::channel();
    let closer = ex.clone();
    first.add_done_callback(move |_| {
        closer.shutdown(true);
        let _ = tx.send(());
    });
    let worker = held.pid;
    held.release();
    rx.recv_timeout(LONG)
        .expect("hang: shutdown(true) in a callback did not return");
    assert!(ex.is_shutdown());
    assert_eq!(pending.result_bounded().unwrap(), 7);
    assert!(matches!(
        ex.submit(ECHO_I64, 1),
        Err(Error::ShutdownExecutor(_))
    ));
    common::shutdown_bounded(&ex);
    assert!(ex.worker_pids().is_empty());
    assert!(common::reaped_within(&[worker], Duration::ZERO));
}
