//! `loky-test-parent`: a program that owns an executor, for tests that need
//! a separate parent process (parent death, output capture, discovery).
//!
//! Subcommands:
//! - `busy WORKER N [DIR]`: starts N workers of WORKER running 60 s sleeps,
//!   prints `pids: P1 P2 ...` and waits for the sleeps; with DIR, each task
//!   also starts a `sleep` process and writes its pid to `DIR/child-I`.
//! - `discover`: builds an executor with default worker discovery and
//!   prints the outcome.
//! - `print WORKER LINE`: runs the task `PRINT LINE` on a worker of WORKER,
//!   shuts down, then prints `parent done`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use loky::{ProcessPoolExecutor, WorkerProgram};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("busy") => busy(&args[1..]),
        Some("discover") => discover(),
        Some("print") => print(&args[1..]),
        _ => {
            eprintln!("usage: loky-test-parent busy WORKER N | discover | print WORKER LINE");
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
    // behind the sleeps, so report the pool's pids instead.
    while ex.worker_pids().len() < n || futures.iter().any(|f| !f.running()) {
        std::thread::yield_now();
    }
    let pids: Vec<String> = ex.worker_pids().iter().map(u32::to_string).collect();
    println!("pids: {}", pids.join(" "));
    std::io::stdout().flush().expect("flush");
    for fut in futures {
        let _ = fut.result();
    }
}

fn discover() {
    match ProcessPoolExecutor::new(1) {
        Ok(_) => println!("found a worker program"),
        Err(err) => println!("error: {err}"),
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
