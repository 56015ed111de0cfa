//! The totals of a chaos run and the table that ends it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::ledger::{RoundReport, Violation};
use super::model::{ErrorKind, Fault, Outcome, Value};
use super::scenario::Scenario;

/// Totals over every round of a run.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Rounds that broke no invariant.
    pub passed: u64,
    /// Rounds that broke one.
    pub failed: u64,
    /// Calls submitted (accepted or refused).
    pub submitted: usize,
    /// Calls that returned a value.
    pub succeeded: usize,
    /// Of those, values that are errors returned by the task.
    pub returned_err: usize,
    /// Futures that failed, by error kind.
    pub failed_by_kind: BTreeMap<ErrorKind, usize>,
    /// Calls `submit` refused, by error kind.
    pub refused_by_kind: BTreeMap<ErrorKind, usize>,
    /// Violations, by summary row.
    pub violations: BTreeMap<&'static str, usize>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<Fault, usize>,
    /// Rounds run and faults injected, by scenario.
    pub scenarios: BTreeMap<&'static str, (usize, usize)>,
}

impl Summary {
    /// Adds a checked round.
    pub fn add(&mut self, report: &RoundReport, violations: &[Violation]) {
        if violations.is_empty() {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        let (rounds, faults) = self.scenarios.entry(report.scenario).or_default();
        *rounds += 1;
        *faults += report.ledger.faults.len();
        for violation in violations {
            *self.violations.entry(violation.class()).or_default() += violation.weight();
        }
        for fault in &report.ledger.faults {
            *self.faults.entry(*fault).or_default() += 1;
        }
        for entry in &report.ledger.entries {
            self.count(entry.outcome.as_ref());
        }
    }

    /// Records a round that never finished.
    pub fn add_hung_round(&mut self, scenario: &'static str) {
        self.failed += 1;
        self.scenarios.entry(scenario).or_default().0 += 1;
        *self.violations.entry("hung").or_default() += 1;
    }

    fn count(&mut self, outcome: Option<&Outcome>) {
        self.submitted += 1;
        match outcome {
            Some(Outcome::Value(value)) => {
                self.succeeded += 1;
                self.returned_err += usize::from(matches!(value, Value::Returned(_)));
            }
            Some(Outcome::Failed(f)) => *self.failed_by_kind.entry(f.kind).or_default() += 1,
            Some(Outcome::Rejected(f)) => *self.refused_by_kind.entry(f.kind).or_default() += 1,
            Some(Outcome::Hung) | None => {}
        }
    }

    /// Whether every round passed.
    pub fn ok(&self) -> bool {
        self.failed == 0
    }

    /// The table, then the closing line `chaos: N passed, M failed (seed S)`.
    pub fn render(&self, seed: u64, wall: Duration) -> String {
        let mut out = String::new();
        let mut row = |indent: usize, name: &str, value: String| {
            let label = format!("{:indent$}{name}", "");
            let _ = writeln!(out, "  {label:<40} {value:>10}");
        };
        row(0, "seed", seed.to_string());
        row(0, "rounds", (self.passed + self.failed).to_string());
        row(0, "tasks submitted", self.submitted.to_string());
        row(2, "succeeded", self.succeeded.to_string());
        row(4, "of which returned Err", self.returned_err.to_string());
        let failed: usize = self.failed_by_kind.values().sum();
        row(2, "failed", failed.to_string());
        for (kind, n) in &self.failed_by_kind {
            row(4, kind.name(), n.to_string());
        }
        let refused: usize = self.refused_by_kind.values().sum();
        row(2, "refused by submit", refused.to_string());
        for (kind, n) in &self.refused_by_kind {
            row(4, kind.name(), n.to_string());
        }
        for class in Violation::CLASSES {
            let n = self.violations.get(class).copied().unwrap_or(0);
            row(0, &format!("{class} (must be 0)"), n.to_string());
        }
        let faults: usize = self.faults.values().sum();
        row(0, "faults injected", faults.to_string());
        for (fault, n) in &self.faults {
            row(2, &fault.to_string(), n.to_string());
        }
        row(0, "wall time", format!("{:.1}s", wall.as_secs_f64()));
        self.render_scenarios(&mut out);
        let _ = writeln!(
            out,
            "chaos: {} passed, {} failed (seed {seed})",
            self.passed, self.failed
        );
        out
    }

    /// Rounds and faults by scenario, with what each round must inject.
    fn render_scenarios(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "  {:<26} {:>7} {:>7}  each round needs",
            "by scenario", "rounds", "faults"
        );
        for (&name, (rounds, faults)) in &self.scenarios {
            let needs: Vec<String> = Scenario::named(name)
                .map(|s| s.needs().iter().map(ToString::to_string).collect())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "    {name:<24} {rounds:>7} {faults:>7}  {}",
                needs.join(", ")
            );
        }
    }
}
