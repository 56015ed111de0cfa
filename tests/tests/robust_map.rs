//! A robust `map`: under `CrashPolicy::Respawn` an item whose worker dies
//! fails alone, a deadline bounds each item and never a chunk, and under
//! `BreakPool` the error names the item that was running.

mod common;

use std::time::Duration;

use loky::{CrashPolicy, Error};
use loky_tests::map_tasks::{BEHAVE, Behave, PROBLEMATIC};

fn respawning(workers: usize) -> loky::ExecutorBuilder {
    common::builder(workers).on_worker_crash(CrashPolicy::Respawn)
}

#[test]
fn an_item_that_exits_fails_alone_and_its_chunk_neighbours_succeed() {
    an_item_that_exits_fails_alone(respawning(2));
}

/// The same with every chunk's body in a memory file (a threshold of 16
/// bytes): its items are read back from it to run again one by one.
#[test]
fn an_item_of_a_chunk_sent_in_shared_memory_fails_alone() {
    an_item_that_exits_fails_alone(respawning(2).shm_threshold(16));
}

fn an_item_that_exits_fails_alone(builder: loky::ExecutorBuilder) {
    let ex = builder.build().unwrap();
    let results: Vec<_> = ex.map(PROBLEMATIC, 0..20).chunksize(5).collect();
    assert_eq!(results.len(), 20);
    for (i, result) in results.iter().enumerate() {
        match result {
            Ok(value) => assert_eq!(*value, i as u64 * 2, "item {i}"),
            Err(Error::TerminatedWorker(dead)) if i == 3 => {
                assert_eq!(dead.exit_code(), Some(1));
                assert_eq!(dead.map_inputs(), Some(3..4), "{dead}");
                assert!(dead.to_string().contains("on input 3 of the map"), "{dead}");
            }
            Err(err) => panic!("item {i} failed: {err}"),
        }
    }
    assert!(!ex.is_broken());
}

/// Ten items of 300 ms in chunks of 5 (1.5 s a chunk) with an 800 ms
/// deadline: a chunk never fails for its length; item 7 hangs and fails
/// alone.
#[test]
fn a_deadline_bounds_each_item_never_its_chunk() {
    let ex = respawning(2)
        .task_timeout(Duration::from_millis(800))
        .build()
        .unwrap();
    let items = (0..10u64).map(|i| {
        if i == 7 {
            Behave::Hang
        } else {
            Behave::SleepThen(Duration::from_millis(300), i)
        }
    });
    let results: Vec<_> = ex.map(BEHAVE, items).chunksize(5).collect();
    for (i, result) in results.iter().enumerate() {
        match result {
            Ok(value) => assert_eq!(*value, i as u64),
            Err(Error::DeadlineExceeded(late)) if i == 7 => {
                assert_eq!(late.timeout(), Duration::from_millis(800));
            }
            Err(err) => panic!("item {i} failed: {err}"),
        }
    }
    assert_eq!(results.len(), 10);
}

/// The same with the per-item option of `map`, and `map_unordered`.
#[test]
fn a_per_item_timeout_of_map_unordered_fails_only_the_hanging_item() {
    let ex = respawning(2).build().unwrap();
    let items = (0..8u64).map(|i| match i {
        2 => Behave::Hang,
        5 => Behave::Exit(4),
        _ => Behave::SleepThen(Duration::from_millis(50), i),
    });
    let options = loky::CallOptions::new().timeout(Duration::from_millis(500));
    let mut failed: Vec<(usize, String)> = Vec::new();
    let mut seen = 0;
    for (i, result) in ex
        .map_unordered(BEHAVE, items)
        .chunksize(4)
        .options(options)
    {
        seen += 1;
        match result {
            Ok(value) => assert_eq!(value, i as u64),
            Err(Error::DeadlineExceeded(_)) => failed.push((i, "deadline".into())),
            Err(Error::TerminatedWorker(_)) => failed.push((i, "crash".into())),
            Err(err) => panic!("item {i}: {err}"),
        }
    }
    failed.sort();
    assert_eq!(seen, 8);
    assert_eq!(
        failed,
        [(2, "deadline".to_owned()), (5, "crash".to_owned())]
    );
}

/// Under `BreakPool` the pool breaks as in loky, and the error says which
/// item was running: the first one its worker had not reported done.
#[test]
fn under_break_pool_the_error_names_the_item_that_was_running() {
    let ex = common::pool(1);
    let items = (0..4u64).map(|i| match i {
        3 => Behave::Exit(1),
        _ => Behave::SleepThen(Duration::from_millis(20), i),
    });
    let results: Vec<_> = ex.map(BEHAVE, items).chunksize(4).collect();
    assert!(ex.is_broken());
    assert_eq!(results.len(), 4);
    for result in &results {
        match result {
            Err(Error::TerminatedWorker(dead)) => {
                assert_eq!(dead.map_inputs(), Some(3..4), "{dead}");
                assert!(dead.to_string().contains("on input 3 of the map"), "{dead}");
            }
            other => panic!("{other:?}"),
        }
    }
    // Fast items are not reported one by one: then the error names the
    // inputs among which the running one was.
    let ex = common::pool(1);
    let results: Vec<_> = ex.map(PROBLEMATIC, 0..6).chunksize(6).collect();
    match &results[0] {
        Err(Error::TerminatedWorker(dead)) => {
            let inputs = dead.map_inputs().unwrap();
            assert!(inputs.contains(&3) && inputs.end == 6, "{dead}");
        }
        other => panic!("{other:?}"),
    }
}
