//! Functions sent without registration (`submit_fn`, `map_fn`) to workers
//! that a launcher command starts: this test binary is its own worker
//! program, started again by the launcher in connect-back mode, so the
//! same build runs on both ends of the link.

mod common;

use loky::{CrashPolicy, Error, Launcher, ProcessPoolExecutor};

use common::RESULT_TIMEOUT;

loky::init_before_main!();

fn square(x: i64) -> i64 {
    x * x
}

fn exit_with(code: i32) {
    std::process::exit(code)
}

fn launched() -> Option<String> {
    std::env::var("LOKY_TEST_LAUNCHED").ok()
}

/// Waits for `fut`, boundedly.
fn result<T: serde::de::DeserializeOwned>(fut: loky::Future<T>) -> loky::Result<T> {
    fut.result_timeout(RESULT_TIMEOUT)
}

fn pool(policy: CrashPolicy) -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .max_workers(2)
        .launcher(Launcher::command("env LOKY_TEST_LAUNCHED=yes {worker}"))
        .listen("127.0.0.1:0".parse().unwrap())
        .on_worker_crash(policy)
        .build()
        .unwrap()
}

#[test]
fn functions_and_closures_run_in_launched_copies_of_this_program() {
    let ex = pool(CrashPolicy::Respawn);
    assert_eq!(result(ex.submit_fn(square, 9).unwrap()).unwrap(), 81);
    assert_eq!(
        result(ex.submit_fn(|()| launched(), ()).unwrap()).unwrap(),
        Some("yes".to_owned()),
        "the launcher started the worker"
    );
    let parent = std::process::id();
    let pid = result(ex.submit_fn(|()| std::process::id(), ()).unwrap()).unwrap();
    assert_ne!(pid, parent, "a worker, not this process");
    let squares: Vec<i64> = ex
        .map_fn(square, 0..500)
        .chunksize(25)
        .collect::<loky::Result<_>>()
        .unwrap();
    assert_eq!(squares, (0..500).map(|x| x * x).collect::<Vec<i64>>());
    // A crash under Respawn: a TerminatedWorker naming the host, then a
    // new worker through the launcher.
    match result(ex.submit_fn(exit_with, 5).unwrap()) {
        Err(Error::TerminatedWorker(dead)) => {
            assert_eq!(dead.exit_code(), Some(5), "{dead}");
            assert!(dead.host().is_some(), "{dead}");
        }
        other => panic!("expected TerminatedWorker, got {other:?}"),
    }
    assert_eq!(result(ex.submit_fn(square, 12).unwrap()).unwrap(), 144);
    assert!(common::shutdown_within(&ex, RESULT_TIMEOUT));
}
