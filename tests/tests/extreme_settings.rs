//! Settings at their extremes: a zero idle timeout and `Duration::MAX`
//! ("no limit") everywhere a duration is taken. Neither may spin, panic a
//! pool thread or break the pool.

mod common;
mod hang_guard;

use std::time::Duration;

use hang_guard::Guarded;
use loky::diagnostics::{SLEEP, SQUARE};
use loky::{CallOptions, Error, ReturnWhen, Shutdown};

const BOUND: Duration = Duration::from_secs(10);

#[test]
fn a_zero_idle_timeout_runs_every_call() {
    let ex = Guarded::new(
        common::builder(1)
            .idle_timeout(Duration::ZERO)
            .build()
            .unwrap(),
    );
    for i in 0..5_i64 {
        let fut = ex.submit(SQUARE, i).unwrap();
        assert_eq!(fut.result_timeout(BOUND).unwrap(), i * i);
    }
    let many: Vec<_> = (0..20_i64).map(|i| ex.submit(SQUARE, i).unwrap()).collect();
    for (i, fut) in many.iter().enumerate() {
        assert_eq!(fut.result_timeout(BOUND).unwrap(), (i * i) as i64);
    }
    assert!(common::shutdown_within(&ex, BOUND));
}

#[test]
fn duration_max_means_no_limit_everywhere() {
    let ex = Guarded::new(
        common::builder(1)
            .start_timeout(Duration::MAX)
            .task_timeout(Duration::MAX)
            .idle_timeout(Duration::MAX)
            .kill_grace_period(Duration::MAX)
            .build()
            .unwrap(),
    );
    assert_eq!(
        ex.submit(SQUARE, 3).unwrap().result_timeout(BOUND).unwrap(),
        9
    );
    let options = CallOptions::new().timeout(Duration::MAX);
    let fut = ex.submit_with(SQUARE, 4, options).unwrap();
    assert_eq!(fut.result_timeout(Duration::MAX).unwrap(), 16);
    let squares: Vec<i64> = ex
        .map(SQUARE, 0..10)
        .timeout(Duration::MAX)
        .collect::<loky::Result<_>>()
        .unwrap();
    assert_eq!(squares[9], 81);
    let done = loky::wait(&[fut], Some(Duration::MAX), ReturnWhen::AllCompleted);
    assert_eq!(done.done.len(), 1);
    // An unbounded grace period: the polite signal alone stops the task.
    let sleeping = ex.submit(SLEEP, Duration::from_secs(60)).unwrap();
    assert!(common::eventually(BOUND, || sleeping.running()));
    assert!(sleeping.kill());
    let killed = sleeping.result_timeout(BOUND);
    assert!(matches!(killed, Err(Error::Cancelled)), "{killed:?}");
    assert!(!ex.is_broken());
    assert_eq!(
        ex.submit(SQUARE, 5).unwrap().result_timeout(BOUND).unwrap(),
        25
    );
    let busy = ex.submit(SLEEP, Duration::from_secs(60)).unwrap();
    assert!(common::eventually(BOUND, || busy.running()));
    let (done_tx, done) = std::sync::mpsc::channel();
    let killer = (*ex).clone();
    std::thread::spawn(move || {
        killer.shutdown_with(Shutdown {
            wait: true,
            kill_workers: true,
            cancel_futures: false,
        });
        let _ = done_tx.send(());
    });
    assert!(
        done.recv_timeout(BOUND).is_ok(),
        "shutdown with kill_workers hung"
    );
    assert!(matches!(
        busy.result_timeout(BOUND),
        Err(Error::ShutdownExecutor(_))
    ));
}
