//! `loky-test-parent`: a program that owns an executor, for tests that need
//! a separate parent process (parent death, output capture, discovery).
//!
//! Subcommands:
//! - `busy WORKER N [DIR]`: starts N workers of WORKER running 60 s sleeps,
//!   prints `pids: P1 P2 ...` and waits for the sleeps; with DIR, each task
//!   also starts a `sleep` process and writes its pid to `DIR/child-I`.
//!   Exits with an error if the workers do not all run within 30 s.
//! - `nested WORKER GATE`: on a worker of WORKER, runs a task that builds a
//!   pool of its own whose worker waits at the test's gate GATE (the
//!   `NESTED_GATE` task); prints `started` and waits for it.
//! - `escape WORKER FILE`: runs `LEAVE_GROUP_AND_SLEEP (FILE, 60 s)` on a
//!   worker of WORKER (a task that starts a `sleep`, writes its pid to
//!   FILE and moves its worker to this program's process group), prints
//!   `pids: P` (the worker's pid) and waits for the task.
//! - `discover`: builds an executor with default worker discovery and
//!   prints the outcome: `found a worker program` and `square of 7: R` (the
//!   `Result` of running `SQUARE 7` there), or `error: E`, `kind: K` (the
//!   variant of `E`) and, for `WorkerNotFound`, a `looked in: P` line for
//!   each place looked at.
//! - `print WORKER LINE`: runs the task `PRINT LINE` on a worker of WORKER,
//!   shuts down, then prints `parent done`.
//! - `write WORKER STREAM BYTES TASKS`: on two workers of WORKER, runs TASKS
//!   tasks that each write BYTES bytes to STREAM (`stdout` or `stderr`),
//!   each followed by an echo; checks every result, then a 1 MiB echo,
//!   shuts down, and prints `parent done` to stdout; panics (exit code 101)
//!   on a wrong result.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use loky::{Error, ProcessPoolExecutor, WorkerProgram};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("busy") => busy(&args[1..]),
        Some("escape") => escape(&args[1..]),
        Some("nested") => nested(&args[1..]),
        Some("discover") => discover(),
        Some("print") => print(&args[1..]),
        Some("write") => write(&args[1..]),
        _ => {
            eprintln!(
                "usage: loky-test-parent busy WORKER N [DIR] | escape WORKER FILE \
                 | nested WORKER GATE | discover \
                 | print WORKER LINE | write WORKER STREAM BYTES TASKS"
            );
            std::process::exit(2);
        }
    }
}

