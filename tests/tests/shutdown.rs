//! Shutdown: waiting or not, killing workers, cancelling pending futures,
//! repeated calls, the last handle's drop, and where task output goes
//! (LOKY-BEHAVIOUR.md, "Shutdown" and "Output").

mod common;

use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::FutureExt;
use loky::diagnostics::{ECHO_I64, PID, SLEEP, SPAWN_SLEEPER};
use loky::{Error, Future, ProcessPoolExecutor, Shutdown};
use loky_tests::{GATE, Gate, Held};

/// Generous: for things that must happen.
const LONG: Duration = common::RESULT_TIMEOUT;

/// The bound on what must happen at once (a shutdown that kills, one that
/// does not wait): wide for a loaded machine, far below the held gates and
/// minute-long sleeps it must not wait for.
const PROMPTLY: Duration = Duration::from_secs(10);
/// Short: for things that must not happen in the meantime.
const SHORT: Duration = Duration::from_millis(200);

/// Whether `pid` is gone: exited and reaped (not a zombie child of ours).
fn reaped(pid: u32) -> bool {
    !common::alive(pid) && !common::children().iter().any(|&(p, _)| p == pid)
}

/// A pool of one worker whose running task waits at a gate, with three
/// `ECHO_I64` tasks (of 0, 1 and 2) pending behind it.
struct Blocked {
    ex: ProcessPoolExecutor,
    /// Kept for as long as the task may wait at it.
    _gate: Gate,
    running: Future<()>,
    pending: Vec<Future<i64>>,
    held: Held,
}

fn blocked() -> Blocked {
    let ex = common::pool(1);
    let gate = Gate::new();
    let running = ex.submit(GATE, gate.arg()).unwrap();
    let pending: Vec<_> = (0..3).map(|i| ex.submit(ECHO_I64, i).unwrap()).collect();
    let held = gate.entered(LONG);
    Blocked {
        ex,
        _gate: gate,
        running,
        pending,
        held,
    }
}

#[test]
fn wait_true_runs_every_pending_task_then_workers_exit_and_are_reaped() {
    let Blocked {
        ex,
        _gate,
        running,
        pending,
        held,
    } = blocked();
    let worker = held.pid;
    assert!(pending.iter().all(|f| !f.running() && !f.done()));
    let (tx, rx) = mpsc::channel();
    let closer = ex.clone();
    let shutdown = std::thread::spawn(move || {
        closer.shutdown(true);
        tx.send(()).unwrap();
    });
    assert!(rx.recv_timeout(SHORT).is_err(), "it waits for the tasks");
    held.release();
    rx.recv_timeout(LONG)
        .expect("shutdown returns once all ran");
    common::bounded("the shutting-down thread", LONG, move || shutdown.join()).unwrap();
    assert!(running.done());
    for (i, fut) in (0..).zip(&pending) {
        assert!(fut.done(), "done before shutdown returned");
        assert_eq!(fut.result_bounded().unwrap(), i);
    }
    assert!(ex.worker_pids().is_empty());
    assert!(reaped(worker), "the worker exited and was reaped");
}

/// Catches a `shutdown(false)` that waits: the task it would wait for is
/// held at a gate until the shutdown returned.
#[test]
fn wait_false_returns_at_once_and_pending_work_still_completes() {
    let Blocked {
        ex,
        _gate,
        running,
        pending,
        held,
    } = blocked();
    let closer = ex.clone();
    common::bounded("shutdown(wait = false)", PROMPTLY, move || {
        closer.shutdown(false);
    });
    assert!(!running.done(), "the held task is still running");
    assert!(matches!(
        ex.submit(ECHO_I64, 1),
        Err(Error::ShutdownExecutor(_))
    ));
    let pid = held.pid;
    held.release();
    running.result_bounded().unwrap();
    for (i, fut) in (0..).zip(&pending) {
        assert_eq!(fut.result_bounded().unwrap(), i, "pending work completes");
    }
    assert!(
        common::eventually(LONG, || reaped(pid)),
        "the worker exits and is reaped in the background"
    );
}

