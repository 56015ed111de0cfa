//! Executor lifecycle: lazy start, argument checks, the order of submit's
//! checks, tasks that fail without harming their worker, and the workers'
//! environment (LOKY-BEHAVIOUR.md, "Executor lifecycle").

mod common;

use common::FutureExt;
use loky::diagnostics::{EXIT, GETENV, NOOP, PANIC, PID};
use loky::{Error, ProcessPoolExecutor};
use loky_tests::FLAKY;

#[test]
fn workers_start_lazily_and_are_topped_up_to_max_workers_at_once() {
    let ex = common::pool(3);
    assert!(ex.worker_pids().is_empty(), "no worker before a submit");
    ex.submit(NOOP, ()).unwrap().result_bounded().unwrap();
    let pids = ex.worker_pids();
    assert_eq!(pids.len(), 3, "one call started every worker: {pids:?}");
    assert!(pids.iter().all(|&pid| common::alive(pid)));
    let mut distinct = pids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 3);
}

#[test]
fn max_workers_zero_is_an_invalid_argument_error() {
    for built in [common::builder(0).build(), ProcessPoolExecutor::new(0)] {
        match built {
            Err(Error::InvalidArgument(message)) => {
                assert!(
                    message.contains("max_workers must be greater than 0"),
                    "{message}"
                );
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }
}

#[test]
fn submit_checks_broken_before_shut_down() {
    let ex = common::pool(1);
    let crash = ex.submit(EXIT, 3).unwrap().result_bounded().unwrap_err();
    assert!(matches!(crash, Error::TerminatedWorker(_)), "{crash:?}");
    common::shutdown_bounded(&ex);
    let err = ex.submit(NOOP, ()).unwrap_err();
    match &err {
        Error::TerminatedWorker(dead) => assert_eq!(dead.exit_code(), Some(3)),
        other => panic!("expected the stored broken error, got {other:?}"),
    }
    assert_eq!(err.to_string(), crash.to_string());
}

#[test]
fn submit_after_shutdown_fails_with_shutdown_executor() {
    let used = common::pool(1);
    used.submit(NOOP, ()).unwrap().result_bounded().unwrap();
    let unused = common::pool(1);
    for ex in [used, unused] {
        common::shutdown_bounded(&ex);
        match ex.submit(NOOP, ()) {
            Err(Error::ShutdownExecutor(e)) => {
                assert_eq!(e.to_string(), "cannot schedule new futures after shutdown");
                assert!(!e.workers_killed());
            }
            other => panic!("expected ShutdownExecutor, got {other:?}"),
        }
    }
}

#[test]
fn a_task_panic_never_harms_its_worker() {
    let ex = common::pool(1);
    let pid = ex.submit(PID, ()).unwrap().result_bounded().unwrap();
    let fut = ex.submit(PANIC, "boom in the task".to_owned()).unwrap();
    match fut.result_bounded() {
        Err(Error::Task(remote)) => {
            assert_eq!(remote.message(), "boom in the task");
            assert!(!remote.backtrace().is_empty(), "the worker's backtrace");
            assert_eq!(remote.task(), PANIC.name());
            assert_eq!(remote.pid(), pid);
        }
        other => panic!("expected Error::Task, got {other:?}"),
    }
    assert!(matches!(
        ex.submit(FLAKY, 13).unwrap().result_bounded(),
        Err(Error::Task(_))
    ));
    assert_eq!(ex.submit(PID, ()).unwrap().result_bounded().unwrap(), pid);
    assert_eq!(ex.worker_pids(), vec![pid]);
    assert!(!ex.is_broken());
}

#[test]
fn an_error_value_never_harms_its_worker() {
    let ex = common::pool(1);
    let pid = ex.submit(PID, ()).unwrap().result_bounded().unwrap();
    let value = ex.submit(FLAKY, 7).unwrap().result_bounded().unwrap();
    assert_eq!(value, Err("7 ends in 7".to_owned()));
    assert_eq!(ex.submit(PID, ()).unwrap().result_bounded().unwrap(), pid);
    assert_eq!(
        ex.submit(FLAKY, 4).unwrap().result_bounded().unwrap(),
        Ok(8)
    );
    assert_eq!(ex.worker_pids(), vec![pid]);
}

#[test]
fn workers_get_the_parent_environment_plus_env_overrides() {
    let path = std::env::var("PATH").expect("the test runs with a PATH");
    // A variable this process has (cargo sets CARGO_MANIFEST_DIR), to
    // prove that an override wins over the inherited value.
    let overridden = ["HOME", "USER", "CARGO_MANIFEST_DIR"]
        .into_iter()
        .find(|k| std::env::var_os(k).is_some())
        .expect("the test process has HOME, USER or CARGO_MANIFEST_DIR");
    let ex = common::builder(1)
        .env(overridden, "set by the builder")
        .env("LOKY_TEST_EXTRA", "extra value")
        .build()
        .unwrap();
    let getenv = |name: &str| {
        ex.submit(GETENV, name.to_owned())
            .unwrap()
            .result_bounded()
            .unwrap()
    };
    assert_eq!(getenv("PATH"), Some(path), "inherited");
    assert_eq!(getenv(overridden).as_deref(), Some("set by the builder"));
    assert_eq!(getenv("LOKY_TEST_EXTRA").as_deref(), Some("extra value"));
    assert_eq!(getenv("LOKY_TEST_NEVER_SET"), None);
}
