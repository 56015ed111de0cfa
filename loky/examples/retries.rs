//! Unreliable tasks (success, error, crash or slow, at random) run with
//! retries, recovering from broken pools and timeouts.
//!
//! Port of loky's "robust task execution" program. Each attempt draws its
//! fate from a seeded generator, so the run is reproducible.
//!
//! ```text
//! cargo run --example retries             # 1 s timeout, 1.5 s slow tasks (about 4 s)
//! cargo run --example retries -- --quick  # 0.8 s timeout, 1.2 s slow tasks (about 3.5 s)
//! ```
//!
//! # Output
//!
//! loky-rs (the pids change from run to run; the `Pool broken` messages are
//! shortened here, each is the full message shown for task 1):
//!
//! ```text
//! ✓ Task 0: Success
//! ✗ Task 1: Pool broken (A worker process managed by the executor was unexpectedly terminated. This could be caused by a segmentation fault while calling the function or by an excessive memory usage causing the Operating System to kill the worker.
//!
//! The exit codes of the workers are {EXIT(1)}
//!
//! The worker (pid 61230) was running task `fn((u32, u64, Duration)) -> Result<String, String>`.)
//! ✗ Task 1: Timeout (retry 2)
//! ✗ Task 1: Timeout (retry 3)
//! ✗ Task 1: Gave up after 2 retries
//! ✗ Task 2: Application error (Task 2: Intentional error)
//! ✗ Task 3: Pool broken (A worker process managed by the executor was unexpectedly terminated. [...])
//! ✗ Task 3: Pool broken (A worker process managed by the executor was unexpectedly terminated. [...])
//! ✓ Task 3: Success
//! ✗ Task 4: Pool broken (A worker process managed by the executor was unexpectedly terminated. [...])
//! ✓ Task 4: Success
//! ✗ Task 5: Application error (Task 5: Intentional error)
//! ✓ Task 6: Success
//! ✓ Task 7: Success
//! ✗ Task 8: Timeout (retry 1)
//! ✗ Task 8: Timeout (retry 2)
//! ✗ Task 8: Application error (Task 8: Intentional error)
//! ✗ Task 9: Pool broken (A worker process managed by the executor was unexpectedly terminated. [...])
//! ✗ Task 9: Application error (Task 9: Intentional error)
//!
//! Final Results:
//! Task 0: Task 0: Success
//! Task 1: Failed after 2 retries
//! Task 2: Error: Task 2: Intentional error
//! Task 3: Task 3: Success
//! Task 4: Task 4: Success
//! Task 5: Error: Task 5: Intentional error
//! Task 6: Task 6: Success
//! Task 7: Task 7: Success
//! Task 8: Error: Task 8: Intentional error
//! Task 9: Error: Task 9: Intentional error
//! ```
//!
//! Python (loky 3.x), the same flow, had its workers drawn the same fates,
//! with the same durations as here:
//!
//! ```text
//! ✓ Task 0: Success
//! ✗ Task 1: Pool broken (A worker process managed by the executor was unexpectedly terminated. This could be caused by a segmentation fault while calling the function or by an excessive memory usage causing the Operating System to kill the worker.
//!
//! The exit codes of the workers are {EXIT(1)})
//! ✗ Task 1: Timeout (retry 2)
//! ✗ Task 1: Timeout (retry 3)
//! ✗ Task 1: Gave up after 2 retries
//! ✗ Task 2: Application error (Task 2: Intentional error)
//! [... the same lines as above, without the pids ...]
//! Task 9: Error: Task 9: Intentional error
//! ```
//!
//! Differences:
//!
//! - Python's `random.seed(42)` seeds only the parent process, while
//!   `random.choice` runs in the workers, whose generators are seeded
//!   afresh: Python's output changes from run to run. Here the parent draws
//!   a seed for each attempt from a generator seeded with 42 and the task
//!   draws its fate from that seed (a tiny SplitMix64, to need no
//!   dependency), so the run is the same every time.
//! - The Python program's slow task sleeps 10 s against a 3 s timeout. With
//!   those durations, after two slow attempts in a row (task 1 here) both
//!   workers are still busy when the next attempt is submitted, so it waits
//!   for a worker and times out too, and the rest of the run differs. Here
//!   a slow task takes 1.5 timeouts: a timed-out task has always left a
//!   worker free for the next attempt, and the run takes seconds rather
//!   than half a minute.
//! - The `Pool broken` message also names the pid of the dead worker and
//!   its task (a function is named by its type).

use std::time::Duration;

use loky::{Error, ProcessPoolExecutor};

