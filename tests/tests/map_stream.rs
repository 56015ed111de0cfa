//! `map` as a stream, `map_unordered` (iterator and stream), `buffersize`
//! and the progress counters, against real workers.
//!
//! Which item is slow is decided by a gate the test holds, never by
//! timing.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use loky::Error;
use loky::diagnostics::{ECHO_I64, SQUARE};
use loky_tests::Gate;
use loky_tests::map_tasks::HELD_OR_ECHO;

/// Generous: for things that must happen.
const LONG: Duration = Duration::from_secs(30);

/// Runs `body` on a thread of its own; fails the test past [`LONG`].
fn within<T: Send + 'static>(what: &str, body: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(body());
    });
    rx.recv_timeout(LONG)
        .unwrap_or_else(|_| panic!("{what} did not finish within {LONG:?}"))
}

#[test]
fn a_map_stream_keeps_input_order() {
    let ex = common::pool(2);
    let mut stream = ex.map(SQUARE, (0..300).rev()).chunksize(7).into_stream();
    let squares = within("the stream", move || {
        futures_executor::block_on(async move {
            let mut out = Vec::new();
            while let Some(square) = stream.next().await {
                out.push(square.unwrap());
            }
            out
        })
    });
    assert_eq!(squares, (0..300).rev().map(|x| x * x).collect::<Vec<_>>());
}

/// Item 0 is held at a gate: every other index arrives first, each once;
/// then the gate opens and item 0 arrives.
#[test]
fn map_unordered_yields_every_index_once_faster_items_first() {
    let ex = common::pool(2);
    let gate = Gate::new();
    let inputs: Vec<(Option<String>, u64)> = (0..30)
        .map(|i| (if i == 0 { Some(gate.arg()) } else { None }, i * 10))
        .collect();
    let mut map = ex.map_unordered(HELD_OR_ECHO, inputs);
    let mut seen = HashSet::new();
    for _ in 1..30 {
        let (i, value) = map.next().expect("29 items before the held one");
        assert_ne!(i, 0, "the held item cannot be done");
        assert_eq!(value.unwrap(), i as u64 * 10);
        assert!(seen.insert(i), "index {i} twice");
    }
    gate.entered(LONG).release();
    let (i, value) = map.next().unwrap();
    assert_eq!((i, value.unwrap()), (0, 0));
    assert!(map.next().is_none());
    assert_eq!(map.done(), 30);
    assert_eq!(map.in_flight(), 0);
}

/// The same as a stream, with chunks: the items of the held chunk come
/// last, together, in input order.
#[test]
fn map_unordered_stream_yields_the_held_chunk_last() {
    let ex = common::pool(2);
    let gate = Gate::new();
    let inputs: Vec<(Option<String>, u64)> = (0..40)
        .map(|i| (if i == 2 { Some(gate.arg()) } else { None }, i))
        .collect();
    let mut stream = ex
        .map_unordered(HELD_OR_ECHO, inputs)
        .chunksize(4)
        .into_stream();
    let (held_tx, held_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = held_tx.send(gate.entered(LONG));
    });
    let order = within("the stream", move || {
        futures_executor::block_on(async move {
            let mut order = Vec::new();
            while let Some((i, value)) = stream.next().await {
                assert_eq!(value.unwrap(), i as u64);
                order.push(i);
                if order.len() == 36 {
                    held_rx.recv_timeout(LONG).unwrap().release();
                }
            }
            order
        })
    });
    assert_eq!(order.len(), 40);
    assert_eq!(order[36..], [0, 1, 2, 3], "{order:?}");
    assert_eq!(order.iter().copied().collect::<HashSet<_>>().len(), 40);
}

/// Item 3 is held (at a gate never opened) past the timeout.
#[test]
fn both_maps_stop_at_their_timeout_as_iterators_and_as_streams() {
    let ex = common::pool(2);
    // Started workers: the timeout is not spent starting them.
    assert_eq!(ex.map(ECHO_I64, 0..4).count(), 4);
    let inputs = |gate: &Gate| -> Vec<(Option<String>, u64)> {
        (0..6)
            .map(|i| (if i == 3 { Some(gate.arg()) } else { None }, i))
            .collect()
    };
    let timeout = Duration::from_millis(500);

    let gate = Gate::new();
    let results: Vec<_> = ex
        .map(HELD_OR_ECHO, inputs(&gate))
        .timeout(timeout)
        .collect();
    check_ordered(&results);
    drop(gate); // The held item ends (its gate is gone).

    let gate = Gate::new();
    let pairs: Vec<_> = ex
        .map_unordered(HELD_OR_ECHO, inputs(&gate))
        .timeout(timeout)
        .collect();
    check_unordered(&pairs);
    drop(gate);

    let (first, second) = (Gate::new(), Gate::new());
    let mut stream = ex
        .map(HELD_OR_ECHO, inputs(&first))
        .timeout(timeout)
        .into_stream();
    let mut unordered = ex
        .map_unordered(HELD_OR_ECHO, inputs(&second))
        .timeout(timeout)
        .into_stream();
    let (results, pairs) = within("the streams", move || {
        futures_executor::block_on(async move {
            let mut results = Vec::new();
            while let Some(result) = stream.next().await {
                results.push(result);
            }
            let mut pairs = Vec::new();
            while let Some(pair) = unordered.next().await {
                pairs.push(pair);
            }
            (results, pairs)
        })
    });
    check_ordered(&results);
    check_unordered(&pairs);
}

