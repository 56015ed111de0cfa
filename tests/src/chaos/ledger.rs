//! The record of a round and the invariant checker.
//!
//! A scenario records in a [`Ledger`] what each submitted call may end as
//! ([`Expect`]), what it did end as ([`Outcome`]), and the faults it
//! injected; the runner adds what it measured of the process table and the
//! descriptor table ([`Hygiene`]). [`RoundReport::check`] turns all of it
//! into [`Violation`]s, and works as well on fabricated observations as on
//! real ones, which is how the checker itself is tested.

use std::fmt;
use std::time::Duration;

use super::expect::{Expect, Kinds, Success};
use super::model::{Death, ErrorKind, Exit, Failure, Fault, Outcome, Policy, Value};
use super::scenario::Need;

/// Identifies a call in its ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryId(usize);

/// One submitted call: what it may end as and what it ended as.
#[derive(Debug, Clone)]
pub struct Entry {
    /// What it may end as.
    pub expect: Expect,
    /// What it ended as; `None` until observed.
    pub outcome: Option<Outcome>,
    /// Calls of one group (the items of one `map` chunk) travel as one
    /// call: one death fails them together, and the `Respawn` budget counts
    /// them once.
    pub group: Option<usize>,
}

/// Everything a scenario recorded in one round.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    /// The calls, in submission order.
    pub entries: Vec<Entry>,
    /// The faults injected, in order.
    pub faults: Vec<Fault>,
    /// Under `Respawn`: at most one call may fail with `TerminatedWorker`
    /// per worker death.
    pub respawn_budget: bool,
    /// Statements about the pool that turned out false.
    pub broken_contracts: Vec<String>,
    /// The crash policy of the round's pools, for reports.
    pub policy: Option<Policy>,
    /// What the round must have injected (its scenario's needs).
    pub needs: Vec<Need>,
    /// Injections that delivered nothing, and why.
    pub misses: Vec<String>,
    /// Processes the scenario found outliving their parent.
    pub orphans: Vec<u32>,
}

impl Ledger {
    /// Records a call about to be submitted.
    pub fn expect(&mut self, expect: Expect) -> EntryId {
        self.expect_in(expect, None)
    }

    /// Records a call about to be submitted as part of `group`.
    pub fn expect_in(&mut self, expect: Expect, group: Option<usize>) -> EntryId {
        self.entries.push(Entry {
            expect,
            outcome: None,
            group,
        });
        EntryId(self.entries.len() - 1)
    }

    /// Records what call `id` ended as.
    pub fn observe(&mut self, id: EntryId, outcome: Outcome) {
        self.entries[id.0].outcome = Some(outcome);
    }

    /// Replaces what call `id` may end as (after `Future::kill`).
    pub fn revise(&mut self, id: EntryId, revise: impl FnOnce(Expect) -> Expect) {
        let entry = &mut self.entries[id.0];
        entry.expect = revise(entry.expect.clone());
    }

    /// Records an injected fault.
    pub fn fault(&mut self, fault: Fault) {
        self.faults.push(fault);
    }

    /// Records an injection that delivered nothing, and why.
    pub fn miss(&mut self, why: impl Into<String>) {
        self.misses.push(why.into());
    }

    /// Records that `holds` must be true, described by `what`.
    pub fn require(&mut self, holds: bool, what: impl FnOnce() -> String) {
        if !holds {
            self.broken_contracts.push(what());
        }
    }

    /// How many worker deaths the faults can account for.
    pub fn deaths(&self) -> usize {
        self.faults.iter().filter(|f| f.kills_worker()).count()
    }
}

/// What the runner measured around a round, after every pool of the round
/// was shut down.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hygiene {
    /// Open descriptors of this process before the round.
    pub fds_before: usize,
    /// Open descriptors of this process after the round.
    pub fds_after: usize,
    /// Processes that outlived their pool or their parent.
    pub orphans: Vec<u32>,
    /// Children of this process left as zombies.
    pub zombies: Vec<u32>,
}

