//! A task that kills its worker breaks the pool; a new reusable executor
//! (with `kill_workers`) recovers.
//!
//! Port of loky's "crash recovery" program: `problematic_task(3)` calls
//! `exit(1)` in the worker, as Python's `os._exit(1)` does.
//!
//! ```text
//! cargo run --example crash_recovery
//! ```
//!
//! # Output
//!
//! loky-rs (the pid changes from run to run):
//!
//! ```text
//! Task 0: 0
//! Task 1: 2
//! Task 2: 4
//! Task 3 failed: A worker process managed by the executor was unexpectedly terminated. This could be caused by a segmentation fault while calling the function or by an excessive memory usage causing the Operating System to kill the worker.
//!
//! The exit codes of the workers are {EXIT(1)}
//!
//! The worker (pid 48113) was running task `fn(i64) -> i64`.
//! Task 4 failed: A worker process managed by the executor was unexpectedly terminated. [...]
//!
//! The exit codes of the workers are {EXIT(1)}
//!
//! The worker (pid 48113) was running task `fn(i64) -> i64`.
//! New executor created successfully
//! New executor: problematic_task(4) = 8
//! ```
//!
//! Python (loky 3.x), the same flow:
//!
//! ```text
//! Task 0: 0
//! Task 1: 2
//! Task 2: 4
//! Task 3 failed: A worker process managed by the executor was unexpectedly terminated. This could be caused by a segmentation fault while calling the function or by an excessive memory usage causing the Operating System to kill the worker.
//!
//! The exit codes of the workers are {EXIT(1)}
//! Task 4 failed: A worker process managed by the executor was unexpectedly terminated. [...]
//!
//! The exit codes of the workers are {EXIT(1)}
//! New executor created successfully
//! ```
//!
//! Differences:
//!
//! - The message is loky's, plus the pid of the dead worker and the task
//!   it was running (a function is named by its type).
//! - In both, whether tasks 0, 1, 2 and 4 succeed or fail depends on
//!   whether their result arrived before the crash: a result that arrived
//!   first stays a success; every unfinished task fails.
//! - In both, the outer `BrokenProcessPool` handler is only reached if a
//!   `submit` itself finds the pool broken; the per-task handler catches
//!   the crash first. (The published program lost its indentation; this
//!   port reads the last three statements as following the `try` block, so
//!   the recovery always runs.)
//! - The last line is an addition: it shows that the new pool runs tasks.
//! - As in Python, `problematic_task` is an ordinary function of the
//!   program, submitted as it is: `loky::init()` first in `main` makes the
//!   program its own worker.

use std::time::Duration;

use loky::ProcessPoolExecutor;

/// Doubles `x`, but kills its worker when `x == 3`.
fn problematic_task(x: i64) -> i64 {
    if x == 3 {
        // Simulate a worker crash: force process termination.
        std::process::exit(1);
    }
    x * 2
}

/// The body of the Python `try` block.
fn run_tasks() -> loky::Result<()> {
    let executor = loky::get_reusable_executor(2)?;
    // Submit tasks that include a problematic one.
    let futures = (0..5)
        .map(|i| executor.submit_fn(problematic_task, i))
        .collect::<loky::Result<Vec<_>>>()?;
    let mut results = Vec::new();
    for (i, future) in futures.iter().enumerate() {
        match future.result_timeout(Duration::from_secs(5)) {
            Ok(result) => {
                results.push(result);
                println!("Task {i}: {result}");
            }
            Err(e) => println!("Task {i} failed: {e}"),
        }
    }
    Ok(())
}

fn main() -> loky::Result<()> {
    loky::init();

    match run_tasks() {
        Ok(()) => {}
        Err(e) if e.is_broken_pool() => {
            println!("Process pool broken: {e}");
            println!("Creating new executor...");
        }
        Err(e) => return Err(e),
    }

    // Create a new executor after the broken pool.
    let executor = ProcessPoolExecutor::builder()
        .max_workers(2)
        .kill_workers(true)
        .get_reusable()?;
    println!("New executor created successfully");
    let result = executor.submit_fn(problematic_task, 4)?.result()?;
    println!("New executor: problematic_task(4) = {result}");
    Ok(())
}
