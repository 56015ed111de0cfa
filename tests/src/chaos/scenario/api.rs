//! Scenarios of the futures API under faults: `map`, `wait` and
//! `as_completed`, done callbacks, and `Future::cancel`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use loky::ReturnWhen;

use super::faults::{killing_call, still_works, under_fire};
use super::{Ctx, InFlight, RESOLVE_GRACE, any_policy, close, good_call, good_calls, submit_all};
use crate::chaos::backend::{Pending, Pool, PoolSettings};
use crate::chaos::expect::{Expect, Hazards};
use crate::chaos::ledger::{EntryId, Ledger};
use crate::chaos::model::{Call, Fault, Outcome, Policy, Value};
use crate::chaos::rng::Rng;

/// `map` of `FLAKY` (some items panic, some return errors) in random
/// chunks while workers are killed: every item comes back, in order, with
/// its value or an error its round allows; the items of one chunk count
/// once against the `Respawn` budget (a chunk is one call).
pub(super) fn map(mut ctx: Ctx<'_>, rng: &mut Rng) {
    let policy = any_policy(rng);
    let Some(pool) = ctx.build(&PoolSettings::new(rng.range(2, 3) as usize, policy)) else {
        return;
    };
    let hazards = Hazards {
        external_kills: true,
        ..Hazards::quiet(policy)
    };
    let inputs: Vec<i64> = (0..rng.range(50, 400))
        .map(|_| rng.below(1000) as i64)
        .collect();
    let chunksize = rng.range(1, 16) as usize;
    let first_group = ctx.ledger.entries.len();
    let ids: Vec<EntryId> = (0..)
        .zip(&inputs)
        .map(|(i, &x)| {
            let expect = Expect::new(Call::Flaky(x), &hazards);
            if let Some(fault) = expect.fault {
                ctx.ledger.fault(fault);
            }
            ctx.ledger
                .expect_in(expect, Some(first_group + i / chunksize))
        })
        .collect();
    let kills = rng.range(1, 2);
    let outcomes = under_fire(&*pool, ctx.ledger, rng, (kills, (0, 20)), |_, _| {
        pool.map_flaky(inputs, chunksize, RESOLVE_GRACE)
    });
    ctx.ledger.require(outcomes.len() <= ids.len(), || {
        format!(
            "map yielded {} items for {} inputs",
            outcomes.len(),
            ids.len()
        )
    });
    for (id, outcome) in ids.into_iter().zip(outcomes) {
        ctx.ledger.observe(id, outcome);
    }
    if policy == Policy::Respawn {
        still_works(&*pool, ctx.ledger, &hazards, rng);
    }
    close(&*pool);
}

/// Integer-valued calls, some of which kill their worker, waited for with
/// one of `wait`'s three modes or `as_completed`.
pub(super) fn wait_and_as_completed(mut ctx: Ctx<'_>, rng: &mut Rng) {
    let policy = any_policy(rng);
    let Some(pool) = ctx.build(&PoolSettings::new(rng.range(2, 3) as usize, policy)) else {
        return;
    };
    let hazards = Hazards {
        crashes: true,
        ..Hazards::quiet(policy)
    };
    let mut calls: Vec<Call> = (0..rng.range(10, 40))
        .map(|i| Call::EchoOrExit(i as i64, None))
        .collect();
    for _ in 0..rng.range(1, 2) {
        let at = rng.below(calls.len() as u64) as usize;
        calls[at] = Call::EchoOrExit(-1, Some(*rng.pick(&[0, 1, 3, 42])));
    }
    let mut inflight = InFlight::default();
    submit_all(&*pool, ctx.ledger, &mut inflight, calls, &hazards, rng);
    let futures: Vec<&dyn Pending> = inflight.calls.iter().map(|(_, p)| p.as_ref()).collect();
    match rng.below(4) {
        0 => check_wait(&*pool, ctx.ledger, &futures, ReturnWhen::FirstCompleted),
        1 => check_wait(&*pool, ctx.ledger, &futures, ReturnWhen::FirstException),
        2 => check_wait(&*pool, ctx.ledger, &futures, ReturnWhen::AllCompleted),
        _ => check_as_completed(&*pool, ctx.ledger, &futures),
    }
    inflight.collect(ctx.ledger, RESOLVE_GRACE);
    if policy == Policy::Respawn {
        still_works(&*pool, ctx.ledger, &hazards, rng);
    }
    close(&*pool);
}

