//! Resource hygiene: pools leave no file descriptor and no process behind.

mod common;

use std::sync::Mutex;

use loky::diagnostics::SQUARE;

/// The tests here count the descriptors and children of the whole test
/// process, so they must not overlap.
static EXCLUSIVE: Mutex<()> = Mutex::new(());

#[test]
fn hundred_create_submit_shutdown_cycles_leak_no_fd_and_no_process() {
    let _guard = EXCLUSIVE.lock().unwrap_or_else(|e| e.into_inner());
    // Warm up once so that lazily opened process-wide descriptors exist.
    let ex = common::pool(2);
    ex.submit(SQUARE, 1).unwrap().result().unwrap();
    ex.shutdown(true);
    let fds = common::open_fds();
    let children = common::children().len();
    for i in 0..100 {
        let ex = common::pool(2);
        assert_eq!(ex.submit(SQUARE, i).unwrap().result().unwrap(), i * i);
        ex.shutdown(true);
    }
    assert_eq!(common::open_fds(), fds, "file descriptors leaked");
    assert_eq!(
        common::children().len(),
        children,
        "processes left behind: {:?}",
        common::children()
    );
}

#[test]
fn dropping_an_executor_reaps_its_workers() {
    let _guard = EXCLUSIVE.lock().unwrap_or_else(|e| e.into_inner());
    let pids = {
        let ex = common::pool(2);
        ex.submit(SQUARE, 3).unwrap().result().unwrap();
        ex.worker_pids()
    };
    assert_eq!(pids.len(), 2);
    for pid in pids {
        assert!(!common::alive(pid));
        assert!(common::stat(pid).is_none(), "worker {pid} was not reaped");
    }
}