/// One broken invariant.
#[derive(Debug, Clone, PartialEq)]
pub enum Violation {
    /// A call whose outcome was never observed.
    Lost {
        /// Its task.
        task: &'static str,
    },
    /// A future that did not resolve by its deadline.
    Hung {
        /// Its task.
        task: &'static str,
    },
    /// A value that is not the call's result.
    WrongResult {
        /// Its task.
        task: &'static str,
        /// What it should have been.
        want: Success,
        /// What it was.
        got: Value,
    },
    /// An error the call may not end with.
    WrongError {
        /// Its task.
        task: &'static str,
        /// The errors it may end with.
        allowed: Kinds,
        /// The error it ended with.
        got: Failure,
        /// Whether `submit` refused it (rather than its future failing).
        rejected: bool,
    },
    /// A `TerminatedWorker` that misreports the worker's own death.
    WrongDeath {
        /// Its task.
        task: &'static str,
        /// The exit it should report.
        want: Exit,
        /// The memory limit it should report.
        limit: Option<u64>,
        /// What it reported.
        got: Option<Death>,
    },
    /// Under `Respawn`, more calls failed with `TerminatedWorker` than
    /// workers died.
    TooManyTerminated {
        /// Calls that failed so.
        failed: usize,
        /// Worker deaths injected.
        deaths: usize,
    },
    /// A statement about the pool that turned out false.
    Contract(String),
    /// A process that outlived its pool or parent.
    Orphan(u32),
    /// A zombie child of this process.
    Zombie(u32),
    /// Descriptors open after the round that were not before.
    LeakedFds {
        /// Open before.
        before: usize,
        /// Open after.
        after: usize,
    },
    /// The round injected fewer faults of a kind than its scenario needs.
    TooFewFaults {
        /// What was needed.
        need: Need,
        /// How many were injected.
        got: usize,
        /// Why injections delivered nothing.
        misses: Vec<String>,
    },
    /// A `TerminatedWorker` that reports a death no fault of the round
    /// explains (an exit no crashing call causes and no signal sent from
    /// outside, or the wrong task for it).
    UnexplainedDeath {
        /// The call that failed or was refused with it.
        task: &'static str,
        /// The death it reported.
        got: Death,
    },
    /// Under `BreakPool`, with workers killed only by their own calls, no
    /// such call reported its own death: the first to fail must have.
    NoOwnDeath {
        /// The calls that killed their workers.
        crashes: Vec<&'static str>,
    },
}

