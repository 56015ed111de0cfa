//! `loky-orphan-app`: an application that is its own worker program, for
//! the tests of workers orphaned while they start.
//!
//! Its `main` first calls `serve_if_worker`; a process that gets past that
//! call while its environment names a worker channel is a worker that fell
//! into the application's `main`: it writes a marker file named after its
//! pid into `$LOKY_TEST_MARKER_DIR`, which the tests look for.
//!
//! Subcommands:
//! - `spawn N`: builds an executor of N workers running this program,
//!   submits N long sleeps (which starts N workers at once), prints
//!   `submitted` and waits to be killed.
//! - `orphan`: starts one worker of this program by hand, as an executor
//!   would (its channel as fd 3 and the variable naming this process), but
//!   lets it exec only once this process has exited, while a helper
//!   process still holds this end of the channel; prints `worker W helper
//!   H` first. The worker thus starts orphaned, with a channel not hung up.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use loky::{ProcessPoolExecutor, WorkerProgram};

const MARKER_DIR: &str = "LOKY_TEST_MARKER_DIR";
const CHANNEL: &str = "LOKY_WORKER_CHANNEL";

fn main() {
    loky::serve_if_worker(&loky_tests::registry());
    if std::env::var_os(CHANNEL).is_some() {
        // A worker ran the application's main.
        if let Some(dir) = std::env::var_os(MARKER_DIR) {
            let marker = std::path::Path::new(&dir).join(std::process::id().to_string());
            std::fs::write(marker, "ran main").expect("cannot write the marker");
        }
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("spawn") => spawn(args[1].parse().expect("N is a number")),
        Some("orphan") => orphan(),
        _ => {
            eprintln!("usage: loky-orphan-app spawn N | orphan");
            std::process::exit(2);
        }
    }
}

fn spawn(n: usize) {
    let ex = ProcessPoolExecutor::builder()
        .max_workers(n)
        .worker_program(WorkerProgram::CurrentExe)
        .build()
        .expect("executor");
    let futures: Vec<_> = (0..n)
        .map(|_| {
            ex.submit(loky::diagnostics::SLEEP, Duration::from_secs(60))
                .expect("submit")
        })
        .collect();
    println!("submitted");
    std::io::stdout().flush().expect("flush");
    for fut in futures {
        let _ = fut.result();
    }
}

fn orphan() {
    let (parent_end, child_end) = UnixStream::pair().expect("socketpair");
    let program = std::env::current_exe().expect("current exe");
    let channel = format!("3:{}", std::process::id());
    let exec_args = [to_c(program.as_os_str())];
    let env: Vec<std::ffi::CString> = std::env::vars_os()
        .filter(|(k, _)| k != CHANNEL)
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            to_c(&kv)
        })
        .chain(std::iter::once(to_c(
            format!("{CHANNEL}={channel}").as_ref(),
        )))
        .collect();
    let me = std::process::id() as libc::pid_t;
    let helper = fork_holding(&parent_end);
    let worker = fork_worker(me, child_end, &exec_args, &env);
    println!("worker {worker} helper {helper}");
    std::io::stdout().flush().expect("flush");
    // Exit now, without reaping: the worker execs once this process is gone.
}

fn to_c(s: &std::ffi::OsStr) -> std::ffi::CString {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(s.as_bytes()).expect("no NUL")
}

/// A child that keeps `end` (and every other descriptor) open until killed.
fn fork_holding(_end: &UnixStream) -> libc::pid_t {
    // SAFETY: this program is single-threaded here; the child only calls
    // the async-signal-safe pause() until it is killed.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            loop {
                libc::pause();
            }
        }
        pid
    }
}

/// A child that waits until `parent` is gone, puts `channel` at fd 3 and
/// execs `argv` with `envp`.
fn fork_worker(
    parent: libc::pid_t,
    channel: UnixStream,
    argv: &[std::ffi::CString],
    envp: &[std::ffi::CString],
) -> libc::pid_t {
    let channel = OwnedFd::from(channel);
    let argv_ptrs: Vec<*const libc::c_char> = argv
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp_ptrs: Vec<*const libc::c_char> = envp
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    // SAFETY: this program is single-threaded here; the child calls only
    // async-signal-safe functions (getppid, sched_yield, dup2, execve,
    // _exit) on memory prepared before the fork.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            while libc::getppid() == parent {
                libc::sched_yield();
            }
            if libc::dup2(channel.as_raw_fd(), 3) < 0 {
                libc::_exit(120);
            }
            libc::execve(argv_ptrs[0], argv_ptrs.as_ptr(), envp_ptrs.as_ptr());
            libc::_exit(121);
        }
        pid
    }
}
