//! Task output at the executor level: workers inherit the parent's stdout
//! and stderr, what a task writes arrives there whole, and it never
//! disturbs the protocol (LOKY-BEHAVIOUR.md, "Output"). The parent is
//! `loky-test-parent write`, whose stdout and stderr the tests capture.

mod common;

use std::process::{Command, Output};

/// What the `write_stdout`/`write_stderr` tasks write for `len` bytes:
/// lines of 63 `x` and a newline, the last one possibly shorter.
fn x_lines(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let n = (len - out.len()).min(64);
        out.extend(std::iter::repeat_n(b'x', n - 1));
        out.push(b'\n');
    }
    out
}

/// `loky-test-parent write` with `tasks` tasks writing `bytes` bytes each
/// to `stream`; it must succeed.
fn run_parent(stream: &str, bytes: usize, tasks: usize) -> Output {
    let out = common::output_within(
        Command::new(env!("CARGO_BIN_EXE_loky-test-parent"))
            .arg("write")
            .arg(common::worker_program())
            .args([stream, &bytes.to_string(), &tasks.to_string()]),
        common::RESULT_TIMEOUT,
        "loky-test-parent write",
    );
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `stdout` without the parent's last line, which must be `parent done`.
fn before_parent_done(stdout: &[u8]) -> &[u8] {
    stdout
        .strip_suffix(b"parent done\n")
        .unwrap_or_else(|| panic!("no `parent done` at the end of {} bytes", stdout.len()))
}

/// A short description of `bytes` for failure messages.
fn summary(bytes: &[u8]) -> String {
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]);
    format!("{} bytes, starting {head:?}", bytes.len())
}

#[test]
fn a_task_writing_to_stderr_reaches_the_parents_stderr() {
    let out = run_parent("stderr", 10_000, 1);
    assert!(
        out.stderr == x_lines(10_000),
        "stderr: {}",
        summary(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "parent done\n");
}

#[test]
fn a_task_writing_a_mebibyte_to_stdout_leaves_the_protocol_intact() {
    // The parent checks the results that follow the output (an echo, and a
    // 1 MiB echo) and fails if any is wrong.
    let out = run_parent("stdout", 1 << 20, 1);
    let written = before_parent_done(&out.stdout);
    assert!(written == x_lines(1 << 20), "stdout: {}", summary(written));
    assert!(out.stderr.is_empty(), "stderr: {}", summary(&out.stderr));
}

#[test]
fn output_of_tasks_on_two_workers_at_once_arrives_whole() {
    // Eight tasks of 256 KiB on two workers: lines of different tasks may
    // interleave, but every byte arrives and nothing else does.
    let (bytes, tasks) = (256 << 10, 8);
    let out = run_parent("stdout", bytes, tasks);
    let written = before_parent_done(&out.stdout);
    let count = |c: u8| written.iter().filter(|&&b| b == c).count();
    let expected = x_lines(bytes);
    let expected_newlines = expected.iter().filter(|&&b| b == b'\n').count();
    assert_eq!(written.len(), bytes * tasks, "stdout: {}", summary(written));
    assert_eq!(count(b'\n'), expected_newlines * tasks);
    assert_eq!(count(b'x') + count(b'\n'), written.len());
    assert!(out.stderr.is_empty(), "stderr: {}", summary(&out.stderr));
}
