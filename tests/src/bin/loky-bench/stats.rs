//! Samples, their summary (median, min, max) and the units figures are in.

use std::time::Duration;

/// The per-run figures of one case, or why it could not be measured.
pub(crate) type Samples = Result<Vec<f64>, String>;

/// Median, min and max of a case's runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Summary {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) runs: usize,
}

impl Summary {
    /// The summary of `samples`; `None` when there are none.
    pub(crate) fn of(samples: &[f64]) -> Option<Summary> {
        let mut sorted: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        Some(Summary {
            median: median_of_sorted(&sorted),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            runs: sorted.len(),
        })
    }
}

/// The median of `values` (the mean of the middle two for an even count).
pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    median_of_sorted(values)
}

fn median_of_sorted(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// What a figure measures, which says how to print it and which way is
/// better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Millis,
    Micros,
    /// Tasks, items or frames per second.
    PerSec,
    MibPerSec,
    Mib,
    Bytes,
}

impl Unit {
    /// Times and memory: lower is better; rates: higher is better.
    pub(crate) fn lower_is_better(self) -> bool {
        matches!(self, Unit::Millis | Unit::Micros | Unit::Mib | Unit::Bytes)
    }

    /// `value` with its unit, to three significant figures or so.
    pub(crate) fn format(self, value: f64) -> String {
        if !value.is_finite() {
            return "n/a".to_owned();
        }
        match self {
            Unit::Millis => format!("{} ms", sig3(value)),
            Unit::Micros => format!("{} µs", sig3(value)),
            Unit::PerSec if value >= 1e6 => format!("{} M/s", sig3(value / 1e6)),
            Unit::PerSec if value >= 1e3 => format!("{} k/s", sig3(value / 1e3)),
            Unit::PerSec => format!("{} /s", sig3(value)),
            Unit::MibPerSec => format!("{} MiB/s", sig3(value)),
            Unit::Mib => format!("{} MiB", sig3(value)),
            Unit::Bytes => format!("{} B", sig3(value)),
        }
    }

    /// The bare number of [`Unit::format`], for the min–max range.
    pub(crate) fn format_bare(self, value: f64) -> String {
        let text = self.format(value);
        match text.split_once(' ') {
            Some((number, _)) => number.to_owned(),
            None => text,
        }
    }
}

/// Three significant figures, without a needless fraction.
fn sig3(value: f64) -> String {
    let abs = value.abs();
    if abs >= 100.0 {
        format!("{value:.0}")
    } else if abs >= 10.0 {
        format!("{value:.1}")
    } else if abs >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// `duration` in milliseconds.
pub(crate) fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// `duration` in microseconds.
pub(crate) fn us(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

/// `count` things done in `duration`, per second.
pub(crate) fn rate(count: usize, duration: Duration) -> f64 {
    count as f64 / duration.as_secs_f64()
}

/// `bytes` moved in `duration`, in MiB per second.
pub(crate) fn mib_per_sec(bytes: usize, duration: Duration) -> f64 {
    bytes as f64 / f64::from(1u32 << 20) / duration.as_secs_f64()
}

/// Runs `measure` `runs` times; the first error ends the case.
pub(crate) fn repeat<E: std::fmt::Display>(
    runs: usize,
    mut measure: impl FnMut() -> Result<f64, E>,
) -> Samples {
    (0..runs)
        .map(|_| measure().map_err(|e| e.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_odd_and_even_counts() {
        let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.runs), (2.0, 1.0, 3.0, 3));
        assert_eq!(Summary::of(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn units_print_three_figures() {
        assert_eq!(Unit::PerSec.format(245_300.0), "245 k/s");
        assert_eq!(Unit::PerSec.format(12_345_678.0), "12.3 M/s");
        assert_eq!(Unit::Millis.format(2.345), "2.35 ms");
        assert_eq!(Unit::Micros.format_bare(42.0), "42.0");
        assert!(Unit::Mib.lower_is_better() && !Unit::MibPerSec.lower_is_better());
    }
}
