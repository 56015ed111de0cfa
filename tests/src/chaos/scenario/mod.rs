//! The scenarios: each builds its pools, loads them, injects its faults,
//! records every call in a [`Ledger`] and shuts its pools down (waiting)
//! before it returns.
//!
//! Random choices come from the round's [`Rng`]; fault timing uses short
//! random delays (that is the injection itself), and outcomes are waited for
//! with deadlines, never with sleeps.
//!
//! # Adding a scenario
//!
//! Write `fn NAME(ctx: Ctx<'_>, rng: &mut Rng)` in a module of this folder
//! and add one entry to [`SCENARIOS`]: its name, what it does, its weight in
//! the random mix, whether it needs real processes (the fake executor of
//! the self-tests cannot run those), and the faults each of its rounds must
//! inject ([`Need`]). `--scenario NAME`, the summary rows and the check
//! that enough faults were injected follow from the entry.
//!
//! # Adding a fault
//!
//! Add a variant to [`Fault`] (and its `Display`). A call that injects it
//! sets [`Expect::fault`](super::expect::Expect); an injection from outside
//! records each fault it delivered with [`Ledger::fault`] and each attempt
//! that delivered nothing, with the reason, with [`Ledger::miss`]: a round
//! that injected fewer faults than its scenario needs fails, and the misses
//! say why.

mod api;
mod faults;
mod hostile;
mod inject;
mod lifecycle;
mod recycle;

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use loky::Shutdown;

use super::backend::{Backend, Pending, Pool, PoolSettings};
use super::expect::{Expect, Hazards};
use super::ledger::{EntryId, Ledger};
use super::model::{Call, Fault, Outcome, Policy};
use super::rng::Rng;

pub use inject::kill_randomly;

/// How long after its round's last action a future may take to resolve
/// before it counts as hung: far beyond any task of the suite, so that only
/// a future that would never resolve reaches it, even on a loaded machine.
pub const RESOLVE_GRACE: Duration = Duration::from_secs(20);

/// The memory cap of rounds that test it (the chaos program is the worker,
/// so its own address space must fit well under it).
pub const MEMORY_LIMIT: u64 = 256 << 20;

/// A scenario of the chaos suite: one entry of [`SCENARIOS`].
pub struct Scenario {
    name: &'static str,
    about: &'static str,
    /// How often it comes up in the random mix, relative to the others.
    weight: u64,
    /// Whether it needs real processes (not the in-memory fake).
    processes: bool,
    /// What each round must inject.
    needs: &'static [Need],
    run: fn(Ctx<'_>, &mut Rng),
}

/// A minimum number of injected faults of some kind, that every round of a
/// scenario must reach.
#[derive(Clone, Copy)]
pub struct Need {
    /// How many, at least.
    pub count: usize,
    /// What they are, for reports (`"external signal"`).
    pub what: &'static str,
    /// Whether a fault is one of them.
    pub matches: fn(Fault) -> bool,
}

impl Need {
    /// How many of `faults` are of this kind.
    pub fn count_in(&self, faults: &[Fault]) -> usize {
        faults.iter().filter(|&&f| (self.matches)(f)).count()
    }
}

impl PartialEq for Need {
    fn eq(&self, other: &Self) -> bool {
        (self.count, self.what) == (other.count, other.what)
    }
}

impl fmt::Debug for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.count, self.what)
    }
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, ">= {} {}", self.count, self.what)
    }
}

/// At least one fault of the kinds `matches` accepts.
const fn one(what: &'static str, matches: fn(Fault) -> bool) -> Need {
    Need {
        count: 1,
        what,
        matches,
    }
}

