//! A task's panic whose message cannot be formatted (its `Display` panics)
//! is still a task's panic: the caller gets `Error::Task` with a
//! placeholder message, the worker survives and serves the calls queued
//! behind it.

mod common;

use loky::diagnostics::{PANIC_UNFORMATTABLE, PID, SQUARE};
use loky::{CrashPolicy, Error};

#[test]
fn a_panic_whose_message_cannot_be_formatted_does_not_kill_the_worker() {
    for policy in [CrashPolicy::BreakPool, CrashPolicy::Respawn] {
        let ex = common::builder(1).on_worker_crash(policy).build().unwrap();
        let pid = common::run(&ex, PID, ()).unwrap();
        // Calls queued behind it, likely pipelined on the same worker.
        let before = ex.submit(SQUARE, 3).unwrap();
        let bad = ex.submit(PANIC_UNFORMATTABLE, ()).unwrap();
        let after: Vec<_> = (0..5).map(|x| ex.submit(SQUARE, x).unwrap()).collect();
        let again = ex.submit(PANIC_UNFORMATTABLE, ()).unwrap();

        assert_eq!(before.result_timeout(common::RESULT_TIMEOUT).unwrap(), 9);
        for bad in [bad, again] {
            match bad.result_timeout(common::RESULT_TIMEOUT) {
                Err(Error::Task(err)) => {
                    assert!(err.message().contains("could not be formatted"), "{err}");
                    assert_eq!(err.pid(), pid);
                    assert_eq!(err.task(), "panic_unformattable");
                }
                other => panic!("expected Error::Task, got {other:?}"),
            }
        }
        for (x, fut) in after.into_iter().enumerate() {
            let x = x as i64;
            assert_eq!(fut.result_timeout(common::RESULT_TIMEOUT).unwrap(), x * x);
        }
        assert!(!ex.is_broken());
        assert_eq!(common::run(&ex, PID, ()).unwrap(), pid, "the same worker");
        assert!(common::shutdown_within(&ex, common::RESULT_TIMEOUT));
    }
}
