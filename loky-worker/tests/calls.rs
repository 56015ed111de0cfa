//! Calls and their outcomes: values, chunks, panics and failed calls, all
//! served by the same worker process.

mod common;

use common::{Worker, value};
use loky_proto::{CallError, CallKind, Outcome, encode_payload};
use loky_worker::diagnostics::{ECHO, ECHO_BYTES, ECHO_I64, PANIC, PID, SQUARE};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i32,
    label: String,
    tags: Vec<Option<f64>>,
}

#[test]
fn echo_returns_any_value() {
    let mut worker = Worker::ready();
    let point = Point {
        x: -3,
        label: "p".into(),
        tags: vec![Some(1.5), None],
    };
    worker.send(
        1,
        ECHO.name(),
        CallKind::Single,
        &encode_payload(&point).unwrap(),
    );
    assert_eq!(value::<Point>(worker.reply(1)), point);
    assert_eq!(worker.call(2, ECHO_I64, &-7), -7);
}

#[test]
fn echo_bytes_returns_one_mib() {
    let mut worker = Worker::ready();
    let bytes = ByteBuf::from(
        (0..1 << 20)
            .map(|i: u32| (i % 251) as u8)
            .collect::<Vec<_>>(),
    );
    assert_eq!(worker.call(1, ECHO_BYTES, &bytes), bytes);
}

#[test]
fn a_chunk_returns_the_vector_of_outputs() {
    let mut worker = Worker::ready();
    worker.send_chunk(1, SQUARE, &[1, 2, 3, -4]);
    assert_eq!(value::<Vec<i64>>(worker.reply(1)), [1, 4, 9, 16]);
    worker.send_chunk(2, SQUARE, &[]);
    assert_eq!(value::<Vec<i64>>(worker.reply(2)), Vec::<i64>::new());
}

#[test]
fn a_chunk_with_a_panicking_item_returns_one_outcome_per_item() {
    let mut worker = Worker::ready();
    worker.send_chunk(1, SQUARE, &[2, i64::MAX, 3]);
    let Outcome::Items(items) = worker.reply(1) else {
        panic!("expected items");
    };
    let [four, overflow, nine] = <[Outcome<'_>; 3]>::try_from(items).unwrap();
    assert_eq!(value::<i64>(four), 4);
    assert_eq!(value::<i64>(nine), 9);
    match overflow {
        Outcome::Panic(panic) => assert!(panic.message.contains("overflows i64")),
        other => panic!("expected a panic, got {other:?}"),
    }
}

#[test]
fn a_panic_is_reported_and_the_same_worker_serves_on() {
    let mut worker = Worker::ready();
    worker.send_one(1, PANIC, &"the task gave up".to_owned());
    match worker.reply(1) {
        Outcome::Panic(panic) => {
            assert_eq!(panic.message, "the task gave up");
            assert!(panic.location.unwrap().contains("diagnostics.rs"));
            assert!(!panic.backtrace.trim().is_empty());
        }
        other => panic!("expected a panic, got {other:?}"),
    }
    assert_eq!(worker.call(2, PID, &()), worker.pid());
    assert_eq!(worker.call(3, SQUARE, &12), 144);
}

#[test]
fn unknown_tasks_and_undecodable_arguments_fail_and_the_worker_serves_on() {
    let mut worker = Worker::ready();
    worker.send(
        1,
        "no_such_task",
        CallKind::Single,
        &encode_payload(&()).unwrap(),
    );
    assert_eq!(
        worker.reply(1),
        Outcome::Failed(CallError::UnknownTask {
            task: "no_such_task".into()
        })
    );
    worker.send(
        2,
        ECHO_I64.name(),
        CallKind::Single,
        &encode_payload("text").unwrap(),
    );
    match worker.reply(2) {
        Outcome::Failed(CallError::DecodeArgs {
            task,
            expected,
            message,
        }) => {
            assert_eq!((task.as_str(), expected.as_str()), ("echo_i64", "i64"));
            assert!(!message.is_empty());
        }
        other => panic!("expected a decode failure, got {other:?}"),
    }
    worker.send(3, SQUARE.name(), CallKind::Chunk, &[0xc1]);
    assert!(matches!(
        worker.reply(3),
        Outcome::Failed(CallError::DecodeArgs { .. })
    ));
    assert_eq!(worker.call(4, ECHO_I64, &42), 42);
}

#[test]
fn replies_come_in_call_order() {
    let mut worker = Worker::ready();
    for id in 0..100 {
        worker.send_one(id, SQUARE, &(id as i64));
    }
    for id in 0..100 {
        assert_eq!(value::<i64>(worker.reply(id)), (id * id) as i64);
    }
}
