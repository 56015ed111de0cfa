//! A progress bar on a long `map`: `Map::done` and `Map::in_flight` are
//! cheap counters, read after each result.
//!
//! ```text
//! cargo run --example progress
//! ```
//!
//! # Output
//!
//! On a terminal, a bar on stderr while the map runs (hidden when stderr is
//! not a terminal), then on stdout:
//!
//! ```text
//! 2000 items mapped, 0 failed, sum = 7996000
//! ```

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use loky::{ProcessPoolExecutor, Registry, Task, WorkerProgram};

/// Simulates a millisecond of work per item.
const WORK: Task<u64, u64> = Task::new("work");

fn work(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(1));
    x * 4
}

fn main() -> loky::Result<()> {
    loky::serve_if_worker(&Registry::new().register(WORK, work));
    let ex = ProcessPoolExecutor::builder()
        .max_workers(2)
        .worker_program(WorkerProgram::CurrentExe)
        .build()?;

    const ITEMS: u64 = 2000;
    let bar = ProgressBar::new(ITEMS).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} done, {msg} [{elapsed}]")
            .expect("a valid template"),
    );
    let mut map = ex.map(WORK, 0..ITEMS).chunksize(20);
    let (mut sum, mut failed) = (0, 0);
    while let Some(result) = map.next() {
        match result {
            Ok(value) => sum += value,
            Err(_) => failed += 1,
        }
        bar.set_position(map.done() as u64);
        bar.set_message(format!("{} in flight", map.in_flight()));
    }
    bar.finish();
    println!("{ITEMS} items mapped, {failed} failed, sum = {sum}");
    Ok(())
}
