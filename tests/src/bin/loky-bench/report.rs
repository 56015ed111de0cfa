//! The results table: each case beside its target, the raw limit and Python
//! loky; printed, and written into `BENCHMARKS.md` between markers.

use std::fmt::Write as _;
use std::path::Path;

use crate::cases::{Results, key};
use crate::peer::PeerResults;
use crate::raw;
use crate::stats::{Summary, Unit};

/// What a case must reach.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Target {
    AtMost(f64),
    AtLeast(f64),
    /// At most this multiple of the row's raw figure.
    AtMostTimesRaw(f64),
    /// At least this multiple of the row's raw figure.
    AtLeastTimesRaw(f64),
    /// At least this multiple of another loky-rs row measured in the same
    /// run (by its key).
    AtLeastTimesRow(&'static str, f64),
    /// At most this multiple of another loky-rs row measured in the same
    /// run (by its key).
    AtMostTimesRow(&'static str, f64),
    /// No target: a figure shown to explain another.
    Info,
}

/// One line of the table.
pub(crate) struct Row {
    pub(crate) id: &'static str,
    pub(crate) label: &'static str,
    pub(crate) key: &'static str,
    pub(crate) unit: Unit,
    pub(crate) target: Target,
    /// The raw figure shown beside it (and the base of a relative target).
    pub(crate) raw: Option<&'static str>,
    /// A case of DESIGN.md's table, counted in "targets met"; the others
    /// are variants.
    pub(crate) headline: bool,
}

/// The rows, in DESIGN.md's order.
pub(crate) const ROWS: [Row; 24] = [
    Row {
        id: "1",
        label: "cold: create pool of 2 → first result",
        key: key::COLD_START,
        unit: Unit::Millis,
        target: Target::AtMost(2.0),
        raw: Some(raw::key::SPAWN_ECHO),
        headline: true,
    },
    Row {
        id: "1s",
        label: "the same, the worker linked statically",
        key: key::COLD_START_STATIC,
        unit: Unit::Millis,
        target: Target::Info,
        raw: Some(raw::key::SPAWN_ECHO),
        headline: false,
    },
    Row {
        id: "1r",
        label: "the same, a launcher's workers connected back over loopback TCP+TLS",
        key: key::COLD_START_REMOTE,
        unit: Unit::Millis,
        target: Target::Info,
        raw: None,
        headline: false,
    },
    Row {
        id: "2",
        label: "20 000 no-op submits, then all results",
        key: key::SUBMIT,
        unit: Unit::PerSec,
        target: Target::AtLeast(1e6),
        raw: Some(raw::key::PIPELINED),
        headline: true,
    },
    Row {
        id: "2b",
        label: "20 000 no-op submits, then all awaited (current-thread tokio)",
        key: key::AWAIT,
        unit: Unit::PerSec,
        target: Target::AtLeastTimesRow(key::SUBMIT, 0.8),
        raw: None,
        headline: false,
    },
    Row {
        id: "3",
        label: "sequential submit→result round trip (median)",
        key: key::ROUND_TRIP,
        unit: Unit::Micros,
        target: Target::AtMostTimesRaw(1.1),
        raw: Some(raw::key::LATENCY),
        headline: true,
    },
    Row {
        id: "3f",
        label: "the same with `submit_fn` (a closure; this program as worker)",
        key: key::ROUND_TRIP_FN,
        unit: Unit::Micros,
        target: Target::AtMostTimesRow(key::ROUND_TRIP, 1.05),
        raw: Some(raw::key::LATENCY),
        headline: false,
    },
    Row {
        id: "3s",
        label: "the same as 3, the waiting thread asleep at once (`wait_spin(ZERO)`)",
        key: key::ROUND_TRIP_SLEEPING,
        unit: Unit::Micros,
        target: Target::Info,
        raw: Some(raw::key::LATENCY),
        headline: false,
    },
    Row {
        id: "3r",
        label: "the same as 3, the worker connected back over loopback TCP+TLS",
        key: key::ROUND_TRIP_REMOTE,
        unit: Unit::Micros,
        target: Target::Info,
        raw: Some(raw::key::LATENCY),
        headline: false,
    },
    Row {
        id: "4",
        label: "map of 200 000 ints, chunksize 1000",
        key: key::MAP,
        unit: Unit::PerSec,
        target: Target::AtLeast(30e6),
        raw: None,
        headline: true,
    },
    Row {
        id: "5",
        label: "echo 10 MiB `ByteBuf`",
        key: key::ECHO,
        unit: Unit::MibPerSec,
        target: Target::AtLeastTimesRaw(1.0),
        raw: Some(raw::key::ECHO),
        headline: true,
    },
    Row {
        id: "5f",
        label: "the bare echo of 5 through fresh sealed memory files (not loky-rs: its floor)",
        key: raw::key::SEALED_ECHO,
        unit: Unit::MibPerSec,
        target: Target::Info,
        raw: Some(raw::key::ECHO),
        headline: false,
    },
    Row {
        id: "5b",
        label: "echo 10 MiB `SharedBytes`",
        key: key::ECHO_SHARED,
        unit: Unit::MibPerSec,
        target: Target::AtLeastTimesRaw(10.0),
        raw: Some(raw::key::ECHO),
        headline: true,
    },
    Row {
        id: "6",
        label: "crash → error seen (from the crashing call's submit)",
        key: key::CRASH_ERROR,
        unit: Unit::Millis,
        target: Target::AtMost(0.5),
        raw: Some(raw::key::CRASH),
        headline: true,
    },
    Row {
        id: "7",
        label: "crash → first result: reusable executor",
        key: key::CRASH_REUSABLE,
        unit: Unit::Millis,
        target: Target::AtMost(2.0),
        raw: None,
        headline: true,
    },
    Row {
        id: "7b",
        label: "crash → first result: new pool",
        key: key::CRASH_NEW_POOL,
        unit: Unit::Millis,
        target: Target::AtMost(2.0),
        raw: None,
        headline: false,
    },
    Row {
        id: "7c",
        label: "crash → next result: Respawn, 2 workers",
        key: key::CRASH_RESPAWN,
        unit: Unit::Micros,
        target: Target::AtMostTimesRaw(1.5),
        raw: Some(raw::key::LATENCY),
        headline: true,
    },
    Row {
        id: "7d",
        label: "crash → next result: Respawn, 1 worker (a new one answers)",
        key: key::CRASH_RESPAWN_ALONE,
        unit: Unit::Millis,
        target: Target::AtMost(2.0),
        raw: None,
        headline: false,
    },
    Row {
        id: "7ds",
        label: "the same, the worker linked statically",
        key: key::CRASH_RESPAWN_ALONE_STATIC,
        unit: Unit::Millis,
        target: Target::Info,
        raw: None,
        headline: false,
    },
    Row {
        id: "8",
        label: "parent memory per pending future (200 000 queued)",
        key: key::PENDING_MEMORY,
        unit: Unit::Bytes,
        target: Target::AtMost(512.0),
        raw: None,
        headline: true,
    },
    Row {
        id: "9",
        label: "idle worker memory (VmRSS)",
        key: key::IDLE_RSS,
        unit: Unit::Mib,
        target: Target::AtMost(2.5),
        raw: Some(raw::key::IDLE_RSS),
        headline: true,
    },
    Row {
        id: "9b",
        label: "idle worker memory (PSS: shared pages split)",
        key: key::IDLE_PSS,
        unit: Unit::Mib,
        target: Target::Info,
        raw: Some(raw::key::IDLE_PSS),
        headline: false,
    },
    Row {
        id: "9s",
        label: "idle worker memory (VmRSS), the worker linked statically",
        key: key::IDLE_RSS_STATIC,
        unit: Unit::Mib,
        target: Target::Info,
        raw: Some(raw::key::IDLE_RSS),
        headline: false,
    },
    Row {
        id: "9r",
        label: "idle worker memory (VmRSS), the worker built with `remote`",
        key: key::IDLE_RSS_REMOTE,
        unit: Unit::Mib,
        target: Target::Info,
        raw: Some(raw::key::IDLE_RSS),
        headline: false,
    },
];

/// Everything one run measured.
pub(crate) struct Report {
    pub(crate) loky: Results,
    pub(crate) raw: Results,
    /// Each peer's figures, or why there are none; empty without
    /// `--peers`.
    pub(crate) peers: Vec<(&'static str, Result<PeerResults, String>)>,
}

/// Whether a figure meets its target.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Verdict {
    Met,
    /// Missed by this factor (> 1).
    Missed(f64),
    /// The target or the figure is unknown.
    Unknown,
    /// The row has no target.
    NoTarget,
}

/// The text cells of one row.
struct Cells {
    id: &'static str,
    label: &'static str,
    median: String,
    range: String,
    target: String,
    met: String,
    raw: String,
    /// Per peer: its figure and how loky-rs compares.
    peers: Vec<(String, String)>,
}

impl Report {
    fn summary(results: &Results, key: &str) -> Result<Summary, String> {
        match results.get(key) {
            Some(Ok(samples)) => Summary::of(samples).ok_or_else(|| "no samples".to_owned()),
            Some(Err(e)) => Err(e.clone()),
            None => Err("not measured".to_owned()),
        }
    }

    /// The absolute bound of `row`'s target, if known.
    fn bound(&self, row: &Row) -> Option<f64> {
        let raw = || {
            row.raw
                .and_then(|key| Self::summary(&self.raw, key).ok())
                .map(|s| s.median)
        };
        match row.target {
            Target::AtMost(x) | Target::AtLeast(x) => Some(x),
            Target::AtMostTimesRaw(f) | Target::AtLeastTimesRaw(f) => raw().map(|r| r * f),
            Target::AtLeastTimesRow(key, f) | Target::AtMostTimesRow(key, f) => {
                Self::summary(&self.loky, key).ok().map(|s| s.median * f)
            }
            Target::Info => None,
        }
    }

    fn verdict(&self, row: &Row) -> Verdict {
        if row.target == Target::Info {
            return Verdict::NoTarget;
        }
        let (Some(bound), Ok(ours)) = (self.bound(row), Self::summary(&self.loky, row.key)) else {
            return Verdict::Unknown;
        };
        let miss = if row.unit.lower_is_better() {
            ours.median / bound
        } else {
            bound / ours.median
        };
        if miss <= 1.0 {
            Verdict::Met
        } else {
            Verdict::Missed(miss)
        }
    }

    /// Where `key`'s figure is: loky-rs's, or a raw figure shown on a row
    /// of its own (row 5f).
    fn results_of(&self, key: &str) -> &Results {
        if self.raw.contains_key(key) && !self.loky.contains_key(key) {
            &self.raw
        } else {
            &self.loky
        }
    }

    fn cells(&self, row: &Row) -> Cells {
        let unit = row.unit;
        let results = self.results_of(row.key);
        let ours = Self::summary(results, row.key);
        let (median, range) = match &ours {
            Ok(s) => (
                unit.format(s.median),
                format!("{} – {}", unit.format_bare(s.min), unit.format_bare(s.max)),
            ),
            Err(e) => (failure(results, row.key, e), String::new()),
        };
        let target = match (row.target, self.bound(row)) {
            (Target::AtMost(x), _) => format!("≤ {}", unit.format(x)),
            (Target::AtLeast(x), _) => format!("≥ {}", unit.format(x)),
            (Target::AtMostTimesRaw(f), bound) => relative("≤", f, bound, unit),
            (Target::AtLeastTimesRaw(f), bound) => relative("≥", f, bound, unit),
            (Target::AtLeastTimesRow(key, f), bound) => relative_to_row("≥", key, f, bound, unit),
            (Target::AtMostTimesRow(key, f), bound) => relative_to_row("≤", key, f, bound, unit),
            (Target::Info, _) => "(info)".to_owned(),
        };
        let met = match self.verdict(row) {
            Verdict::Met => "yes".to_owned(),
            Verdict::Missed(by) if unit.lower_is_better() => format!("no ({} over)", miss(by)),
            Verdict::Missed(by) => format!("no ({} short)", miss(by)),
            Verdict::Unknown => "?".to_owned(),
            Verdict::NoTarget => String::new(),
        };
        let raw = row
            .raw
            .map(|key| match Self::summary(&self.raw, key) {
                Ok(s) => unit.format(s.median),
                Err(e) => failure(&self.raw, key, &e),
            })
            .unwrap_or_default();
        let peers = self
            .peers
            .iter()
            .map(|(_, outcome)| match outcome {
                Err(_) => (String::new(), String::new()),
                Ok(peer) => peer_cells(&peer.results, row, &ours),
            })
            .collect();
        Cells {
            id: row.id,
            label: row.label,
            median,
            range,
            target,
            met,
            raw,
            peers,
        }
    }

    /// The header cells: the fixed ones, then each peer's two.
    fn header(&self) -> Vec<String> {
        let mut header: Vec<String> = [
            "#",
            "case",
            "loky-rs (median)",
            "min – max",
            "target",
            "met",
            "raw limit",
        ]
        .map(str::to_owned)
        .to_vec();
        header.extend(self.peers.iter().map(|(name, _)| (*name).to_owned()));
        header.extend(self.peers.iter().map(|(name, _)| format!("vs {name}")));
        header
    }

    fn row_cells(&self, row: &Row) -> Vec<String> {
        let c = self.cells(row);
        let mut cells = vec![
            c.id.to_owned(),
            c.label.to_owned(),
            c.median,
            c.range,
            c.target,
            c.met,
            c.raw,
        ];
        let (figures, versus): (Vec<String>, Vec<String>) = c.peers.into_iter().unzip();
        cells.extend(figures);
        cells.extend(versus);
        cells
    }

    /// The table in Markdown.
    pub(crate) fn markdown_table(&self) -> String {
        let header = self.header();
        let mut out = format!(
            "| {} |\n|{}\n",
            header.join(" | "),
            "---|".repeat(header.len())
        );
        for row in &ROWS {
            let _ = writeln!(out, "| {} |", self.row_cells(row).join(" | "));
        }
        out
    }

    /// The table for a terminal: aligned columns.
    pub(crate) fn text_table(&self) -> String {
        let header = self.header();
        let rows: Vec<Vec<String>> = ROWS.iter().map(|row| self.row_cells(row)).collect();
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut text = String::new();
            for (cell, width) in cells.iter().zip(&widths) {
                let pad = width - cell.chars().count();
                let _ = write!(text, "{cell}{}  ", " ".repeat(pad));
            }
            text.trim_end().to_owned()
        };
        let mut out = line(&header);
        out.push('\n');
        for row in &rows {
            out.push_str(&line(row));
            out.push('\n');
        }
        out
    }

    /// "Targets met: 5 of 8 ..." with the missed ones and by how much.
    pub(crate) fn verdicts(&self) -> String {
        // Rows left out with `--only` are neither met nor missed.
        let measured = |row: &&Row| self.loky.contains_key(row.key);
        let headline: Vec<&Row> = ROWS
            .iter()
            .filter(|r| r.headline)
            .filter(measured)
            .collect();
        let met = headline
            .iter()
            .filter(|r| self.verdict(r) == Verdict::Met)
            .count();
        let mut text = format!("Targets met: {met} of {}.", headline.len());
        let missed: Vec<String> = ROWS
            .iter()
            .filter(measured)
            .filter_map(|row| match self.verdict(row) {
                Verdict::Missed(by) => Some(format!("{} ({} off)", row.id, miss(by))),
                Verdict::Unknown => Some(format!("{} (unknown)", row.id)),
                Verdict::Met | Verdict::NoTarget => None,
            })
            .collect();
        if !missed.is_empty() {
            let _ = write!(text, " Not met: {}.", missed.join(", "));
        }
        text
    }

    /// Each peer's versions, or why it was skipped, then its notes on how
    /// a case had to be run.
    pub(crate) fn peer_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (name, outcome) in &self.peers {
            match outcome {
                Ok(peer) => {
                    lines.push(format!("Peer: {}.", peer.versions));
                    for (key, note) in &peer.notes {
                        let id = ROWS
                            .iter()
                            .find(|r| r.key == key)
                            .map_or(key.as_str(), |r| r.id);
                        lines.push(format!("Peer note ({name}, row {id}): {note}."));
                    }
                }
                Err(why) => lines.push(format!("Peer: {name} skipped: {why}")),
            }
        }
        lines
    }
}