const SIGNAL: Need = one("external signal", |f| f.signal().is_some());
const WORKER_DEATH: Need = one("worker death", Fault::kills_worker);
const DEADLINE: Need = one("deadline", |f| f == Fault::Deadline);
const FUTURE_KILL: Need = one("Future::kill", |f| f == Fault::FutureKill);
const SHUTDOWN: Need = one("shutdown", |f| {
    matches!(f, Fault::Shutdown | Fault::ShutdownKill)
});
const PARENT_KILL: Need = one("parent SIGKILL", |f| f == Fault::ParentKill);
const CANCEL: Need = one("cancel of a pending call", |f| f == Fault::Cancel);
const IDLE_GAP: Need = one("pause past the idle timeout", |f| f == Fault::IdleGap);
const CHANNEL_HOLDER: Need = one("channel holder", |f| f == Fault::ChannelHolder);
const GROUP_ESCAPE: Need = one("process-group escape", |f| f == Fault::GroupEscape);
const UNFORMATTABLE: Need = one("unformattable panic", |f| f == Fault::UnformattablePanic);
const OVERSIZED: Need = one("oversized result", |f| f == Fault::OversizedResult);

/// Every scenario, in the order of `--help`.
pub static SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "task-faults",
        about: "tasks that segfault, abort, exit, panic, return errors or pass the memory cap",
        weight: 4,
        processes: false,
        needs: &[WORKER_DEATH],
        run: faults::task_faults,
    },
    Scenario {
        name: "external-kills",
        about: "workers killed from outside (SIGKILL, SIGTERM, SIGSEGV) under load",
        weight: 4,
        processes: false,
        needs: &[SIGNAL],
        run: faults::external_kills,
    },
    Scenario {
        name: "kill-idle",
        about: "a worker killed while idle, then more work",
        weight: 2,
        processes: false,
        needs: &[SIGNAL],
        run: faults::kill_idle,
    },
    Scenario {
        name: "kill-during-payload",
        about: "workers killed while payloads of several MiB travel",
        weight: 3,
        processes: false,
        needs: &[SIGNAL],
        run: faults::kill_during_payload,
    },
    Scenario {
        name: "shutdown-in-flight",
        about: "a shutdown (wait, kill_workers, cancel_futures at random) with calls in flight",
        weight: 3,
        processes: false,
        needs: &[SHUTDOWN],
        run: lifecycle::shutdown_in_flight,
    },
    Scenario {
        name: "kill-during-shutdown",
        about: "workers killed during a waiting shutdown",
        weight: 2,
        processes: false,
        needs: &[SHUTDOWN],
        run: lifecycle::kill_during_shutdown,
    },
    Scenario {
        name: "deadlines",
        about: "task deadlines and Future::kill",
        weight: 2,
        processes: false,
        needs: &[DEADLINE, FUTURE_KILL],
        run: lifecycle::deadlines,
    },
    Scenario {
        name: "reusable",
        about: "the reusable executor broken, replaced and reused",
        weight: 2,
        processes: false,
        needs: &[WORKER_DEATH, SHUTDOWN],
        run: lifecycle::reusable,
    },
    Scenario {
        name: "parent-killed",
        about: "the parent of a pool SIGKILLed mid-work",
        weight: 1,
        processes: true,
        needs: &[PARENT_KILL],
        run: super::parent::parent_killed,
    },
    Scenario {
        name: "map",
        about: "map with panicking and erroring items while workers are killed",
        weight: 2,
        processes: false,
        needs: &[SIGNAL],
        run: api::map,
    },
    Scenario {
        name: "wait-as-completed",
        about: "wait (each ReturnWhen) and as_completed over calls that crash, panic or sleep",
        weight: 2,
        processes: false,
        needs: &[WORKER_DEATH],
        run: api::wait_and_as_completed,
    },
    Scenario {
        name: "callbacks",
        about: "done callbacks on calls that succeed, fail, crash or are killed from outside",
        weight: 2,
        processes: false,
        needs: &[WORKER_DEATH],
        run: api::callbacks,
    },
    Scenario {
        name: "cancel",
        about: "Future::cancel at random moments while workers are killed",
        weight: 2,
        processes: false,
        needs: &[CANCEL, SIGNAL],
        run: api::cancel,
    },
    Scenario {
        name: "initializer",
        about: "an initializer's state on every worker, replacements included, under crashes",
        weight: 2,
        processes: false,
        needs: &[WORKER_DEATH],
        run: recycle::initializer,
    },
    Scenario {
        name: "recycling",
        about: "max_tasks_per_child recycling under crashes and kills",
        weight: 2,
        processes: false,
        needs: &[WORKER_DEATH],
        run: recycle::recycling,
    },
    Scenario {
        name: "idle-timeout",
        about: "workers leaving on an idle timeout between bursts, and killed around it",
        weight: 2,
        processes: false,
        needs: &[IDLE_GAP, SIGNAL],
        run: recycle::idle_timeout,
    },
    Scenario {
        name: "hostile-tasks",
        about: "a dead worker's channel held by an escaped process, a worker leaving its \
                process group, an unformattable panic, a result past the frame limit",
        weight: 2,
        processes: true,
        needs: &[CHANNEL_HOLDER, GROUP_ESCAPE, UNFORMATTABLE, OVERSIZED],
        run: hostile::hostile_tasks,
    },
];

