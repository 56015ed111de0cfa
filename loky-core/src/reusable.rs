//! loky's reusable executor: one process-wide pool, reused while its
//! settings match.

use std::sync::Mutex;
use std::time::Duration;

use crate::builder::ExecutorBuilder;
use crate::config::Shutdown;
use crate::error::Result;
use crate::executor::ProcessPoolExecutor;

/// Idle timeout of the reusable executor unless the builder sets one
/// (loky's default).
pub(crate) const REUSABLE_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

static REUSABLE: Mutex<Option<ProcessPoolExecutor>> = Mutex::new(None);

/// The process-wide shared executor with `max_workers` workers and default
/// settings; see [`ExecutorBuilder::get_reusable`].
///
/// ```
/// # use loky::Task;
/// # const SQUARE: Task<i64, i64> = Task::new("square");
/// # // Runs where LOKY_WORKER names a worker program (`cargo xtask test` sets it).
/// # if std::env::var_os("LOKY_WORKER").is_none() { return Ok(()); }
/// let ex = loky::get_reusable_executor(2)?;
/// assert_eq!(ex.submit(SQUARE, 3)?.result()?, 9);
/// let again = loky::get_reusable_executor(2)?;
/// assert!(ex.same_pool(&again));
/// # Ok::<(), loky::Error>(())
/// ```
pub fn get_reusable_executor(max_workers: usize) -> Result<ProcessPoolExecutor> {
    ProcessPoolExecutor::builder()
        .max_workers(max_workers)
        .get_reusable()
}

impl ExecutorBuilder {
    /// The process-wide shared executor with these settings.
    ///
    /// Returns the same pool (same workers) while the settings match;
    /// resizes it in place when only `max_workers` differs (growing keeps
    /// the workers, shrinking retires the extra ones after their work);
    /// replaces it when other settings differ or it is broken or shut down.
    /// A replaced pool is shut down waiting for its tasks, or, with
    /// [`kill_workers(true)`](ExecutorBuilder::kill_workers), killing them
    /// (their futures fail with `ShutdownExecutor`). Idle workers leave
    /// after 10 s unless [`idle_timeout`](ExecutorBuilder::idle_timeout) says
    /// otherwise. Safe to call from many threads at once.
    ///
    /// The shared executor lives as long as the process: when `main`
    /// returns, its workers die with the process, tasks still running
    /// included (Python waits for them at interpreter exit). Call
    /// `shutdown(true)` on it first to wait for them.
    ///
    /// The replaced pool's tasks are waited for without holding the
    /// registry: meanwhile other threads (a done callback of one of those
    /// tasks included) already get the new pool from this call.
    pub fn get_reusable(mut self) -> Result<ProcessPoolExecutor> {
        if self.idle_timeout.is_none() {
            self.idle_timeout = Some(Some(REUSABLE_IDLE_TIMEOUT));
        }
        let config = self.config()?;
        let (ex, old) = {
            let mut current = REUSABLE.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(ex) = current.as_ref()
                && !ex.is_broken()
                && !ex.is_shutdown()
                && ex.config().same_but_size(&config)
            {
                if ex.max_workers() != config.max_workers {
                    ex.resize(config.max_workers);
                }
                return Ok(ex.clone());
            }
            let ex = ProcessPoolExecutor::from_config(config)?;
            (ex.clone(), current.replace(ex))
        };
        // The old pool is shut down only once the registry is unlocked:
        // waiting for its tasks under the lock would deadlock any of them
        // whose done callback asks for the reusable executor in turn.
        if let Some(old) = old {
            // A broken pool has nothing left to wait for: its futures are
            // failed and its workers killed; it finishes in the background,
            // even when the registry held its last handle.
            let wait = !old.is_broken();
            old.release(Shutdown {
                wait,
                kill_workers: self.kill_workers,
                cancel_futures: false,
            });
        }
        Ok(ex)
    }
}
