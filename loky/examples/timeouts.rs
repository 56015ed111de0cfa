//! `result_timeout`: a task that finishes in time, one that does not (and
//! goes on running), and one that finishes in time on the other worker.
//!
//! Port of loky's "timeouts" program.
//!
//! ```text
//! cargo run --example timeouts             # the durations of the Python program (5 s)
//! cargo run --example timeouts -- --quick  # every duration halved
//! ```
//!
//! # Output
//!
//! loky-rs:
//!
//! ```text
//! Task (1s, timeout 3s): Completed after 1 seconds
//! Task (5s, timeout 2s): Timed out
//! Task (2s, timeout 4s): Completed after 2 seconds
//! ```
//!
//! With `--quick`:
//!
//! ```text
//! Task (0.5s, timeout 1.5s): Completed after 0.5 seconds
//! Task (2.5s, timeout 1s): Timed out
//! Task (1s, timeout 2s): Completed after 1 seconds
//! ```
//!
//! Python (loky 3.x), the same flow:
//!
//! ```text
//! Task (1s, timeout 3s): Completed after 1 seconds
//! Task (5s, timeout 2s): Timed out
//! Task (2s, timeout 4s): Completed after 2 seconds
//! ```
//!
//! The lines are the same. At the end, Python waits for the timed-out task
//! to finish before the interpreter exits (about one more second); here the
//! program ends at once and its workers die with it.

use std::time::Duration;

use loky::Error;

/// Sleeps for the given time and says so.
fn slow_task(duration: Duration) -> String {
    std::thread::sleep(duration);
    format!("Completed after {} seconds", duration.as_secs_f64())
}

fn handle_timeouts(scale: f64) -> loky::Result<()> {
    let executor = loky::get_reusable_executor(2)?;

    let tasks = [
        (1.0, 3.0), // 1 second task, 3 second timeout: succeeds
        (5.0, 2.0), // 5 second task, 2 second timeout: times out
        (2.0, 4.0), // 2 second task, 4 second timeout: succeeds
    ];
    for (duration, timeout) in tasks {
        let duration = Duration::from_secs_f64(duration * scale);
        let timeout = Duration::from_secs_f64(timeout * scale);
        let label = format!(
            "Task ({}s, timeout {}s)",
            duration.as_secs_f64(),
            timeout.as_secs_f64()
        );
        let outcome = executor
            .submit_fn(slow_task, duration)
            .and_then(|future| future.result_timeout(timeout));
        match outcome {
            Ok(result) => println!("{label}: {result}"),
            // The task goes on running in the background.
            Err(Error::Timeout) => println!("{label}: Timed out"),
            Err(e) => println!("{label}: Error - {e}"),
        }
    }
    Ok(())
}

fn main() -> loky::Result<()> {
    loky::init();

    let quick = std::env::args().any(|arg| arg == "--quick");
    handle_timeouts(if quick { 0.5 } else { 1.0 })
}
