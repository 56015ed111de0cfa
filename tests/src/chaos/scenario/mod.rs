//! The scenarios: each builds its pools, loads them, injects its faults,
//! records every call in a [`Ledger`] and shuts its pools down (waiting)
//! before it returns.
//!
//! Random choices come from the round's [`Rng`]; fault timing uses short
//! random delays (that is the injection itself), and outcomes are waited for
//! with deadlines, never with sleeps.

mod faults;
mod lifecycle;

use std::time::{Duration, Instant};

use loky::Shutdown;

use super::backend::{Backend, Pending, Pool, PoolSettings};
use super::expect::{Expect, Hazards};
use super::ledger::{EntryId, Ledger};
use super::model::{Call, Fault, Outcome, Policy, Signal};
use super::rng::Rng;

/// How long after its round's last action a future may take to resolve
/// before it counts as hung: far beyond any task of the suite, so that only
/// a future that would never resolve reaches it, even on a loaded machine.
pub const RESOLVE_GRACE: Duration = Duration::from_secs(20);

/// The memory cap of rounds that test it (the chaos program is the worker,
/// so its own address space must fit well under it).
pub const MEMORY_LIMIT: u64 = 256 << 20;

/// A scenario of the chaos suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    /// Tasks that segfault, abort, exit, panic, return errors or allocate
    /// past the memory cap, among good ones.
    TaskFaults,
    /// Workers killed from outside (SIGKILL, SIGTERM, SIGSEGV) at random
    /// moments under load.
    ExternalKills,
    /// A worker killed while idle, then more work.
    KillIdle,
    /// Workers killed while receiving or returning payloads of several MiB.
    KillDuringPayload,
    /// A shutdown (with or without `kill_workers`, `cancel_futures`, `wait`)
    /// while tasks are in flight.
    ShutdownInFlight,
    /// Workers killed during a waiting shutdown.
    KillDuringShutdown,
    /// Task deadlines and `Future::kill`.
    Deadlines,
    /// The reusable executor broken, replaced and reused.
    Reusable,
    /// The parent of a pool SIGKILLed mid-work.
    ParentKilled,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 9] = [
        Scenario::TaskFaults,
        Scenario::ExternalKills,
        Scenario::KillIdle,
        Scenario::KillDuringPayload,
        Scenario::ShutdownInFlight,
        Scenario::KillDuringShutdown,
        Scenario::Deadlines,
        Scenario::Reusable,
        Scenario::ParentKilled,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::TaskFaults => "task-faults",
            Scenario::ExternalKills => "external-kills",
            Scenario::KillIdle => "kill-idle",
            Scenario::KillDuringPayload => "kill-during-payload",
            Scenario::ShutdownInFlight => "shutdown-in-flight",
            Scenario::KillDuringShutdown => "kill-during-shutdown",
            Scenario::Deadlines => "deadlines",
            Scenario::Reusable => "reusable",
            Scenario::ParentKilled => "parent-killed",
        }
    }

    /// How often it comes up in the random mix, relative to the others.
    fn weight(self) -> u64 {
        match self {
            Scenario::TaskFaults | Scenario::ExternalKills => 4,
            Scenario::KillDuringPayload | Scenario::ShutdownInFlight => 3,
            Scenario::KillIdle | Scenario::KillDuringShutdown | Scenario::Deadlines => 2,
            Scenario::Reusable => 2,
            Scenario::ParentKilled => 1,
        }
    }

    /// The scenario of round `round`: the first rounds go through every
    /// scenario once (in an order drawn from `rng`), then the mix is
    /// weighted.
    pub fn for_round(round: u64, order: &[Scenario], rng: &mut Rng) -> Scenario {
        if let Some(&scenario) = order.get(round as usize) {
            return scenario;
        }
        let weights: Vec<u64> = Scenario::ALL.iter().map(|s| s.weight()).collect();
        Scenario::ALL[rng.weighted(&weights)]
    }

    /// The scenario named `name`.
    pub fn named(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Every scenario in an order drawn from `rng`.
    pub fn shuffled(rng: &mut Rng) -> Vec<Scenario> {
        let mut order = Scenario::ALL.to_vec();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        order
    }

    /// Whether it runs through a [`Backend`] alone (the parent scenario
    /// needs real processes).
    pub fn is_generic(self) -> bool {
        self != Scenario::ParentKilled
    }

    /// Runs a generic scenario against `backend`; `None` for
    /// [`Scenario::ParentKilled`].
    pub fn run(self, backend: &dyn Backend, rng: &mut Rng, round: u64) -> Option<Ledger> {
        let mut ledger = Ledger::default();
        let ctx = Ctx {
            backend,
            round,
            ledger: &mut ledger,
        };
        match self {
            Scenario::TaskFaults => faults::task_faults(ctx, rng),
            Scenario::ExternalKills => faults::external_kills(ctx, rng),
            Scenario::KillIdle => faults::kill_idle(ctx, rng),
            Scenario::KillDuringPayload => faults::kill_during_payload(ctx, rng),
            Scenario::ShutdownInFlight => lifecycle::shutdown_in_flight(ctx, rng),
            Scenario::KillDuringShutdown => lifecycle::kill_during_shutdown(ctx, rng),
            Scenario::Deadlines => lifecycle::deadlines(ctx, rng),
            Scenario::Reusable => lifecycle::reusable(ctx, rng),
            Scenario::ParentKilled => return None,
        }
        Some(ledger)
    }
}

/// What a scenario works with.
struct Ctx<'a> {
    backend: &'a dyn Backend,
    round: u64,
    ledger: &'a mut Ledger,
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

/// Kills `kills` random workers of `pool` with random signals, each after a
/// random delay in `delay_ms` (drawn again while the pool has no worker
/// yet, a few times); the faults actually delivered.
fn kill_randomly(pool: &dyn Pool, mut rng: Rng, kills: u64, delay_ms: (u64, u64)) -> Vec<Fault> {
    let mut faults = Vec::new();
    for _ in 0..kills {
        let which = rng.next_u64();
        let signal = *rng.pick(&Signal::ALL);
        for _ in 0..5 {
            // The delay is the fault's timing, not a wait for anything.
            std::thread::sleep(rng.millis(delay_ms.0, delay_ms.1));
            let pids = pool.worker_pids();
            if pids.is_empty() {
                continue;
            }
            let pid = pids[(which % pids.len() as u64) as usize];
            if pool.signal(pid, signal) {
                faults.push(Fault::Signal(signal));
            }
            break;
        }
    }
    faults
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
