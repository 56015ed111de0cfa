//! `map` when a worker dies, when a shutdown kills the workers and when a
//! deadline hits an item of a chunk: under `CrashPolicy::Respawn` only the
//! item that crashes or passes its deadline fails (the others of its chunk
//! run again one by one), and `task_timeout` bounds each item, not a chunk.

mod common;

use std::time::Duration;

use common::{MapExt, RESULT_TIMEOUT};
use loky::diagnostics::SLEEP;
use loky::{CrashPolicy, Error, Shutdown};
use loky_tests::ECHO_OR_EXIT;

/// The exit code of the item that kills its worker.
const CODE: i32 = 7;

/// Sixteen items in chunks of four; item 9 (in the third chunk) kills its
/// worker with [`CODE`].
fn inputs() -> Vec<(i64, Option<i32>)> {
    (0..16).map(|x| (x, (x == 9).then_some(CODE))).collect()
}

const CHUNK: usize = 4;

/// `result` is the `TerminatedWorker` of the item that exited with [`CODE`].
fn assert_exit_of_the_crashing_item(item: usize, result: &loky::Result<i64>) {
    match result {
        Err(Error::TerminatedWorker(t)) => {
            assert_eq!(t.exit_code(), Some(CODE), "item {item}: {t}");
            assert_eq!(t.task(), Some(ECHO_OR_EXIT.name()), "item {item}: {t}");
        }
        other => panic!("item {item}: expected the crash's TerminatedWorker, got {other:?}"),
    }
}

/// Catches a map that loses or reorders items around a crash, reports
/// another error than the crash's, or fails items of chunks that finished
/// before it. One worker runs the chunks in order: the two before the
/// crashing one finished.
#[test]
fn under_break_pool_a_crash_fails_its_chunk_and_every_later_item() {
    let ex = common::pool(1);
    let results = ex
        .map(ECHO_OR_EXIT, inputs())
        .chunksize(CHUNK)
        .collect_bounded();
    assert_eq!(results.len(), 16);
    for (item, result) in results.iter().enumerate() {
        if item < 2 * CHUNK {
            assert_eq!(result.as_ref().ok(), Some(&(item as i64)), "item {item}");
        } else {
            assert_exit_of_the_crashing_item(item, result);
        }
    }
    assert!(ex.is_broken());
}

/// Catches a map whose other items fail with the dead worker's error (the
/// crashing item's chunk-mates included), or that stops after the crash.
#[test]
fn under_respawn_a_crash_fails_its_item_alone_and_the_map_goes_on() {
    let ex = common::builder(1)
        .on_worker_crash(CrashPolicy::Respawn)
        .build()
        .unwrap();
    let results = ex
        .map(ECHO_OR_EXIT, inputs())
        .chunksize(CHUNK)
        .collect_bounded();
    assert_eq!(results.len(), 16);
    for (item, result) in results.iter().enumerate() {
        if item == 9 {
            assert_exit_of_the_crashing_item(item, result);
        } else {
            assert_eq!(result.as_ref().ok(), Some(&(item as i64)), "item {item}");
        }
    }
    assert!(!ex.is_broken());
}

/// Catches a map whose items are lost or left hanging when a shutdown
/// kills the workers, and one that fails items already yielded: the two
/// quick items are consumed first, the others run or wait a minute.
#[test]
fn a_shutdown_that_kills_the_workers_fails_every_item_left() {
    let ex = common::pool(2);
    let naps = [0, 0, 60, 60, 60, 60].map(Duration::from_secs);
    let mut map = ex.map(SLEEP, naps).timeout(RESULT_TIMEOUT);
    for item in 0..2 {
        assert!(matches!(map.next(), Some(Ok(()))), "item {item}");
    }
    ex.shutdown_with(Shutdown {
        wait: true,
        kill_workers: true,
        cancel_futures: false,
    });
    let rest = map.collect_bounded();
    assert_eq!(rest.len(), 4, "{rest:?}");
    for (item, result) in (2..).zip(&rest) {
        match result {
            Err(Error::ShutdownExecutor(e)) => assert!(e.workers_killed(), "item {item}: {e}"),
            other => panic!("item {item}: expected ShutdownExecutor, got {other:?}"),
        }
    }
}

/// Catches a deadline that bounds a whole chunk (the second chunk, four
/// 1 s naps, takes 4 s against a 2 s deadline although each item is well
/// under it), one that fails the hanging item's chunk-mates, and one that
/// breaks the pool: only item 10, a minute's nap, fails.
#[test]
fn a_deadline_fails_the_item_it_hits_and_the_map_goes_on() {
    let ex = common::builder(2)
        .task_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let naps: Vec<Duration> = [1, 1, 1, 1, 1000, 1000, 1000, 1000, 1, 1, 60_000, 1]
        .into_iter()
        .map(Duration::from_millis)
        .collect();
    let results = ex.map(SLEEP, naps).chunksize(CHUNK).collect_bounded();
    assert_eq!(results.len(), 12);
    for (item, result) in results.iter().enumerate() {
        if item == 10 {
            match result {
                Err(Error::DeadlineExceeded(d)) => {
                    assert_eq!(d.timeout(), Duration::from_secs(2), "item {item}: {d}");
                }
                other => panic!("item {item}: expected DeadlineExceeded, got {other:?}"),
            }
        } else {
            assert!(result.is_ok(), "item {item}: {result:?}");
        }
    }
    assert!(!ex.is_broken());
}
