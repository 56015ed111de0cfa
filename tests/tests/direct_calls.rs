//! Calls their caller sends straight to an idle worker (no queue, no
//! supervisor in between): they stay correct while the pool changes under
//! them.

mod common;

use std::time::Duration;

use common::FutureExt;
use loky::diagnostics::{ECHO_I64, PID};

/// Catches a caller's call that reaches a worker the supervisor is
/// retiring: sent after the worker's input was closed, it would fail with
/// `TerminatedWorker` (the worker leaves holding it) or never settle.
/// Workers retire after 1 ms idle while four threads submit one call at a
/// time, pausing between calls for up to twice that long, so that workers
/// keep retiring and starting under the callers.
#[test]
fn callers_calls_survive_workers_retiring_under_them() {
    let ex = common::builder(2)
        .idle_timeout(Duration::from_millis(1))
        .build()
        .unwrap();
    let pids = std::thread::scope(|s| {
        let threads: Vec<_> = (0..4i64)
            .map(|t| {
                let ex = &ex;
                s.spawn(move || {
                    let mut pids = Vec::new();
                    for i in 0..150i64 {
                        let x = t * 1000 + i;
                        let echoed = ex.submit(ECHO_I64, x).unwrap().result_bounded();
                        assert_eq!(echoed.unwrap(), x, "thread {t}, call {i}");
                        if i % 10 == 0 {
                            pids.push(ex.submit(PID, ()).unwrap().result_bounded().unwrap());
                        }
                        // Shapes the load (idle gaps around the idle
                        // timeout); nothing waits on it.
                        std::thread::sleep(Duration::from_micros((i as u64 * 37) % 2000));
                    }
                    pids
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect::<std::collections::BTreeSet<u32>>()
    });
    assert!(!ex.is_broken());
    assert!(
        pids.len() > 2,
        "workers never retired under the callers: {pids:?}"
    );
    common::shutdown_bounded(&ex);
}
