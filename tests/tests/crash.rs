//! Crash of a worker under the default policy (loky's): detected at once,
//! reported as `TerminatedWorker`, the pool is broken, nothing is left over.

mod common;

use std::time::Duration;

use common::{FutureExt, RESULT_TIMEOUT};
use loky::diagnostics::{ABORT, EXIT, PID, SEGFAULT, SLEEP, SQUARE};
use loky::{Error, TerminatedWorker};
use loky_tests::{GATE, Gate, SPAWN_AND_SLEEP};

/// How soon after a crash the other workers must be killed and reaped, and
/// the crash reported. What these tests hold (a gate, a 60 s sleep) lasts
/// far longer, so a crash handled only once they end cannot meet it; the
/// rest is slack for a loaded machine.
const PROMPTLY: Duration = Duration::from_secs(10);

fn terminated(err: Error) -> TerminatedWorker {
    match err {
        Error::TerminatedWorker(t) => t,
        other => panic!("expected TerminatedWorker, got {other:?}"),
    }
}

/// The error of `fut`, which must fail within [`RESULT_TIMEOUT`].
fn failure<T: std::fmt::Debug + serde::de::DeserializeOwned>(
    fut: &loky::Future<T>,
) -> TerminatedWorker {
    terminated(fut.result_bounded().unwrap_err())
}

/// A pool of `n` started workers and their pids.
fn started_pool(n: usize) -> (loky::ProcessPoolExecutor, Vec<u32>) {
    let ex = common::pool(n);
    assert_eq!(common::run(&ex, SQUARE, 2).unwrap(), 4);
    let pids = ex.worker_pids();
    assert_eq!(pids.len(), n);
    (ex, pids)
}

/// Every worker of `pids` is killed and reaped (not even a zombie left)
/// promptly, by the crash itself: before any shutdown.
fn assert_reaped_by_the_crash(pids: &[u32]) {
    assert!(
        common::reaped_within(pids, PROMPTLY),
        "workers still there {PROMPTLY:?} after the crash: {:?}",
        pids.iter()
            .map(|&p| (p, common::stat(p)))
            .collect::<Vec<_>>()
    );
}

/// The pool is broken: every worker is gone without a shutdown, the next
/// submit fails at once with the same error, and shutdown leaves nothing.
fn assert_broken_and_clean(
    ex: &loky::ProcessPoolExecutor,
    pids: &[u32],
    expected: &TerminatedWorker,
) {
    assert_reaped_by_the_crash(pids);
    let err = ex.submit(SQUARE, 1).unwrap_err();
    assert!(err.is_broken_pool(), "{err:?}");
    assert_eq!(terminated(err).exit(), expected.exit());
    common::shutdown_bounded(ex);
    assert!(ex.worker_pids().is_empty());
    assert!(common::reaped_within(pids, Duration::ZERO));
}

#[test]
fn segfault_gives_terminated_worker_with_sigsegv() {
    let (ex, pids) = started_pool(1);
    let t = failure(&ex.submit(SEGFAULT, ()).unwrap());
    assert_eq!(t.signal(), Some(libc::SIGSEGV));
    assert_eq!(t.exit_code(), None);
    assert!(t.to_string().contains("{SIGSEGV(-11)}"), "{t}");
    assert_broken_and_clean(&ex, &pids, &t);
}

#[test]
fn abort_gives_terminated_worker_with_sigabrt() {
    let (ex, pids) = started_pool(1);
    let t = failure(&ex.submit(ABORT, ()).unwrap());
    assert_eq!(t.signal(), Some(libc::SIGABRT));
    assert!(t.to_string().contains("{SIGABRT(-6)}"), "{t}");
    assert_broken_and_clean(&ex, &pids, &t);
}

#[test]
fn exit_code_gives_terminated_worker_with_exit_code() {
    let (ex, pids) = started_pool(1);
    let t = failure(&ex.submit(EXIT, 3).unwrap());
    assert_eq!(t.exit_code(), Some(3));
    assert_eq!(t.signal(), None);
    assert!(t.to_string().contains("{EXIT(3)}"), "{t}");
    assert_broken_and_clean(&ex, &pids, &t);
}

#[test]
fn external_sigkill_of_a_worker_gives_terminated_worker_with_sigkill() {
    assert_external_signal_is_reported(libc::SIGKILL);
}

#[test]
fn external_signals_to_a_worker_give_terminated_worker_naming_them() {
    // SIGSEGV and SIGBUS included: Rust's runtime handles both, and the
    // worker must still die of them as any process would.
    for sent in [
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGTERM,
        libc::SIGABRT,
        libc::SIGINT,
    ] {
        assert_external_signal_is_reported(sent);
    }
}

/// `sent` to the worker of a pool of 1 running a long task: the task fails
/// with `TerminatedWorker` naming that signal and pid, and the pool breaks.
fn assert_external_signal_is_reported(sent: libc::c_int) {
    let (ex, pids) = started_pool(1);
    let pid = common::run(&ex, PID, ()).unwrap();
    let sleeping = ex.submit(SLEEP, Duration::from_secs(60)).unwrap();
    // SAFETY: pid is our own live worker.
    unsafe { libc::kill(pid as i32, sent) };
    let t = failure(&sleeping);
    assert_eq!(t.signal(), Some(sent), "{t}");
    assert_eq!(t.pid(), pid);
    assert_broken_and_clean(&ex, &pids, &t);
}

