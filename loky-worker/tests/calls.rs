//! Calls and their outcomes: values, chunks, panics and failed calls, all
//! served by the same worker process.

mod common;

use std::time::{Duration, Instant};

use common::{Worker, value};
use loky_proto::{CallError, CallKind, Outcome, encode_payload};
use loky_worker::diagnostics::{ECHO, ECHO_BYTES, ECHO_I64, PANIC, PID, SPIN, SQUARE};
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

/// CPU time (user and system) that process `pid` has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // The fields after the command name (in parentheses) start with the
    // state; utime and stime are fields 14 and 15 of the whole line.
    let (_, rest) = stat.rsplit_once(')').expect("a stat line");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no memory-safety preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}

#[test]
fn spin_busy_loops_for_its_duration_and_the_same_worker_serves_on() {
    let mut worker = Worker::ready();
    let duration = Duration::from_secs(1);
    let cpu_before = cpu_time(worker.pid());
    let started = Instant::now();
    let iterations = worker.call(1, SPIN, &duration);
    let elapsed = started.elapsed();
    let cpu = cpu_time(worker.pid()) - cpu_before;
    assert!(iterations > 0);
    assert!(elapsed >= duration, "returned after {elapsed:?}");
    // Generous for a loaded machine, yet far below a duration misread as
    // seconds.
    assert!(
        elapsed < duration + Duration::from_secs(3),
        "returned after {elapsed:?}"
    );
    // Busy, not asleep: a sleeping worker is charged no clock tick at all,
    // a spinning one its share of a core for a second. Two ticks (20 ms)
    // is 2% of that second: met even by a worker among fifty busy
    // processes on two cores (with two busy loops beside the tests, the
    // load average near 16, 8% was seen).
    assert!(
        cpu >= Duration::from_millis(20),
        "used {cpu:?} of CPU in {elapsed:?}"
    );
    assert_eq!(worker.call(2, PID, &()), worker.pid());
    assert_eq!(worker.call(3, SQUARE, &-9), 81);
}
