//! Scenarios of a pool's life: shutdowns while tasks are in flight,
//! deadlines and `Future::kill`, and the reusable executor.

use std::time::Duration;

use loky::Shutdown;

use super::faults::{still_works, under_fire};
use super::{Ctx, InFlight, RESOLVE_GRACE, any_policy, close, good_call, good_calls, submit_all};
use crate::chaos::backend::{Backend, Pool, PoolSettings};
use crate::chaos::expect::{Expect, Hazards, Success};
use crate::chaos::ledger::{EntryId, Ledger};
use crate::chaos::model::{Call, Fault, Outcome, Policy, Signal, Value};
use crate::chaos::rng::Rng;

/// A sleep far longer than any deadline of the suite: it ends only if
/// killed.
const LONG_SLEEP: Duration = Duration::from_secs(3);

/// Workers of the reusable pools.
const REUSABLE_WORKERS: usize = 2;

/// A shutdown with random options while calls are queued and running.
pub(super) fn shutdown_in_flight(mut ctx: Ctx<'_>, rng: &mut Rng) {
    let policy = any_policy(rng);
    let how = Shutdown {
        wait: rng.chance(50),
        kill_workers: rng.chance(50),
        cancel_futures: rng.chance(35),
    };
    // Sometimes a worker is killed from outside as well, around the
    // shutdown.
    let kills = u64::from(rng.chance(30));
    let hazards = Hazards {
        shutdown_kill: how.kill_workers,
        cancel: how.cancel_futures,
        external_kills: kills > 0,
        ..Hazards::quiet(policy)
    };
    let Some(pool) = ctx.build(&PoolSettings::new(rng.range(2, 3) as usize, policy)) else {
        return;
    };
    let mut calls = good_calls(rng, 30, 80);
    calls.extend((0..rng.range(2, 6)).map(|_| Call::Sleep(rng.millis(1, 8))));
    let mut inflight = InFlight::default();
    submit_all(&*pool, ctx.ledger, &mut inflight, calls, &hazards, rng);
    // The moment of the shutdown is the fault.
    std::thread::sleep(rng.millis(0, 10));
    under_fire(&*pool, ctx.ledger, rng, (kills, (0, 6)), |ledger, _| {
        ledger.fault(if how.kill_workers {
            Fault::ShutdownKill
        } else {
            Fault::Shutdown
        });
        pool.shutdown(how);
    });
    let late = Expect::after_shutdown(good_call(rng), &hazards);
    inflight.submit(&*pool, ctx.ledger, late, None);
    // After a waiting shutdown every future is resolved already.
    let grace = if how.wait {
        Duration::ZERO
    } else {
        RESOLVE_GRACE
    };
    inflight.collect(ctx.ledger, grace);
    close(&*pool);
}

/// Workers killed from outside while a waiting shutdown drains the pool.
pub(super) fn kill_during_shutdown(mut ctx: Ctx<'_>, rng: &mut Rng) {
    let policy = any_policy(rng);
    let hazards = Hazards {
        external_kills: true,
        ..Hazards::quiet(policy)
    };
    let Some(pool) = ctx.build(&PoolSettings::new(rng.range(2, 3) as usize, policy)) else {
        return;
    };
    let mut calls = good_calls(rng, 20, 60);
    calls.extend((0..rng.range(2, 6)).map(|_| Call::Sleep(rng.millis(1, 5))));
    let mut inflight = InFlight::default();
    submit_all(&*pool, ctx.ledger, &mut inflight, calls, &hazards, rng);
    let kills = rng.range(1, 2);
    under_fire(&*pool, ctx.ledger, rng, (kills, (0, 10)), |ledger, _| {
        ledger.fault(Fault::Shutdown);
        close(&*pool);
    });
    let late = Expect::after_shutdown(good_call(rng), &hazards);
    inflight.submit(&*pool, ctx.ledger, late, None);
    inflight.collect(ctx.ledger, Duration::ZERO);
}

/// Calls past their deadline, calls within it, and `Future::kill` on
/// pending and running calls; neither breaks the pool under any policy.
pub(super) fn deadlines(mut ctx: Ctx<'_>, rng: &mut Rng) {
    let policy = any_policy(rng);
    let quiet = Hazards::quiet(policy);
    let Some(pool) = ctx.build(&PoolSettings::new(rng.range(2, 3) as usize, policy)) else {
        return;
    };
    let mut inflight = InFlight::default();
    let mut victims = Vec::new();
    for plan in deadline_plans(rng) {
        match plan {
            Plan::Call(call) => {
                inflight.submit(&*pool, ctx.ledger, Expect::new(call, &quiet), None);
            }
            Plan::Deadline(call, timeout) => {
                ctx.ledger.fault(Fault::Deadline);
                let expect = Expect::with_deadline(call, timeout, &quiet);
                inflight.submit(&*pool, ctx.ledger, expect, Some(timeout));
            }
            Plan::Kill(call) => {
                let short = call != Call::Sleep(LONG_SLEEP);
                let id = inflight.submit(&*pool, ctx.ledger, Expect::new(call, &quiet), None);
                victims.push((id, short));
            }
        }
    }
    // The moment of the kills is the fault.
    std::thread::sleep(rng.millis(0, 30));
    kill_futures(&inflight, ctx.ledger, &victims);
    inflight.collect(ctx.ledger, RESOLVE_GRACE);
    // Neither a deadline nor a kill breaks the pool, under any policy.
    still_works(&*pool, ctx.ledger, &quiet, rng);
    close(&*pool);
}