#[test]
fn a_crash_kills_and_reaps_the_other_workers_before_any_shutdown() {
    let (ex, pids) = started_pool(2);
    let gate = Gate::new();
    let busy = ex.submit(GATE, gate.arg()).unwrap();
    let held = gate.entered(RESULT_TIMEOUT);
    let t = failure(&ex.submit(SEGFAULT, ()).unwrap());
    assert_ne!(t.pid(), held.pid, "the crash was on the other worker");
    assert_eq!(failure(&busy).exit(), t.exit());
    assert_broken_and_clean(&ex, &pids, &t);
}

#[test]
fn a_crash_kills_what_a_task_on_another_worker_spawned() {
    let ex = common::pool(2);
    let path = common::pid_file("crash", "spawned");
    let spawner = ex
        .submit(
            SPAWN_AND_SLEEP,
            (path.display().to_string(), Duration::from_secs(60)),
        )
        .unwrap();
    let sleeper = common::wait_for_pid(&path);
    let pids = ex.worker_pids();
    assert_eq!(pids.len(), 2);
    let t = failure(&ex.submit(SEGFAULT, ()).unwrap());
    assert!(
        common::dead_within(&[sleeper], PROMPTLY),
        "the process spawned by a task on another worker outlived the crash: {:?}",
        common::stat(sleeper)
    );
    assert_reaped_by_the_crash(&pids);
    assert_eq!(failure(&spawner).exit(), t.exit());
}

#[test]
fn error_message_is_lokys_and_names_the_pid_and_the_task() {
    let ex = common::pool(1);
    let t = failure(&ex.submit(EXIT, 3).unwrap());
    let text = t.to_string();
    assert!(text.starts_with(
        "A worker process managed by the executor was unexpectedly terminated. This could be \
         caused by a segmentation fault while calling the function or by an excessive memory \
         usage causing the Operating System to kill the worker.\n\nThe exit codes of the \
         workers are {EXIT(3)}"
    ));
    assert!(text.contains(&format!("pid {}", t.pid())), "{text}");
    assert_eq!(t.task(), Some("exit"));
    assert!(text.contains("task `exit`"), "{text}");
}

/// A `GATE` task of `ex` held at `gate`: its future and its hold.
fn hold(ex: &loky::ProcessPoolExecutor, gate: &Gate) -> (loky::Future<()>, loky_tests::Held) {
    let fut = ex.submit(GATE, gate.arg()).unwrap();
    (fut, gate.entered(RESULT_TIMEOUT))
}

#[test]
fn every_unfinished_future_gets_terminated_worker_and_earlier_results_stay() {
    let ex = common::pool(2);
    let early: Vec<_> = (0..10).map(|i| ex.submit(SQUARE, i).unwrap()).collect();
    for (i, fut) in (0i64..).zip(&early) {
        assert_eq!(fut.result_bounded().unwrap(), i * i);
    }
    let pids = ex.worker_pids();
    // Both workers held: the calls below can only wait until the crash.
    let gate = Gate::new();
    let (running, _held) = hold(&ex, &gate);
    let (crashing, held) = hold(&ex, &gate);
    let pending: Vec<_> = (0..20).map(|i| ex.submit(SQUARE, i).unwrap()).collect();
    // SAFETY: held.pid is our own live worker, not reaped while it runs.
    unsafe { libc::kill(held.pid as i32, libc::SIGKILL) };

    let t = failure(&crashing);
    assert_eq!((t.pid(), t.signal()), (held.pid, Some(libc::SIGKILL)));
    assert_eq!(failure(&running).exit(), t.exit());
    for (i, fut) in pending.iter().enumerate() {
        match fut.result_bounded() {
            Err(Error::TerminatedWorker(other)) => assert_eq!(other.exit(), t.exit()),
            Ok(v) => panic!("square of {i} gave {v} although no worker was free to run it"),
            Err(other) => panic!("square of {i}: unexpected {other:?}"),
        }
    }
    // Results that arrived before the crash stay successes.
    for (i, fut) in (0i64..).zip(&early) {
        assert_eq!(fut.result_timeout(Duration::ZERO).unwrap(), i * i);
    }
    assert_broken_and_clean(&ex, &pids, &t);
}

#[test]
fn a_crash_is_detected_without_help_from_other_tasks() {
    // One worker crashes while the other is held at a gate: the crash must
    // be reported at once, not when the busy worker finishes.
    let (ex, _) = started_pool(2);
    let gate = Gate::new();
    let _busy = ex.submit(GATE, gate.arg()).unwrap();
    let _held = gate.entered(RESULT_TIMEOUT);
    let crash = ex.submit(SEGFAULT, ()).unwrap();
    // The gate is never released: a pool that noticed the crash only once
    // its other worker is done would never report it.
    match crash.result_timeout(PROMPTLY) {
        Err(Error::TerminatedWorker(t)) => assert_eq!(t.signal(), Some(libc::SIGSEGV)),
        other => panic!("no crash reported within {PROMPTLY:?}: {other:?}"),
    }
}
