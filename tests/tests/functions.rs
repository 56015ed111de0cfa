//! Functions sent without registration (`submit_fn`, `submit_fn_with`,
//! `map_fn`): this test binary is its own worker program through
//! `init_before_main!`, so `ProcessPoolExecutor::new(2)` needs no worker
//! program, and the functions and closures below run in workers that are
//! this very binary.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use loky::{CallOptions, CrashPolicy, Error, ProcessPoolExecutor};
use serde_bytes::ByteBuf;

use common::RESULT_TIMEOUT;

loky::init_before_main!();

fn square(x: i64) -> i64 {
    x * x
}

fn exit_with(code: i32) {
    std::process::exit(code)
}

fn sleep_for(duration: Duration) {
    std::thread::sleep(duration)
}

/// Enters the [`loky_tests::Gate`] at `path` and waits there until released.
fn wait_at_gate(path: String) {
    let mut stream = UnixStream::connect(path).expect("reach the gate");
    stream
        .write_all(&std::process::id().to_le_bytes())
        .expect("enter the gate");
    let _ = stream.read(&mut [0u8]);
}

/// The depth of the innermost of `levels` nested pools, each built in a
/// worker with `ProcessPoolExecutor::new(1)`.
fn nested(levels: u32) -> Result<u32, String> {
    if levels == 0 {
        return Ok(std::env::var("LOKY_DEPTH")
            .ok()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0));
    }
    let ex = ProcessPoolExecutor::new(1).map_err(|e| e.to_string())?;
    let inner = ex
        .submit_fn(nested, levels - 1)
        .map_err(|e| e.to_string())?;
    inner.result().map_err(|e| e.to_string())?
}

#[test]
fn functions_closures_captures_and_strings_run_in_this_program() {
    let ex = ProcessPoolExecutor::new(2).unwrap();
    assert_eq!(
        ex.submit_fn(square, 7)
            .unwrap()
            .result_timeout(RESULT_TIMEOUT)
            .unwrap(),
        49
    );
    let closure = ex.submit_fn(|x: i64| x + 1, 41).unwrap();
    assert_eq!(closure.result_timeout(RESULT_TIMEOUT).unwrap(), 42);
    let k = 3;
    let captured = ex.submit_fn(|(k, x): (i64, i64)| k * x, (k, 7)).unwrap();
    assert_eq!(captured.result_timeout(RESULT_TIMEOUT).unwrap(), 21);
    let words = ex
        .submit_fn(
            |(s, n): (String, usize)| vec![s.to_uppercase(); n].join(" "),
            ("héllo".to_owned(), 3),
        )
        .unwrap();
    assert_eq!(
        words.result_timeout(RESULT_TIMEOUT).unwrap(),
        "HÉLLO HÉLLO HÉLLO"
    );
    let parse = ex.submit_fn(
        |s: String| s.parse::<u64>().map_err(|e| e.to_string()),
        "x".into(),
    );
    assert_eq!(
        parse.unwrap().result_timeout(RESULT_TIMEOUT).unwrap(),
        Err("invalid digit found in string".to_owned())
    );
    let big = ex
        .submit_fn(|b: ByteBuf| b.len(), ByteBuf::from(vec![7u8; 3 << 20]))
        .unwrap();
    assert_eq!(big.result_timeout(RESULT_TIMEOUT).unwrap(), 3 << 20);
    let me = std::fs::canonicalize(std::env::current_exe().unwrap()).unwrap();
    for pid in ex.worker_pids() {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert_eq!(exe, me, "the workers are this test binary");
    }
}

#[test]
fn a_panic_keeps_its_message_and_the_worker_serves_on() {
    let ex = ProcessPoolExecutor::new(1).unwrap();
    let fut = ex.submit_fn(|(a, b): (i64, i64)| a / b, (1, 0)).unwrap();
    let Err(Error::Task(panic)) = fut.result_timeout(RESULT_TIMEOUT) else {
        panic!("expected the task's panic");
    };
    assert_eq!(panic.message(), "attempt to divide by zero");
    assert!(
        panic.location().unwrap().contains("functions.rs"),
        "{panic}"
    );
    assert!(panic.task().contains("fn((i64, i64)) -> i64"), "{panic}");
    let pid = ex.worker_pids()[0];
    assert_eq!(ex.submit_fn(square, 5).unwrap().result().unwrap(), 25);
    assert_eq!(ex.worker_pids(), [pid], "the same worker");
}

