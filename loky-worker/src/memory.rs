//! Memory-leak recycling, as loky does it: the resident memory measured
//! after a worker's first call is its baseline; when a later measurement
//! exceeds it by more than the threshold, the worker asks to retire.

use std::time::{Duration, Instant};

use loky_proto::{RetireReason, env};

/// Default of [`env::MAX_MEMORY_LEAK_SIZE`]: 300 MB, as in loky.
const DEFAULT_MAX_LEAK: u64 = 300_000_000;

/// Default of [`env::MEMORY_CHECK_INTERVAL`]: one second, as in loky.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// The leak check of one worker.
#[derive(Debug)]
pub(crate) struct LeakCheck {
    /// Least time between two measurements.
    interval: Duration,
    /// Growth over the baseline, in bytes, that counts as a leak.
    max_leak: u64,
    baseline: Option<u64>,
    last_check: Option<Instant>,
    /// Set once the worker asked to retire: it asks only once.
    retiring: bool,
}

impl LeakCheck {
    /// A check configured from the environment the executor set.
    pub(crate) fn from_env() -> Self {
        let var = |name| std::env::var(name).ok();
        LeakCheck::new(
            var(env::MEMORY_CHECK_INTERVAL)
                .and_then(|s| parse_interval(&s))
                .unwrap_or(DEFAULT_INTERVAL),
            var(env::MAX_MEMORY_LEAK_SIZE)
                .and_then(|s| parse_bytes(&s))
                .unwrap_or(DEFAULT_MAX_LEAK),
        )
    }

    fn new(interval: Duration, max_leak: u64) -> Self {
        LeakCheck {
            interval,
            max_leak,
            baseline: None,
            last_check: None,
            retiring: false,
        }
    }

    /// Called after each call, with the time it started (the worker reads
    /// the clock once a call) and a way to measure resident memory; returns
    /// the reason to retire the first time a leak shows. Memory is measured
    /// after a call that started at least one interval after the call of
    /// the previous measurement.
    pub(crate) fn after_call(
        &mut self,
        now: Instant,
        resident: impl FnOnce() -> Option<u64>,
    ) -> Option<RetireReason> {
        if self.retiring {
            return None;
        }
        let due = self
            .last_check
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if !due {
            return None;
        }
        let current = resident()?;
        self.last_check = Some(now);
        let Some(baseline) = self.baseline else {
            self.baseline = Some(current);
            return None;
        };
        if current.saturating_sub(baseline) <= self.max_leak {
            return None;
        }
        self.retiring = true;
        Some(RetireReason::MemoryLeak { baseline, current })
    }
}

/// Seconds as a float, like loky's setting; negative or not a number: unset.
fn parse_interval(s: &str) -> Option<Duration> {
    Duration::try_from_secs_f64(s.trim().parse().ok()?).ok()
}

/// Bytes as an integer, or a float such as `3e8`.
fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    s.parse().ok().or_else(|| {
        let bytes: f64 = s.parse().ok()?;
        // `as` saturates; NaN and negatives are refused first.
        (bytes >= 0.0).then_some(bytes as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1_000_000;

    #[test]
    fn the_first_measurement_is_the_baseline() {
        let mut check = LeakCheck::new(Duration::ZERO, 10 * MB);
        let t = Instant::now();
        assert_eq!(check.after_call(t, || Some(500 * MB)), None);
        assert_eq!(check.after_call(t, || Some(510 * MB)), None);
        assert_eq!(
            check.after_call(t, || Some(511 * MB)),
            Some(RetireReason::MemoryLeak {
                baseline: 500 * MB,
                current: 511 * MB
            })
        );
        assert_eq!(check.after_call(t, || Some(900 * MB)), None, "only once");
    }

    #[test]
    fn measurements_are_spaced_by_the_interval() {
        let mut check = LeakCheck::new(Duration::from_secs(1), MB);
        let t = Instant::now();
        assert_eq!(check.after_call(t, || Some(MB)), None);
        let early = t + Duration::from_millis(500);
        assert_eq!(
            check.after_call(early, || panic!("measured too early")),
            None
        );
        let late = t + Duration::from_secs(1);
        assert!(check.after_call(late, || Some(3 * MB)).is_some());
    }

    #[test]
    fn shrinking_memory_is_no_leak() {
        let mut check = LeakCheck::new(Duration::ZERO, MB);
        let t = Instant::now();
        check.after_call(t, || Some(100 * MB));
        assert_eq!(check.after_call(t, || Some(MB)), None);
    }

    #[test]
    fn without_a_measurement_nothing_happens() {
        let mut check = LeakCheck::new(Duration::ZERO, 0);
        let t = Instant::now();
        assert_eq!(check.after_call(t, || None), None);
        assert_eq!(check.after_call(t, || None), None);
        assert_eq!(check.baseline, None);
    }

    #[test]
    fn settings_parse_like_loky() {
        assert_eq!(parse_interval("0"), Some(Duration::ZERO));
        assert_eq!(parse_interval(" 0.25 "), Some(Duration::from_millis(250)));
        assert_eq!(parse_interval("-1"), None);
        assert_eq!(parse_interval("soon"), None);
        assert_eq!(parse_bytes("20000000"), Some(20 * MB));
        assert_eq!(parse_bytes("3e8"), Some(300 * MB));
        assert_eq!(parse_bytes("-5"), None);
        assert_eq!(parse_bytes("NaN"), None);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn resident_memory_is_measured() {
        let rss = crate::os::resident_bytes().unwrap();
        assert!(rss > 0);
    }
}
