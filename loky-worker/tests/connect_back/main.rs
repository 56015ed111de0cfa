//! The stock worker in connect-back mode, against a test executor over
//! loopback: it reads its ticket on stdin, authenticates, serves through
//! the link, reports how its worker ended, and exits when it loses its
//! executor.

#![cfg(feature = "remote")]

#[path = "../common/mod.rs"]
mod common;
mod executor;
mod netns;
mod slurm;

use std::net::{Shutdown, TcpListener};
use std::time::{Duration, Instant};

use loky_proto::exit_code;
use loky_proto::remote::{Control, EndReason, WorkerStatus};
use loky_worker::diagnostics::{
    ALLOCATE, ECHO_I64, EXIT, PANIC, PID, SEGFAULT, SLEEP, SPAWN_SLEEPER,
};

use common::{DEADLINE, is_dead, poll_until, wait_exit};
use executor::{LIVENESS, TestExecutor, stderr_of};

/// How long a worker may take to notice the loss of its executor: the
/// heartbeat timeout, and room for a loaded machine.
pub(crate) const NOTICE: Duration = Duration::from_secs(15);

#[test]
fn a_launched_worker_connects_back_and_serves() {
    let executor = TestExecutor::new();
    let mut remote = executor.start(&[]);
    let hello = remote.worker.hello();
    let Control::Agent { host, pid: agent } = &remote.agent else {
        panic!("expected the agent's introduction, got {:?}", remote.agent);
    };
    assert_eq!(
        *agent,
        remote.worker.pid(),
        "the launched process is the agent"
    );
    assert_ne!(hello.pid, *agent, "the worker is a process of its own");
    assert!(!host.is_empty());
    assert_eq!(remote.worker.call(1, ECHO_I64, &42), 42);
    assert_eq!(remote.worker.call(2, PID, &()), hello.pid);
    remote.worker.send_one(3, PANIC, &"boom".to_string());
    assert!(matches!(
        remote.worker.reply(3),
        loky_proto::Outcome::Panic(info) if info.message == "boom"
    ));
    assert_eq!(remote.worker.call(4, ECHO_I64, &7), 7, "it serves on");
}

#[test]
fn the_workers_exit_status_comes_back_and_the_agent_mirrors_it() {
    let executor = TestExecutor::new();
    let mut remote = executor.start(&[]);
    remote.worker.hello();
    remote.worker.send_one(1, EXIT, &7);
    remote.worker.expect_end();
    let end = remote.relay.end().expect("known before the channel ended");
    assert_eq!(end.reason, EndReason::Closed);
    assert_eq!(end.status, Some(WorkerStatus::Code(7)));
    assert_eq!(remote.worker.wait_exit(DEADLINE).code(), Some(7));
}

#[test]
fn a_crash_is_reported_with_its_signal() {
    let executor = TestExecutor::new();
    let mut remote = executor.start(&[]);
    remote.worker.hello();
    assert_eq!(remote.worker.call(1, ECHO_I64, &1), 1);
    remote.worker.send_one(2, SEGFAULT, &());
    remote.worker.expect_end();
    let end = remote.relay.end().unwrap();
    assert_eq!(end.status, Some(WorkerStatus::Signal(libc::SIGSEGV)));
    assert_eq!(
        remote.worker.wait_exit(DEADLINE).code(),
        Some(128 + libc::SIGSEGV)
    );
}

#[test]
fn the_worker_applies_its_own_memory_limit() {
    let executor = TestExecutor::new();
    let limit = (512u64 << 20).to_string();
    let mut remote = executor.start(&[(loky_proto::env::MEMORY_LIMIT, &limit)]);
    remote.worker.hello();
    assert_eq!(remote.worker.call(1, ALLOCATE, &(16 << 20)), 16 << 20);
    remote.worker.send_one(2, ALLOCATE, &(1 << 30));
    remote.worker.expect_end();
    let end = remote.relay.end().unwrap();
    assert_eq!(
        end.status,
        Some(WorkerStatus::Code(exit_code::MEMORY_LIMIT))
    );
}

#[test]
fn signals_from_the_executor_reach_the_workers_group() {
    let executor = TestExecutor::new();
    let mut remote = executor.start(&[]);
    remote.worker.hello();
    remote.worker.send_one(1, SLEEP, &Duration::from_secs(60));
    remote.relay.signal(libc::SIGTERM);
    remote.worker.expect_end();
    let end = remote.relay.end().unwrap();
    assert_eq!(end.status, Some(WorkerStatus::Signal(libc::SIGTERM)));
}

#[test]
fn an_orderly_close_ends_the_worker_as_a_local_one_ends() {
    let executor = TestExecutor::new();
    let mut remote = executor.start(&[]);
    remote.worker.hello();
    remote.worker.channel().shutdown(Shutdown::Write).unwrap();
    remote.worker.expect_end();
    // A worker whose channel ends kills its own group, itself included:
    // the executor learns so, and the agent, asked to leave, exits cleanly
    // (a launcher such as srun then reports no failure).
    let end = remote.relay.end().unwrap();
    assert_eq!(end.reason, EndReason::Closed);
    assert_eq!(end.status, Some(WorkerStatus::Signal(libc::SIGKILL)));
    assert_eq!(remote.worker.wait_exit(DEADLINE).code(), Some(0));
}

