//! The deaths that `TerminatedWorker` errors report, checked against the
//! faults of their round, under every crash policy.
//!
//! Under `BreakPool` any death fails every unfinished call, so a call may
//! fail with another call's death; what it reports must still be a death
//! the round caused: the exit (and task, and memory limit) of a call that
//! kills its worker, or a signal sent from outside. And the first call to
//! fail, which is the one whose worker died of it, names its own exit and
//! task: with no signal from outside, some call that killed its worker
//! must report its own death.

use super::ledger::{Ledger, Violation};
use super::model::{Death, ErrorKind, Exit, Outcome, Policy};

/// Every violation of the rules above in `ledger`.
pub(crate) fn check(ledger: &Ledger) -> Vec<Violation> {
    let caused: Vec<(&'static str, &Death)> = ledger
        .entries
        .iter()
        .filter_map(|e| Some((e.expect.call.task(), e.expect.causes.as_ref()?)))
        .collect();
    let signals: Vec<i32> = ledger
        .faults
        .iter()
        .filter_map(|f| f.signal())
        .map(|s| s.number())
        .collect();
    let explained = |death: &Death| {
        caused.iter().any(|(_, own)| *own == death)
            || matches!(death.exit, Exit::Signal(n) if signals.contains(&n))
    };
    let mut found: Vec<Violation> = ledger
        .entries
        .iter()
        .filter_map(|entry| {
            let death = terminated(entry.outcome.as_ref()?)?;
            (!explained(death)).then(|| Violation::UnexplainedDeath {
                task: entry.expect.call.task(),
                got: death.clone(),
            })
        })
        .collect();
    let break_pool = ledger.policy == Some(Policy::BreakPool);
    if break_pool && signals.is_empty() && !caused.is_empty() && !some_own_death(ledger) {
        found.push(Violation::NoOwnDeath {
            crashes: caused.iter().map(|(task, _)| *task).collect(),
        });
    }
    found
}

/// The death a `TerminatedWorker` outcome reports.
fn terminated(outcome: &Outcome) -> Option<&Death> {
    match outcome {
        Outcome::Failed(f) | Outcome::Rejected(f) if f.kind == ErrorKind::TerminatedWorker => {
            f.death.as_ref()
        }
        _ => None,
    }
}

/// Whether a call that killed its worker failed with its own death.
fn some_own_death(ledger: &Ledger) -> bool {
    ledger.entries.iter().any(|entry| {
        let own = entry.expect.causes.as_ref();
        let failed = match &entry.outcome {
            Some(Outcome::Failed(f)) if f.kind == ErrorKind::TerminatedWorker => f.death.as_ref(),
            _ => None,
        };
        own.is_some() && own == failed
    })
}
