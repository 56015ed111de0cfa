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