fn busy(args: &[String]) {
    let program = PathBuf::from(&args[0]);
    let n: usize = args[1].parse().expect("N is a number");
    let ex = ProcessPoolExecutor::builder()
        .max_workers(n)
        .worker_program(WorkerProgram::Path(program))
        .build()
        .expect("executor");
    // With a directory, each task also starts a `sleep` of its own and
    // writes its pid to DIR/child-I.
    let spawn_dir = args.get(2);
    let futures: Vec<_> = (0..n)
        .map(|i| match spawn_dir {
            Some(dir) => ex.submit(
                loky_tests::SPAWN_AND_SLEEP,
                (format!("{dir}/child-{i}"), Duration::from_secs(60)),
            ),
            None => ex.submit(loky::diagnostics::SLEEP, Duration::from_secs(60)),
        })
        .map(|f| f.expect("submit"))
        .collect();
    // Every worker has said hello once it runs a call; PID calls queue
    // behind the sleeps, so report the pool's pids instead. Nothing tells
    // when a call starts: poll, to a deadline.
    let deadline = Instant::now() + Duration::from_secs(30);
    while ex.worker_pids().len() < n || futures.iter().any(|f| !f.running()) {
        if Instant::now() > deadline {
            eprintln!("loky-test-parent: the workers did not all start within 30 s");
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let pids: Vec<String> = ex.worker_pids().iter().map(u32::to_string).collect();
    println!("pids: {}", pids.join(" "));
    std::io::stdout().flush().expect("flush");
    for fut in futures {
        let _ = fut.result();
    }
}

fn escape(args: &[String]) {
    let ex = ProcessPoolExecutor::builder()
        .max_workers(1)
        .worker_program(WorkerProgram::Path(PathBuf::from(&args[0])))
        .build()
        .expect("executor");
    let task = (args[1].clone(), Duration::from_secs(60));
    let fut = ex
        .submit(loky_tests::LEAVE_GROUP_AND_SLEEP, task)
        .expect("submit");
    let deadline = Instant::now() + Duration::from_secs(30);
    while ex.worker_pids().is_empty() || !fut.running() {
        if Instant::now() > deadline {
            eprintln!("loky-test-parent: the worker did not start within 30 s");
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    println!("pids: {}", ex.worker_pids()[0]);
    std::io::stdout().flush().expect("flush");
    let _ = fut.result_timeout(Duration::from_secs(120));
}

fn nested(args: &[String]) {
    let ex = ProcessPoolExecutor::builder()
        .max_workers(1)
        .worker_program(WorkerProgram::Path(PathBuf::from(&args[0])))
        .build()
        .expect("executor");
    let fut = ex
        .submit(loky_tests::NESTED_GATE, args[1].clone())
        .expect("submit");
    println!("started");
    std::io::stdout().flush().expect("flush");
    let _ = fut.result_timeout(Duration::from_secs(120));
}

fn discover() {
    match ProcessPoolExecutor::new(1) {
        Ok(ex) => {
            println!("found a worker program");
            let square = ex
                .submit(loky::diagnostics::SQUARE, 7)
                .and_then(|fut| fut.result_timeout(Duration::from_secs(20)));
            println!("square of 7: {square:?}");
        }
        Err(err) => {
            println!("error: {err}");
            let kind = match &err {
                Error::WorkerNotFound(_) => "WorkerNotFound",
                Error::Spawn(_) => "Spawn",
                _ => "other",
            };
            println!("kind: {kind}");
            if let Error::WorkerNotFound(e) = &err {
                for place in e.searched() {
                    println!("looked in: {place}");
                }
            }
        }
    }
}

fn print(args: &[String]) {
    let ex = ProcessPoolExecutor::builder()
        .max_workers(1)
        .worker_program(WorkerProgram::Path(PathBuf::from(&args[0])))
        .build()
        .expect("executor");
    ex.submit(loky::diagnostics::PRINT, args[1].clone())
        .expect("submit")
        .result()
        .expect("the PRINT task succeeds");
    ex.shutdown(true);
    println!("parent done");
}

fn write(args: &[String]) {
    const WAIT: Duration = Duration::from_secs(30);
    let ex = ProcessPoolExecutor::builder()
        .max_workers(2)
        .worker_program(WorkerProgram::Path(PathBuf::from(&args[0])))
        .build()
        .expect("executor");
    let task = match args[1].as_str() {
        "stdout" => loky::diagnostics::WRITE_STDOUT,
        "stderr" => loky::diagnostics::WRITE_STDERR,
        other => panic!("no stream {other}"),
    };
    let bytes: u64 = args[2].parse().expect("BYTES is a number");
    let tasks: i64 = args[3].parse().expect("TASKS is a number");
    let calls: Vec<_> = (0..tasks)
        .map(|i| {
            let written = ex.submit(task, bytes).expect("submit");
            let echo = ex.submit(loky::diagnostics::ECHO_I64, i).expect("submit");
            (i, written, echo)
        })
        .collect();
    for (i, written, echo) in calls {
        assert_eq!(written.result_timeout(WAIT).expect("write"), bytes);
        assert_eq!(echo.result_timeout(WAIT).expect("echo"), i);
    }
    let data = serde_bytes::ByteBuf::from(vec![0xa5u8; 1 << 20]);
    let back = ex
        .submit(loky::diagnostics::ECHO_BYTES, data.clone())
        .expect("submit")
        .result_timeout(WAIT)
        .expect("echo of 1 MiB");
    assert!(back == data, "the 1 MiB echo came back changed");
    ex.shutdown(true);
    println!("parent done");
}
