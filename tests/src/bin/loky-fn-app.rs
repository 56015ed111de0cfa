//! `loky-fn-app`: an application that is its own worker program, written
//! the way the README's first screen says: `loky::init()` first in `main`,
//! then `ProcessPoolExecutor::new(2)` and `submit_fn`, with no worker
//! program named anywhere.
//!
//! It prints what it computed (`square: 49`, `map: 499500`, `reusable:
//! 64`), and `workers run this program: true` when every worker's
//! executable is this program's.

use loky::ProcessPoolExecutor;

fn main() -> loky::Result<()> {
    loky::init();

    let ex = ProcessPoolExecutor::new(2)?;
    println!("square: {}", ex.submit_fn(|x: i64| x * x, 7)?.result()?);
    let sum: i64 = ex
        .map_fn(|x: i64| x, 0..1000)
        .chunksize(100)
        .sum::<loky::Result<i64>>()?;
    println!("map: {sum}");
    let me = std::fs::canonicalize(std::env::current_exe().expect("this program"))
        .expect("this program's path");
    let workers_are_me = ex
        .worker_pids()
        .iter()
        .all(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == me));
    println!("workers run this program: {workers_are_me}");

    let reusable = loky::get_reusable_executor(2)?;
    println!(
        "reusable: {}",
        reusable.submit_fn(|x: i64| x * x, 8)?.result()?
    );
    Ok(())
}