/// `wait` with `how` returns before its timeout (every call here ends at
/// once), with two sets that hold every future, done ones resolved, and
/// what `how` asks for.
fn check_wait(pool: &dyn Pool, ledger: &mut Ledger, futures: &[&dyn Pending], how: ReturnWhen) {
    let start = Instant::now();
    let waited = pool.wait(futures, how, RESOLVE_GRACE);
    let elapsed = start.elapsed();
    let done = waited.done.len();
    ledger.require(elapsed < RESOLVE_GRACE, || {
        format!("wait({how:?}) waited until its timeout")
    });
    ledger.require(done + waited.not_done == futures.len(), || {
        format!(
            "wait({how:?}) returned {done} done and {} not done of {} futures",
            waited.not_done,
            futures.len()
        )
    });
    ledger.require(!waited.done.contains(&Outcome::Hung), || {
        format!("wait({how:?}) called an unresolved future done")
    });
    let failed = waited.done.iter().any(|o| matches!(o, Outcome::Failed(_)));
    let holds = match how {
        ReturnWhen::FirstCompleted => done > 0 || futures.is_empty(),
        ReturnWhen::FirstException => waited.not_done == 0 || failed,
        ReturnWhen::AllCompleted => waited.not_done == 0,
    };
    ledger.require(holds, || {
        format!(
            "wait({how:?}) returned {done} done ({}) and {} not done",
            if failed { "one failed" } else { "none failed" },
            waited.not_done
        )
    });
}

/// `as_completed` yields every future once, resolved, and no timeout: the
/// values it yields are distinct (each call echoes its own number) and as
/// many futures failed as it yields failures.
fn check_as_completed(pool: &dyn Pool, ledger: &mut Ledger, futures: &[&dyn Pending]) {
    let yielded = pool.as_completed(futures, RESOLVE_GRACE);
    ledger.require(!yielded.contains(&None), || {
        "as_completed reached its timeout".to_owned()
    });
    ledger.require(yielded.len() == futures.len(), || {
        format!(
            "as_completed yielded {} of {} futures",
            yielded.len(),
            futures.len()
        )
    });
    let mut values: Vec<i64> = yielded
        .iter()
        .filter_map(|o| match o {
            Some(Outcome::Value(Value::Int(x))) => Some(*x),
            _ => None,
        })
        .collect();
    let failures = yielded
        .iter()
        .filter(|o| matches!(o, Some(Outcome::Failed(_))))
        .count();
    let actual_failures = futures
        .iter()
        .filter(|f| matches!(f.wait(RESOLVE_GRACE), Outcome::Failed(_)))
        .count();
    let count = values.len();
    values.sort_unstable();
    values.dedup();
    ledger.require(values.len() == count, || {
        "as_completed yielded a future twice".to_owned()
    });
    ledger.require(failures == actual_failures, || {
        format!("as_completed yielded {failures} failures, {actual_failures} futures failed")
    });
}

/// Done callbacks on calls that succeed, fail, crash their worker, or are
/// failed by kills from outside: each runs exactly once, with its future
/// done; one added to a done future runs at once.
pub(super) fn callbacks(mut ctx: Ctx<'_>, rng: &mut Rng) {
    let policy = any_policy(rng);
    let Some(pool) = ctx.build(&PoolSettings::new(rng.range(2, 3) as usize, policy)) else {
        return;
    };
    let kills = u64::from(rng.chance(50));
    let hazards = Hazards {
        crashes: true,
        external_kills: kills > 0,
        ..Hazards::quiet(policy)
    };
    let mut calls = good_calls(rng, 20, 60);
    let at = rng.below(calls.len() as u64) as usize;
    calls.insert(at, killing_call(rng, None));
    let mut inflight = InFlight::default();
    let mut watch = Watch::default();
    under_fire(&*pool, ctx.ledger, rng, (kills, (0, 10)), |ledger, rng| {
        for call in calls {
            let id = inflight.submit(&*pool, ledger, Expect::new(call, &hazards), None);
            if let Some(pending) = inflight.get(id) {
                watch.add(pending);
            }
            if rng.chance(10) {
                std::thread::sleep(rng.millis(0, 2));
            }
        }
    });
    if let Some((_, first)) = inflight.calls.first() {
        late_callback_runs_at_once(first.as_ref(), ctx.ledger);
    }
    inflight.collect(ctx.ledger, RESOLVE_GRACE);
    watch.check(ctx.ledger);
    close(&*pool);
}