/// One call of the deadline scenario.
enum Plan {
    Call(Call),
    Deadline(Call, Duration),
    Kill(Call),
}

fn deadline_plans(rng: &mut Rng) -> Vec<Plan> {
    let mut plans: Vec<Plan> = good_calls(rng, 10, 30)
        .into_iter()
        .map(Plan::Call)
        .collect();
    for _ in 0..rng.range(1, 3) {
        plans.push(Plan::Deadline(Call::Sleep(LONG_SLEEP), rng.millis(20, 150)));
    }
    for _ in 0..rng.range(1, 2) {
        plans.push(Plan::Deadline(
            Call::Sleep(rng.millis(1, 5)),
            Duration::from_secs(10),
        ));
    }
    for _ in 0..rng.range(1, 2) {
        plans.push(Plan::Kill(Call::Sleep(LONG_SLEEP)));
    }
    plans.push(Plan::Kill(Call::Echo(rng.below(1 << 40) as i64)));
    for i in (1..plans.len()).rev() {
        plans.swap(i, rng.below(i as u64 + 1) as usize);
    }
    plans
}

/// `Future::kill` on each victim; a short call may have finished first (a
/// miss: nothing was killed).
fn kill_futures(inflight: &InFlight, ledger: &mut Ledger, victims: &[(EntryId, bool)]) {
    for &(id, short) in victims {
        let Some(pending) = inflight.get(id) else {
            ledger.miss("Future::kill: the call was refused at submit");
            continue;
        };
        let killed = pending.kill();
        if killed {
            ledger.fault(Fault::FutureKill);
        } else {
            ledger.miss("Future::kill: the call had finished");
        }
        ledger.revise(id, |expect| expect.killed(killed, short));
    }
}

/// The reusable executor: broken by a crash or an external kill, replaced
/// by a fresh pool, reused while its settings match, and replaced (waiting
/// or killing) while tasks run when they change.
pub(super) fn reusable(ctx: Ctx<'_>, rng: &mut Rng) {
    let settings = PoolSettings {
        kill_workers: rng.chance(50),
        generation: ctx.round * 2,
        ..PoolSettings::new(REUSABLE_WORKERS, Policy::BreakPool)
    };
    let Some(fresh) = recover_from_break(ctx.backend, ctx.ledger, &settings, rng) else {
        return;
    };
    if let Some(again) = reusable_pool(ctx.backend, ctx.ledger, &settings) {
        ctx.ledger.require(again.same_pool(&*fresh), || {
            "get_reusable with the same settings replaced a working pool".to_owned()
        });
    }
    let settings = PoolSettings {
        generation: settings.generation + 1,
        ..settings
    };
    replace_while_running(ctx.backend, ctx.ledger, &settings, &*fresh, rng);
}

/// Breaks the reusable pool with a crashing task or, chosen at random, an
/// external signal to a busy worker; the next one is a fresh pool that
/// works, which is returned.
fn recover_from_break(
    backend: &dyn Backend,
    ledger: &mut Ledger,
    settings: &PoolSettings,
    rng: &mut Rng,
) -> Option<Box<dyn Pool>> {
    let broken = reusable_pool(backend, ledger, settings)?;
    if rng.chance(50) {
        break_it(&*broken, ledger, rng);
    } else {
        kill_busy_worker(&*broken, ledger, rng);
    }
    let fresh = reusable_pool(backend, ledger, settings);
    close(&*broken);
    let fresh = fresh?;
    ledger.require(!fresh.same_pool(&*broken), || {
        "get_reusable handed out a broken pool".to_owned()
    });
    run_quietly(&*fresh, ledger, rng);
    Some(fresh)
}

