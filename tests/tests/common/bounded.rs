//! Bounded waits: every wait of a scenario test ends, and one that would
//! hang fails the test with a message that starts with `hang:` and names
//! what hung, instead of stalling the run.
//!
//! - [`FutureExt::result_bounded`] / [`FutureExt::result_within`]: a
//!   future's result, where `Error::Timeout` (the future is still pending)
//!   is a hang. Tests of the timeout itself call `result_timeout`.
//! - [`MapExt::collect_bounded`]: every item of a `map`.
//! - [`bounded`]: any blocking action (a shutdown, a drop, a join), run on a
//!   thread of its own.
//! - [`output_within`]: a child program's output; the child is killed if
//!   it does not end in time.

use std::process::{Command, Output, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use loky::{Error, Future, Map};
use loky_tests::chaos::probe::PidFd;
use serde::de::DeserializeOwned;

/// The bound on one result, one shutdown or one map, unless a test says
/// otherwise: far beyond what any of them takes on a loaded machine, so
/// that only a hang reaches it.
pub const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// The bound on a `map` over many items.
pub const MAP_LIMIT: Duration = Duration::from_secs(120);

/// Runs `action` on a thread of its own and returns what it returns, or
/// fails the test with `hang: {what} did not finish within {limit}` when it
/// does not return in time (the thread is left to the process's end). A
/// panic of `action` is the test's panic.
pub fn bounded<R: Send + 'static>(
    what: &str,
    limit: Duration,
    action: impl FnOnce() -> R + Send + 'static,
) -> R {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(format!("bounded: {what}"))
        .spawn(move || {
            let _ = tx.send(action());
        })
        .expect("cannot start a thread");
    match rx.recv_timeout(limit) {
        Ok(value) => value,
        Err(RecvTimeoutError::Timeout) => panic!("hang: {what} did not finish within {limit:?}"),
        Err(RecvTimeoutError::Disconnected) => match thread.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the thread sends before it ends"),
        },
    }
}

/// Bounded waits on a [`Future`].
pub trait FutureExt<T> {
    /// The result within [`WAIT_LIMIT`]; a future still pending then fails
    /// the test as a hang naming its task.
    fn result_bounded(&self) -> loky::Result<T>;

    /// The result within `limit`; a future still pending then fails the
    /// test as a hang naming its task.
    fn result_within(&self, limit: Duration) -> loky::Result<T>;

    /// The error within [`WAIT_LIMIT`] (`None` on success); a future still
    /// pending then fails the test as a hang.
    fn exception_bounded(&self) -> Option<Error>;
}

impl<T: DeserializeOwned> FutureExt<T> for Future<T> {
    fn result_bounded(&self) -> loky::Result<T> {
        self.result_within(WAIT_LIMIT)
    }

    fn result_within(&self, limit: Duration) -> loky::Result<T> {
        match self.result_timeout(limit) {
            Err(Error::Timeout) => panic!(
                "hang: the future of task `{}` did not resolve within {limit:?}",
                self.task_name()
            ),
            other => other,
        }
    }

    fn exception_bounded(&self) -> Option<Error> {
        match self.exception_timeout(WAIT_LIMIT) {
            Some(Error::Timeout) => panic!(
                "hang: the future of task `{}` did not resolve within {WAIT_LIMIT:?}",
                self.task_name()
            ),
            other => other,
        }
    }
}

/// Bounded iteration of a [`Map`].
pub trait MapExt<O> {
    /// Every item, within [`MAP_LIMIT`] in all; a map still yielding then
    /// fails the test as a hang.
    fn collect_bounded(self) -> Vec<loky::Result<O>>;
}

impl<O: DeserializeOwned + Send + 'static> MapExt<O> for Map<'static, O> {
    fn collect_bounded(self) -> Vec<loky::Result<O>> {
        let what = format!("{self:?}");
        bounded(&what, MAP_LIMIT, move || self.collect())
    }
}

/// Shuts `ex` down waiting for its work, within [`WAIT_LIMIT`]; a shutdown
/// still waiting then fails the test as a hang.
pub fn shutdown_bounded(ex: &loky::ProcessPoolExecutor) {
    let ex = ex.clone();
    bounded("shutdown(wait = true)", WAIT_LIMIT, move || {
        ex.shutdown(true)
    });
}

/// Runs `command` to its end with its stdout and stderr captured; if it
/// has not ended within `limit`, it is killed and the test fails as a hang
/// naming `what`.
pub fn output_within(command: &mut Command, limit: Duration, what: &str) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    // Held before anything can reap the child: a kill through it never
    // reaches another process that got its pid.
    let handle = PidFd::open(child.id()).expect("a pidfd on the child");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(output) => output.unwrap_or_else(|e| panic!("cannot wait for {what}: {e}")),
        Err(_) => {
            handle.send(libc::SIGKILL);
            panic!("hang: {what} did not end within {limit:?} (killed)");
        }
    }
}
