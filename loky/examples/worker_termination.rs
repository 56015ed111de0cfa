//! Growing allocations until a worker dies: each size reports success,
//! `TerminatedWorker` or a task error.
//!
//! Port of loky's "worker termination" program. Python allocates
//! `[0] * (size * 1_000_000)` (8 bytes per item) and lets the operating
//! system decide when that is too much: on a large machine the 8 GB and
//! 80 GB lists may succeed, be refused with `MemoryError`, or get the
//! worker killed, depending on RAM, swap and overcommit settings. Here the
//! executor gives each worker a hard [`memory_limit`] of 1 GiB, so the
//! 8 GB allocation kills its worker at once and deterministically, on any
//! machine, without touching that memory.
//!
//! [`memory_limit`]: loky::ExecutorBuilder::memory_limit
//!
//! ```text
//! cargo run --example worker_termination
//! ```
//!
//! # Output
//!
//! loky-rs (the pid changes from run to run):
//!
//! ```text
//! Size 1M: Success (0)
//! Size 10M: Success (0)
//! Size 100M: Success (0)
//! Size 1000M: Worker terminated (A worker process managed by the executor exceeded its memory limit of 1073741824 bytes and was terminated.
//!
//! The exit codes of the workers are {EXIT(77)}
//!
//! The worker (pid 50122) was running task `fn(u64) -> Result<i64, String>`.)
//! Size 10000M: Worker terminated (A worker process managed by the executor exceeded its memory limit of 1073741824 bytes and was terminated.
//!
//! The exit codes of the workers are {EXIT(77)}
//!
//! The worker (pid 50122) was running task `fn(u64) -> Result<i64, String>`.)
//! ```
//!
//! On stderr, the dying worker writes Rust's allocation-failure message:
//! `memory allocation of 8000000000 bytes failed`.
//!
//! Python (loky 3.x), the same flow on a machine where the 8 GB list gets
//! the worker killed by the out-of-memory killer:
//!
//! ```text
//! Size 1M: Success (0)
//! Size 10M: Success (0)
//! Size 100M: Success (0)
//! Size 1000M: Worker terminated (A worker process managed by the executor was unexpectedly terminated. This could be caused by a segmentation fault while calling the function or by an excessive memory usage causing the Operating System to kill the worker.
//!
//! The exit codes of the workers are {SIGKILL(-9)})
//! Size 10000M: Worker terminated (A worker process managed by the executor was unexpectedly terminated. [...]
//!
//! The exit codes of the workers are {SIGKILL(-9)})
//! ```
//!
//! On a machine that refuses the allocation outright, Python prints
//! `Size 1000M: Memory error (Cannot allocate 1000M integers)` instead and
//! the pool stays usable.
//!
//! Differences:
//!
//! - Rust has no `MemoryError` for `vec![0; n]`: a failed allocation aborts
//!   the process. The task could use `Vec::try_reserve` and return the
//!   error as a value (the `Ok(Err(..))` arm below); it does not, to show
//!   the worker's death. Under a memory limit the worker exits with
//!   [`loky::exit_code::MEMORY_LIMIT`] and the error says it exceeded its
//!   limit.
//! - In both, the comment "executor may recover automatically" does not
//!   hold under the default policy: the pool is broken, so the next
//!   `submit` fails at once with the same `TerminatedWorker` error. With
//!   [`CrashPolicy::Respawn`](loky::CrashPolicy::Respawn) only the 8 GB
//!   task would fail and the 80 GB one would fail on its own.

use std::time::Duration;

use loky::{Error, ProcessPoolExecutor};

/// Each worker's address space is capped at this many bytes.
const MEMORY_LIMIT: u64 = 1 << 30;

/// Allocates `size` million integers and sums the first thousand; a size
/// that cannot even be expressed is an error value.
fn memory_intensive_task(size: u64) -> Result<i64, String> {
    let len = usize::try_from(size * 1_000_000)
        .map_err(|_| format!("Cannot allocate {size}M integers"))?;
    // Allocate a large amount of memory. Like `[0] * n`, this cannot be
    // refused gracefully: past the memory limit the worker dies.
    let data = vec![0i64; len];
    Ok(data[..1000].iter().sum())
}

fn handle_worker_termination() -> loky::Result<()> {
    let executor = ProcessPoolExecutor::builder()
        .max_workers(2)
        .memory_limit(MEMORY_LIMIT)
        .build()?;
    // Submit tasks with increasing memory requirements.
    let sizes = [1, 10, 100, 1000, 10000];
    for size in sizes {
        let outcome = executor
            .submit_fn(memory_intensive_task, size)
            .and_then(|future| future.result_timeout(Duration::from_secs(10)));
        match outcome {
            Ok(Ok(result)) => println!("Size {size}M: Success ({result})"),
            Ok(Err(e)) => println!("Size {size}M: Memory error ({e})"),
            Err(Error::TerminatedWorker(e)) => println!("Size {size}M: Worker terminated ({e})"),
            Err(e) => println!("Size {size}M: Other error ({e})"),
        }
    }
    // Like Python's `with` block: the pool shuts down when `executor` drops.
    Ok(())
}

fn main() -> loky::Result<()> {
    loky::init();
    handle_worker_termination()
}
