//! Tasks that try to escape their worker's supervision cannot hang the
//! pool or outlive it: a process left holding a dead worker's channel, and
//! a worker moved to another process group.

mod common;
mod hang_guard;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use hang_guard::Guarded;
use loky::{CrashPolicy, Error};
use loky_tests::{ECHO_OR_ESCAPE, LEAVE_GROUP_AND_SLEEP};
use serde_bytes::ByteBuf;

const BOUND: Duration = Duration::from_secs(10);

fn kill(pid: u32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
}

#[test]
fn a_process_left_holding_a_dead_worker_s_channel_does_not_freeze_the_pool() {
    let ex = Guarded::new(
        common::builder(1)
            .on_worker_crash(CrashPolicy::Respawn)
            .build()
            .unwrap(),
    );
    // Tiny calls first: the task is measured short, so the calls below are
    // all sent at once (one `map`, one dispatch), and the parent is still
    // writing the large ones when the worker dies: the worker reads none of
    // them while it runs the escape.
    let tiny = (0..20).map(|_| (ByteBuf::from(vec![1]), None));
    for echoed in ex.map(ECHO_OR_ESCAPE, tiny).timeout(BOUND) {
        assert_eq!(echoed.unwrap().len(), 1);
    }
    let pid_file = common::pid_file("hostile", "holder");
    let escape = (
        ByteBuf::from(vec![2]),
        Some(pid_file.to_string_lossy().into_owned()),
    );
    let payload = ByteBuf::from(vec![5u8; 256 << 10]);
    let calls = std::iter::once(escape).chain((0..30).map(|_| (payload.clone(), None)));
    let mut results = ex.map(ECHO_OR_ESCAPE, calls).timeout(BOUND);
    let crashed = results.next().expect("one result per call");
    let holder = common::wait_for_pid(&pid_file);
    let echoed: Vec<_> = results.collect();
    let shut_down = common::shutdown_within(&ex, BOUND);
    kill(holder);
    assert!(
        matches!(crashed, Err(Error::TerminatedWorker(ref t)) if t.exit_code() == Some(3)),
        "{crashed:?}"
    );
    assert_eq!(echoed.len(), 30);
    for result in echoed {
        assert_eq!(
            result.expect("every call resolves, on the replacement"),
            payload
        );
    }
    assert!(
        shut_down,
        "shutdown waited for the process holding the channel"
    );
}

#[test]
fn a_task_that_moves_its_worker_to_another_group_still_meets_its_deadline() {
    let ex = Guarded::new(
        common::builder(1)
            .task_timeout(Duration::from_secs(1))
            .kill_grace_period(Duration::from_millis(200))
            .build()
            .unwrap(),
    );
    let pid_file = common::pid_file("hostile", "deadline");
    let task = (
        pid_file.to_string_lossy().into_owned(),
        Duration::from_secs(30),
    );
    let fut = ex.submit(LEAVE_GROUP_AND_SLEEP, task).unwrap();
    let sleeper = common::wait_for_pid(&pid_file);
    let result = fut.result_timeout(BOUND);
    assert!(
        matches!(result, Err(Error::DeadlineExceeded(_))),
        "{result:?}"
    );
    assert!(
        common::dead_within(&[sleeper], BOUND),
        "what the task started outlived it"
    );
    assert!(!ex.is_broken());
    assert_eq!(common::run(&ex, loky::diagnostics::SQUARE, 3).unwrap(), 9);
    assert!(common::shutdown_within(&ex, BOUND));
}

#[test]
fn kill_stops_a_task_that_moved_its_worker_to_another_group() {
    let ex = Guarded::new(
        common::builder(1)
            .kill_grace_period(Duration::from_millis(200))
            .build()
            .unwrap(),
    );
    let pid_file = common::pid_file("hostile", "kill");
    let task = (
        pid_file.to_string_lossy().into_owned(),
        Duration::from_secs(30),
    );
    let fut = ex.submit(LEAVE_GROUP_AND_SLEEP, task).unwrap();
    let sleeper = common::wait_for_pid(&pid_file);
    assert!(fut.kill());
    let result = fut.result_timeout(BOUND);
    assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
    assert!(common::dead_within(&[sleeper], BOUND));
    assert!(common::shutdown_within(&ex, BOUND));
}

#[test]
fn what_a_task_started_dies_with_the_parent_after_the_task_moved_its_worker() {
    let pid_file = common::pid_file("hostile", "parent-death");
    let mut parent = Command::new(env!("CARGO_BIN_EXE_loky-test-parent"))
        .args(["escape", common::worker_program().to_str().unwrap()])
        .arg(&pid_file)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(parent.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let worker: u32 = line
        .trim()
        .strip_prefix("pids: ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output {line:?}"));
    let sleeper = common::wait_for_pid(&pid_file);
    parent.kill().unwrap();
    parent.wait().unwrap();
    let died = common::dead_within(&[worker, sleeper], BOUND);
    kill(sleeper);
    kill(worker);
    assert!(
        died,
        "the worker {worker} or its task's sleeper {sleeper} outlived the parent"
    );
}