/// Values in order up to the held item at most, then one `Timeout`.
fn check_ordered(results: &[loky::Result<u64>]) {
    let (last, before) = results.split_last().expect("at least the timeout");
    assert!(matches!(last, Err(Error::Timeout)), "{results:?}");
    assert!(before.len() <= 3, "{results:?}");
    for (i, result) in before.iter().enumerate() {
        assert_eq!(*result.as_ref().unwrap(), i as u64);
    }
}

/// Pairs without the held item, then one `Timeout` naming the first input
/// without a result.
fn check_unordered(pairs: &[(usize, loky::Result<u64>)]) {
    let ((index, last), before) = pairs.split_last().expect("at least the timeout");
    assert!(matches!(last, Err(Error::Timeout)), "{pairs:?}");
    let yielded: HashSet<usize> = before.iter().map(|(i, _)| *i).collect();
    assert_eq!(yielded.len(), before.len(), "{pairs:?}");
    assert!(!yielded.contains(&3), "{pairs:?}");
    let first_missing = (0..).find(|i| !yielded.contains(i)).unwrap();
    assert_eq!(*index, first_missing, "{pairs:?}");
    for (i, value) in before {
        assert_eq!(*value.as_ref().unwrap(), *i as u64);
    }
}

/// An endless input with a buffer size: 100 000 results, while never more
/// than 4 chunks are in flight and the input is never read more than 4
/// chunks ahead of the results consumed.
#[test]
fn an_endless_map_with_a_buffer_size_keeps_a_bounded_number_of_chunks_in_flight() {
    const CHUNK: usize = 25;
    const BUFFER: usize = 4;
    let ex = common::pool(2);
    let taken = Arc::new(AtomicUsize::new(0));
    let counter = taken.clone();
    let inputs = (0i64..).inspect(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
    });
    let mut map = ex.map(ECHO_I64, inputs).chunksize(CHUNK).buffersize(BUFFER);
    let mut most_in_flight = 0;
    for i in 0..100_000i64 {
        assert_eq!(map.next().unwrap().unwrap(), i);
        let yielded = (i + 1) as usize;
        let in_flight = map.in_flight();
        most_in_flight = most_in_flight.max(in_flight);
        assert!(in_flight <= BUFFER * CHUNK, "{in_flight} items in flight");
        let ahead = taken.load(Ordering::Relaxed) - yielded;
        assert!(ahead <= (BUFFER + 1) * CHUNK, "{ahead} inputs taken ahead");
        assert!(map.done() >= yielded);
    }
    assert!(most_in_flight > 0);
    drop(map);

    // The same for map_unordered.
    let taken = Arc::new(AtomicUsize::new(0));
    let counter = taken.clone();
    let inputs = (0i64..).inspect(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
    });
    let mut map = ex
        .map_unordered(ECHO_I64, inputs)
        .chunksize(CHUNK)
        .buffersize(BUFFER);
    for yielded in 1..=20_000usize {
        let (i, value) = map.next().unwrap();
        assert_eq!(value.unwrap(), i as i64);
        assert!(map.in_flight() <= BUFFER * CHUNK);
        assert!(taken.load(Ordering::Relaxed) - yielded <= (BUFFER + 1) * CHUNK);
    }
}

#[test]
fn a_zero_buffer_size_is_an_invalid_argument() {
    let ex = common::pool(1);
    let mut map = ex.map(ECHO_I64, 0..3).buffersize(0);
    assert!(matches!(map.next(), Some(Err(Error::InvalidArgument(_)))));
    assert!(map.next().is_none());
    let mut map = ex.map_unordered(ECHO_I64, 0..3).chunksize(0);
    assert!(matches!(
        map.next(),
        Some((_, Err(Error::InvalidArgument(_))))
    ));
    assert!(map.next().is_none());
}

/// `done` counts results that arrived, yielded or not; `in_flight` what
/// was sent and has no result.
#[test]
fn the_counters_follow_a_map() {
    let ex = common::pool(2);
    let gate = Gate::new();
    let inputs = |gate: &Gate| -> Vec<(Option<String>, u64)> {
        (0..10)
            .map(|i| (if i == 0 { Some(gate.arg()) } else { None }, i))
            .collect()
    };
    let mut map = ex.map_unordered(HELD_OR_ECHO, inputs(&gate)).chunksize(5);
    assert_eq!(
        (map.done(), map.in_flight()),
        (0, 0),
        "nothing before next()"
    );
    let second_chunk: Vec<usize> = map.by_ref().take(5).map(|(i, _)| i).collect();
    assert_eq!(second_chunk, [5, 6, 7, 8, 9]);
    assert_eq!(
        (map.done(), map.in_flight()),
        (5, 5),
        "the held chunk is in flight"
    );
    gate.entered(LONG).release();
    assert_eq!(map.by_ref().count(), 5);
    assert_eq!((map.done(), map.in_flight()), (10, 0));

    let mut map = ex.map(HELD_OR_ECHO, inputs(&gate)).chunksize(5);
    let collector = std::thread::spawn(move || {
        let first = map.next();
        (first, map)
    });
    gate.entered(LONG).release();
    let (first, mut map) = collector.join().unwrap();
    assert_eq!(first.unwrap().unwrap(), 0);
    assert!(map.done() >= 5);
    let rest: Vec<u64> = map.by_ref().map(Result::unwrap).collect();
    assert_eq!(rest, (1..10).collect::<Vec<_>>());
    assert_eq!((map.done(), map.in_flight()), (10, 0));
}
