//! Serialization failures on either side fail one call and leave the pool
//! and its workers usable (LOKY-BEHAVIOUR.md, "Serialization").

mod common;

use common::FutureExt;
use loky::diagnostics::{ECHO_I64, PANIC, PID};
use loky::{Error, Task};
use loky_tests::{FLAKY, PICKY, PICKY_ARG, Picky, PickyArg, UNENCODABLE_OUTPUT};
use serde::{Deserialize, Serialize, Serializer};

/// An argument whose `Serialize` fails in the parent.
#[derive(Debug, Deserialize)]
struct Refuses;

impl Serialize for Refuses {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("Refuses will not be encoded"))
    }
}

const TAKES_REFUSES: Task<Refuses, ()> = Task::new("takes_refuses");

#[test]
fn arguments_that_fail_to_encode_fail_that_submit_and_the_pool_stays_usable() {
    let ex = common::pool(1);
    let before = ex.submit(ECHO_I64, 1).unwrap();
    match ex.submit(TAKES_REFUSES, Refuses) {
        Err(Error::Serialization(e)) => {
            assert_eq!(e.task(), "takes_refuses");
            assert!(e.message().contains("Refuses will not be encoded"), "{e}");
        }
        other => panic!("expected a serialization error, got {other:?}"),
    }
    assert_eq!(before.result_bounded().unwrap(), 1);
    assert_eq!(common::run(&ex, ECHO_I64, 2).unwrap(), 2);
    assert!(!ex.is_broken());
}

#[test]
fn a_result_the_parent_cannot_decode_fails_that_future_alone() {
    let ex = common::pool(2);
    let futures: Vec<_> = (0..6).map(|n| ex.submit(PICKY, n).unwrap()).collect();
    for (n, fut) in (0u64..).zip(&futures) {
        match fut.result_bounded() {
            Ok(value) if n % 2 == 0 => assert_eq!(value, Picky(n)),
            Err(Error::Serialization(e)) if n % 2 == 1 => {
                assert_eq!(e.task(), PICKY.name());
                assert!(e.message().contains(&format!("{n} is odd")), "{e}");
            }
            other => panic!("item {n}: unexpected {other:?}"),
        }
    }
    assert!(!ex.is_broken());
    assert_eq!(common::run(&ex, ECHO_I64, 3).unwrap(), 3);
    assert_eq!(ex.worker_pids().len(), 2);
}

#[test]
fn a_worker_that_cannot_decode_the_arguments_replies_with_an_error_and_stays_alive() {
    let ex = common::pool(1);
    let pid = common::run(&ex, PID, ()).unwrap();
    match common::run(&ex, PICKY_ARG, PickyArg(3)) {
        Err(Error::Serialization(e)) => {
            assert_eq!(e.task(), PICKY_ARG.name());
            assert!(e.message().contains("argument 3 is odd"), "{e}");
        }
        other => panic!("expected a serialization error, got {other:?}"),
    }
    assert_eq!(common::run(&ex, PICKY_ARG, PickyArg(4)).unwrap(), 4);
    assert_eq!(common::run(&ex, PID, ()).unwrap(), pid);
    assert!(!ex.is_broken());
}

#[test]
fn an_output_that_cannot_be_encoded_fails_with_serialization_and_the_worker_lives() {
    let ex = common::pool(1);
    let pid = common::run(&ex, PID, ()).unwrap();
    match common::run(&ex, UNENCODABLE_OUTPUT, ()) {
        Err(Error::Serialization(e)) => {
            assert_eq!(e.task(), UNENCODABLE_OUTPUT.name());
            assert!(
                e.message().contains("Unencodable refuses to be encoded"),
                "{e}"
            );
        }
        other => panic!("expected a serialization error, got {other:?}"),
    }
    assert_eq!(common::run(&ex, PID, ()).unwrap(), pid);
    assert!(!ex.is_broken());
}

#[test]
fn panics_travel_as_text() {
    let ex = common::pool(1);
    let pid = common::run(&ex, PID, ()).unwrap();
    let message = "a panic\nover two lines, with ünïcode and \"quotes\"";
    let err = ex
        .submit(PANIC, message.to_owned())
        .unwrap()
        .result_bounded()
        .unwrap_err();
    let Error::Task(remote) = &err else {
        panic!("expected Error::Task, got {err:?}");
    };
    assert_eq!(remote.message(), message);
    assert_eq!(remote.pid(), pid);
    assert!(err.to_string().contains(message), "{err}");
    let location = remote.location().expect("the panic's location");
    assert!(location.contains("diagnostics.rs"), "{location}");
    // The error is plain data: it outlives the pool and crosses threads.
    drop(ex);
    let text = std::thread::spawn(move || err.to_string()).join().unwrap();
    assert!(text.contains(PANIC.name()), "{text}");
    // A formatted panic (FLAKY formats its message in the worker).
    let ex = common::pool(1);
    match common::run(&ex, FLAKY, 23) {
        Err(Error::Task(remote)) => assert_eq!(remote.message(), "flaky task failed on 23"),
        other => panic!("expected Error::Task, got {other:?}"),
    }
}

#[test]
fn in_a_map_chunk_a_result_the_parent_cannot_decode_fails_that_item_alone() {
    let ex = common::pool(1);
    let results: Vec<_> = ex.map(PICKY, 0..4).chunksize(4).collect();
    assert!(
        matches!(
            results[..],
            [
                Ok(Picky(0)),
                Err(Error::Serialization(_)),
                Ok(Picky(2)),
                Err(Error::Serialization(_))
            ]
        ),
        "{results:?}"
    );
}

#[test]
fn in_a_map_chunk_arguments_the_worker_cannot_decode_fail_that_item_alone() {
    let ex = common::pool(1);
    let results: Vec<_> = ex
        .map(PICKY_ARG, (0..4).map(PickyArg))
        .chunksize(4)
        .collect();
    assert!(
        matches!(
            results[..],
            [
                Ok(0),
                Err(Error::Serialization(_)),
                Ok(2),
                Err(Error::Serialization(_))
            ]
        ),
        "{results:?}"
    );
}