/// A peer's figure for `row` and how loky-rs (`ours`) compares with it.
fn peer_cells(results: &Results, row: &Row, ours: &Result<Summary, String>) -> (String, String) {
    match (Report::summary(results, row.key), ours) {
        (Ok(p), Ok(o)) => (
            row.unit.format(p.median),
            versus(row.unit, o.median, p.median),
        ),
        (Ok(p), Err(_)) => (row.unit.format(p.median), String::new()),
        (Err(e), _) if results.contains_key(row.key) => (format!("error: {e}"), String::new()),
        (Err(_), _) => ("n/a".to_owned(), String::new()),
    }
}

/// The cell of a figure that has none: blank when it was left out
/// (`--only`), the error when its measurement failed.
fn failure(results: &Results, key: &str, error: &str) -> String {
    if results.contains_key(key) {
        format!("error: {error}")
    } else {
        "—".to_owned()
    }
}

/// How far a figure misses its target: a percentage when close.
fn miss(by: f64) -> String {
    if by < 1.1 {
        format!("{:.1} %", (by - 1.0) * 100.0)
    } else {
        factor(by)
    }
}

/// A ratio: two decimals near 1, where one would say "1.0×".
fn factor(by: f64) -> String {
    if by < 1.1 {
        format!("{by:.2}×")
    } else if by < 100.0 {
        format!("{by:.1}×")
    } else {
        format!("{by:.0}×")
    }
}

