//! Scenarios of worker deaths: tasks that crash their worker, and workers
//! killed from outside under load, while idle and mid-payload.

use std::time::Duration;

use super::{
    Ctx, InFlight, MEMORY_LIMIT, RESOLVE_GRACE, any_policy, close, good_call, good_calls,
    kill_randomly, submit_all,
};
use crate::chaos::backend::{Pool, PoolSettings};
use crate::chaos::expect::{Expect, Hazards};
use crate::chaos::ledger::{EntryId, Ledger};
use crate::chaos::model::{Call, Fault, Outcome, Policy};
use crate::chaos::rng::Rng;

/// Exit codes of the `EXIT` task: none of them documented by loky.
const EXIT_CODES: [i32; 5] = [0, 1, 3, 42, 101];

/// Crashing, panicking and erroring tasks among good ones.
pub(super) fn task_faults(mut ctx: Ctx<'_>, rng: &mut Rng) {
    let policy = any_policy(rng);
    let memory_limit = rng.chance(50).then_some(MEMORY_LIMIT);
    let settings = PoolSettings {
        memory_limit,
        ..PoolSettings::new(rng.range(2, 3) as usize, policy)
    };
    let n = rng.range(40, 120);
    let mut calls: Vec<Call> = (0..n).map(|_| faulty_call(rng, memory_limit)).collect();
    // At least one call kills its worker, wherever it falls.
    let at = rng.below(n) as usize;
    calls[at] = killing_call(rng, memory_limit);
    let hazards = Hazards {
        crashes: calls.iter().any(|c| kills_worker(c, memory_limit)),
        memory_limit,
        ..Hazards::quiet(policy)
    };
    let Some(pool) = ctx.build(&settings) else {
        return;
    };
    let mut inflight = InFlight::default();
    submit_all(&*pool, ctx.ledger, &mut inflight, calls, &hazards, rng);
    inflight.collect(ctx.ledger, RESOLVE_GRACE);
    if policy == Policy::BreakPool && hazards.crashes {
        ctx.ledger.require(pool.is_broken(), || {
            "a crash did not break a BreakPool pool".to_owned()
        });
    }
    if policy == Policy::Respawn {
        still_works(&*pool, ctx.ledger, &hazards, rng);
    }
    close(&*pool);
}

/// Workers killed from outside at random moments while calls pour in.
pub(super) fn external_kills(mut ctx: Ctx<'_>, rng: &mut Rng) {
    let policy = any_policy(rng);
    let settings = PoolSettings::new(rng.range(2, 4) as usize, policy);
    let calls = good_calls(rng, 60, 200);
    let hazards = Hazards {
        external_kills: true,
        ..Hazards::quiet(policy)
    };
    let Some(pool) = ctx.build(&settings) else {
        return;
    };
    let kills = rng.range(1, 3);
    let mut inflight = InFlight::default();
    under_fire(&*pool, ctx.ledger, rng, (kills, (0, 15)), |ledger, rng| {
        submit_all(&*pool, ledger, &mut inflight, calls, &hazards, rng);
    });
    inflight.collect(ctx.ledger, RESOLVE_GRACE);
    if policy == Policy::Respawn {
        still_works(&*pool, ctx.ledger, &hazards, rng);
    }
    close(&*pool);
}

/// A worker killed while idle, then more work.
pub(super) fn kill_idle(mut ctx: Ctx<'_>, rng: &mut Rng) {
    let policy = any_policy(rng);
    let Some(pool) = ctx.build(&PoolSettings::new(2, policy)) else {
        return;
    };
    let quiet = Hazards::quiet(policy);
    warm_up(&*pool, ctx.ledger, policy);
    let mut first = InFlight::default();
    let calls = good_calls(rng, 10, 30);
    submit_all(&*pool, ctx.ledger, &mut first, calls, &quiet, rng);
    first.collect(ctx.ledger, RESOLVE_GRACE);
    // Every call is answered: the workers are idle now.
    kill_randomly(&*pool, rng.split(), 1, (0, 0)).record(ctx.ledger);
    let hazards = Hazards {
        external_kills: true,
        ..quiet
    };
    let mut second = InFlight::default();
    let calls = good_calls(rng, 10, 30);
    submit_all(&*pool, ctx.ledger, &mut second, calls, &hazards, rng);
    second.collect(ctx.ledger, RESOLVE_GRACE);
    if policy == Policy::Respawn {
        still_works(&*pool, ctx.ledger, &hazards, rng);
    }
    close(&*pool);
}

/// Workers killed while payloads of several MiB go to them and back; the
/// kills that land while a large call is unresolved count as
/// [`Fault::TransferKill`].
pub(super) fn kill_during_payload(mut ctx: Ctx<'_>, rng: &mut Rng) {
    let policy = any_policy(rng);
    let Some(pool) = ctx.build(&PoolSettings::new(2, policy)) else {
        return;
    };
    let hazards = Hazards {
        external_kills: true,
        ..Hazards::quiet(policy)
    };
    // Start the workers first, so that the kills land on transfers.
    warm_up(&*pool, ctx.ledger, policy);
    let mut expects = Vec::new();
    for _ in 0..rng.range(2, 4) {
        let big = Call::EchoBytes {
            len: rng.range(2 << 20, 8 << 20) as usize,
            salt: rng.next_u64(),
        };
        expects.push(Expect::new(big, &hazards));
        expects.push(Expect::new(good_call(rng), &hazards));
    }
    let mut inflight = InFlight::default();
    let bigs: Vec<EntryId> = expects
        .into_iter()
        .filter_map(|expect| {
            let big = matches!(expect.call, Call::EchoBytes { .. });
            let id = inflight.submit(&*pool, ctx.ledger, expect, None);
            big.then_some(id)
        })
        .collect();
    for _ in 0..rng.range(1, 2) {
        kill_mid_transfer(&*pool, ctx.ledger, &inflight, &bigs, rng);
    }
    inflight.collect(ctx.ledger, RESOLVE_GRACE);
    if policy == Policy::Respawn {
        still_works(&*pool, ctx.ledger, &hazards, rng);
    }
    close(&*pool);
}

