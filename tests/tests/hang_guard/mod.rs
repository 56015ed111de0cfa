//! Keeps a failing test from hanging on its executor.
//!
//! Dropping the last handle of an executor waits for its pool to finish. A
//! regression that hangs the pool would turn a failed assertion into a
//! test that never ends; this guard leaks the executor instead when the
//! test is already panicking, so the failure is reported at once.

#![allow(dead_code, unreachable_pub)]

use std::ops::Deref;

use loky::ProcessPoolExecutor;

/// An executor that is leaked rather than dropped during a panic.
pub struct Guarded(Option<ProcessPoolExecutor>);

impl Guarded {
    pub fn new(ex: ProcessPoolExecutor) -> Guarded {
        Guarded(Some(ex))
    }
}

impl Deref for Guarded {
    type Target = ProcessPoolExecutor;

    fn deref(&self) -> &ProcessPoolExecutor {
        self.0.as_ref().expect("present until dropped")
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if std::thread::panicking() {
            std::mem::forget(self.0.take());
        }
    }
}

/// Shuts `ex` down as `how` says, on another thread; false if that took
/// longer than `timeout` (the executor is then killed so that the test
/// fails instead of hanging).
pub fn shutdown_within_with(
    ex: &ProcessPoolExecutor,
    how: loky::Shutdown,
    timeout: std::time::Duration,
) -> bool {
    let (done_tx, done) = std::sync::mpsc::channel();
    let stopping = ex.clone();
    std::thread::spawn(move || {
        stopping.shutdown_with(how);
        let _ = done_tx.send(());
    });
    let in_time = done.recv_timeout(timeout).is_ok();
    if !in_time {
        ex.shutdown_with(loky::Shutdown {
            wait: false,
            kill_workers: true,
            cancel_futures: true,
        });
    }
    in_time
}