#[test]
fn kill_workers_fails_unfinished_futures_and_kills_workers_at_once() {
    let ex = common::pool(1);
    let sleeper = ex
        .submit(SPAWN_SLEEPER, Duration::from_secs(60))
        .unwrap()
        .result_bounded()
        .unwrap();
    let gate = Gate::new();
    let running = ex.submit(GATE, gate.arg()).unwrap();
    let held = gate.entered(LONG);
    let worker = held.pid;
    let queued: Vec<_> = (0..2)
        .map(|_| ex.submit(SLEEP, Duration::from_secs(60)).unwrap())
        .collect();
    let start = Instant::now();
    ex.shutdown_with(Shutdown {
        wait: true,
        kill_workers: true,
        cancel_futures: false,
    });
    let took = start.elapsed();
    // Catches a shutdown that waits for the held gate or the sleeps.
    assert!(took < PROMPTLY, "took {took:?}");
    let running = running.result_bounded().unwrap_err();
    let queued: Vec<_> = queued
        .iter()
        .map(|f| f.result_bounded().unwrap_err())
        .collect();
    for err in std::iter::once(&running).chain(&queued) {
        match err {
            Error::ShutdownExecutor(e) => {
                assert!(e.workers_killed());
                assert_eq!(
                    e.to_string(),
                    "The Executor was shutdown with `kill_workers=True` before this job \
                     could complete."
                );
            }
            other => panic!("expected ShutdownExecutor, got {other:?}"),
        }
    }
    assert!(reaped(worker), "the worker is killed and reaped");
    // The task's child in the worker's process group dies too; init reaps it.
    assert!(
        common::dead_within(&[sleeper], PROMPTLY),
        "the worker's process group is killed"
    );
}

#[test]
fn cancel_futures_cancels_pending_futures() {
    let Blocked {
        ex,
        _gate,
        running,
        pending,
        held,
    } = blocked();
    let worker = held.pid;
    ex.shutdown_with(Shutdown {
        wait: false,
        kill_workers: false,
        cancel_futures: true,
    });
    for fut in &pending {
        assert!(matches!(fut.result_timeout(LONG), Err(Error::Cancelled)));
        assert!(fut.cancelled());
    }
    assert!(running.running(), "the running task goes on");
    held.release();
    running.result_bounded().unwrap();
    common::shutdown_bounded(&ex);
    assert!(reaped(worker));
}

#[test]
fn shutdown_may_be_called_again() {
    let never_used = common::pool(1);
    common::shutdown_bounded(&never_used);
    common::shutdown_bounded(&never_used);
    never_used.shutdown(false);

    let ex = common::pool(1);
    let pid = ex.submit(PID, ()).unwrap().result_bounded().unwrap();
    let slow = ex.submit(SLEEP, Duration::from_millis(100)).unwrap();
    ex.shutdown(false);
    common::shutdown_bounded(&ex);
    assert!(slow.done(), "the second call waited");
    assert!(reaped(pid));
    common::shutdown_bounded(&ex);
    ex.shutdown_with(Shutdown {
        wait: true,
        kill_workers: true,
        cancel_futures: true,
    });
    slow.result_bounded().unwrap();
    assert!(matches!(
        ex.submit(ECHO_I64, 1),
        Err(Error::ShutdownExecutor(_))
    ));
}

#[test]
fn dropping_the_last_handle_shuts_down_with_wait_true() {
    let Blocked {
        ex,
        _gate,
        running,
        pending,
        held,
    } = blocked();
    let worker = held.pid;
    let other_handle = ex.clone();
    drop(other_handle);
    assert!(!ex.is_shutdown(), "another handle is left");
    let (tx, rx) = mpsc::channel();
    // Like the end of Python's `with ProcessPoolExecutor() as ex:` block.
    let dropper = std::thread::spawn(move || {
        drop(ex);
        tx.send(()).unwrap();
    });
    assert!(rx.recv_timeout(SHORT).is_err(), "the drop waits");
    held.release();
    rx.recv_timeout(LONG)
        .expect("the drop returns once all ran");
    common::bounded("the dropping thread", LONG, move || dropper.join()).unwrap();
    running.result_bounded().unwrap();
    for (i, fut) in (0..).zip(&pending) {
        assert!(fut.done());
        assert_eq!(fut.result_bounded().unwrap(), i);
    }
    assert!(reaped(worker));
}

#[test]
fn task_output_goes_to_the_parent_stdout() {
    let output = common::output_within(
        Command::new(env!("CARGO_BIN_EXE_loky-test-parent"))
            .arg("print")
            .arg(common::worker_program())
            .arg("hello from a task"),
        common::RESULT_TIMEOUT,
        "loky-test-parent print",
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, ["hello from a task", "parent done"], "{stdout}");
}