/// Once `pending` is resolved, a callback added to it runs before
/// `on_done` returns.
fn late_callback_runs_at_once(pending: &dyn Pending, ledger: &mut Ledger) {
    if pending.wait(RESOLVE_GRACE) == Outcome::Hung {
        return; // Reported as hung when the calls are collected.
    }
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    pending.on_done(Box::new(move |done| flag.store(done, Ordering::SeqCst)));
    ledger.require(ran.load(Ordering::SeqCst), || {
        "a callback added to a done future did not run at once".to_owned()
    });
}

/// Counts the runs of done callbacks.
#[derive(Default)]
struct Watch {
    runs: Vec<Arc<AtomicUsize>>,
    not_done: Arc<AtomicBool>,
}

impl Watch {
    /// Adds a counting callback to `pending`.
    fn add(&mut self, pending: &dyn Pending) {
        let runs = Arc::new(AtomicUsize::new(0));
        let (count, not_done) = (runs.clone(), self.not_done.clone());
        pending.on_done(Box::new(move |done| {
            count.fetch_add(1, Ordering::SeqCst);
            if !done {
                not_done.store(true, Ordering::SeqCst);
            }
        }));
        self.runs.push(runs);
    }

    /// Once every future is resolved: each callback ran once, soon (it may
    /// run just after the result is seen), and saw its future done.
    fn check(&self, ledger: &mut Ledger) {
        let deadline = Instant::now() + RESOLVE_GRACE;
        while self.runs.iter().any(|r| r.load(Ordering::SeqCst) == 0) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let counts: Vec<usize> = self.runs.iter().map(|r| r.load(Ordering::SeqCst)).collect();
        let never = counts.iter().filter(|&&n| n == 0).count();
        let twice = counts.iter().filter(|&&n| n > 1).count();
        ledger.require(never == 0, || format!("{never} done callbacks never ran"));
        ledger.require(twice == 0, || {
            format!("{twice} done callbacks ran more than once")
        });
        ledger.require(!self.not_done.load(Ordering::SeqCst), || {
            "a done callback ran before its future was done".to_owned()
        });
    }
}

/// `Future::cancel` right after submitting (the calls behind a sleep on
/// each worker are pending then) and at random moments while workers are
/// killed: a call cancelled (cancel returned true) fails with `Cancelled`
/// and nothing else; one not cancelled never ends as cancelled.
pub(super) fn cancel(mut ctx: Ctx<'_>, rng: &mut Rng) {
    let policy = any_policy(rng);
    let workers = rng.range(1, 2);
    let Some(pool) = ctx.build(&PoolSettings::new(workers as usize, policy)) else {
        return;
    };
    let hazards = Hazards {
        external_kills: true,
        ..Hazards::quiet(policy)
    };
    // Sleeps first, one per worker: the calls behind them wait a while.
    let mut calls: Vec<Call> = (0..workers)
        .map(|_| Call::Sleep(rng.millis(50, 150)))
        .collect();
    calls.extend((0..rng.range(20, 60)).map(|_| good_call(rng)));
    let mut inflight = InFlight::default();
    let mut ids = Vec::new();
    for call in calls {
        ids.push(inflight.submit(&*pool, ctx.ledger, Expect::new(call, &hazards), None));
    }
    // Nothing was killed yet: the calls behind the sleeps are pending, the
    // last submitted most surely (it is always cancelled).
    let (first, rest) = ids.split_at(ids.len() / 2);
    let candidates = first.len() - workers as usize;
    for (k, &id) in first.iter().skip(workers as usize).enumerate() {
        if k + 1 == candidates || rng.chance(40) {
            cancel_one(&inflight, ctx.ledger, id);
        }
    }
    let kills = rng.range(1, 2);
    under_fire(&*pool, ctx.ledger, rng, (kills, (0, 40)), |ledger, rng| {
        for &id in rest {
            if rng.chance(30) {
                std::thread::sleep(rng.millis(0, 3));
                cancel_one(&inflight, ledger, id);
            }
        }
    });
    inflight.collect(ctx.ledger, RESOLVE_GRACE);
    if policy == Policy::Respawn {
        still_works(&*pool, ctx.ledger, &hazards, rng);
    }
    close(&*pool);
}

/// Cancels call `id` and revises what it may end as.
fn cancel_one(inflight: &InFlight, ledger: &mut Ledger, id: EntryId) {
    let Some(pending) = inflight.get(id) else {
        return;
    };
    let cancelled = pending.cancel();
    if cancelled {
        ledger.fault(Fault::Cancel);
    } else {
        ledger.miss("Future::cancel: the call had started");
    }
    ledger.revise(id, |expect| expect.cancelled(cancelled));
}
