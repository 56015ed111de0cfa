//! `ProcessPoolExecutor::map`: order, chunks, timeout, errors and
//! cancellation (LOKY-BEHAVIOUR.md, "map").

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{FutureExt, MapExt};
use loky::Error;
use loky::diagnostics::{ECHO_I64, PID, SLEEP, SQUARE};
use loky_tests::{FLAKY, GATE, Gate};

/// Generous: for things that must happen.
const LONG: Duration = common::RESULT_TIMEOUT;

#[test]
fn results_come_in_input_order() {
    let ex = common::pool(2);
    let squares: Vec<i64> = ex
        .map(SQUARE, (0..300).rev())
        .chunksize(7)
        .collect_bounded()
        .into_iter()
        .collect::<loky::Result<_>>()
        .unwrap();
    assert_eq!(squares, (0..300).rev().map(|x| x * x).collect::<Vec<_>>());

    // The second item (a gate that does not exist: the task panics) is
    // done before the first one is released; the results keep input order.
    // A fresh pool, whose workers take one call at a time.
    let ex = common::pool(2);
    let (first, probe_gate) = (Gate::new(), Gate::new());
    let map = ex.map(GATE, [first.arg(), "/nonexistent/gate.sock".to_owned()]);
    let collector = std::thread::spawn(move || map.collect_bounded());
    let held_first = first.entered(LONG);
    // Only the second item's worker can take a call: its entering proves
    // that the second item is done.
    let probe = ex.submit(GATE, probe_gate.arg()).unwrap();
    let held_probe = probe_gate.entered(LONG);
    assert_ne!(held_probe.pid, held_first.pid);
    held_first.release();
    held_probe.release();
    probe.result_bounded().unwrap();
    let results = common::bounded("the collecting thread", LONG, move || collector.join())
        .expect("the collecting thread panicked");
    assert!(
        matches!(results[..], [Ok(()), Err(Error::Task(_))]),
        "{results:?}"
    );
}

/// A map sends its first chunk as soon as it is made, not after every
/// input is taken and encoded: here the iterator gives its second input
/// only once the first runs on a worker (the test would wait for that in
/// vain if the map took every input before sending any).
#[test]
fn a_worker_starts_on_the_first_chunk_while_the_next_inputs_are_taken() {
    let ex = common::pool(1);
    let gate = Gate::new();
    let first = gate.arg();
    let mut asked = 0;
    let inputs = std::iter::from_fn(move || {
        asked += 1;
        match asked {
            1 => Some(first.clone()),
            2 => {
                gate.entered(LONG).release();
                Some("/nonexistent/gate.sock".to_owned())
            }
            _ => None,
        }
    });
    let results = ex.map(GATE, inputs).collect_bounded();
    assert!(
        matches!(results[..], [Ok(()), Err(Error::Task(_))]),
        "{results:?}"
    );
}

/// A pool shut down while a map takes its inputs: the chunk sent before
/// the shutdown runs, the batch the pool refuses after it fails with the
/// shutdown's error, and no input is taken past that batch.
#[test]
fn a_map_whose_pool_shuts_down_while_it_takes_inputs_stops_at_the_refused_batch() {
    let ex = common::pool(1);
    let pool = ex.clone();
    let taken = Arc::new(AtomicUsize::new(0));
    let counter = taken.clone();
    let inputs = (0..100i64).inspect(move |&i| {
        counter.fetch_add(1, Ordering::SeqCst);
        if i == 1 {
            // The first chunk (input 0) was sent alone already; the next
            // batch (inputs 1 and 2) meets a closed pool.
            pool.shutdown(false);
        }
    });
    let results = ex.map(ECHO_I64, inputs).collect_bounded();
    assert_eq!(taken.load(Ordering::SeqCst), 3, "{results:?}");
    assert!(
        matches!(
            results[..],
            [
                Ok(0),
                Err(Error::ShutdownExecutor(_)),
                Err(Error::ShutdownExecutor(_))
            ]
        ),
        "{results:?}"
    );
}

/// With `max_tasks_per_child(1)` every worker runs a single call and
/// leaves: the items of a chunk all ran on one worker, and every chunk on a
/// worker of its own, only if each chunk was one call (items sent one by
/// one would each run on a worker of their own).
#[test]
fn a_chunk_of_chunksize_items_travels_as_one_call() {
    let ex = common::builder(1).max_tasks_per_child(1).build().unwrap();
    let pids: Vec<u32> = ex
        .map(PID, vec![(); 60])
        .chunksize(16)
        .collect_bounded()
        .into_iter()
        .collect::<loky::Result<_>>()
        .unwrap();
    assert_eq!(pids.len(), 60);
    let chunks: Vec<&[u32]> = pids.chunks(16).collect();
    for chunk in &chunks {
        assert!(chunk.iter().all(|&pid| pid == chunk[0]), "{chunk:?}");
    }
    let workers: HashSet<u32> = chunks.iter().map(|chunk| chunk[0]).collect();
    assert_eq!(
        workers.len(),
        chunks.len(),
        "one worker per chunk: {pids:?}"
    );
}