/// `≥ 0.8× row 2 = 160 k/s`: a target relative to the row of `key`.
fn relative_to_row(op: &str, key: &str, factor: f64, bound: Option<f64>, unit: Unit) -> String {
    let id = ROWS.iter().find(|r| r.key == key).map_or(key, |r| r.id);
    match bound {
        Some(b) => format!("{op} {factor}× row {id} = {}", unit.format(b)),
        None => format!("{op} {factor}× row {id}"),
    }
}

fn relative(op: &str, factor: f64, bound: Option<f64>, unit: Unit) -> String {
    match bound {
        Some(b) => format!("{op} {factor}× raw = {}", unit.format(b)),
        None => format!("{op} {factor}× raw"),
    }
}

/// How loky-rs compares with the peer: "3.2× faster", "1.5× larger".
fn versus(unit: Unit, ours: f64, peer: f64) -> String {
    let better = if unit.lower_is_better() {
        peer / ours
    } else {
        ours / peer
    };
    let (good, bad) = match unit {
        Unit::Mib => ("smaller", "larger"),
        _ => ("faster", "slower"),
    };
    if better >= 1.0 {
        format!("{} {good}", factor(better))
    } else {
        format!("{} {bad}", factor(1.0 / better))
    }
}

/// Marks the part of `BENCHMARKS.md` the bench rewrites.
const BEGIN: &str = "<!-- loky-bench:begin (generated by `loky-bench --write`; edit outside) -->";
const END: &str = "<!-- loky-bench:end -->";

