//! The worker's hello, and what the program does when it is not a worker.

mod common;

use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

use common::{DEADLINE, WORKER, Worker, wait_exit, worker_command};
use loky_proto::{PROTOCOL_VERSION, exit_code};

#[test]
fn the_hello_carries_the_full_task_table() {
    let mut worker = Worker::start();
    let hello = worker.hello();
    assert_eq!(hello.protocol, PROTOCOL_VERSION);
    assert_eq!(hello.pid, worker.pid());
    assert_eq!(hello.tasks, loky_worker::diagnostics::registry().tasks());
    assert!(hello.program.ends_with("loky-worker"), "{}", hello.program);
    let echo = hello.tasks.iter().find(|t| t.name == "echo_i64").unwrap();
    assert_eq!((echo.input.as_str(), echo.output.as_str()), ("i64", "i64"));
}

#[test]
fn run_by_hand_it_says_what_it_is_and_exits_2() {
    let output = Command::new(WORKER)
        .env_remove(loky_proto::env::CHANNEL)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(exit_code::NOT_STARTED_BY_EXECUTOR)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.contains("this is a loky-rs worker program"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("protocol: {PROTOCOL_VERSION}")),
        "{stdout}"
    );
    assert!(stdout.contains(WORKER), "{stdout}");
    for task in loky_worker::diagnostics::registry().tasks() {
        let line = format!("{}: {} -> {}", task.name, task.input, task.output);
        assert!(stdout.contains(&line), "{line} missing from {stdout}");
    }
    assert!(output.stderr.is_empty());
}

/// The executor died after starting the worker and before the worker
/// armed its parent-death signal: the worker ends quietly rather than run
/// as the program it also is (an application calling `serve_if_worker`
/// would otherwise run on, orphaned).
#[test]
fn a_worker_whose_executor_died_as_it_started_ends_quietly() {
    let (parent, child_end) = UnixStream::pair().unwrap();
    drop(parent);
    let (status, stdout) = run_under_a_shell(child_end, "");
    assert_eq!(status.code(), Some(0));
    assert!(stdout.is_empty(), "{stdout}");
}

/// The same while another process still holds the executor's end of the
/// channel (as a sibling worker being spawned does for a moment): a
/// process that holds its executor's channel but has another parent was
/// started as a worker and orphaned, whether or not the channel hung up.
#[test]
fn a_worker_orphaned_while_its_channel_is_still_open_ends_quietly() {
    let (_parent, child_end) = UnixStream::pair().unwrap();
    let (status, stdout) = run_under_a_shell(child_end, "");
    assert_eq!(status.code(), Some(0));
    assert!(stdout.is_empty(), "{stdout}");
}

/// A process a task started inherits the worker's environment but not its
/// channel (close-on-exec): fd 3 is something else there, and the program
/// runs as itself.
#[test]
fn a_process_that_inherits_the_environment_but_not_the_channel_is_no_worker() {
    let (_parent, child_end) = UnixStream::pair().unwrap();
    let (status, stdout) = run_under_a_shell(child_end, "exec 3</dev/null;");
    assert_eq!(status.code(), Some(exit_code::NOT_STARTED_BY_EXECUTOR));
    assert!(stdout.contains("run by hand it does nothing"), "{stdout}");
}

/// Runs the worker with `channel` as its fd 3 and the test as the process
/// the channel names, but with a shell as its parent (as if the process
/// the channel names were gone, or as for a process a task started); `;
/// exit` keeps the shell from replacing itself with the worker; `prelude`
/// runs first in the shell. Returns how the worker ended and its stdout.
fn run_under_a_shell(channel: UnixStream, prelude: &str) -> (std::process::ExitStatus, String) {
    let mut shell = worker_command("sh", &channel);
    shell
        .args(["-c", &format!(r#"{prelude} "$0"; exit $?"#), WORKER])
        .stdout(Stdio::piped());
    let mut child = shell.spawn().unwrap();
    drop(channel);
    let status = wait_exit(&mut child, DEADLINE);
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    (status, stdout)
}
