//! `max_frame_size` holds on both sides: an argument over it fails at
//! `submit`, a result over it fails that call alone (the worker checks
//! before sending), both with `Error::Serialization`, and the pool goes on
//! under either crash policy.

mod common;

use std::time::Duration;

use loky::diagnostics::{BYTES, ECHO_BYTES, PID};
use loky::{CrashPolicy, Error};
use loky_tests::{GATE, Gate};
use serde_bytes::ByteBuf;

const LIMIT: usize = 1 << 20;
const WAIT: Duration = Duration::from_secs(30);

fn oversized_result_fails_alone(policy: CrashPolicy) {
    let ex = common::builder(2)
        .max_frame_size(LIMIT)
        .on_worker_crash(policy)
        .build()
        .unwrap();
    // An unrelated call runs on the other worker meanwhile.
    let gate = Gate::new();
    let running = ex.submit(GATE, gate.arg()).unwrap();
    let held = gate.entered(WAIT);
    let pids = ex.worker_pids();

    let big = ex.submit(BYTES, 2 * LIMIT as u64).unwrap();
    match big.result_timeout(WAIT) {
        Err(Error::Serialization(err)) => {
            let text = err.to_string();
            assert!(text.contains("exceeds the maximum frame size"), "{text}");
        }
        other => panic!("expected a serialization error, got {other:?}"),
    }
    // Just under the limit still works, on the same worker.
    let fits = ex.submit(BYTES, LIMIT as u64 - 1024).unwrap();
    assert_eq!(fits.result_timeout(WAIT).unwrap().len(), LIMIT - 1024);

    held.release();
    running.result_timeout(WAIT).unwrap();
    assert!(!ex.is_broken());
    assert_eq!(ex.worker_pids(), pids, "no worker was replaced");
    ex.submit(PID, ()).unwrap().result_timeout(WAIT).unwrap();
    assert!(common::shutdown_within(&ex, WAIT));
}

#[test]
fn an_oversized_result_fails_that_call_alone_when_crashes_break_the_pool() {
    oversized_result_fails_alone(CrashPolicy::BreakPool);
}

#[test]
fn an_oversized_result_fails_that_call_alone_when_crashed_workers_respawn() {
    oversized_result_fails_alone(CrashPolicy::Respawn);
}

#[test]
fn an_oversized_argument_fails_at_submit() {
    for policy in [CrashPolicy::BreakPool, CrashPolicy::Respawn] {
        let ex = common::builder(1)
            .max_frame_size(LIMIT)
            .on_worker_crash(policy)
            .build()
            .unwrap();
        let arg = ByteBuf::from(vec![7u8; 2 * LIMIT]);
        match ex.submit(ECHO_BYTES, arg) {
            Err(Error::Serialization(_)) => {}
            other => panic!("expected a serialization error, got {:?}", other.err()),
        }
        let small = ByteBuf::from(vec![7u8; 1000]);
        let back = ex.submit(ECHO_BYTES, small.clone()).unwrap();
        assert_eq!(back.result_timeout(WAIT).unwrap(), small);
        assert!(common::shutdown_within(&ex, WAIT));
    }
}
