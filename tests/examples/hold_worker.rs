//! A pool of one worker, held: starts the worker program named by the first
//! argument, runs the calls a worker runs in a pool's daily work (a single
//! call, a value echoed, a short map), prints `worker PID`, then keeps the
//! pool, its worker idle, until a line (or end of file) arrives on stdin.
//!
//! `cargo xtask link-order` runs it under callgrind to learn which functions
//! the stock worker runs; it also lets anyone inspect an idle worker by hand:
//!
//! ```text
//! cargo run --example hold_worker -p loky-tests -- target/debug/loky-worker
//! ```

use std::io::BufRead;
use std::process::ExitCode;

use loky::diagnostics;
use loky::{ProcessPoolExecutor, WorkerProgram};

fn main() -> ExitCode {
    let Some(program) = std::env::args_os().nth(1) else {
        eprintln!("usage: hold_worker WORKER_PROGRAM");
        return ExitCode::from(2);
    };
    match hold(program.into()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hold_worker: {error}");
            ExitCode::FAILURE
        }
    }
}

fn hold(program: std::path::PathBuf) -> Result<(), loky::Error> {
    let ex = ProcessPoolExecutor::builder()
        .max_workers(1)
        .worker_program(WorkerProgram::Path(program))
        .build()?;
    let pid = ex.submit(diagnostics::PID, ())?.result()?;
    let echoed = ex.submit(diagnostics::ECHO_I64, -7)?.result()?;
    assert_eq!(echoed, -7, "the worker echoed another value");
    let squares: Vec<i64> = ex
        .map(diagnostics::SQUARE, 0..100)
        .collect::<Result<_, _>>()?;
    assert_eq!(squares, (0..100).map(|x| x * x).collect::<Vec<i64>>());
    println!("worker {pid}");
    // Any line, an error or end of file ends the hold alike.
    let _ = std::io::stdin().lock().lines().next();
    ex.shutdown(true);
    Ok(())
}
