//! The shortest path through the system: submit, map, shutdown.

mod common;

use std::time::Duration;

use common::{FutureExt, MapExt};
use loky::diagnostics::{PID, SQUARE};

#[test]
fn submit_map_and_shutdown_against_real_workers() {
    let ex = common::pool(2);
    assert!(ex.worker_pids().is_empty(), "workers start lazily");
    let fut = ex.submit(SQUARE, 7).unwrap();
    assert_eq!(fut.result_bounded().unwrap(), 49);
    let workers = ex.worker_pids();
    assert_eq!(workers.len(), 2);
    let squares: Vec<i64> = ex
        .map(SQUARE, 0..1000)
        .chunksize(64)
        .collect_bounded()
        .into_iter()
        .collect::<loky::Result<_>>()
        .unwrap();
    assert_eq!(squares, (0..1000).map(|x| x * x).collect::<Vec<i64>>());
    let pid = ex.submit(PID, ()).unwrap().result_bounded().unwrap();
    assert!(ex.worker_pids().contains(&pid));
    common::shutdown_bounded(&ex);
    assert!(ex.worker_pids().is_empty());
    // Catches a shutdown that returns before reaping: this pool's workers
    // (and no other process's, whatever else runs in this process) are
    // gone, not zombies.
    assert!(
        common::reaped_within(&workers, Duration::ZERO),
        "{:?}",
        workers.iter().map(|&p| common::stat(p)).collect::<Vec<_>>()
    );
}
