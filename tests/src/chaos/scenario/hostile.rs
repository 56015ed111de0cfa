//! Tasks that work against their supervision: a process left holding a
//! dead worker's channel while large calls are sent to it, a worker moved
//! out of its process group past its deadline, a panic whose message cannot
//! be formatted and a result larger than the pool's frame limit.

use std::time::Duration;

use super::faults::{still_works, warm_up};
use super::{Ctx, InFlight, RESOLVE_GRACE, any_policy, close, good_calls};
use crate::chaos::backend::PoolSettings;
use crate::chaos::expect::{Expect, Hazards};
use crate::chaos::model::{Call, Policy};
use crate::chaos::rng::Rng;

/// The frame limit of the round's pool: a result past it fails alone.
const FRAME_LIMIT: usize = 4 << 20;

/// How long the task that leaves its process group would sleep: far past
/// its deadline, so that only the deadline's kill ends it.
const ESCAPED_SLEEP: Duration = Duration::from_secs(30);

/// Good calls with the four hostile ones among them, then the channel
/// holder followed by a burst of large echoes, so that its worker dies
/// while the parent is still writing to it and nobody reads.
pub(super) fn hostile_tasks(mut ctx: Ctx<'_>, rng: &mut Rng) {
    let policy = any_policy(rng);
    let settings = PoolSettings {
        max_frame_size: Some(FRAME_LIMIT),
        ..PoolSettings::new(rng.range(1, 2) as usize, policy)
    };
    let hazards = Hazards {
        crashes: true,
        ..Hazards::quiet(policy)
    };
    let Some(pool) = ctx.build(&settings) else {
        return;
    };
    warm_up(&*pool, ctx.ledger, policy);
    let mut calls = good_calls(rng, 10, 40);
    let oversized = FRAME_LIMIT as u64 + rng.range(1, 1 << 20);
    for call in [
        Call::LeaveGroup(ESCAPED_SLEEP),
        Call::PanicUnformattable,
        Call::Oversized(oversized),
    ] {
        let at = rng.below(calls.len() as u64 + 1) as usize;
        calls.insert(at, call);
    }
    calls.push(Call::Escape);
    for _ in 0..rng.range(4, 12) {
        calls.push(Call::EchoBytes {
            len: rng.range(256 << 10, 1 << 20) as usize,
            salt: rng.next_u64(),
        });
    }
    let deadline = rng.millis(200, 600);
    let mut inflight = InFlight::default();
    for call in calls {
        let timeout = matches!(call, Call::LeaveGroup(_)).then_some(deadline);
        let expect = match timeout {
            Some(t) => Expect::with_deadline(call, t, &hazards),
            None => Expect::new(call, &hazards),
        };
        inflight.submit(&*pool, ctx.ledger, expect, timeout);
    }
    inflight.collect(ctx.ledger, RESOLVE_GRACE);
    if policy == Policy::Respawn {
        still_works(&*pool, ctx.ledger, &hazards, rng);
    }
    close(&*pool);
}