/// Puts `generated` between the markers of the file at `path`: replaces
/// what was there, appends the markers to a file without them, creates the
/// file if missing.
pub(crate) fn write_into(path: &Path, generated: &str) -> std::io::Result<()> {
    let block = format!("{BEGIN}\n{}\n{END}\n", generated.trim_end());
    let text = match std::fs::read_to_string(path) {
        Ok(old) => splice(&old, &block),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            format!("# Benchmarks\n\n{block}")
        }
        Err(e) => return Err(e),
    };
    std::fs::write(path, text)
}

fn splice(old: &str, block: &str) -> String {
    match (old.find(BEGIN), old.find(END)) {
        (Some(begin), Some(end)) if begin < end => {
            let after = &old[end + END.len()..];
            format!(
                "{}{block}{}",
                &old[..begin],
                after.strip_prefix('\n').unwrap_or(after)
            )
        }
        _ => format!("{}\n\n{block}", old.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Samples;

    fn results(pairs: &[(&str, Samples)]) -> Results {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn verdicts_use_the_raw_figure_of_relative_targets() {
        let report = Report {
            loky: results(&[
                (key::ROUND_TRIP, Ok(vec![70.0, 80.0, 90.0])),
                (key::ECHO, Ok(vec![1000.0])),
                (key::IDLE_RSS, Err("boom".to_owned())),
            ]),
            raw: results(&[
                (raw::key::LATENCY, Ok(vec![40.0])),
                (raw::key::ECHO, Ok(vec![1200.0])),
            ]),
            peers: Vec::new(),
        };
        let row = |key: &str| ROWS.iter().find(|r| r.key == key).unwrap();
        assert_eq!(
            report.verdict(row(key::ROUND_TRIP)),
            Verdict::Missed(80.0 / 44.0)
        );
        assert_eq!(report.verdict(row(key::ECHO)), Verdict::Missed(1.2));
        assert_eq!(report.verdict(row(key::IDLE_RSS)), Verdict::Unknown);
        assert!(report.markdown_table().contains("error: boom"));
        assert_eq!(
            report.verdicts(),
            "Targets met: 0 of 3. Not met: 3 (1.8× off), 5 (1.2× off), 9 (unknown)."
        );
        assert!(report.text_table().contains("—"));
    }

    #[test]
    fn the_floor_of_row_5_shows_its_raw_figure_without_a_verdict() {
        let report = Report {
            loky: results(&[(key::ECHO, Ok(vec![400.0]))]),
            raw: results(&[
                (raw::key::ECHO, Ok(vec![1600.0])),
                (raw::key::SEALED_ECHO, Ok(vec![420.0, 430.0, 440.0])),
            ]),
            peers: Vec::new(),
        };
        let floor = ROWS.iter().find(|r| r.id == "5f").unwrap();
        assert_eq!(report.verdict(floor), Verdict::NoTarget);
        let cells = report.cells(floor);
        assert_eq!(
            (cells.median.as_str(), cells.raw.as_str()),
            ("430 MiB/s", "1600 MiB/s")
        );
        assert_eq!(
            report.verdicts(),
            "Targets met: 0 of 1. Not met: 5 (4.0× off)."
        );
    }

    #[test]
    fn a_target_relative_to_another_row_uses_its_figure_of_the_same_run() {
        let report = Report {
            loky: results(&[
                (key::SUBMIT, Ok(vec![200.0])),
                (key::AWAIT, Ok(vec![150.0])),
            ]),
            raw: Results::new(),
            peers: Vec::new(),
        };
        let awaited = ROWS.iter().find(|r| r.key == key::AWAIT).unwrap();
        assert_eq!(report.verdict(awaited), Verdict::Missed(160.0 / 150.0));
        assert!(report.markdown_table().contains("≥ 0.8× row 2 ="));
    }

    #[test]
    fn a_target_at_most_a_multiple_of_another_row_uses_its_median() {
        let report = Report {
            loky: results(&[
                (key::ROUND_TRIP, Ok(vec![60.0, 70.0, 80.0])),
                (key::ROUND_TRIP_FN, Ok(vec![72.0])),
            ]),
            raw: Results::new(),
            peers: Vec::new(),
        };
        let function = ROWS.iter().find(|r| r.key == key::ROUND_TRIP_FN).unwrap();
        assert_eq!(report.verdict(function), Verdict::Met);
        assert!(report.markdown_table().contains("≤ 1.05× row 3 = 73.5 µs"));
        let slower = Report {
            loky: results(&[
                (key::ROUND_TRIP, Ok(vec![70.0])),
                (key::ROUND_TRIP_FN, Ok(vec![77.0])),
            ]),
            raw: Results::new(),
            peers: Vec::new(),
        };
        assert!(
            matches!(slower.verdict(function), Verdict::Missed(m) if (m - 1.1 / 1.05).abs() < 1e-9)
        );
    }

    #[test]
    fn versus_says_which_way() {
        assert_eq!(versus(Unit::Millis, 2.0, 100.0), "50.0× faster");
        assert_eq!(versus(Unit::Millis, 0.5, 100.0), "200× faster");
        assert_eq!(versus(Unit::Millis, 1.0, 1.05), "1.05× faster");
        assert_eq!(versus(Unit::PerSec, 10.0, 20.0), "2.0× slower");
        assert_eq!(versus(Unit::Mib, 2.0, 20.0), "10.0× smaller");
    }

    #[test]
    fn splice_replaces_only_the_generated_block() {
        let old = format!("# B\n\nintro\n\n{BEGIN}\nold\n{END}\n\n## Notes\nkept\n");
        let new = splice(&old, &format!("{BEGIN}\nnew\n{END}\n"));
        assert_eq!(
            new,
            format!("# B\n\nintro\n\n{BEGIN}\nnew\n{END}\n\n## Notes\nkept\n")
        );
        let appended = splice("# B\n", "X\n");
        assert_eq!(appended, "# B\n\nX\n");
    }
}