/// The seed of the parent's generator (Python's `random.seed(42)`).
const SEED: u64 = 42;

/// A task that randomly fails in different ways: given `(task id, seed,
/// how long a slow attempt sleeps)`, it succeeds, returns an error, crashes
/// its worker or is slow, as drawn from the seed.
fn unreliable_task((task_id, seed, slow): (u32, u64, Duration)) -> Result<String, String> {
    let failure_type = SplitMix64(seed).choice(&["success", "error", "crash", "slow"]);
    match failure_type {
        "success" => Ok(format!("Task {task_id}: Success")),
        "error" => Err(format!("Task {task_id}: Intentional error")),
        "crash" => std::process::exit(1), // simulate a process crash
        _ => {
            std::thread::sleep(slow); // a very slow task
            Ok(format!("Task {task_id}: Slow success"))
        }
    }
}

/// Sebastiano Vigna's SplitMix64: a tiny, good-enough, seedable generator.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// One of `items`, uniformly (the modulo bias is below 2^-60).
    fn choice<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next_u64() % items.len() as u64) as usize]
    }
}

/// How long the parent waits for a result, and how long a slow task takes.
///
/// The printed flow holds as long as three margins do, each a fraction of
/// `timeout` (half of it with a slow task of 1.5 timeouts):
///
/// - a quick attempt (success, error or crash), including the start of a
///   fresh pool's workers after a crash, answers within `timeout`;
/// - a slow attempt cannot answer within `timeout` (`slow - timeout`);
/// - after two slow attempts in a row, the worker of the first one is free
///   again before the third attempt is submitted (`2 * timeout - slow`),
///   so that attempt does not wait behind it.
///
/// The quick mode (`--quick`, what `cargo xtask test` runs on a possibly
/// loaded 2-core machine) keeps these margins at 400 ms or more.
struct Timing {
    timeout: Duration,
    slow: Duration,
}

/// Executes tasks with error handling and retries.
fn robust_task_execution(
    task_ids: &[u32],
    max_retries: u32,
    timing: &Timing,
) -> loky::Result<Vec<(u32, String)>> {
    let mut rng = SplitMix64(SEED);
    let mut executor: Option<ProcessPoolExecutor> = None;
    let mut results = Vec::new();

    for &task_id in task_ids {
        let mut retries = 0;
        let mut success = false;
        while !success && retries <= max_retries {
            // Ensure we have a working executor; a broken pool is replaced
            // by a fresh one.
            let ex = match &executor {
                Some(ex) => ex.clone(),
                None => executor.insert(loky::get_reusable_executor(2)?).clone(),
            };

            // Submit the task and wait for it with a timeout.
            let args = (task_id, rng.next_u64(), timing.slow);
            let outcome = ex
                .submit_fn(unreliable_task, args)
                .and_then(|future| future.result_timeout(timing.timeout));
            match outcome {
                Ok(Ok(result)) => {
                    println!("✓ {result}");
                    results.push((task_id, result));
                    success = true;
                }
                Err(e) if e.is_broken_pool() => {
                    println!("✗ Task {task_id}: Pool broken ({e})");
                    executor = None; // force a new executor
                    retries += 1;
                }
                Err(Error::Timeout) => {
                    println!("✗ Task {task_id}: Timeout (retry {})", retries + 1);
                    retries += 1;
                }
                Ok(Err(e)) => {
                    println!("✗ Task {task_id}: Application error ({e})");
                    results.push((task_id, format!("Error: {e}")));
                    success = true; // don't retry application errors
                }
                Err(e) => {
                    println!("✗ Task {task_id}: Unexpected error ({e})");
                    retries += 1;
                }
            }
        }
        if !success {
            results.push((task_id, format!("Failed after {max_retries} retries")));
            println!("✗ Task {task_id}: Gave up after {max_retries} retries");
        }
    }

    // Clean up.
    if let Some(executor) = executor {
        executor.shutdown(false);
    }
    Ok(results)
}

fn main() -> loky::Result<()> {
    loky::init();

    let quick = std::env::args().any(|arg| arg == "--quick");
    let timing = if quick {
        Timing {
            timeout: Duration::from_millis(800),
            slow: Duration::from_millis(1200),
        }
    } else {
        Timing {
            timeout: Duration::from_secs(1),
            slow: Duration::from_millis(1500),
        }
    };

    // Execute unreliable tasks with error recovery.
    let task_ids: Vec<u32> = (0..10).collect();
    let results = robust_task_execution(&task_ids, 2, &timing)?;
    println!("\nFinal Results:");
    for (task_id, result) in results {
        println!("Task {task_id}: {result}");
    }
    Ok(())
}