#[test]
fn a_dropped_link_kills_the_worker_and_what_its_task_started() {
    let executor = TestExecutor::new();
    let mut remote = executor.start(&[]);
    let hello = remote.worker.hello();
    let sleeper: u32 = remote
        .worker
        .call(1, SPAWN_SLEEPER, &Duration::from_secs(300));
    remote.worker.send_one(2, SLEEP, &Duration::from_secs(300));
    remote.relay.close();
    let status = remote.worker.wait_exit(NOTICE);
    assert_eq!(status.code(), Some(exit_code::NO_EXECUTOR));
    let stderr = stderr_of(&mut remote.worker.child);
    assert!(stderr.contains("lost the executor"), "{stderr}");
    assert!(is_dead(hello.pid), "the worker is gone");
    poll_until(DEADLINE, "the task's child to die", || {
        is_dead(sleeper).then_some(())
    });
}

#[test]
fn a_worker_whose_executor_vanishes_exits_on_its_own() {
    let executor = TestExecutor::new();
    let mut remote = executor.start(&[]);
    remote.worker.hello();
    remote.worker.send_one(1, SLEEP, &Duration::from_secs(300));
    let vanished = Instant::now();
    // The executor's process is gone: its end of the link with it.
    drop(remote.relay);
    let status = remote.worker.wait_exit(NOTICE);
    assert_eq!(status.code(), Some(exit_code::NO_EXECUTOR));
    eprintln!(
        "the worker left {:?} after its executor",
        vanished.elapsed()
    );
}

#[test]
fn a_silent_executor_is_noticed_by_its_heartbeats() {
    let executor = TestExecutor::new();
    let mut child = executor.launch(&executor.ticket(&[]));
    // Welcomed, then never a byte more while the connection stays open: a
    // frozen executor, or a partition, as the worker sees it.
    let (_conn, _tcp, _agent) = executor.welcome().unwrap();
    let silent = Instant::now();
    let status = wait_exit(&mut child, NOTICE);
    assert_eq!(status.code(), Some(exit_code::NO_EXECUTOR));
    assert!(silent.elapsed() >= LIVENESS.timeout - LIVENESS.interval);
    let stderr = stderr_of(&mut child);
    assert!(stderr.contains("heartbeats stopped"), "{stderr}");
}

#[test]
fn a_worker_without_a_ticket_says_so() {
    for (stdin, expected) in [
        (&b""[..], "ended after 0 bytes"),
        (
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            "does not start with a launch ticket",
        ),
    ] {
        let mut child = TestExecutor::launch_with(&[], stdin);
        let status = wait_exit(&mut child, DEADLINE);
        assert_eq!(status.code(), Some(exit_code::NO_EXECUTOR));
        let stderr = stderr_of(&mut child);
        assert!(stderr.contains(expected), "{stderr}");
    }
}

#[test]
fn an_unreachable_executor_ends_the_worker_with_a_clear_error() {
    let executor = TestExecutor::new();
    // Nobody listens there.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut ticket = executor.ticket(&[]);
    ticket.executor = vec![closed.to_string()];
    ticket.connect_timeout = Duration::from_millis(500);
    let mut child = executor.launch(&ticket);
    let status = wait_exit(&mut child, DEADLINE);
    assert_eq!(status.code(), Some(exit_code::NO_EXECUTOR));
    let stderr = stderr_of(&mut child);
    assert!(stderr.contains("could not reach the executor"), "{stderr}");
}

#[test]
fn a_ticket_of_another_executor_is_refused() {
    let ours = TestExecutor::new();
    let theirs = TestExecutor::new();
    let mut ticket = theirs.ticket(&[]);
    ticket.executor = vec![ours.addr.to_string()];
    let mut child = ours.launch(&ticket);
    let refused = ours.welcome().unwrap_err();
    assert!(refused.contains("handshake"), "{refused}");
    let status = wait_exit(&mut child, DEADLINE);
    assert_eq!(status.code(), Some(exit_code::NO_EXECUTOR));
    let stderr = stderr_of(&mut child);
    assert!(stderr.contains("not the executor that issued"), "{stderr}");
}

#[test]
fn a_worker_that_is_signalled_is_not_a_zombie_of_its_agent() {
    let executor = TestExecutor::new();
    let mut remote = executor.start(&[]);
    let hello = remote.worker.hello();
    common::signal(hello.pid, libc::SIGKILL);
    remote.worker.expect_end();
    assert_eq!(
        remote.relay.end().unwrap().status,
        Some(WorkerStatus::Signal(libc::SIGKILL))
    );
    assert!(is_dead(hello.pid));
    let status = remote.worker.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(128 + libc::SIGKILL));
}