#[test]
fn a_crash_under_respawn_fails_only_its_call() {
    let ex = ProcessPoolExecutor::builder()
        .max_workers(2)
        .on_worker_crash(CrashPolicy::Respawn)
        .build()
        .unwrap();
    let crash = ex.submit_fn(exit_with, 3).unwrap();
    match crash.result_timeout(RESULT_TIMEOUT) {
        Err(Error::TerminatedWorker(dead)) => {
            assert_eq!(dead.exit_code(), Some(3));
            assert_eq!(dead.task(), Some("fn(i32)"));
        }
        other => panic!("expected TerminatedWorker, got {other:?}"),
    }
    assert!(!ex.is_broken());
    assert_eq!(ex.submit_fn(square, 9).unwrap().result().unwrap(), 81);
}

#[test]
fn a_crash_breaks_the_pool_by_default() {
    let ex = ProcessPoolExecutor::new(2).unwrap();
    let crash = ex.submit_fn(exit_with, 1).unwrap();
    assert!(matches!(
        crash.result_timeout(RESULT_TIMEOUT),
        Err(Error::TerminatedWorker(_))
    ));
    assert!(ex.is_broken());
    assert!(ex.submit_fn(square, 2).unwrap_err().is_broken_pool());
    let again = loky::get_reusable_executor(2).unwrap();
    assert_eq!(again.submit_fn(square, 8).unwrap().result().unwrap(), 64);
}

