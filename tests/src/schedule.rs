//! A task that says where and when it ran, for tests of the scheduler.

use std::time::Duration;

use loky::Task;
use serde::{Deserialize, Serialize};

/// Sleeps for the given time; returns which worker ran it and when.
pub const SLEEP_AND_REPORT: Task<Duration, Ran> = Task::new("sleep_and_report");

/// Where and when a call ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ran {
    /// The pid of the worker that ran it.
    pub pid: u32,
    /// When it started, on this machine's monotonic clock (comparable
    /// between processes), in nanoseconds.
    pub started_ns: u64,
    /// When it ended, on the same clock.
    pub ended_ns: u64,
}

/// This machine's monotonic clock, in nanoseconds: the same clock in every
/// process (unlike `Instant`, whose values cannot be sent).
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: now is a valid timespec for clock_gettime to fill.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } == 0;
    assert!(ok, "CLOCK_MONOTONIC is always available");
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

pub(crate) fn sleep_and_report(duration: Duration) -> Ran {
    let started_ns = monotonic_ns();
    std::thread::sleep(duration);
    Ran {
        pid: std::process::id(),
        started_ns,
        ended_ns: monotonic_ns(),
    }
}
