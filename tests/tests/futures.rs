//! Futures: states, cancel, timeouts, done callbacks, `wait` and
//! `as_completed` (LOKY-BEHAVIOUR.md, "Futures").
//!
//! A `GATE` task holds a worker until the test releases it, so that which
//! future runs and which waits is certain. On a fresh one-worker pool the
//! second call stays queued (pending) behind the first.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::FutureExt;
use loky::diagnostics::{ECHO_I64, NOOP, PANIC, SLEEP, SQUARE};
use loky::{Error, Future, ReturnWhen};
use loky_tests::{FLAKY, GATE, Gate};

/// Generous: for things that must happen.
const LONG: Duration = common::RESULT_TIMEOUT;
/// Short: for things that must not happen in the meantime.
const SHORT: Duration = Duration::from_millis(200);

#[test]
fn a_future_goes_pending_running_finished() {
    let ex = common::pool(1);
    let gate = Gate::new();
    let first = ex.submit(GATE, gate.arg()).unwrap();
    let second = ex.submit(ECHO_I64, 5).unwrap();
    assert!(!second.running() && !second.done() && !second.cancelled());
    let held = gate.entered(LONG);
    assert!(
        first.running() && !first.done(),
        "sent to a worker: running"
    );
    assert!(!second.running() && !second.done(), "queued: still pending");
    held.release();
    // `result()` itself: it blocks until done, and can be called again.
    let waited = first.clone();
    common::bounded("result() of a released gate", LONG, move || waited.result()).unwrap();
    assert!(first.done() && !first.running() && !first.cancelled());
    let again = first.clone();
    common::bounded("result() called again", LONG, move || again.result()).unwrap();
    assert_eq!(second.result_bounded().unwrap(), 5);
    assert!(second.done() && !second.running());
}

#[test]
fn a_future_goes_pending_cancelled() {
    let ex = common::pool(1);
    let gate = Gate::new();
    let first = ex.submit(GATE, gate.arg()).unwrap();
    let second = ex.submit(ECHO_I64, 5).unwrap();
    let held = gate.entered(LONG);
    assert!(second.cancel());
    assert!(second.cancelled() && second.done() && !second.running());
    assert!(matches!(second.result_bounded(), Err(Error::Cancelled)));
    held.release();
    first.result_bounded().unwrap();
    // The cancelled call never ran: the worker goes on with the next one.
    assert!(second.cancelled());
    assert_eq!(ex.submit(ECHO_I64, 6).unwrap().result_bounded().unwrap(), 6);
}

#[test]
fn cancel_is_true_for_pending_and_already_cancelled_futures() {
    let ex = common::pool(1);
    let gate = Gate::new();
    let _first = ex.submit(GATE, gate.arg()).unwrap();
    let pending = ex.submit(NOOP, ()).unwrap();
    let _held = gate.entered(LONG);
    assert!(pending.cancel(), "pending");
    assert!(pending.cancel(), "already cancelled");
    assert!(pending.clone().cancel(), "a clone shares the state");
}

#[test]
fn cancel_is_false_once_running_or_finished() {
    let ex = common::pool(1);
    let gate = Gate::new();
    let running = ex.submit(GATE, gate.arg()).unwrap();
    let held = gate.entered(LONG);
    assert!(!running.cancel(), "running");
    assert!(running.running() && !running.cancelled());
    held.release();
    running.result_bounded().unwrap();
    assert!(!running.cancel(), "finished");
    assert!(!running.cancelled());
    running.result_bounded().unwrap();
}

#[test]
fn result_timeout_gives_timeout_and_leaves_the_future_untouched() {
    let ex = common::pool(1);
    let gate = Gate::new();
    let running = ex.submit(GATE, gate.arg()).unwrap();
    let pending = ex.submit(ECHO_I64, 9).unwrap();
    let held = gate.entered(LONG);
    let start = Instant::now();
    assert!(matches!(running.result_timeout(SHORT), Err(Error::Timeout)));
    assert!(start.elapsed() >= SHORT);
    assert!(matches!(pending.result_timeout(SHORT), Err(Error::Timeout)));
    assert!(running.running() && !running.done());
    assert!(!pending.running() && !pending.done() && !pending.cancelled());
    held.release();
    running.result_bounded().unwrap();
    assert_eq!(pending.result_timeout(LONG).unwrap(), 9);
}

#[test]
fn exception_gives_the_error_or_none_and_exception_timeout_gives_timeout() {
    let ex = common::pool(1);
    let gate = Gate::new();
    let held_future = ex.submit(GATE, gate.arg()).unwrap();
    let held = gate.entered(LONG);
    assert!(matches!(
        held_future.exception_timeout(SHORT),
        Some(Error::Timeout)
    ));
    assert!(!held_future.done());
    held.release();
    assert!(held_future.exception_bounded().is_none());
    assert!(held_future.exception_timeout(SHORT).is_none());
    let panicked = ex.submit(FLAKY, 3).unwrap();
    assert!(matches!(panicked.exception_bounded(), Some(Error::Task(_))));
    // An error value is a result, not an exception.
    let error_value = ex.submit(FLAKY, 7).unwrap();
    assert!(error_value.exception_bounded().is_none());
}

