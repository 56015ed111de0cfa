//! Scenarios of workers coming and going under faults: the initializer of
//! every new worker, recycling after `max_tasks_per_child`, and workers
//! leaving on an idle timeout.

use std::collections::HashMap;

use super::faults::{killing_call, still_works, under_fire};
use super::{Ctx, InFlight, RESOLVE_GRACE, any_policy, close, good_calls};
use crate::chaos::backend::{INIT_ARG, PoolSettings};
use crate::chaos::expect::Hazards;
use crate::chaos::ledger::Ledger;
use crate::chaos::model::{Call, Fault, Outcome, Policy, Value};
use crate::chaos::rng::Rng;

/// A pool with an initializer, under calls that kill their worker and,
/// at times, kills from outside: every `INIT_VALUE` call, on a first worker
/// or a replacement, sees what the initializer stored. (A kill that lands
/// while a worker runs the initializer breaks the pool, under `Respawn`
/// too: the pool cannot tell it from an initializer that kills workers.)
pub(super) fn initializer(mut ctx: Ctx<'_>, rng: &mut Rng) {
    let policy = any_policy(rng);
    let settings = PoolSettings {
        initializer: true,
        ..PoolSettings::new(rng.range(1, 3) as usize, policy)
    };
    let Some(pool) = ctx.build(&settings) else {
        return;
    };
    let kills = u64::from(rng.chance(40));
    let hazards = Hazards {
        crashes: true,
        external_kills: kills > 0,
        initializer: Some(INIT_ARG),
        initializer_kills: kills > 0,
        ..Hazards::quiet(policy)
    };
    let mut calls = with_init_values(good_calls(rng, 10, 40), rng);
    for _ in 0..rng.range(1, 3) {
        let at = rng.below(calls.len() as u64) as usize;
        calls.insert(at, killing_call(rng, None));
    }
    let mut inflight = InFlight::default();
    under_fire(&*pool, ctx.ledger, rng, (kills, (0, 10)), |ledger, rng| {
        super::submit_all(&*pool, ledger, &mut inflight, calls, &hazards, rng);
    });
    inflight.collect(ctx.ledger, RESOLVE_GRACE);
    // A kill from outside that lands in an initializer breaks the pool.
    let broken_by_a_kill = kills > 0 && pool.is_broken();
    if policy == Policy::Respawn && !broken_by_a_kill {
        // The replacements ran the initializer too.
        let mut after = InFlight::default();
        let calls = with_init_values(Vec::new(), rng);
        super::submit_all(&*pool, ctx.ledger, &mut after, calls, &hazards, rng);
        after.collect(ctx.ledger, RESOLVE_GRACE);
        still_works(&*pool, ctx.ledger, &hazards, rng);
    }
    close(&*pool);
}

/// `calls` with a few `INIT_VALUE` calls among them.
fn with_init_values(mut calls: Vec<Call>, rng: &mut Rng) -> Vec<Call> {
    for _ in 0..rng.range(3, 10) {
        let at = rng.below(calls.len() as u64 + 1) as usize;
        calls.insert(at, Call::InitValue);
    }
    calls
}

/// Workers recycled after a few calls each (`max_tasks_per_child`), under
/// calls that kill their worker and, at times, kills from outside: every
/// call resolves as its round allows, and no worker answers more `PID`
/// calls than it may run calls.
pub(super) fn recycling(mut ctx: Ctx<'_>, rng: &mut Rng) {
    let policy = any_policy(rng);
    let max_tasks = rng.range(1, 5) as usize;
    let settings = PoolSettings {
        max_tasks_per_child: Some(max_tasks),
        ..PoolSettings::new(rng.range(1, 3) as usize, policy)
    };
    let Some(pool) = ctx.build(&settings) else {
        return;
    };
    let kills = u64::from(rng.chance(40));
    let hazards = Hazards {
        crashes: true,
        external_kills: kills > 0,
        ..Hazards::quiet(policy)
    };
    let mut calls = good_calls(rng, 20, 60);
    for _ in 0..rng.range(5, 15) {
        let at = rng.below(calls.len() as u64 + 1) as usize;
        calls.insert(at, Call::Pid);
    }
    let at = rng.below(calls.len() as u64) as usize;
    calls.insert(at, killing_call(rng, None));
    let mut inflight = InFlight::default();
    under_fire(&*pool, ctx.ledger, rng, (kills, (0, 10)), |ledger, rng| {
        super::submit_all(&*pool, ledger, &mut inflight, calls, &hazards, rng);
    });
    let first = ctx.ledger.entries.len() - inflight.calls.len();
    inflight.collect(ctx.ledger, RESOLVE_GRACE);
    check_recycled(ctx.ledger, first, max_tasks);
    if policy == Policy::Respawn {
        still_works(&*pool, ctx.ledger, &hazards, rng);
    }
    close(&*pool);
}

/// No worker answered more `PID` calls (of the entries from `first` on)
/// than `max_tasks`.
fn check_recycled(ledger: &mut Ledger, first: usize, max_tasks: usize) {
    let mut served: HashMap<u32, usize> = HashMap::new();
    for entry in &ledger.entries[first..] {
        if let (Call::Pid, Some(Outcome::Value(Value::Pid(pid)))) =
            (&entry.expect.call, &entry.outcome)
        {
            *served.entry(*pid).or_default() += 1;
        }
    }
    let over: Vec<(u32, usize)> = served.into_iter().filter(|&(_, n)| n > max_tasks).collect();
    ledger.require(over.is_empty(), || {
        format!("workers ran more than max_tasks_per_child = {max_tasks} calls: {over:?}")
    });
}

/// Bursts of calls separated by pauses longer than the pool's idle timeout
/// (its workers leave and come back), with a worker killed from outside
/// around one of them: every call resolves as its round allows, and idle
/// exits alone never break a pool.
pub(super) fn idle_timeout(mut ctx: Ctx<'_>, rng: &mut Rng) {
    let policy = any_policy(rng);
    let idle = rng.millis(20, 80);
    let settings = PoolSettings {
        idle_timeout: Some(idle),
        ..PoolSettings::new(rng.range(1, 3) as usize, policy)
    };
    let Some(pool) = ctx.build(&settings) else {
        return;
    };
    let hazards = Hazards {
        external_kills: true,
        ..Hazards::quiet(policy)
    };
    let bursts = rng.range(2, 4);
    let killed_in = rng.below(bursts);
    for burst in 0..bursts {
        if burst > 0 {
            // The pause is the fault: the workers leave during it.
            ctx.ledger.fault(Fault::IdleGap);
            std::thread::sleep(idle + rng.millis(20, 100));
        }
        let calls = good_calls(rng, 5, 30);
        let kills = u64::from(burst == killed_in);
        let mut inflight = InFlight::default();
        let idle_ms = idle.as_millis() as u64;
        under_fire(
            &*pool,
            ctx.ledger,
            rng,
            (kills, (0, idle_ms)),
            |ledger, rng| {
                super::submit_all(&*pool, ledger, &mut inflight, calls, &hazards, rng);
            },
        );
        inflight.collect(ctx.ledger, RESOLVE_GRACE);
    }
    let killed = ctx.ledger.faults.iter().any(|f| f.signal().is_some());
    if !killed {
        ctx.ledger
            .require(!pool.is_broken(), || "idle exits broke the pool".to_owned());
    }
    if policy == Policy::Respawn {
        still_works(&*pool, ctx.ledger, &hazards, rng);
    }
    close(&*pool);
}
