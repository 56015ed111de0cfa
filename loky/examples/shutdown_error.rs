//! `submit` after `shutdown` fails with `ShutdownExecutor`; a new executor
//! works.
//!
//! Port of loky's "shutdown error" program.
//!
//! ```text
//! cargo run --example shutdown_error
//! ```
//!
//! # Output
//!
//! loky-rs:
//!
//! ```text
//! Before shutdown: 10
//! Cannot use shutdown executor: cannot schedule new futures after shutdown
//! With new executor: 20
//! ```
//!
//! Python (loky 3.x), the same flow:
//!
//! ```text
//! Before shutdown: 10
//! Cannot use shutdown executor: cannot schedule new futures after shutdown
//! With new executor: 20
//! ```
//!
//! The output is identical. In both, `submit` itself fails (Python raises,
//! Rust returns `Err`), so there is no future to wait on.

use loky::{Error, ProcessPoolExecutor};

fn task(x: i64) -> i64 {
    x * 2
}

fn main() -> loky::Result<()> {
    loky::init();

    // Demonstrate shutdown error handling.
    let executor = ProcessPoolExecutor::new(2)?;

    // Submit and process some tasks.
    let future1 = executor.submit_fn(task, 5)?;
    let result1 = future1.result()?;
    println!("Before shutdown: {result1}");

    // Shut the executor down.
    executor.shutdown(true);

    // Attempt to use the shut-down executor.
    match executor.submit_fn(task, 10) {
        Err(Error::ShutdownExecutor(e)) => println!("Cannot use shutdown executor: {e}"),
        Err(e) => return Err(e),
        Ok(future2) => {
            let result2 = future2.result()?;
            println!("Unexpectedly ran after shutdown: {result2}");
        }
    }

    // Create a new executor for continued processing.
    let new_executor = ProcessPoolExecutor::new(2)?;
    let future3 = new_executor.submit_fn(task, 10)?;
    let result3 = future3.result()?;
    println!("With new executor: {result3}");
    new_executor.shutdown(true);
    Ok(())
}