#[test]
fn done_callbacks_run_exactly_once() {
    let ex = common::pool(1);
    let gate = Gate::new();
    let fut = ex.submit(GATE, gate.arg()).unwrap();
    let held = gate.entered(LONG);
    let runs = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    let counter = runs.clone();
    fut.add_done_callback(move |f| {
        counter.fetch_add(1, Ordering::SeqCst);
        tx.send(f.done()).unwrap();
    });
    assert_eq!(runs.load(Ordering::SeqCst), 0, "not before it is done");
    held.release();
    assert!(rx.recv_timeout(LONG).unwrap(), "the future is done in it");
    fut.result_bounded().unwrap();
    fut.result_bounded().unwrap();
    assert!(!fut.cancel());
    // The sender went with the callback: nothing more can come.
    assert!(rx.recv_timeout(SHORT).is_err());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn done_callbacks_run_at_once_on_the_calling_thread_if_already_done() {
    let ex = common::pool(1);
    let fut = ex.submit(ECHO_I64, 4).unwrap();
    fut.result_bounded().unwrap();
    let me = std::thread::current().id();
    let ran = Arc::new(AtomicUsize::new(0));
    let seen = ran.clone();
    fut.add_done_callback(move |f| {
        assert_eq!(std::thread::current().id(), me);
        assert_eq!(f.result_bounded().unwrap(), 4);
        seen.fetch_add(1, Ordering::SeqCst);
    });
    assert_eq!(ran.load(Ordering::SeqCst), 1, "ran before returning");
    // A cancelled future is done as well. (A fresh pool: after a quick call
    // a worker takes several calls at once, and those count as running.)
    let ex = common::pool(1);
    let gate = Gate::new();
    let _running = ex.submit(GATE, gate.arg()).unwrap();
    let pending = ex.submit(NOOP, ()).unwrap();
    let _held = gate.entered(LONG);
    let seen = ran.clone();
    pending.add_done_callback(move |f| {
        assert!(f.cancelled());
        seen.fetch_add(1, Ordering::SeqCst);
    });
    assert!(pending.cancel());
    assert_eq!(ran.load(Ordering::SeqCst), 2, "ran in cancel()");
}

#[test]
fn a_panicking_done_callback_does_not_stop_the_next_callback() {
    let ex = common::pool(1);
    let gate = Gate::new();
    let fut = ex.submit(GATE, gate.arg()).unwrap();
    let held = gate.entered(LONG);
    let (tx, rx) = mpsc::channel();
    fut.add_done_callback(|_| panic!("a callback that panics"));
    let after = tx.clone();
    fut.add_done_callback(move |_| after.send("pending path").unwrap());
    held.release();
    assert_eq!(rx.recv_timeout(LONG).unwrap(), "pending path");
    // Already done: the panic does not reach the caller either.
    fut.add_done_callback(|_| panic!("another callback that panics"));
    fut.add_done_callback(move |_| tx.send("done path").unwrap());
    assert_eq!(rx.recv_timeout(LONG).unwrap(), "done path");
    assert!(!ex.is_broken());
    assert_eq!(ex.submit(ECHO_I64, 1).unwrap().result_bounded().unwrap(), 1);
}

#[test]
fn a_done_callback_may_submit_new_work() {
    let ex = common::pool(1);
    let gate = Gate::new();
    let fut = ex.submit(GATE, gate.arg()).unwrap();
    let held = gate.entered(LONG);
    let (tx, rx) = mpsc::channel::<loky::Result<Future<i64>>>();
    let inner_ex = ex.clone();
    fut.add_done_callback(move |_| tx.send(inner_ex.submit(SQUARE, 12)).unwrap());
    held.release();
    // The callback runs on a pool thread: it must not block on the inner
    // result there, so the result is awaited here.
    let inner = rx.recv_timeout(LONG).unwrap().unwrap();
    assert_eq!(inner.result_timeout(LONG).unwrap(), 144);
}

/// The task names of `futures`, to compare sets.
fn names<T>(futures: &[Future<T>]) -> Vec<&'static str> {
    futures.iter().map(Future::task_name).collect()
}

