//! `memory_limit(bytes)`: a worker over its cap dies, the error says so, and
//! with `Respawn` the pool goes on.

mod common;

use common::RESULT_TIMEOUT;
use loky::diagnostics::ALLOCATE;
use loky::{CrashPolicy, Error};

const LIMIT: u64 = 256 << 20;

fn expect_memory_limit(result: loky::Result<u64>) {
    match result {
        Err(Error::TerminatedWorker(t)) => {
            assert_eq!(t.memory_limit_exceeded(), Some(LIMIT), "{t}");
            assert_eq!(t.exit_code(), Some(loky::exit_code::MEMORY_LIMIT), "{t}");
            assert_eq!(t.task(), Some("allocate"), "{t}");
            let message = t.to_string();
            assert!(
                message.contains(&format!("exceeded its memory limit of {LIMIT} bytes")),
                "{message}"
            );
        }
        other => panic!("expected the memory-limit error, got {other:?}"),
    }
}

#[test]
fn a_task_over_the_limit_fails_and_the_pool_goes_on() {
    let ex = common::builder(1)
        .memory_limit(LIMIT)
        .on_worker_crash(CrashPolicy::Respawn)
        .build()
        .unwrap();
    expect_memory_limit(common::run(&ex, ALLOCATE, 1 << 30));
    assert!(!ex.is_broken());
    assert_eq!(common::run(&ex, ALLOCATE, 10 << 20).unwrap(), 10 << 20);
}

/// Catches a later submit refused with another error than the stored one
/// (loky refuses it with the error that broke the pool: here the memory
/// limit's).
#[test]
fn under_the_default_policy_the_memory_limit_error_breaks_the_pool() {
    let ex = common::builder(1).memory_limit(LIMIT).build().unwrap();
    expect_memory_limit(common::run(&ex, ALLOCATE, 1 << 30));
    match ex.submit(ALLOCATE, 1) {
        Err(err) => expect_memory_limit(Err(err)),
        Ok(fut) => panic!(
            "the pool took work after breaking: {:?}",
            fut.result_timeout(RESULT_TIMEOUT)
        ),
    }
}
