//! Crash of a worker under the default policy (loky's): detected at once,
//! reported as `TerminatedWorker`, the pool is broken, nothing is left over.

mod common;

use std::time::Duration;

use loky::diagnostics::{ABORT, EXIT, PID, SEGFAULT, SLEEP, SQUARE};
use loky::{Error, TerminatedWorker};

fn terminated(err: Error) -> TerminatedWorker {
    match err {
        Error::TerminatedWorker(t) => t,
        other => panic!("expected TerminatedWorker, got {other:?}"),
    }
}

/// A pool of `n` started workers and their pids.
fn started_pool(n: usize) -> (loky::ProcessPoolExecutor, Vec<u32>) {
    let ex = common::pool(n);
    ex.submit(SQUARE, 2).unwrap().result().unwrap();
    let pids = ex.worker_pids();
    assert_eq!(pids.len(), n);
    (ex, pids)
}

/// The pool is broken: the next submit fails at once with the same error,
/// and no worker of the pool is left, not even as a zombie.
fn assert_broken_and_clean(
    ex: &loky::ProcessPoolExecutor,
    pids: &[u32],
    expected: &TerminatedWorker,
) {
    let err = ex.submit(SQUARE, 1).unwrap_err();
    assert!(err.is_broken_pool(), "{err:?}");
    assert_eq!(terminated(err).exit(), expected.exit());
    ex.shutdown(true);
    assert!(ex.worker_pids().is_empty());
    for &pid in pids {
        assert!(
            common::stat(pid).is_none(),
            "worker {pid} was not reaped: {:?}",
            common::stat(pid)
        );
    }
}

#[test]
fn segfault_gives_terminated_worker_with_sigsegv() {
    let (ex, pids) = started_pool(1);
    let err = ex.submit(SEGFAULT, ()).unwrap().result().unwrap_err();
    let t = terminated(err);
    assert_eq!(t.signal(), Some(libc::SIGSEGV));
    assert_eq!(t.exit_code(), None);
    assert!(t.to_string().contains("{SIGSEGV(-11)}"), "{t}");
    assert_broken_and_clean(&ex, &pids, &t);
}

#[test]
fn abort_gives_terminated_worker_with_sigabrt() {
    let (ex, pids) = started_pool(1);
    let t = terminated(ex.submit(ABORT, ()).unwrap().result().unwrap_err());
    assert_eq!(t.signal(), Some(libc::SIGABRT));
    assert!(t.to_string().contains("{SIGABRT(-6)}"), "{t}");
    assert_broken_and_clean(&ex, &pids, &t);
}

#[test]
fn exit_code_gives_terminated_worker_with_exit_code() {
    let (ex, pids) = started_pool(1);
    let t = terminated(ex.submit(EXIT, 3).unwrap().result().unwrap_err());
    assert_eq!(t.exit_code(), Some(3));
    assert_eq!(t.signal(), None);
    assert!(t.to_string().contains("{EXIT(3)}"), "{t}");
    assert_broken_and_clean(&ex, &pids, &t);
}

#[test]
fn external_sigkill_of_a_worker_gives_terminated_worker_with_sigkill() {
    let (ex, pids) = started_pool(1);
    let pid = ex.submit(PID, ()).unwrap().result().unwrap();
    let sleeping = ex.submit(SLEEP, Duration::from_secs(60)).unwrap();
    // SAFETY: pid is our own live worker.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let t = terminated(sleeping.result().unwrap_err());
    assert_eq!(t.signal(), Some(libc::SIGKILL));
    assert_eq!(t.pid(), pid);
    assert_broken_and_clean(&ex, &pids, &t);
}

#[test]
fn error_message_is_lokys_and_names_the_pid_and_the_task() {
    let ex = common::pool(1);
    let t = terminated(ex.submit(EXIT, 3).unwrap().result().unwrap_err());
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

#[test]
fn every_unfinished_future_gets_terminated_worker_and_earlier_results_stay() {
    let ex = common::pool(2);
    let early = ex.submit(SQUARE, 4).unwrap();
    assert_eq!(early.result().unwrap(), 16);
    let pids = ex.worker_pids();
    let running = ex.submit(SLEEP, Duration::from_secs(60)).unwrap();
    let crash = ex.submit(EXIT, 5).unwrap();
    let pending: Vec<_> = (0..20).map(|i| ex.submit(SQUARE, i).unwrap()).collect();
    let t = terminated(crash.result().unwrap_err());
    assert_eq!(t.exit_code(), Some(5));
    for fut in std::iter::once(&running) {
        assert!(matches!(fut.result(), Err(Error::TerminatedWorker(_))));
    }
    for fut in &pending {
        match fut.result() {
            Err(Error::TerminatedWorker(other)) => assert_eq!(other.exit(), t.exit()),
            Ok(_) => {} // finished before the crash: a success stays a success
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(early.result().unwrap(), 16);
    // The other worker (running the sleep) was killed and reaped too.
    ex.shutdown(true);
    for pid in pids {
        assert!(
            common::stat(pid).is_none(),
            "worker {pid} outlived the broken pool"
        );
    }
}

#[test]
fn a_crash_is_detected_without_help_from_other_tasks() {
    // One worker crashes while the other is busy for a minute: the crash
    // must be reported at once, not when the busy worker finishes.
    let ex = common::pool(2);
    let _busy = ex.submit(SLEEP, Duration::from_secs(60)).unwrap();
    let crash = ex.submit(SEGFAULT, ()).unwrap();
    let started = std::time::Instant::now();
    let err = crash.result_timeout(Duration::from_secs(10)).unwrap_err();
    assert!(matches!(err, Error::TerminatedWorker(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}