/// Catches a `wait` that ignores `return_when` and waits for every future:
/// the held one never completes, so such a wait would return only at its
/// timeout, with the same two sets.
#[test]
fn wait_first_completed_returns_when_one_is_done() {
    let ex = common::pool(2);
    let gate = Gate::new();
    let held_future = ex.submit(GATE, gate.arg()).unwrap();
    let _held = gate.entered(LONG);
    let quick = ex.submit(NOOP, ()).unwrap();
    let futures = [held_future.clone(), quick.clone(), quick];
    let start = Instant::now();
    let done = loky::wait(&futures, Some(LONG), ReturnWhen::FirstCompleted);
    assert!(start.elapsed() < LONG, "waited until the timeout");
    assert_eq!(names(&done.done), [NOOP.name()], "duplicates count once");
    assert_eq!(names(&done.not_done), [GATE.name()]);
    assert!(!held_future.done());
}

/// Catches a `wait` that ignores `return_when` (see above) and one that
/// returns at the first completion rather than the first failure: the
/// success is done before the wait starts.
#[test]
fn wait_first_exception_returns_at_the_first_failure() {
    let ex = common::pool(2);
    let gate = Gate::new();
    let held_future = ex.submit(GATE, gate.arg()).unwrap();
    let _held = gate.entered(LONG);
    let succeeded = ex.submit(NOOP, ()).unwrap();
    succeeded.result_bounded().unwrap();
    let failing = ex.submit(PANIC, "failing".to_owned()).unwrap();
    let futures = [held_future, succeeded, failing];
    let start = Instant::now();
    let done = loky::wait(&futures, Some(LONG), ReturnWhen::FirstException);
    assert!(start.elapsed() < LONG, "waited until the timeout");
    assert_eq!(names(&done.done), [NOOP.name(), PANIC.name()]);
    assert_eq!(names(&done.not_done), [GATE.name()]);
    // Without a failure it waits for all.
    let fine: Vec<_> = (0..3).map(|i| ex.submit(FLAKY, i).unwrap()).collect();
    let done = loky::wait(&fine, Some(LONG), ReturnWhen::FirstException);
    assert_eq!(done.done.len(), 3);
    assert!(done.not_done.is_empty());
}

#[test]
fn wait_all_completed_with_a_timeout_returns_both_sets() {
    let ex = common::pool(2);
    let gate = Gate::new();
    let held_future = ex.submit(GATE, gate.arg()).unwrap();
    let held = gate.entered(LONG);
    let quick = ex.submit(NOOP, ()).unwrap();
    quick.result_bounded().unwrap();
    let futures = [held_future, quick];
    let start = Instant::now();
    let done = loky::wait(&futures, Some(SHORT), ReturnWhen::AllCompleted);
    assert!(start.elapsed() >= SHORT, "waited until the timeout");
    assert_eq!(names(&done.done), [NOOP.name()]);
    assert_eq!(names(&done.not_done), [GATE.name()]);
    held.release();
    let done = loky::wait(&futures, Some(LONG), ReturnWhen::AllCompleted);
    assert_eq!(names(&done.done), [GATE.name(), NOOP.name()], "in order");
    assert!(done.not_done.is_empty());
}

#[test]
fn as_completed_yields_each_future_once_pre_completed_first() {
    let ex = common::pool(2);
    let gate = Gate::new();
    let held_future = ex.submit(GATE, gate.arg()).unwrap();
    let held = gate.entered(LONG);
    let early = ex.submit(NOOP, ()).unwrap();
    early.result_bounded().unwrap();
    let late = ex.submit(SLEEP, Duration::ZERO).unwrap();
    let futures = [
        held_future.clone(),
        early.clone(),
        late.clone(),
        early.clone(),
        held_future,
    ];
    let mut completed = loky::as_completed(futures, Some(LONG));
    let first = completed.next().unwrap().unwrap();
    assert_eq!(first.task_name(), NOOP.name(), "pre-completed first");
    let second = completed.next().unwrap().unwrap();
    assert_eq!(second.task_name(), SLEEP.name());
    held.release();
    let third = completed.next().unwrap().unwrap();
    assert_eq!(third.task_name(), GATE.name());
    assert!(completed.next().is_none(), "duplicates yielded once");
}

#[test]
fn as_completed_yields_timeout_at_the_deadline() {
    let ex = common::pool(2);
    let gate = Gate::new();
    let held_future = ex.submit(GATE, gate.arg()).unwrap();
    let _held = gate.entered(LONG);
    let quick = ex.submit(NOOP, ()).unwrap();
    let start = Instant::now();
    let mut completed = loky::as_completed([held_future.clone(), quick], Some(SHORT));
    assert_eq!(completed.next().unwrap().unwrap().task_name(), NOOP.name());
    assert!(matches!(completed.next(), Some(Err(Error::Timeout))));
    assert!(start.elapsed() >= SHORT);
    assert!(completed.next().is_none(), "it stops after the timeout");
    assert!(!held_future.done(), "the future is untouched");
}
