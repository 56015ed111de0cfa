//! Cancelling tasks: a pending task can be cancelled, a running one cannot.
//!
//! Port of loky's "cancellation" program: four 3-second tasks on two
//! workers; half a second later the odd ones are cancelled. Task 1 is
//! already running; task 3 is still waiting for a worker.
//!
//! ```text
//! cargo run --example cancellation             # 3-second tasks, as in Python (6 s)
//! cargo run --example cancellation -- --quick  # 1-second tasks
//! ```
//!
//! # Output
//!
//! loky-rs (the `starting`/`completed` lines come from the workers, which
//! share the program's stdout):
//!
//! ```text
//! Task 0 starting (duration: 3s)
//! Task 1 starting (duration: 3s)
//! Could not cancel task 1 (already running)
//! Successfully cancelled task 3
//! Task 0 completed
//! Task 0: Task 0 result
//! Task 1 completed
//! Task 1: Task 1 result
//! Task 2 starting (duration: 3s)
//! Task 2 completed
//! Task 2: Task 2 result
//! Task 3: Was cancelled
//! Cancelled 1 tasks
//! ```
//!
//! Python (loky 3.x), the same flow:
//!
//! ```text
//! Task 0 starting (duration: 3s)
//! Task 1 starting (duration: 3s)
//! Could not cancel task 1 (already running)
//! Successfully cancelled task 3
//! Task 0 completed
//! Task 0: Task 0 result
//! Task 1 completed
//! Task 1: Task 1 result
//! Task 2 starting (duration: 3s)
//! Task 2 completed
//! Task 2: Task 2 result
//! Task 3: Was cancelled
//! Cancelled 1 tasks
//! ```
//!
//! The results are the same; lines written by different processes at the
//! same moment may interleave differently. One difference is hidden by the
//! flow: loky moves one extra task per pool to its call queue ahead of
//! time, where it counts as running and can no longer be cancelled (task 2
//! here); loky-rs keeps long tasks in its own queue until a worker is free,
//! so task 2 could still be cancelled at that point.

use std::time::Duration;

use loky::Error;

/// Prints when it starts and ends, sleeping in between.
fn cancellable_task((task_id, duration): (u32, Duration)) -> String {
    println!(
        "Task {task_id} starting (duration: {}s)",
        duration.as_secs_f64()
    );
    std::thread::sleep(duration);
    println!("Task {task_id} completed");
    format!("Task {task_id} result")
}

fn handle_cancellation(duration: Duration) -> loky::Result<()> {
    let executor = loky::get_reusable_executor(2)?;

    // Submit several tasks.
    let futures = (0..4)
        .map(|i| executor.submit_fn(cancellable_task, (i, duration)))
        .collect::<loky::Result<Vec<_>>>()?;

    // Cancel some tasks after a short delay.
    std::thread::sleep(Duration::from_millis(500));
    let mut cancelled_count = 0;
    for (i, future) in futures.iter().enumerate() {
        if i % 2 == 1 {
            // Cancel odd-numbered tasks.
            if future.cancel() {
                println!("Successfully cancelled task {i}");
                cancelled_count += 1;
            } else {
                println!("Could not cancel task {i} (already running)");
            }
        }
    }

    // Collect the results.
    for (i, future) in futures.iter().enumerate() {
        match future.result_timeout(Duration::from_secs(5)) {
            Ok(result) => println!("Task {i}: {result}"),
            Err(Error::Cancelled) => println!("Task {i}: Was cancelled"),
            Err(Error::Timeout) => println!("Task {i}: Timed out"),
            Err(e) => println!("Task {i}: Error - {e}"),
        }
    }
    println!("Cancelled {cancelled_count} tasks");
    Ok(())
}

fn main() -> loky::Result<()> {
    loky::init();

    let quick = std::env::args().any(|arg| arg == "--quick");
    handle_cancellation(Duration::from_secs(if quick { 1 } else { 3 }))
}
