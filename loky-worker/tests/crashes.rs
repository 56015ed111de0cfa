//! Tasks that end their worker: each death shows as the exit code or signal
//! it was, and the channel's end comes with it.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::{DEADLINE, Worker};
use loky_worker::diagnostics::{ABORT, EXIT, SEGFAULT, SPAWN_SLEEPER};

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
