//! Tasks that end their worker: each death shows as the exit code or signal
//! it was, and the channel's end comes with it.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::{DEADLINE, Worker};
use loky_worker::diagnostics::{ABORT, EXIT, SEGFAULT, SLEEP, SPAWN_SLEEPER, STACK_OVERFLOW};

#[test]
fn exit_ends_the_worker_with_its_code() {
    let mut worker = Worker::ready();
    worker.send_one(1, EXIT, &7);
    worker.expect_end();
    assert_eq!(worker.wait_exit(DEADLINE).code(), Some(7));
}

#[test]
fn abort_ends_the_worker_with_sigabrt() {
    let mut worker = Worker::ready();
    worker.send_one(1, ABORT, &());
    worker.expect_end();
    assert_eq!(worker.wait_exit(DEADLINE).signal(), Some(libc::SIGABRT));
}

#[test]
fn segfault_ends_the_worker_with_sigsegv() {
    let mut worker = Worker::ready();
    worker.send_one(1, SEGFAULT, &());
    worker.expect_end();
    assert_eq!(worker.wait_exit(DEADLINE).signal(), Some(libc::SIGSEGV));
}

/// Rust's runtime handles SIGSEGV and SIGBUS (to report stack overflows)
/// and, for a signal another process sent, would let the worker run on.
#[test]
fn a_sigsegv_or_sigbus_sent_from_outside_ends_the_worker_with_that_signal() {
    for sent in [libc::SIGSEGV, libc::SIGBUS] {
        let mut worker = Worker::ready();
        worker.send_one(1, SLEEP, &Duration::from_secs(60));
        common::signal(worker.pid(), sent);
        assert_eq!(worker.wait_exit(DEADLINE).signal(), Some(sent));
    }
}

#[test]
fn a_stack_overflow_is_still_reported_by_the_rust_runtime() {
    let mut worker = Worker::start_with(|command| {
        command.stderr(std::process::Stdio::piped());
    });
    let mut stderr = worker.child.stderr.take().unwrap();
    worker.hello();
    worker.send_one(1, STACK_OVERFLOW, &());
    worker.expect_end();
    assert_eq!(worker.wait_exit(DEADLINE).signal(), Some(libc::SIGABRT));
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut text).unwrap();
    assert!(text.contains("has overflowed its stack"), "{text}");
}

#[test]
fn processes_a_task_spawns_do_not_inherit_the_channel() {
    let mut worker = Worker::ready();
    // The sleeper outlives the worker (a plain exit does not kill the
    // group); the channel still ends with the worker, so it was not
    // inherited.
    let sleeper = worker.call(1, SPAWN_SLEEPER, &Duration::from_secs(60));
    worker.send_one(2, EXIT, &0);
    worker.expect_end();
    assert_eq!(worker.wait_exit(DEADLINE).code(), Some(0));
    assert!(!common::is_dead(sleeper), "the sleeper should still run");
}
