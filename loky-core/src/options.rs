//! Per-call settings.

use std::time::Duration;

/// Per-call settings for [`ProcessPoolExecutor::submit_with`](crate::ProcessPoolExecutor::submit_with)
/// and, per item, for [`Map::options`](crate::Map::options).
///
/// ```
/// use std::time::Duration;
/// use loky::{CallOptions, Error, ProcessPoolExecutor, Task};
///
/// const SLEEP: Task<Duration, ()> = Task::new("sleep");
///
/// # // Runs where LOKY_WORKER names a worker program (`cargo xtask test` sets it).
/// # if std::env::var_os("LOKY_WORKER").is_none() { return Ok(()); }
/// let ex = ProcessPoolExecutor::new(2)?;
/// let options = CallOptions::new().timeout(Duration::from_millis(300));
/// let fut = ex.submit_with(SLEEP, Duration::from_secs(60), options)?;
/// assert!(matches!(fut.result(), Err(Error::DeadlineExceeded(_))));
/// assert!(!ex.is_broken()); // the worker was replaced
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use]
pub struct CallOptions {
    pub(crate) timeout: Option<Duration>,
}

impl CallOptions {
    /// Default options: the executor's settings apply.
    pub fn new() -> Self {
        CallOptions::default()
    }

    /// Kills the task (and its worker, which is replaced) if it runs longer
    /// than `timeout`; overrides the executor's `task_timeout`.
    /// `Duration::MAX` means no limit.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}
