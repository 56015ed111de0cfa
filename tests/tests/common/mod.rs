//! Helpers shared by the scenario tests.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use loky::{ExecutorBuilder, ProcessPoolExecutor, WorkerProgram};

/// The test worker program.
pub fn worker_program() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_loky-test-worker"))
}

/// A builder for `n` test workers.
pub fn builder(n: usize) -> ExecutorBuilder {
    ProcessPoolExecutor::builder()
        .max_workers(n)
        .worker_program(WorkerProgram::Path(worker_program()))
}

/// An executor of `n` test workers.
pub fn pool(n: usize) -> ProcessPoolExecutor {
    builder(n)
        .build()
        .expect("the test worker program is built")
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// `(pid, state)` of every process whose parent is this process.
pub fn children() -> Vec<(u32, char)> {
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Some((state, ppid)) = stat(pid)
            && ppid == me
        {
            found.push((pid, state));
        }
    }
    found
}

/// The state letter and parent pid of `pid`, if it exists.
pub fn stat(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` is a running (not zombie) process.
pub fn alive(pid: u32) -> bool {
    matches!(stat(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

/// Zombie children of this process.
pub fn zombies() -> Vec<u32> {
    children()
        .into_iter()
        .filter(|&(_, state)| state == 'Z')
        .map(|(pid, _)| pid)
        .collect()
}

/// Polls `condition` until it holds or `timeout` passes. For events of
/// other processes that give no notification (a grandchild's exit); never
/// used where a handshake exists.
pub fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_micros(200);
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}
