//! The initializer: a registered task run once in every new worker before
//! any other; a failing one breaks the pool with a message naming it.

mod common;

use std::time::Duration;

use loky::CrashPolicy;
use loky::diagnostics::{ECHO_I64, EXIT, PID};
use loky_tests::{INIT, INIT_PANIC, INIT_VALUE};

#[test]
fn the_initializer_state_is_visible_to_tasks_on_every_worker() {
    let ex = common::builder(2)
        .initializer(INIT, "config".into())
        .build()
        .unwrap();
    let values: Vec<_> = (0..50)
        .map(|_| ex.submit(INIT_VALUE, ()).unwrap())
        .collect();
    for fut in values {
        assert_eq!(fut.result().unwrap().as_deref(), Some("config"));
    }
}

#[test]
fn every_replacement_worker_runs_the_initializer_too() {
    // One task per worker: each task runs on a fresh worker.
    let ex = common::builder(1)
        .initializer(INIT, "config".into())
        .max_tasks_per_child(1)
        .build()
        .unwrap();
    let mut pids = Vec::new();
    for _ in 0..4 {
        assert_eq!(
            ex.submit(INIT_VALUE, ())
                .unwrap()
                .result()
                .unwrap()
                .as_deref(),
            Some("config")
        );
        pids.push(ex.submit(PID, ()).unwrap().result().unwrap());
    }
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 4, "{pids:?}");
}

#[test]
fn without_an_initializer_there_is_no_state() {
    let ex = common::pool(1);
    assert_eq!(ex.submit(INIT_VALUE, ()).unwrap().result().unwrap(), None);
}

#[test]
fn a_panicking_initializer_breaks_the_pool_naming_it() {
    let ex = common::builder(2)
        .initializer(INIT_PANIC, "the initializer refuses".into())
        .build()
        .unwrap();
    let fut = ex.submit(ECHO_I64, 1).unwrap();
    let err = fut
        .result_timeout(Duration::from_secs(30))
        .expect_err("a task ran after a failed initializer");
    assert!(err.is_broken_pool(), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("init_panic"), "{message}");
    assert!(message.contains("the initializer refuses"), "{message}");

    assert!(ex.is_broken());
    let again = ex.submit(ECHO_I64, 2).expect_err("submit to a broken pool");
    assert!(again.is_broken_pool(), "{again:?}");
    assert!(again.to_string().contains("init_panic"), "{again}");
    assert!(
        common::eventually(Duration::from_secs(10), || ex.worker_pids().is_empty()),
        "{:?}",
        ex.worker_pids()
    );
}

#[test]
fn an_initializer_that_kills_its_worker_breaks_the_pool_naming_it() {
    let ex = common::builder(1).initializer(EXIT, 3).build().unwrap();
    let err = ex
        .submit(ECHO_I64, 1)
        .unwrap()
        .result_timeout(Duration::from_secs(30))
        .expect_err("a task ran after a failed initializer");
    assert!(err.is_broken_pool(), "{err:?}");
    assert!(err.to_string().contains("`exit`"), "{err}");
    assert!(ex.is_broken());
}

#[test]
fn an_initializer_that_kills_its_worker_breaks_the_pool_even_with_respawn() {
    let ex = common::builder(1)
        .initializer(EXIT, 3)
        .on_worker_crash(CrashPolicy::Respawn)
        .build()
        .unwrap();
    let result = ex
        .submit(ECHO_I64, 1)
        .unwrap()
        .result_timeout(Duration::from_secs(10));
    let broken = ex.is_broken();
    // Never wait for a pool that respawns forever.
    ex.shutdown_with(loky::Shutdown {
        wait: false,
        kill_workers: true,
        cancel_futures: true,
    });
    let err = result.expect_err("a task ran after a failed initializer");
    assert!(err.is_broken_pool(), "{err:?}");
    assert!(err.to_string().contains("`exit`"), "{err}");
    assert!(broken);
}
