//! A done callback may ask for the reusable executor while another thread
//! replaces it: the replacement waits for the old pool's tasks without
//! holding the process-wide registry, so the callback is never blocked
//! behind the very wait its task is part of.
//!
//! Its own test binary: the reusable executor is process-wide.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use loky::ExecutorBuilder;
use loky_tests::{GATE, Gate};

/// Long enough for a loaded machine; a deadlock never ends.
const BOUND: Duration = Duration::from_secs(30);

fn settings(tag: &str) -> ExecutorBuilder {
    common::builder(1)
        .idle_timeout(Duration::from_secs(120))
        .env("LOKY_TEST_SETTINGS", tag)
}

#[test]
fn a_done_callback_gets_the_reusable_executor_while_another_thread_replaces_it() {
    let ex = settings("a").get_reusable().unwrap();
    let gate = Gate::new();
    let fut = ex.submit(GATE, gate.arg()).unwrap();
    let held = gate.entered(BOUND);

    let (from_callback, callback_result) = mpsc::channel();
    fut.add_done_callback(move |_| {
        // The natural way to submit follow-up work from a callback.
        let got = settings("a").get_reusable().map(|ex| ex.max_workers());
        let _ = from_callback.send(got);
    });

    // Another thread replaces the pool (other settings): it shuts the old
    // one down, waiting for the task held at the gate.
    let (replaced_tx, replaced) = mpsc::channel();
    std::thread::spawn(move || {
        let new = settings("b").get_reusable();
        let _ = replaced_tx.send(new.map(|ex| ex.max_workers()));
    });
    assert!(
        common::eventually(BOUND, || ex.is_shutdown()),
        "the other thread never started replacing the pool"
    );

    // The task finishes; its callback asks for the reusable executor while
    // the replacing thread still waits for the old pool.
    held.release();
    let got = callback_result
        .recv_timeout(BOUND)
        .expect("the done callback is stuck in get_reusable(): deadlock");
    assert_eq!(got.unwrap(), 1);
    let new = replaced
        .recv_timeout(BOUND)
        .expect("the replacing thread is stuck: deadlock");
    assert_eq!(new.unwrap(), 1);
    assert!(fut.result_timeout(BOUND).is_ok());
}