impl Violation {
    /// The summary row it counts in.
    pub fn class(&self) -> &'static str {
        match self {
            Violation::Lost { .. } => "lost",
            Violation::Hung { .. } => "hung",
            Violation::WrongResult { .. } => "wrong results",
            Violation::WrongError { .. }
            | Violation::WrongDeath { .. }
            | Violation::TooManyTerminated { .. }
            | Violation::UnexplainedDeath { .. }
            | Violation::NoOwnDeath { .. } => "wrong errors",
            Violation::Contract(_) => "broken contracts",
            Violation::Orphan(_) => "orphans",
            Violation::Zombie(_) => "zombies",
            Violation::LeakedFds { .. } => "leaked fds",
            Violation::TooFewFaults { .. } => "too few faults",
        }
    }

    /// Every summary row, in order.
    pub const CLASSES: [&'static str; 9] = [
        "lost",
        "hung",
        "wrong results",
        "wrong errors",
        "broken contracts",
        "orphans",
        "zombies",
        "leaked fds",
        "too few faults",
    ];

    /// What it has in common with violations of the same cause: the
    /// violations of a round are reported grouped by it.
    pub fn signature(&self) -> String {
        match self {
            Violation::WrongError {
                allowed,
                got,
                rejected,
                ..
            } => format!("{} {rejected} {allowed:?}", got.kind.name()),
            Violation::WrongDeath { want, got, .. } => format!("death {want:?} {got:?}"),
            Violation::UnexplainedDeath { got, .. } => format!("unexplained {:?}", got.exit),
            Violation::Lost { .. } | Violation::Hung { .. } => self.class().to_owned(),
            _ => self.to_string(),
        }
    }

    /// How many units it counts for in its row (descriptors for a leak).
    pub fn weight(&self) -> usize {
        match self {
            Violation::LeakedFds { before, after } => after.saturating_sub(*before).max(1),
            _ => 1,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Lost { task } => write!(f, "lost: `{task}` was never resolved"),
            Violation::Hung { task } => write!(f, "hung: `{task}` did not resolve by its deadline"),
            Violation::WrongResult { task, want, got } => {
                write!(f, "wrong result: `{task}` gave {got:?}, want {want:?}")
            }
            Violation::WrongError {
                task,
                allowed,
                got,
                rejected,
            } => {
                let how = if *rejected {
                    "was refused with"
                } else {
                    "failed with"
                };
                write!(
                    f,
                    "wrong error: `{task}` {how} {} (allowed: {allowed:?}): {}",
                    got.kind.name(),
                    one_line(&got.message)
                )
            }
            Violation::WrongDeath {
                task,
                want,
                limit,
                got,
            } => write!(
                f,
                "wrong death: `{task}` should report {want:?} (memory limit {limit:?}), \
                 reported {got:?}"
            ),
            Violation::TooManyTerminated { failed, deaths } => write!(
                f,
                "under Respawn {failed} calls failed with TerminatedWorker for {deaths} deaths"
            ),
            Violation::Contract(what) => write!(f, "broken contract: {what}"),
            Violation::Orphan(pid) => write!(f, "orphan: process {pid} outlived its pool"),
            Violation::Zombie(pid) => write!(f, "zombie: child {pid} was never reaped"),
            Violation::LeakedFds { before, after } => {
                write!(
                    f,
                    "leaked fds: {before} open before the round, {after} after"
                )
            }
            Violation::TooFewFaults { need, got, misses } => {
                write!(
                    f,
                    "too few faults: {got} injected, the scenario needs {need}"
                )?;
                if misses.is_empty() {
                    Ok(())
                } else {
                    write!(f, "; missed: {}", misses.join("; "))
                }
            }
            Violation::UnexplainedDeath { task, got } => write!(
                f,
                "unexplained death: `{task}` reported {got:?}, which no fault of the round causes"
            ),
            Violation::NoOwnDeath { crashes } => write!(
                f,
                "no own death: under BreakPool none of the calls that killed their worker \
                 ({crashes:?}) reported its own exit and task"
            ),
        }
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One round: its scenario, its ledger and its hygiene.
#[derive(Debug, Clone)]
pub struct RoundReport {
    /// The round number.
    pub round: u64,
    /// The scenario's name.
    pub scenario: &'static str,
    /// What the scenario recorded.
    pub ledger: Ledger,
    /// What the runner measured.
    pub hygiene: Hygiene,
    /// Wall time of the round.
    pub elapsed: Duration,
}

impl RoundReport {
    /// Every invariant the round broke; empty when it passed.
    pub fn check(&self) -> Vec<Violation> {
        let mut found: Vec<Violation> =
            self.ledger.entries.iter().filter_map(check_entry).collect();
        found.extend(self.check_budget());
        found.extend(super::deaths::check(&self.ledger));
        found.extend(
            self.ledger
                .broken_contracts
                .iter()
                .cloned()
                .map(Violation::Contract),
        );
        found.extend(self.check_faults());
        found.extend(check_hygiene(&self.hygiene));
        found
    }

    /// Whether the round broke no invariant.
    pub fn passed(&self) -> bool {
        self.check().is_empty()
    }

    /// Under `Respawn`, no more calls (a group counting once) failed with
    /// `TerminatedWorker` than workers died.
    fn check_budget(&self) -> Option<Violation> {
        if !self.ledger.respawn_budget {
            return None;
        }
        let mut failed_groups = Vec::new();
        let mut failed = 0;
        for entry in &self.ledger.entries {
            let terminated = matches!(&entry.outcome,
                Some(Outcome::Failed(f)) if f.kind == ErrorKind::TerminatedWorker);
            if !terminated {
                continue;
            }
            match entry.group {
                Some(group) if failed_groups.contains(&group) => {}
                Some(group) => {
                    failed_groups.push(group);
                    failed += 1;
                }
                None => failed += 1,
            }
        }
        let deaths = self.ledger.deaths();
        (failed > deaths).then_some(Violation::TooManyTerminated { failed, deaths })
    }

    /// Every need of the round's scenario is met.
    fn check_faults(&self) -> Vec<Violation> {
        self.ledger
            .needs
            .iter()
            .filter_map(|need| {
                let got = need.count_in(&self.ledger.faults);
                (got < need.count).then(|| Violation::TooFewFaults {
                    need: *need,
                    got,
                    misses: self.ledger.misses.clone(),
                })
            })
            .collect()
    }
}

fn check_entry(entry: &Entry) -> Option<Violation> {
    let expect = &entry.expect;
    let task = expect.call.task();
    match &entry.outcome {
        None => Some(Violation::Lost { task }),
        Some(Outcome::Hung) => Some(Violation::Hung { task }),
        Some(Outcome::Value(got)) => check_value(expect, got),
        Some(Outcome::Failed(failure)) => check_failure(expect, failure, false),
        Some(Outcome::Rejected(failure)) => check_failure(expect, failure, true),
    }
}

fn check_value(expect: &Expect, got: &Value) -> Option<Violation> {
    let right = match &expect.success {
        Success::Exactly(want) => want == got,
        Success::AnyPid => matches!(got, Value::Pid(pid) if *pid > 0),
        Success::Never => false,
    };
    (!right).then(|| Violation::WrongResult {
        task: expect.call.task(),
        want: expect.success.clone(),
        got: got.clone(),
    })
}

fn check_failure(expect: &Expect, got: &Failure, rejected: bool) -> Option<Violation> {
    let task = expect.call.task();
    let allowed = if rejected {
        expect.reject
    } else {
        expect.errors
    };
    if !allowed.contains(got.kind) {
        return Some(Violation::WrongError {
            task,
            allowed,
            got: got.clone(),
            rejected,
        });
    }
    let want = expect.death?;
    if got.kind != ErrorKind::TerminatedWorker {
        return None;
    }
    let right = got.death.as_ref().is_some_and(|death| {
        death.exit == want
            && death.task.as_deref() == Some(task)
            && death.memory_limit == expect.memory_limit
    });
    (!right).then(|| Violation::WrongDeath {
        task,
        want,
        limit: expect.memory_limit,
        got: got.death.clone(),
    })
}

fn check_hygiene(hygiene: &Hygiene) -> Vec<Violation> {
    let mut found: Vec<Violation> = hygiene
        .orphans
        .iter()
        .map(|&p| Violation::Orphan(p))
        .collect();
    found.extend(hygiene.zombies.iter().map(|&p| Violation::Zombie(p)));
    if hygiene.fds_after > hygiene.fds_before {
        found.push(Violation::LeakedFds {
            before: hygiene.fds_before,
            after: hygiene.fds_after,
        });
    }
    found
}
