//! `ExecutorBuilder::on_drop`: what dropping the last handle does. The
//! default waits for every task (Python's `with` block); a pool can instead
//! leave its tasks running in the background, kill its workers, or cancel
//! what has not started. Each running task here waits at a gate the test
//! holds, so a drop that waits when it must not hangs (and fails, bounded)
//! rather than passing by luck.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::FutureExt;
use loky::diagnostics::ECHO_I64;
use loky::{Error, Future, ProcessPoolExecutor, Shutdown};
use loky_tests::{GATE, Gate, Held};

/// For things that must happen.
const LONG: Duration = common::RESULT_TIMEOUT;

/// A drop that must not wait for the held task: wide for a loaded machine,
/// far below the gate, which is never released before it.
const PROMPTLY: Duration = Duration::from_secs(10);

/// For what must not happen in the meantime.
const SHORT: Duration = Duration::from_millis(200);

/// A pool of one worker dropping as `how`, whose task waits at a gate,
/// with two `ECHO_I64` tasks pending behind it.
fn blocked(
    how: Option<Shutdown>,
) -> (
    ProcessPoolExecutor,
    Gate,
    Future<()>,
    Vec<Future<i64>>,
    Held,
) {
    let mut builder = common::builder(1);
    if let Some(how) = how {
        builder = builder.on_drop(how);
    }
    let ex = builder.build().unwrap();
    let gate = Gate::new();
    let running = ex.submit(GATE, gate.arg()).unwrap();
    let pending = (0..2).map(|i| ex.submit(ECHO_I64, i).unwrap()).collect();
    let held = gate.entered(LONG);
    (ex, gate, running, pending, held)
}

/// Whether `pid` exited and was reaped.
fn reaped(pid: u32) -> bool {
    !common::alive(pid) && !common::children().iter().any(|&(p, _)| p == pid)
}

#[test]
fn by_default_the_drop_waits_for_every_task() {
    let (ex, _gate, running, pending, held) = blocked(None);
    let pid = held.pid;
    let (tx, rx) = mpsc::channel();
    let dropper = std::thread::spawn(move || {
        drop(ex);
        tx.send(()).unwrap();
    });
    assert!(
        rx.recv_timeout(SHORT).is_err(),
        "the drop waits for the held task"
    );
    held.release();
    rx.recv_timeout(LONG)
        .expect("the drop returns once every task ran");
    common::bounded("the dropping thread", LONG, move || dropper.join()).unwrap();
    running.result_bounded().unwrap();
    for (i, fut) in (0..).zip(&pending) {
        assert!(fut.done(), "done before the drop returned");
        assert_eq!(fut.result_bounded().unwrap(), i);
    }
    assert!(
        reaped(pid),
        "the worker was reaped before the drop returned"
    );
}

#[test]
fn kill_workers_on_drop_kills_the_worker_and_fails_unfinished_futures() {
    let how = Shutdown {
        kill_workers: true,
        ..Shutdown::default()
    };
    let (ex, _gate, running, pending, held) = blocked(Some(how));
    let pid = held.pid;
    common::bounded("a drop that kills", PROMPTLY, move || drop(ex));
    assert!(reaped(pid), "killed and reaped before the drop returned");
    for fut in [running.exception_bounded()]
        .into_iter()
        .chain(pending.iter().map(|f| f.exception_bounded()))
    {
        assert!(
            matches!(&fut, Some(Error::ShutdownExecutor(e)) if e.workers_killed()),
            "{fut:?}"
        );
    }
    drop(held);
}

#[test]
fn no_wait_on_drop_returns_at_once_and_the_tasks_complete_in_the_background() {
    let how = Shutdown {
        wait: false,
        ..Shutdown::default()
    };
    let (ex, _gate, running, pending, held) = blocked(Some(how));
    let pid = held.pid;
    common::bounded("a drop that does not wait", PROMPTLY, move || drop(ex));
    assert!(!running.done(), "the held task still runs");
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
fn cancel_futures_on_drop_cancels_what_has_not_started() {
    let how = Shutdown {
        wait: false,
        cancel_futures: true,
        ..Shutdown::default()
    };
    let (ex, _gate, running, pending, held) = blocked(Some(how));
    common::bounded("a drop that cancels", PROMPTLY, move || drop(ex));
    for fut in &pending {
        assert!(
            matches!(fut.exception_bounded(), Some(Error::Cancelled)),
            "a pending task is cancelled"
        );
    }
    held.release();
    running.result_bounded().unwrap();
}