/// Kills a random worker of `pool` after a random delay of up to 25 ms,
/// and records the kill as a [`Fault::TransferKill`] if one of the `bigs`
/// calls was unresolved both before and just after the signal (a resolved
/// future never becomes unresolved again, so that call was in flight when
/// the signal landed), or as its [`Fault::Signal`] otherwise.
fn kill_mid_transfer(
    pool: &dyn Pool,
    ledger: &mut Ledger,
    inflight: &InFlight,
    bigs: &[EntryId],
    rng: &mut Rng,
) {
    let unresolved = |id: &&EntryId| {
        inflight
            .get(**id)
            .is_some_and(|pending| pending.wait(Duration::ZERO) == Outcome::Hung)
    };
    // The delay is the fault's timing, not a wait for anything.
    std::thread::sleep(rng.millis(0, 25));
    let before: Vec<&EntryId> = bigs.iter().filter(unresolved).collect();
    let mut injection = kill_randomly(pool, rng.split(), 1, (0, 0));
    let mid_transfer = before.iter().any(unresolved);
    for fault in &mut injection.faults {
        if let (true, Some(signal)) = (mid_transfer, fault.signal()) {
            *fault = Fault::TransferKill(signal);
        }
    }
    injection.record(ledger);
}

/// Runs `load` while a thread kills `kills.0` workers of `pool` after
/// delays drawn from `kills.1` (ms); records the kills delivered and the
/// misses; what `load` returns.
pub(super) fn under_fire<R>(
    pool: &dyn Pool,
    ledger: &mut Ledger,
    rng: &mut Rng,
    kills: (u64, (u64, u64)),
    load: impl FnOnce(&mut Ledger, &mut Rng) -> R,
) -> R {
    let killer_rng = rng.split();
    let (loaded, injection) = std::thread::scope(|scope| {
        let killer = scope.spawn(move || kill_randomly(pool, killer_rng, kills.0, kills.1));
        let loaded = load(ledger, rng);
        (loaded, killer.join().expect("the killer thread panicked"))
    });
    injection.record(ledger);
    loaded
}

/// The pool is not broken and runs new calls (after faults that must not
/// break it: any under `Respawn`, deadlines and kills under any policy).
///
/// The calls are under the round's `hazards`: a worker killed from outside
/// may not be known dead yet when the next call reaches it, which then
/// fails as the call that worker was running (the round's budget of
/// `TerminatedWorker` failures still holds).
pub(super) fn still_works(pool: &dyn Pool, ledger: &mut Ledger, hazards: &Hazards, rng: &mut Rng) {
    ledger.require(!pool.is_broken(), || "the pool is broken".to_owned());
    let mut after = InFlight::default();
    for _ in 0..3 {
        let call = Call::Echo(rng.below(1 << 40) as i64);
        after.submit(pool, ledger, Expect::new(call, hazards), None);
    }
    after.collect(ledger, RESOLVE_GRACE);
}

/// Two short sleeps, waited for: the pool's two workers are (most likely)
/// both started and have both said hello.
pub(super) fn warm_up(pool: &dyn Pool, ledger: &mut Ledger, policy: Policy) {
    let quiet = Hazards::quiet(policy);
    let mut warm = InFlight::default();
    for _ in 0..2 {
        let nap = Expect::new(Call::Sleep(Duration::from_millis(5)), &quiet);
        warm.submit(pool, ledger, nap, None);
    }
    warm.collect(ledger, RESOLVE_GRACE);
}

/// A good call, or (one time in eight) one that crashes, panics or
/// allocates past `memory_limit`.
fn faulty_call(rng: &mut Rng, memory_limit: Option<u64>) -> Call {
    if !rng.chance(12) {
        return match memory_limit {
            Some(_) if rng.chance(5) => Call::Allocate(16 << 20),
            _ => good_call(rng),
        };
    }
    if rng.chance(20) {
        Call::Panic
    } else {
        killing_call(rng, memory_limit)
    }
}

/// A call that kills its worker: a segfault, an abort, an exit or (with a
/// memory limit) an allocation past it.
pub(super) fn killing_call(rng: &mut Rng, memory_limit: Option<u64>) -> Call {
    match rng.below(4) {
        0 => Call::Segfault,
        1 => Call::Abort,
        2 => Call::Exit(*rng.pick(&EXIT_CODES)),
        _ => match memory_limit {
            Some(limit) => Call::Allocate(limit * 4),
            None => Call::Segfault,
        },
    }
}

/// Whether `call` kills its worker.
pub(super) fn kills_worker(call: &Call, memory_limit: Option<u64>) -> bool {
    match call {
        Call::Segfault
        | Call::Abort
        | Call::Exit(_)
        | Call::EchoOrExit(_, Some(_))
        | Call::Escape => true,
        Call::Allocate(n) => memory_limit.is_some_and(|limit| *n > limit),
        _ => false,
    }
}
