//! A `Serialize` or `Deserialize` that panics in the parent is an error of
//! the call it belongs to, as in the worker: it never unwinds out of
//! `submit`, `map`, `result` or a `Map`'s `next`, and the pool goes on.

mod common;

use loky::Error;
use loky::diagnostics::ECHO_I64;
use loky_tests::map_tasks::{DECODE_PANICS, DecodePanics, ENCODE_PANICS, EncodePanics};

fn is_panic_error(err: &Error) -> bool {
    matches!(err, Error::Serialization(e) if e.message().contains("panicked"))
}

#[test]
fn a_panicking_serialize_fails_its_submit_and_the_pool_goes_on() {
    let ex = common::pool(1);
    let err = ex.submit(ENCODE_PANICS, EncodePanics(1)).unwrap_err();
    assert!(is_panic_error(&err), "{err:?}");
    assert!(
        err.to_string().contains("EncodePanics refuses odd 1"),
        "{err}"
    );
    assert_eq!(common::run(&ex, ENCODE_PANICS, EncodePanics(2)).unwrap(), 2);
    assert!(!ex.is_broken());
}

#[test]
fn a_panicking_serialize_fails_its_map_item_alone() {
    let ex = common::pool(2);
    let inputs = (0..6).map(EncodePanics);
    let results: Vec<_> = ex.map(ENCODE_PANICS, inputs).chunksize(3).collect();
    assert_eq!(results.len(), 6);
    for (i, result) in results.iter().enumerate() {
        match result {
            Ok(n) => assert_eq!((*n, i % 2), (i as u64, 0)),
            Err(err) => assert!(i % 2 == 1 && is_panic_error(err), "{i}: {err:?}"),
        }
    }
    let unordered: Vec<_> = ex
        .map_unordered(ENCODE_PANICS, (0..4).map(EncodePanics))
        .collect();
    let failed = unordered.iter().filter(|(_, r)| r.is_err()).count();
    assert_eq!((unordered.len(), failed), (4, 2));
}

#[test]
fn a_panicking_deserialize_fails_its_result_and_the_pool_goes_on() {
    let ex = common::pool(1);
    let fut = ex.submit(DECODE_PANICS, 3).unwrap();
    let err = fut.result().unwrap_err();
    assert!(is_panic_error(&err), "{err:?}");
    assert!(
        err.to_string().contains("DecodePanics refuses odd 3"),
        "{err}"
    );
    assert!(is_panic_error(&fut.result().unwrap_err()), "the same again");
    assert_eq!(common::run(&ex, DECODE_PANICS, 4).unwrap(), DecodePanics(4));
    assert_eq!(common::run(&ex, ECHO_I64, 5).unwrap(), 5);
}

#[test]
fn a_panicking_deserialize_fails_its_map_item_alone() {
    let ex = common::pool(2);
    let results: Vec<_> = ex.map(DECODE_PANICS, 0..8).chunksize(4).collect();
    for (i, result) in results.iter().enumerate() {
        match result {
            Ok(DecodePanics(n)) => assert_eq!((*n, i % 2), (i as u64, 0)),
            Err(err) => assert!(i % 2 == 1 && is_panic_error(err), "{i}: {err:?}"),
        }
    }
    assert_eq!(results.len(), 8);
    assert!(!ex.is_broken());
}