#[test]
fn deadlines_kill_the_call_and_replace_the_worker() {
    let ex = ProcessPoolExecutor::new(1).unwrap();
    let options = CallOptions::new().timeout(Duration::from_millis(200));
    let slow = ex
        .submit_fn_with(sleep_for, Duration::from_secs(60), options)
        .unwrap();
    match slow.result_timeout(RESULT_TIMEOUT) {
        Err(Error::DeadlineExceeded(late)) => {
            assert_eq!(late.timeout(), Duration::from_millis(200));
        }
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
    assert!(!ex.is_broken());
    assert_eq!(ex.submit_fn(square, 4).unwrap().result().unwrap(), 16);

    let ex = ProcessPoolExecutor::builder()
        .max_workers(1)
        .task_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let slow = ex.submit_fn(sleep_for, Duration::from_secs(60)).unwrap();
    assert!(matches!(
        slow.result_timeout(RESULT_TIMEOUT),
        Err(Error::DeadlineExceeded(_))
    ));
}

#[test]
fn kill_stops_a_running_function() {
    let ex = ProcessPoolExecutor::new(1).unwrap();
    let gate = loky_tests::Gate::new();
    let fut = ex.submit_fn(wait_at_gate, gate.arg()).unwrap();
    let held = gate.entered(RESULT_TIMEOUT);
    assert!(fut.running());
    assert!(fut.kill());
    assert!(matches!(
        fut.result_timeout(RESULT_TIMEOUT),
        Err(Error::Cancelled)
    ));
    assert!(common::dead_within(&[held.pid], RESULT_TIMEOUT));
    assert!(!ex.is_broken());
    assert_eq!(ex.submit_fn(square, 3).unwrap().result().unwrap(), 9);
}

#[test]
fn map_fn_keeps_input_order_and_fails_items_alone() {
    let ex = ProcessPoolExecutor::new(2).unwrap();
    let v: Vec<i64> = ex
        .map_fn(|x: i64| x + 1, 0..1000)
        .chunksize(100)
        .collect::<loky::Result<_>>()
        .unwrap();
    assert_eq!(v, (1..=1000).collect::<Vec<_>>());
    let results: Vec<loky::Result<i64>> = ex
        .map_fn(
            |x: i64| {
                assert_ne!(x, 5, "five");
                x * 2
            },
            0..10,
        )
        .chunksize(4)
        .timeout(RESULT_TIMEOUT)
        .collect();
    for (i, result) in results.iter().enumerate() {
        match result {
            Err(Error::Task(panic)) if i == 5 => assert!(panic.message().contains("five")),
            Ok(v) if i != 5 => assert_eq!(*v, 2 * i as i64),
            other => panic!("item {i}: {other:?}"),
        }
    }
}

#[test]
fn map_unordered_fn_gives_every_index_once() {
    let ex = ProcessPoolExecutor::new(2).unwrap();
    let mut seen = vec![None; 300];
    for (i, result) in ex
        .map_unordered_fn(|x: u64| x * 3, 0..300)
        .chunksize(7)
        .timeout(RESULT_TIMEOUT)
    {
        assert!(seen[i].is_none(), "index {i} twice");
        seen[i] = Some(result.unwrap());
    }
    for (i, value) in seen.into_iter().enumerate() {
        assert_eq!(value, Some(3 * i as u64));
    }
}

/// Exits its worker on 13, doubles anything else.
fn double_unless_13(x: i32) -> i32 {
    if x == 13 {
        std::process::exit(13);
    }
    2 * x
}

#[test]
fn under_respawn_a_crashing_item_of_a_function_s_chunk_fails_alone() {
    let ex = ProcessPoolExecutor::builder()
        .max_workers(2)
        .on_worker_crash(CrashPolicy::Respawn)
        .build()
        .unwrap();
    let results: Vec<loky::Result<i32>> = ex
        .map_fn(double_unless_13, 0..30)
        .chunksize(10)
        .timeout(RESULT_TIMEOUT)
        .collect();
    for (i, result) in results.iter().enumerate() {
        match result {
            Err(Error::TerminatedWorker(dead)) if i == 13 => {
                assert_eq!(dead.exit_code(), Some(13));
            }
            Ok(v) if i != 13 => assert_eq!(*v, 2 * i as i32),
            other => panic!("item {i}: {other:?}"),
        }
    }
    assert!(!ex.is_broken());
}

#[test]
fn map_fn_stops_at_its_timeout() {
    let ex = ProcessPoolExecutor::new(1).unwrap();
    let mut results = ex
        .map_fn(sleep_for, [Duration::ZERO, Duration::from_secs(60)])
        .timeout(Duration::from_millis(300));
    assert!(matches!(results.next(), Some(Ok(()))));
    assert!(matches!(results.next(), Some(Err(Error::Timeout))));
    assert!(results.next().is_none());
    ex.shutdown_with(loky::Shutdown {
        kill_workers: true,
        ..loky::Shutdown::default()
    });
}

#[test]
fn a_function_may_build_its_own_pool_of_this_program() {
    let ex = ProcessPoolExecutor::new(1).unwrap();
    assert_eq!(
        ex.submit_fn(nested, 2)
            .unwrap()
            .result_timeout(RESULT_TIMEOUT)
            .unwrap(),
        Ok(3)
    );
}

#[test]
fn another_worker_program_is_never_sent_a_function_and_serves_on() {
    let ex = common::pool(1);
    let fut = ex.submit_fn(square, 7).unwrap();
    let started = std::time::Instant::now();
    let Err(Error::ProgramMismatch(mismatch)) = fut.result_timeout(RESULT_TIMEOUT) else {
        panic!("expected ProgramMismatch");
    };
    assert!(started.elapsed() < Duration::from_secs(10), "fails fast");
    assert!(
        mismatch.worker_program().ends_with("loky-test-worker"),
        "{mismatch}"
    );
    assert!(mismatch.program().contains("functions"), "{mismatch}");
    assert!(!mismatch.identity().same_program(mismatch.worker_identity()));
    assert_eq!(mismatch.function(), "fn(i64) -> i64");
    let text = mismatch.to_string();
    assert!(
        text.contains("loky-test-worker") && text.contains("functions-"),
        "{text}"
    );
    assert!(!ex.is_broken(), "the pool is not broken");
    assert_eq!(
        common::run(&ex, loky::diagnostics::SQUARE, 6).unwrap(),
        36,
        "named tasks still run there"
    );
    let items: Vec<_> = ex.map_fn(square, 0..3).collect();
    assert!(
        items
            .iter()
            .all(|r| matches!(r, Err(Error::ProgramMismatch(_)))),
        "{items:?}"
    );
    assert_eq!(common::run(&ex, loky::diagnostics::SQUARE, 7).unwrap(), 49);
}

/// `cargo test` runs the tests of a binary on threads of one process;
/// `cargo nextest` runs each in a process of its own. Whichever runner runs
/// this test, the binary is run here both ways on three other tests, whose
/// workers are this binary too.
#[test]
fn the_test_binary_is_the_worker_under_both_runners() {
    let exe = std::env::current_exe().unwrap();
    let tests = [
        "functions_closures_captures_and_strings_run_in_this_program",
        "a_panic_keeps_its_message_and_the_worker_serves_on",
        "map_fn_keeps_input_order_and_fails_items_alone",
    ];
    // As `cargo test` does: one process, the tests on several threads.
    let together = std::process::Command::new(&exe)
        .args(tests)
        .args(["--exact", "--test-threads", "3"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&together.stdout);
    assert!(together.status.success(), "{stdout}");
    assert!(stdout.contains("test result: ok. 3 passed"), "{stdout}");
    // As `cargo nextest` does: one process per test.
    for test in tests {
        let alone = std::process::Command::new(&exe)
            .args([test, "--exact", "--nocapture"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&alone.stdout);
        assert!(alone.status.success(), "{test}: {stdout}");
        assert!(
            stdout.contains("test result: ok. 1 passed"),
            "{test}: {stdout}"
        );
    }
}
