//! `ExecutorBuilder::wait_spin`: a thread waiting for the result of a call
//! expected soon checks for it before it sleeps. Whatever the setting, the
//! waiter gets the same results, timeouts and errors as one that sleeps at
//! once.

mod common;

use std::time::{Duration, Instant};

use common::FutureExt;
use loky::Error;
use loky::diagnostics::{ECHO_I64, SLEEP};

#[test]
fn sequential_short_calls_answer_alike_whether_their_waiter_checks_or_sleeps() {
    for spin in [
        Duration::ZERO,
        Duration::from_micros(100),
        Duration::from_secs(1),
    ] {
        let ex = common::builder(1).wait_spin(spin).build().unwrap();
        for i in 0..300 {
            let future = ex.submit(ECHO_I64, i).unwrap();
            assert_eq!(future.result_bounded().unwrap(), i, "wait_spin {spin:?}");
        }
    }
}

#[test]
fn a_waiter_checking_for_a_long_call_still_stops_at_its_timeout() {
    let ex = common::builder(1)
        .wait_spin(Duration::from_secs(60))
        .build()
        .unwrap();
    // Short sleeps first: the pool then expects a sleep to answer soon.
    for _ in 0..20 {
        ex.submit(SLEEP, Duration::from_micros(1))
            .unwrap()
            .result_bounded()
            .unwrap();
    }
    let long = ex.submit(SLEEP, Duration::from_secs(3600)).unwrap();
    let start = Instant::now();
    let waited = long.result_timeout(Duration::from_millis(50));
    assert!(matches!(waited, Err(Error::Timeout)), "{waited:?}");
    // Not a measure of speed: only that the 60 s check was cut short.
    assert!(start.elapsed() < Duration::from_secs(30));
    // The call goes on until killed; its waiter then hears of it.
    assert!(long.kill());
    assert!(long.result_bounded().is_err());
    assert_eq!(ex.submit(ECHO_I64, 7).unwrap().result_bounded().unwrap(), 7);
}