impl Scenario {
    /// Its name in reports and on the command line.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// What it does, for `--help`.
    pub fn about(&self) -> &'static str {
        self.about
    }

    /// What each of its rounds must inject.
    pub fn needs(&self) -> &'static [Need] {
        self.needs
    }

    /// The scenario named `name`.
    pub fn named(name: &str) -> Option<&'static Scenario> {
        SCENARIOS.iter().find(|s| s.name == name)
    }

    /// The scenario of round `round`: the first rounds go through every
    /// scenario once (in an order drawn from `rng`), then the mix is
    /// weighted.
    pub fn for_round(round: u64, order: &[&'static Scenario], rng: &mut Rng) -> &'static Scenario {
        if let Some(&scenario) = order.get(round as usize) {
            return scenario;
        }
        let weights: Vec<u64> = SCENARIOS.iter().map(|s| s.weight).collect();
        &SCENARIOS[rng.weighted(&weights)]
    }

    /// Every scenario in an order drawn from `rng`.
    pub fn shuffled(rng: &mut Rng) -> Vec<&'static Scenario> {
        let mut order: Vec<&'static Scenario> = SCENARIOS.iter().collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        order
    }

    /// Whether it runs through a [`Backend`] alone (the fake executor of
    /// the self-tests can run it).
    pub fn is_generic(&self) -> bool {
        !self.processes
    }

    /// Runs it against `backend` (`exe`, the chaos program, for scenarios
    /// that start processes of their own) and returns its ledger.
    pub fn run(
        &self,
        backend: &dyn Backend,
        exe: Option<&Path>,
        rng: &mut Rng,
        round: u64,
    ) -> Ledger {
        let mut ledger = Ledger {
            needs: self.needs.to_vec(),
            ..Ledger::default()
        };
        let ctx = Ctx {
            backend,
            exe,
            round,
            ledger: &mut ledger,
        };
        (self.run)(ctx, rng);
        ledger
    }
}

impl PartialEq for Scenario {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Scenario {}

impl fmt::Debug for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// What a scenario works with.
pub struct Ctx<'a> {
    /// Where its pools come from.
    pub(crate) backend: &'a dyn Backend,
    /// The chaos program, for scenarios that start processes of their own.
    pub(crate) exe: Option<&'a Path>,
    /// The round's number.
    pub(crate) round: u64,
    /// Where it records what it does.
    pub(crate) ledger: &'a mut Ledger,
}

