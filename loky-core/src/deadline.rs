//! Deadlines from durations, saturating: `Duration::MAX` is the usual way
//! to say "no limit", and adding it to an `Instant` would panic.

use std::time::{Duration, Instant};

/// `from + after`, or `None` (never) when that is past what an `Instant`
/// can hold.
pub(crate) fn after(from: Instant, after: Duration) -> Option<Instant> {
    from.checked_add(after)
}

/// `after` from now; `None` (never) when too far to represent.
pub(crate) fn from_now(after: Duration) -> Option<Instant> {
    self::after(Instant::now(), after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_durations_mean_never() {
        let now = Instant::now();
        assert_eq!(after(now, Duration::MAX), None);
        assert_eq!(from_now(Duration::MAX), None);
        assert_eq!(after(now, Duration::ZERO), Some(now));
        assert_eq!(
            after(now, Duration::from_secs(1)),
            Some(now + Duration::from_secs(1))
        );
    }
}
