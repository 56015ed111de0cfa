//! Workers inherit no descriptor of their executor's process besides their
//! channel and stdio, even one without close-on-exec (a `pipe()` from C
//! code, a descriptor inherited from the shell): the reader of a pipe whose
//! write end the parent closes sees its end while the pool lives.
//!
//! One test in this binary: a process that another test spawned meanwhile
//! would inherit the pipe too.

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// A pipe made as C code makes it: neither end close-on-exec.
fn inheritable_pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: fds is an array of two ints for pipe to fill.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors are fresh and owned by nothing else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Whether `fd` reaches end of file within `timeout`.
fn sees_eof(fd: &OwnedFd, timeout: Duration) -> bool {
    let mut poll = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis() as i32;
    // SAFETY: poll is one valid pollfd for the call.
    let ready = unsafe { libc::poll(&mut poll, 1, ms) };
    if ready <= 0 {
        return false;
    }
    let mut byte = [0u8];
    // SAFETY: byte is a valid buffer of one byte.
    let n = unsafe { libc::read(fd.as_raw_fd(), byte.as_mut_ptr().cast(), 1) };
    n == 0
}

/// What each descriptor of process `pid` is (`socket:[...]`, `pipe:[...]`,
/// a path), by number.
fn descriptors(pid: u32) -> Vec<(i32, String)> {
    let mut fds: Vec<(i32, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let fd = entry.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(entry.path()).ok()?;
            Some((fd, target.display().to_string()))
        })
        .collect();
    fds.sort();
    fds
}

#[test]
fn workers_hold_no_inherited_descriptor_and_a_pipe_closed_by_the_parent_ends() {
    let (read_end, write_end) = inheritable_pipe();
    let pipe = descriptors(std::process::id())
        .into_iter()
        .find(|(fd, _)| *fd == write_end.as_raw_fd())
        .unwrap()
        .1;
    let ex = common::pool(2);
    let pids = common::every_worker_serving(&ex);
    assert_eq!(pids.len(), 2);

    for &pid in &pids {
        let fds = descriptors(pid);
        // stdio, the channel (fd 3) and its duplicates, the worker's own
        // pipe (both ends) by which a lost executing thread is replaced,
        // and its own timer, by which it sends the replies it held back.
        let channel = &fds.iter().find(|(fd, _)| *fd == 3).expect("fd 3").1;
        assert!(channel.starts_with("socket:"), "{fds:?}");
        for (fd, what) in &fds {
            assert_ne!(what, &pipe, "worker {pid} holds the parent's pipe: {fds:?}");
            let own_pipe =
                what.starts_with("pipe:") && fds.iter().filter(|(_, w)| w == what).count() == 2;
            let own_timer = what == "anon_inode:[timerfd]";
            assert!(
                *fd <= 2 || what == channel || own_pipe || own_timer,
                "worker {pid} holds {fd} -> {what}: {fds:?}"
            );
        }
    }

    drop(write_end);
    assert!(
        sees_eof(&read_end, Duration::from_secs(10)),
        "the pipe's reader saw no end of file: a worker holds its write end"
    );
    assert!(pids.iter().all(|&pid| common::alive(pid)), "the pool lives");
    assert!(common::shutdown_within(&ex, common::RESULT_TIMEOUT));
}
