//! Every variant of `loky::Error`, each made by a real failure, printed:
//! its `Display` says what happened and why in one line (loky's crash
//! message, kept word for word as users search for it, is the one
//! exception), naming the cause the user can act on, and `source()` keeps
//! the causes that are errors of their own.
//!
//! Run with `--nocapture` (or see nextest's output of a failure) to read
//! the messages.

mod common;

use std::error::Error as _;
use std::process::Command;
use std::time::Duration;

use common::FutureExt;
use loky::diagnostics::{ABORT, PANIC, SLEEP, SQUARE};
use loky::{Error, ProcessPoolExecutor, WorkerProgram};
use loky_tests::{INIT_PANIC, PICKY, SQUARE_AS_STRING, UNKNOWN};

loky::init_before_main!();

/// Prints `err` as a user sees it and checks that its message is one line
/// naming every one of `causes`; returns the messages of its source chain.
fn shown(variant: &str, err: &Error, causes: &[&str]) -> Vec<String> {
    let text = err.to_string();
    println!("{variant}: {text}");
    for cause in causes {
        assert!(
            text.contains(cause),
            "{variant}: {cause:?} missing from {text:?}"
        );
    }
    let mut chain = Vec::new();
    let mut source = err.source();
    while let Some(cause) = source {
        println!("    caused by: {cause}");
        chain.push(cause.to_string());
        source = cause.source();
    }
    chain
}

fn one_line(variant: &str, err: &Error, causes: &[&str]) -> Vec<String> {
    let chain = shown(variant, err, causes);
    let text = err.to_string();
    assert!(
        !text.contains('\n'),
        "{variant}: more than one line: {text:?}"
    );
    chain
}

#[test]
fn spawn_names_the_os_error_and_keeps_it_as_source() {
    let err = common::builder(1)
        .worker_program(WorkerProgram::Path("/no/such/worker".into()))
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Spawn(_)), "{err:?}");
    let chain = one_line(
        "Spawn",
        &err,
        &["/no/such/worker", "No such file or directory"],
    );
    assert_eq!(chain, ["No such file or directory (os error 2)"]);
    let io = err.source().unwrap().downcast_ref::<std::io::Error>();
    assert_eq!(io.unwrap().kind(), std::io::ErrorKind::NotFound);

    // A file that is there but not executable: the other common mistake.
    let file = std::env::temp_dir().join(format!("loky-error-display-{}", std::process::id()));
    std::fs::write(&file, b"not a program").unwrap();
    let err = common::builder(1)
        .worker_program(WorkerProgram::Path(file.clone()))
        .build()
        .unwrap_err();
    let _ = std::fs::remove_file(&file);
    assert!(matches!(err, Error::Spawn(_)), "{err:?}");
    one_line("Spawn", &err, &["not executable"]);
}

#[test]
fn worker_not_found_names_the_program_and_where_it_looked() {
    let err = ProcessPoolExecutor::builder()
        .worker_program(WorkerProgram::Named("loky-no-such-program".into()))
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::WorkerNotFound(_)), "{err:?}");
    one_line(
        "WorkerNotFound",
        &err,
        &["`loky-no-such-program` not found", "looked in:", "PATH"],
    );
}

#[test]
fn invalid_argument_names_the_setting() {
    let err = common::builder(1).max_workers(0).build().unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    one_line("InvalidArgument", &err, &["max_workers"]);
}

#[test]
fn broken_process_pool_names_the_failed_initializer_and_its_panic() {
    let ex = common::builder(1)
        .initializer(INIT_PANIC, "the initializer's own words".to_owned())
        .build()
        .unwrap();
    let err = common::run(&ex, SQUARE, 3).unwrap_err();
    assert!(matches!(err, Error::BrokenProcessPool(_)), "{err:?}");
    one_line(
        "BrokenProcessPool",
        &err,
        &["initializer", "the initializer's own words"],
    );
}

#[test]
fn terminated_worker_is_loky_s_message_with_the_signal_pid_and_task() {
    let ex = common::pool(1);
    let err = common::run(&ex, ABORT, ()).unwrap_err();
    let Error::TerminatedWorker(dead) = &err else {
        panic!("{err:?}");
    };
    shown(
        "TerminatedWorker",
        &err,
        &[
            "A worker process managed by the executor was unexpectedly terminated.",
            "The exit codes of the workers are {SIGABRT(-6)}",
            &format!("pid {}", dead.pid()),
            "`abort`",
        ],
    );
}