/// Asks for the reusable pool with new `settings` while `old` runs calls:
/// `old` is replaced, its calls killed (`kill_workers`) or waited for, and
/// the new pool works.
fn replace_while_running(
    backend: &dyn Backend,
    ledger: &mut Ledger,
    settings: &PoolSettings,
    old: &dyn Pool,
    rng: &mut Rng,
) {
    let hazards = Hazards {
        shutdown_kill: settings.kill_workers,
        ..Hazards::quiet(Policy::BreakPool)
    };
    let mut inflight = InFlight::default();
    let mut calls = good_calls(rng, 3, 8);
    calls.extend((0..2).map(|_| Call::Sleep(rng.millis(20, 100))));
    submit_all(old, ledger, &mut inflight, calls, &hazards, rng);
    ledger.fault(if settings.kill_workers {
        Fault::ShutdownKill
    } else {
        Fault::Shutdown
    });
    let Some(next) = reusable_pool(backend, ledger, settings) else {
        return;
    };
    // The replaced pool was shut down waiting: its calls are resolved.
    inflight.collect(ledger, Duration::ZERO);
    ledger.require(!next.same_pool(old), || {
        "get_reusable with new settings kept the old pool".to_owned()
    });
    run_quietly(&*next, ledger, rng);
    close(&*next);
}

fn reusable_pool(
    backend: &dyn Backend,
    ledger: &mut Ledger,
    settings: &PoolSettings,
) -> Option<Box<dyn Pool>> {
    match backend.reusable(settings) {
        Ok(pool) => {
            ledger.policy = Some(settings.policy);
            Some(pool)
        }
        Err(failure) => {
            ledger.require(false, || {
                format!("get_reusable failed: {}", failure.message)
            });
            None
        }
    }
}

/// Good calls around one that crashes its worker; the pool must be broken
/// once they are resolved.
fn break_it(pool: &dyn Pool, ledger: &mut Ledger, rng: &mut Rng) {
    let crash = *rng.pick(&[0u8, 1, 2]);
    let crash = match crash {
        0 => Call::Segfault,
        1 => Call::Abort,
        _ => Call::Exit(1),
    };
    let mut calls = good_calls(rng, 5, 20);
    let at = rng.below(calls.len() as u64 + 1) as usize;
    calls.insert(at, crash);
    let hazards = Hazards {
        crashes: true,
        ..Hazards::quiet(Policy::BreakPool)
    };
    let mut inflight = InFlight::default();
    submit_all(pool, ledger, &mut inflight, calls, &hazards, rng);
    inflight.collect(ledger, RESOLVE_GRACE);
    ledger.require(pool.is_broken(), || {
        "a crash did not break the reusable pool".to_owned()
    });
}

/// Breaks `pool` with a random signal from outside to a worker known to
/// have started (it answered a `PID` call) once every worker was given a
/// sleep that only a kill ends, good calls queued behind: once the calls
/// are resolved the pool must be broken and the long sleeps failed.
fn kill_busy_worker(pool: &dyn Pool, ledger: &mut Ledger, rng: &mut Rng) {
    let Some(victim) = started_worker(pool, ledger) else {
        return;
    };
    let hazards = Hazards {
        external_kills: true,
        ..Hazards::quiet(Policy::BreakPool)
    };
    let mut inflight = InFlight::default();
    for _ in 0..REUSABLE_WORKERS {
        let sleep = Expect {
            success: Success::Never,
            ..Expect::new(Call::Sleep(LONG_SLEEP), &hazards)
        };
        inflight.submit(pool, ledger, sleep, None);
    }
    let calls = good_calls(rng, 3, 10);
    submit_all(pool, ledger, &mut inflight, calls, &hazards, rng);
    // The delay is the fault's timing, not a wait for anything.
    std::thread::sleep(rng.millis(0, 5));
    let signal = *rng.pick(&Signal::ALL);
    let sent = pool.signal(victim, signal);
    ledger.require(sent, || {
        format!("could not send {signal:?} to worker {victim}")
    });
    if sent {
        ledger.fault(Fault::Signal(signal));
    }
    inflight.collect(ledger, RESOLVE_GRACE);
    ledger.require(pool.is_broken(), || {
        format!("{signal:?} from outside did not break the reusable pool")
    });
}

/// The pid of a worker of `pool` that has started: the one that answers a
/// `PID` call (recorded as any other call).
fn started_worker(pool: &dyn Pool, ledger: &mut Ledger) -> Option<u32> {
    let mut probe = InFlight::default();
    let quiet = Hazards::quiet(Policy::BreakPool);
    let id = probe.submit(pool, ledger, Expect::new(Call::Pid, &quiet), None);
    let pid = match probe.get(id)?.wait(RESOLVE_GRACE) {
        Outcome::Value(Value::Pid(pid)) => Some(pid),
        _ => None,
    };
    probe.collect(ledger, RESOLVE_GRACE);
    pid
}

/// Good calls that must all succeed.
fn run_quietly(pool: &dyn Pool, ledger: &mut Ledger, rng: &mut Rng) {
    let mut inflight = InFlight::default();
    let calls = good_calls(rng, 3, 10);
    let quiet = Hazards::quiet(Policy::BreakPool);
    submit_all(pool, ledger, &mut inflight, calls, &quiet, rng);
    inflight.collect(ledger, RESOLVE_GRACE);
}