impl Ctx<'_> {
    /// A new pool, or `None` (recorded as a broken contract) if it cannot
    /// be built.
    fn build(&mut self, settings: &PoolSettings) -> Option<Box<dyn Pool>> {
        match self.backend.build(settings) {
            Ok(pool) => {
                self.ledger.respawn_budget |= settings.policy == Policy::Respawn;
                self.ledger.policy = Some(settings.policy);
                Some(pool)
            }
            Err(failure) => {
                self.ledger.require(false, || {
                    format!("could not build a pool: {}", failure.message)
                });
                None
            }
        }
    }
}

/// Calls submitted and not yet resolved.
#[derive(Default)]
struct InFlight {
    calls: Vec<(EntryId, Box<dyn Pending>)>,
}

impl InFlight {
    /// Submits `expect.call` to `pool` (with a deadline if `timeout`),
    /// records it, and records a refusal at once.
    fn submit(
        &mut self,
        pool: &dyn Pool,
        ledger: &mut Ledger,
        expect: Expect,
        timeout: Option<Duration>,
    ) -> EntryId {
        let call = expect.call.clone();
        if let Some(fault) = expect.fault {
            ledger.fault(fault);
        }
        let id = ledger.expect(expect);
        match pool.submit(&call, timeout) {
            Ok(pending) => self.calls.push((id, pending)),
            Err(failure) => ledger.observe(id, Outcome::Rejected(failure)),
        }
        id
    }

    /// The future of call `id`, if it was accepted.
    fn get(&self, id: EntryId) -> Option<&dyn Pending> {
        self.calls
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, p)| p.as_ref())
    }

    /// Waits for every call, all by one deadline `grace` from now (usually
    /// [`RESOLVE_GRACE`]; zero where every future must already be resolved),
    /// and records the outcomes.
    fn collect(self, ledger: &mut Ledger, grace: Duration) {
        let resolve_by = Instant::now() + grace;
        for (id, pending) in self.calls {
            let left = resolve_by.saturating_duration_since(Instant::now());
            ledger.observe(id, pending.wait(left));
        }
    }
}

/// A call that should succeed: echoes of ints and small byte strings,
/// short sleeps, pids, `FLAKY` (which panics or returns `Err` for some
/// arguments) and tasks that leave a `sleep` process in their worker's
/// process group (which must die with the pool).
fn good_call(rng: &mut Rng) -> Call {
    match rng.weighted(&[10, 3, 3, 1, 3, 1]) {
        0 => Call::Echo(rng.below(1 << 40) as i64),
        1 => Call::EchoBytes {
            len: rng.range(0, 64 << 10) as usize,
            salt: rng.next_u64(),
        },
        2 => Call::Sleep(rng.millis(0, 3)),
        3 => Call::Pid,
        4 => Call::Flaky(rng.below(1000) as i64),
        _ => Call::SpawnSleeper(Duration::from_secs(30)),
    }
}

/// Between `lo` and `hi` good calls.
fn good_calls(rng: &mut Rng, lo: u64, hi: u64) -> Vec<Call> {
    let n = rng.range(lo, hi);
    (0..n).map(|_| good_call(rng)).collect()
}

/// A random crash policy.
fn any_policy(rng: &mut Rng) -> Policy {
    if rng.chance(50) {
        Policy::BreakPool
    } else {
        Policy::Respawn
    }
}

/// Submits every call in `calls` in a few bursts with short random gaps.
fn submit_all(
    pool: &dyn Pool,
    ledger: &mut Ledger,
    inflight: &mut InFlight,
    calls: Vec<Call>,
    hazards: &Hazards,
    rng: &mut Rng,
) {
    let bursts = rng.range(1, 3);
    let per_burst = (calls.len() as u64).div_ceil(bursts).max(1) as usize;
    for (i, call) in calls.into_iter().enumerate() {
        if i > 0 && i % per_burst == 0 {
            std::thread::sleep(rng.millis(0, 4));
        }
        inflight.submit(pool, ledger, Expect::new(call, hazards), None);
    }
}

/// Shuts `pool` down, waiting.
fn close(pool: &dyn Pool) {
    pool.shutdown(Shutdown::default());
}