#[test]
fn task_names_the_panic_message() {
    let ex = common::pool(1);
    let err = common::run(&ex, PANIC, "the task's own words".to_owned()).unwrap_err();
    assert!(matches!(err, Error::Task(_)), "{err:?}");
    one_line(
        "Task",
        &err,
        &["`panic`", "panicked", "the task's own words"],
    );
}

#[test]
fn serialization_names_the_value_the_task_and_the_codec_error() {
    let ex = common::pool(1);
    let err = common::run(&ex, PICKY, 1).unwrap_err();
    let Error::Serialization(e) = &err else {
        panic!("{err:?}");
    };
    one_line("Serialization", &err, &["decode", "`picky`", e.message()]);
    assert!(!e.message().is_empty());
}

#[test]
fn unknown_task_names_the_task_and_what_the_worker_has() {
    let ex = common::pool(1);
    let err = common::run(&ex, UNKNOWN, ()).unwrap_err();
    assert!(matches!(err, Error::UnknownTask(_)), "{err:?}");
    one_line(
        "UnknownTask",
        &err,
        &["`no_such_task`", "not registered", "square"],
    );
}

#[test]
fn task_mismatch_names_both_signatures() {
    let ex = common::pool(1);
    let err = common::run(&ex, SQUARE_AS_STRING, "7".to_owned()).unwrap_err();
    assert!(matches!(err, Error::TaskMismatch(_)), "{err:?}");
    one_line(
        "TaskMismatch",
        &err,
        &["`square`", "`String -> String`", "`i64 -> i64`"],
    );
}

#[test]
fn deadline_exceeded_names_the_deadline_and_the_killed_worker() {
    let ex = common::builder(1)
        .task_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = common::run(&ex, SLEEP, Duration::from_secs(60)).unwrap_err();
    assert!(matches!(err, Error::DeadlineExceeded(_)), "{err:?}");
    one_line(
        "DeadlineExceeded",
        &err,
        &["`sleep`", "exceeded its deadline of 200ms", "was killed"],
    );
}

#[test]
fn timeout_and_cancelled_say_what_the_caller_did() {
    let ex = common::pool(1);
    let fut = ex.submit(SLEEP, Duration::from_secs(60)).unwrap();
    let err = fut.result_timeout(Duration::from_millis(50)).unwrap_err();
    assert!(matches!(err, Error::Timeout), "{err:?}");
    one_line("Timeout", &err, &["timed out"]);

    fut.kill();
    let err = fut.result_bounded().unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err:?}");
    one_line("Cancelled", &err, &["cancelled"]);
}

#[test]
fn shutdown_executor_says_the_pool_was_shut_down() {
    let ex = common::pool(1);
    ex.shutdown(false);
    let err = ex.submit(SQUARE, 2).unwrap_err();
    assert!(matches!(err, Error::ShutdownExecutor(_)), "{err:?}");
    one_line("ShutdownExecutor", &err, &["after shutdown"]);

    let ex = common::pool(1);
    let fut = ex.submit(SLEEP, Duration::from_secs(60)).unwrap();
    ex.shutdown_with(loky::Shutdown {
        kill_workers: true,
        ..loky::Shutdown::default()
    });
    let err = fut.result_bounded().unwrap_err();
    assert!(matches!(err, Error::ShutdownExecutor(_)), "{err:?}");
    one_line("ShutdownExecutor", &err, &["kill_workers"]);
}

fn square(x: i64) -> i64 {
    x * x
}

#[test]
fn program_mismatch_names_both_programs() {
    let ex = common::pool(1);
    let err = ex
        .submit_fn(square, 7)
        .unwrap()
        .result_bounded()
        .unwrap_err();
    assert!(matches!(err, Error::ProgramMismatch(_)), "{err:?}");
    one_line(
        "ProgramMismatch",
        &err,
        &["loky-test-worker", "error_display"],
    );
}

#[test]
fn missing_init_says_main_must_call_init_first() {
    // An application that names itself as its worker program but forgets
    // `loky::init()`; it prints the error its executor gave.
    let program = env!("CARGO_BIN_EXE_loky-no-init");
    let output = common::output_within(
        Command::new(program).arg("1").env_remove("LOKY_WORKER"),
        Duration::from_secs(60),
        "loky-no-init",
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("kind: MissingInit\n"), "{stdout}");
    let line = stdout.lines().find(|l| l.starts_with("error: ")).unwrap();
    println!("MissingInit: {}", &line["error: ".len()..]);
    assert!(line.contains("loky-no-init"), "{line}");
    assert!(line.contains("must call `loky::init()`"), "{line}");
}
