//! How a worker ends: at the end of its channel (even mid-task), on
//! SIGTERM, and on malformed input.

mod common;

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{DEADLINE, Worker, is_dead, poll_until, signal};
use loky_proto::exit_code;
use loky_worker::diagnostics::{SLEEP, SPAWN_SLEEPER};

const MINUTE: Duration = Duration::from_secs(60);

/// How soon a worker must end: wide for a loaded machine, far below the
/// minute-long task a worker that did not notice would go on running.
const PROMPTLY: Duration = Duration::from_secs(10);

/// A worker busy with a one-minute sleep, having started a sleeper of its
/// own; returns the sleeper's pid.
fn busy_worker(worker: &mut Worker) -> u32 {
    worker.hello();
    let sleeper = worker.call(1, SPAWN_SLEEPER, &MINUTE);
    worker.send_one(2, SLEEP, &MINUTE);
    sleeper
}

#[test]
fn closing_the_channel_ends_a_busy_worker_and_its_group_at_once() {
    let mut worker = Worker::start();
    let sleeper = busy_worker(&mut worker);
    worker.close();
    let closed = Instant::now();
    let status = worker.wait_exit(PROMPTLY);
    assert!(closed.elapsed() < PROMPTLY);
    // It leads its process group, so it SIGKILLs the group, itself included.
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    poll_until(PROMPTLY, "the sleeper to die", || {
        is_dead(sleeper).then_some(())
    });
}

/// Its executor (here the test) reports the signal and kills the rest of
/// the group as it reaps the worker.
#[test]
fn sigterm_ends_a_busy_worker_with_sigterm() {
    let mut worker = Worker::start();
    busy_worker(&mut worker);
    signal(worker.pid(), libc::SIGTERM);
    let status = worker.wait_exit(PROMPTLY);
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
}

/// Starts a worker with stderr piped, writes `bytes` after the hello, and
/// returns its exit code and stderr.
fn feed(bytes: &[u8]) -> (Option<i32>, String) {
    let mut worker = Worker::start_with(|command| {
        command.stderr(Stdio::piped());
    });
    worker.hello();
    worker.write_raw(bytes);
    let status = worker.wait_exit(DEADLINE);
    let mut stderr = String::new();
    worker
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code(), stderr)
}

#[test]
fn a_garbage_frame_ends_the_worker_with_the_protocol_error_code() {
    let mut frame = 5u32.to_le_bytes().to_vec();
    frame.extend_from_slice(b"\xc1junk");
    let (code, stderr) = feed(&frame);
    assert_eq!(code, Some(exit_code::PROTOCOL_ERROR), "{stderr}");
    assert!(
        stderr.starts_with("loky-worker: malformed frame from the executor: malformed message: "),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn an_oversized_length_prefix_ends_the_worker_with_the_protocol_error_code() {
    let len: u32 = (2 << 30) + 1;
    let (code, stderr) = feed(&len.to_le_bytes());
    assert_eq!(code, Some(exit_code::PROTOCOL_ERROR), "{stderr}");
    assert!(
        stderr.contains("exceeds the maximum frame size"),
        "{stderr}"
    );
}

#[test]
fn a_frame_cut_short_by_the_end_of_the_channel_ends_the_worker_as_the_end_does() {
    let mut worker = Worker::start_with(|command| {
        command.stderr(Stdio::piped());
    });
    worker.hello();
    worker.write_raw(&[100, 0, 0, 0, 1, 2, 3]);
    worker.close();
    let status = worker.wait_exit(DEADLINE);
    // It leads its process group, so it SIGKILLs the group, itself included.
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
}
