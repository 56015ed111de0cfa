//! Tasks that try to escape their worker's supervision: a process that
//! keeps the worker's channel after the worker died, and a worker moved to
//! another process group.

use std::time::Duration;

use loky::Task;
use serde_bytes::ByteBuf;

/// Returns its bytes. Given a pid-file path instead, forks a process that
/// leaves the session and keeps the worker's channel open without reading
/// it (as `daemon()` does; it sleeps for 60 s), writes that process's pid
/// to the file (whole, by a rename), and ends the worker with exit code 3.
pub const ECHO_OR_ESCAPE: Task<(ByteBuf, Option<String>), ByteBuf> = Task::new("echo_or_escape");

/// Starts `sleep` for the given time, writes its pid to the given file
/// (whole, by a rename), then moves its worker to the process group of the
/// worker's parent (the executor's) and sleeps for that time itself.
pub const LEAVE_GROUP_AND_SLEEP: Task<(String, Duration), ()> = Task::new("leave_group_and_sleep");

pub(crate) fn echo_or_escape((bytes, pid_file): (ByteBuf, Option<String>)) -> ByteBuf {
    let Some(pid_file) = pid_file else {
        return bytes;
    };
    // SAFETY: the child only calls async-signal-safe functions (setsid,
    // sleep, _exit) before it ends: the parent is multi-threaded.
    let holder = unsafe { libc::fork() };
    if holder == 0 {
        // SAFETY: as above.
        unsafe {
            libc::setsid();
            libc::sleep(60);
            libc::_exit(0);
        }
    }
    assert!(holder > 0, "fork failed");
    write_pid(&pid_file, holder as u32);
    // SAFETY: _exit has no preconditions; the worker ends at once, its
    // channel still open in the holder.
    unsafe { libc::_exit(3) }
}

#[expect(
    clippy::zombie_processes,
    reason = "the sleeper is left running on purpose: it must die with the worker's first group"
)]
pub(crate) fn leave_group_and_sleep((pid_file, duration): (String, Duration)) {
    let sleeper = std::process::Command::new("sleep")
        .arg(duration.as_secs_f64().to_string())
        .spawn()
        .expect("cannot start `sleep`");
    // SAFETY: getppid and getpgid have no preconditions; setpgid moves
    // this process to an existing group of the same session.
    let moved = unsafe {
        let executor_group = libc::getpgid(libc::getppid());
        libc::setpgid(0, executor_group)
    };
    assert_eq!(
        moved,
        0,
        "setpgid failed: {}",
        std::io::Error::last_os_error()
    );
    write_pid(&pid_file, sleeper.id());
    std::thread::sleep(duration);
}

/// Writes `pid` to `path` whole: a reader never sees a partial file.
fn write_pid(path: &str, pid: u32) {
    let partial = format!("{path}.partial");
    std::fs::write(&partial, pid.to_string()).expect("cannot write the pid file");
    std::fs::rename(&partial, path).expect("cannot rename the pid file");
}
