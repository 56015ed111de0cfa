//! The shortest path through the system: submit, map, shutdown.

mod common;

use loky::diagnostics::{PID, SQUARE};

#[test]
fn submit_map_and_shutdown_against_real_workers() {
    let ex = common::pool(2);
    assert!(ex.worker_pids().is_empty(), "workers start lazily");
    let fut = ex.submit(SQUARE, 7).unwrap();
    assert_eq!(fut.result().unwrap(), 49);
    assert_eq!(ex.worker_pids().len(), 2);
    let squares: Vec<i64> = ex
        .map(SQUARE, 0..1000)
        .chunksize(64)
        .collect::<loky::Result<_>>()
        .unwrap();
    assert_eq!(squares, (0..1000).map(|x| x * x).collect::<Vec<i64>>());
    let pid = ex.submit(PID, ()).unwrap().result().unwrap();
    assert!(ex.worker_pids().contains(&pid));
    ex.shutdown(true);
    assert!(ex.worker_pids().is_empty());
    assert!(common::zombies().is_empty());
}