#[test]
fn chunksize_zero_is_an_invalid_argument_item() {
    let ex = common::pool(1);
    let mut map = ex.map(ECHO_I64, 0..10).chunksize(0).timeout(LONG);
    match map.next() {
        Some(Err(Error::InvalidArgument(message))) => {
            assert!(
                message.contains("chunksize must be greater than 0"),
                "{message}"
            );
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    assert!(map.next().is_none());
    assert!(ex.worker_pids().is_empty(), "nothing was submitted");
}

/// Catches a timeout counted from the first `next()`: the map's deadline
/// passes before it, so that `next()` must give `Timeout` at once, where
/// such a map would wait the whole timeout again (two seconds, far more
/// than an immediate return takes on a loaded machine).
#[test]
fn the_timeout_is_measured_from_the_map_call_and_iteration_then_ends() {
    let ex = common::pool(1);
    let gate = Gate::new();
    let held_future = ex.submit(GATE, gate.arg()).unwrap();
    let held = gate.entered(LONG);
    let timeout = Duration::from_secs(2);
    let mut map = ex.map(ECHO_I64, 0..3).timeout(timeout);
    // The map's deadline passes while waiting for something else.
    assert!(matches!(
        held_future.result_timeout(timeout + Duration::from_millis(100)),
        Err(Error::Timeout)
    ));
    let first_next = Instant::now();
    assert!(matches!(map.next(), Some(Err(Error::Timeout))));
    assert!(
        first_next.elapsed() < timeout,
        "no new {timeout:?} from the first next(): {:?}",
        first_next.elapsed()
    );
    assert!(map.next().is_none());
    drop(map);
    held.release();
    held_future.result_bounded().unwrap();
}

#[test]
fn an_error_in_one_item_is_yielded_at_its_position_and_iteration_goes_on() {
    let ex = common::pool(2);
    for chunksize in [1, 4] {
        let results = ex.map(FLAKY, 0..20).chunksize(chunksize).collect_bounded();
        assert_eq!(results.len(), 20);
        for (x, result) in (0i64..).zip(results) {
            match (x % 10, result) {
                (3, Err(Error::Task(remote))) => {
                    assert_eq!(remote.message(), format!("flaky task failed on {x}"));
                }
                (7, Ok(Err(message))) => assert_eq!(message, format!("{x} ends in 7")),
                (_, Ok(Ok(value))) => assert_eq!(value, 2 * x),
                (_, other) => panic!("chunksize {chunksize}, item {x}: {other:?}"),
            }
        }
    }
    let results = ex
        .map(SQUARE, [2, i64::MAX, 3])
        .chunksize(3)
        .collect_bounded();
    assert!(matches!(results[..], [Ok(4), Err(Error::Task(_)), Ok(9)]));
}

/// Maps 2 s sleeps over 10 items on one worker, stops the map with
/// `stop`, then checks that a new call runs soon: only a running sleep
/// delays it (2 s at most), not the 16 s or more of those that had not
/// started, which a map that cancels nothing would run first.
fn chunks_not_started_are_cancelled(stop: impl FnOnce(loky::Map<()>)) {
    let ex = common::pool(1);
    let nap = Duration::from_secs(2);
    stop(ex.map(SLEEP, vec![nap; 10]));
    let stopped = Instant::now();
    let probe = ex.submit(ECHO_I64, 1).unwrap();
    assert_eq!(probe.result_bounded().unwrap(), 1);
    assert!(
        stopped.elapsed() < nap * 5,
        "the new call waited {:?}",
        stopped.elapsed()
    );
}

#[test]
fn on_timeout_chunks_not_yet_started_are_cancelled() {
    chunks_not_started_are_cancelled(|map| {
        let mut map = map.timeout(Duration::from_millis(200));
        assert!(matches!(map.next(), Some(Err(Error::Timeout))));
        assert!(map.next().is_none());
    });
}

#[test]
fn on_drop_chunks_not_yet_started_are_cancelled() {
    chunks_not_started_are_cancelled(|map| {
        // The first next() submits every chunk and waits for the first
        // (bounded by a timeout that is never reached).
        let mut map = map.timeout(LONG);
        assert!(matches!(map.next(), Some(Ok(()))));
        drop(map);
    });
}
