//! `CrashPolicy::Respawn`: a crashing task fails alone, its worker is
//! replaced and the pool never breaks.

mod common;

use std::time::Duration;

use loky::diagnostics::{ECHO_I64, SEGFAULT};
use loky::{CrashPolicy, Error};

#[test]
fn only_the_crashing_tasks_fail_and_the_workers_are_replaced() {
    let ex = common::builder(2)
        .on_worker_crash(CrashPolicy::Respawn)
        .build()
        .unwrap();
    let mut echoes = Vec::new();
    let mut crashes = Vec::new();
    for i in 0..1000i64 {
        if i % 20 == 7 {
            crashes.push(ex.submit(SEGFAULT, ()).unwrap());
        } else {
            echoes.push((i, ex.submit(ECHO_I64, i).unwrap()));
        }
    }
    assert_eq!(crashes.len(), 50);
    assert_eq!(echoes.len(), 950);

    for (i, fut) in &echoes {
        assert_eq!(fut.result().unwrap(), *i, "echo of {i}");
    }
    let mut dead_pids = Vec::new();
    for fut in &crashes {
        match fut.result() {
            Err(Error::TerminatedWorker(t)) => {
                assert_eq!(t.task(), Some("segfault"), "{t}");
                assert_eq!(t.signal(), Some(libc::SIGSEGV), "{t}");
                assert!(t.to_string().contains("`segfault`"), "{t}");
                dead_pids.push(t.pid());
            }
            other => panic!("a segfault gave {other:?}"),
        }
    }
    dead_pids.sort_unstable();
    dead_pids.dedup();
    assert_eq!(dead_pids.len(), 50, "each crash killed its own worker");

    assert!(!ex.is_broken());
    assert!(
        common::eventually(Duration::from_secs(10), || {
            let pids = ex.worker_pids();
            pids.len() == 2 && pids.iter().all(|&pid| common::alive(pid))
        }),
        "back to 2 live workers, have {:?}",
        ex.worker_pids()
    );
    assert!(dead_pids.iter().all(|pid| !ex.worker_pids().contains(pid)));
    assert_eq!(ex.submit(ECHO_I64, 42).unwrap().result().unwrap(), 42);
    ex.shutdown(true);
    assert!(common::zombies().is_empty(), "{:?}", common::zombies());
}
