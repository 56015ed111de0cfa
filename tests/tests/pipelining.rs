//! What is sent ahead of a worker: only calls of tasks measured short. A
//! burst of long (or not yet measured) calls stays in the pool's queue,
//! where it can be cancelled and goes to whichever worker frees up first.
//!
//! The workers are warmed with short calls of another task first: a rule
//! by worker (rather than by task) would then pipeline the long calls.

mod common;
mod hang_guard;

use std::time::Duration;

use hang_guard::Guarded;
use loky::diagnostics::{ECHO_BYTES, NOOP};
use loky::{Error, Shutdown};
use loky_tests::{GATE, Gate, Ran, SLEEP_AND_REPORT};
use serde_bytes::ByteBuf;

const BOUND: Duration = Duration::from_secs(30);

/// A pool of `n` workers, each ready and measured fast on short calls.
fn warm_pool(n: usize) -> Guarded {
    let ex = Guarded::new(common::pool(n));
    let gate = Gate::new();
    let holding: Vec<_> = (0..n)
        .map(|_| ex.submit(GATE, gate.arg()).unwrap())
        .collect();
    // Each gate call holds a worker: all n are ready once all entered.
    let entered: Vec<_> = (0..n).map(|_| gate.entered(BOUND)).collect();
    entered.into_iter().for_each(|held| held.release());
    for fut in holding {
        fut.result_timeout(BOUND).unwrap();
    }
    let noops: Vec<_> = (0..200).map(|_| ex.submit(NOOP, ()).unwrap()).collect();
    for fut in noops {
        fut.result_timeout(BOUND).unwrap();
    }
    ex
}

#[test]
fn a_burst_of_long_calls_waits_in_the_pool_s_queue_where_it_can_be_cancelled() {
    let ex = warm_pool(1);
    let futures: Vec<_> = (0..11)
        .map(|_| {
            ex.submit(SLEEP_AND_REPORT, Duration::from_millis(300))
                .unwrap()
        })
        .collect();
    assert!(common::eventually(BOUND, || futures[0].running()));
    let running = futures[1..].iter().filter(|f| f.running()).count();
    let cancelled = futures[1..].iter().filter(|f| f.cancel()).count();
    assert!(cancelled >= 9, "{cancelled} of 10 could be cancelled");
    assert_eq!(
        running,
        10 - cancelled,
        "running() is true for what was sent, only"
    );
    assert!(!futures[0].cancel());
    futures[0].result_timeout(BOUND).unwrap();
    for fut in futures[1..].iter().filter(|f| f.cancelled()) {
        assert!(matches!(fut.result_timeout(BOUND), Err(Error::Cancelled)));
    }
    assert!(common::shutdown_within(&ex, BOUND));
}

#[test]
fn shutdown_with_cancel_futures_after_a_burst_of_long_calls_waits_only_for_the_running_ones() {
    let ex = warm_pool(2);
    let futures: Vec<_> = (0..10)
        .map(|_| {
            ex.submit(SLEEP_AND_REPORT, Duration::from_millis(500))
                .unwrap()
        })
        .collect();
    assert!(common::eventually(BOUND, || futures
        .iter()
        .filter(|f| f.running())
        .count()
        == 2));
    assert!(hang_guard::shutdown_within_with(
        &ex,
        Shutdown {
            wait: true,
            kill_workers: false,
            cancel_futures: true,
        },
        BOUND
    ));
    let ran: Vec<Ran> = futures
        .iter()
        .filter_map(|f| f.result_timeout(BOUND).ok())
        .collect();
    assert_eq!(ran.len(), 2, "the two running calls finished");
    assert_ne!(ran[0].pid, ran[1].pid);
    assert_eq!(futures.iter().filter(|f| f.cancelled()).count(), 8);
}

#[test]
fn a_burst_of_mixed_durations_is_scheduled_greedily() {
    // Greedy: each call, in order, goes to the first worker free. One
    // worker runs the first 2 s call alone; the other runs the eight short
    // calls (0.8 s), then the last 2 s call, while the first is still busy
    // (a margin of 1.2 s on a loaded machine). Sent ahead, calls would be
    // split between the workers up front.
    let ex = warm_pool(2);
    let long = Duration::from_secs(2);
    let short = Duration::from_millis(100);
    let durations: Vec<_> = std::iter::once(long)
        .chain(std::iter::repeat_n(short, 8))
        .chain(std::iter::once(long))
        .collect();
    let futures: Vec<_> = durations
        .iter()
        .map(|&d| ex.submit(SLEEP_AND_REPORT, d).unwrap())
        .collect();
    let ran: Vec<Ran> = futures
        .iter()
        .map(|f| f.result_timeout(BOUND).unwrap())
        .collect();
    let first = ran[0].pid;
    let other = ran[1].pid;
    assert_ne!(
        first, other,
        "the second call goes to the idle worker: {ran:?}"
    );
    assert!(
        ran[1..].iter().all(|r| r.pid == other),
        "every other call waits for the worker that frees up first: {ran:?}"
    );
    assert!(
        ran[1..]
            .windows(2)
            .all(|w| w[0].ended_ns <= w[1].started_ns),
        "in submission order: {ran:?}"
    );
    let makespan = ran.iter().map(|r| r.ended_ns).max().unwrap()
        - ran.iter().map(|r| r.started_ns).min().unwrap();
    eprintln!("makespan: {:.2} s (greedy: 2.8 s)", makespan as f64 / 1e9);
    assert!(common::shutdown_within(&ex, BOUND));
}

/// A burst of short calls of 8 KiB each, which the pool sends ahead to
/// its workers several at a time, their frames gathered into one write:
/// every reply comes back whole, to its own future.
#[test]
fn a_burst_of_calls_sent_together_comes_back_whole_each_to_its_own_future() {
    let ex = warm_pool(2);
    let small: Vec<_> = (0..200)
        .map(|_| ex.submit(ECHO_BYTES, ByteBuf::from(vec![0; 8])).unwrap())
        .collect();
    for fut in small {
        fut.result_timeout(BOUND).unwrap();
    }
    let payload = |i: usize| {
        ByteBuf::from(
            (0..8 << 10)
                .map(|j| (i * 31 + j) as u8)
                .collect::<Vec<u8>>(),
        )
    };
    let futures: Vec<_> = (0..2000)
        .map(|i| ex.submit(ECHO_BYTES, payload(i)).unwrap())
        .collect();
    for (i, fut) in futures.into_iter().enumerate() {
        assert!(fut.result_timeout(BOUND).unwrap() == payload(i), "call {i}");
    }
}
