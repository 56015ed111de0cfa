//! A guided tour of loky-rs in a few seconds: submit functions, get
//! results, survive a panic, a crash and a runaway task, recover, and map
//! over many inputs with a progress bar.
//!
//! ```text
//! cargo run --release --example tour
//! ```
//!
//! This binary is also its own worker program: `main` starts with
//! [`loky::init()`], and every executor built afterwards runs this program
//! as its workers. The functions and closures below are submitted as they
//! are, with nothing registered.
//!
//! # Output
//!
//! (pids, the file path and the timing change from run to run)
//!
//! ```text
//! loky-rs tour: every task below runs in a worker process (this same program).
//!
//! 1. Submit work, get results
//!    square(7) = 49
//!    sum of square(0..100) over 100 futures = 328350
//!    2 workers: [72001, 72002]
//!
//! 2. Errors are values, panics are caught
//!    parse("42") = Ok(42)
//!    parse("forty-two") = Err("invalid digit found in string")
//!    divide(1, 0) panicked: task `fn((i64, i64)) -> i64` panicked in worker 72001: attempt to divide by zero (at loky/examples/tour.rs:71:5)
//!    the workers survived: [72001, 72002]
//!
//! 3. A crash breaks the pool, as in loky; a new pool recovers
//!    abort() failed: A worker process managed by the executor was unexpectedly terminated. [...]
//!        The exit codes of the workers are {SIGABRT(-6)}
//!        The worker (pid 72002) was running task `fn(())`.
//!    submit on the broken pool fails at once: true
//!    get_reusable() replaced the broken pool: square(8) = 64 on workers [72010, 72011]
//!    with CrashPolicy::Respawn only the crashed call fails: exit(3) -> EXIT(3), then square(9) = 81, pool broken: false
//!
//! 4. A runaway task is killed at its deadline
//!    sleep(60 s) with a 300 ms deadline: task `fn(Duration)` exceeded its deadline of 300ms and its worker (pid 72010) was killed
//!    pool broken: false; square(10) = 100
//!
//! 5. map over 400 inputs, in order, with progress
//!    [########################################] 400/400
//!    sum of squares = 21253400
//!
//! Tour finished in 1.1 s.
//! ```
//!
//! On a terminal the progress bar redraws in place; otherwise it prints a
//! line at every quarter.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use loky::{CallOptions, CrashPolicy, Error, ProcessPoolExecutor};

fn square(x: i64) -> i64 {
    x * x
}

/// Parses a number; a bad one is an error value, not a failure.
fn parse(text: String) -> Result<u64, String> {
    text.parse()
        .map_err(|e: std::num::ParseIntError| e.to_string())
}

/// Divides; panics on a zero divisor, as integer division does.
fn divide((a, b): (i64, i64)) -> i64 {
    a / b
}

/// Kills its worker the way a failed assertion in a C library does.
fn crash(_: ()) {
    std::process::abort()
}

/// Ends its worker with an exit code, as a call to `exit` deep in a
/// library would.
fn exit(code: i32) {
    std::process::exit(code)
}

fn sleep(duration: Duration) {
    std::thread::sleep(duration)
}

fn main() -> loky::Result<()> {
    // First thing: when an executor started this process as a worker, serve
    // there and never return.
    loky::init();

    let started = Instant::now();
    println!("loky-rs tour: every task below runs in a worker process (this same program).");
    submit_work()?;
    errors_and_panics()?;
    crash_and_recovery()?;
    runaway_task()?;
    map_with_progress()?;
    println!(
        "\nTour finished in {:.1} s.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn submit_work() -> loky::Result<()> {
    println!("\n1. Submit work, get results");
    // loky's reusable executor: one shared pool for the whole program.
    let ex = loky::get_reusable_executor(2)?;
    let future = ex.submit_fn(square, 7)?;
    println!("   square(7) = {}", future.result()?);

    let futures = (0..100)
        .map(|x| ex.submit_fn(square, x))
        .collect::<loky::Result<Vec<_>>>()?;
    let mut sum = 0;
    for future in futures {
        sum += future.result()?;
    }
    println!("   sum of square(0..100) over 100 futures = {sum}");
    println!("   {} workers: {:?}", ex.max_workers(), sorted_pids(&ex));
    Ok(())
}

fn errors_and_panics() -> loky::Result<()> {
    println!("\n2. Errors are values, panics are caught");
    let ex = loky::get_reusable_executor(2)?;
    for text in ["42", "forty-two"] {
        // `Ok(Err(..))`: the task ran and returned an error value.
        let parsed = ex.submit_fn(parse, text.to_owned())?.result()?;
        println!("   parse({text:?}) = {parsed:?}");
    }
    let pids = sorted_pids(&ex);
    match ex.submit_fn(divide, (1, 0))?.result() {
        Err(Error::Task(panic)) => println!("   divide(1, 0) panicked: {panic}"),
        other => println!("   divide(1, 0) unexpectedly gave {other:?}"),
    }
    let after = sorted_pids(&ex);
    if after == pids {
        println!("   the workers survived: {after:?}");
    } else {
        println!("   the workers changed: {pids:?} -> {after:?}");
    }
    Ok(())
}

fn crash_and_recovery() -> loky::Result<()> {
    println!("\n3. A crash breaks the pool, as in loky; a new pool recovers");
    let ex = loky::get_reusable_executor(2)?;
    match ex.submit_fn(crash, ())?.result() {
        Err(Error::TerminatedWorker(crash)) => {
            let message = crash.to_string();
            let mut paragraphs = message.split("\n\n");
            println!(
                "   abort() failed: {} [...]",
                first_sentence(paragraphs.next().unwrap_or_default())
            );
            for paragraph in paragraphs {
                println!("       {paragraph}");
            }
        }
        other => println!("   abort() unexpectedly gave {other:?}"),
    }
    let refused = ex.submit_fn(square, 1).err();
    println!(
        "   submit on the broken pool fails at once: {}",
        refused.is_some_and(|e| e.is_broken_pool())
    );

    // The reusable executor replaces a broken pool with a fresh one.
    let ex = loky::get_reusable_executor(2)?;
    let eight = ex.submit_fn(square, 8)?.result()?;
    println!(
        "   get_reusable() replaced the broken pool: square(8) = {eight} on workers {:?}",
        sorted_pids(&ex)
    );

    // Beyond loky: replace the dead worker and go on.
    let respawning = ProcessPoolExecutor::builder()
        .max_workers(2)
        .on_worker_crash(CrashPolicy::Respawn)
        .build()?;
    let ended = match respawning.submit_fn(exit, 3)?.result() {
        Err(Error::TerminatedWorker(crash)) => crash.exit().to_string(),
        other => format!("{other:?}"),
    };
    let nine = respawning.submit_fn(square, 9)?.result()?;
    println!(
        "   with CrashPolicy::Respawn only the crashed call fails: exit(3) -> {ended}, \
         then square(9) = {nine}, pool broken: {}",
        respawning.is_broken()
    );
    Ok(())
}

fn runaway_task() -> loky::Result<()> {
    println!("\n4. A runaway task is killed at its deadline");
    let ex = loky::get_reusable_executor(2)?;
    let deadline = CallOptions::new().timeout(Duration::from_millis(300));
    match ex
        .submit_fn_with(sleep, Duration::from_secs(60), deadline)?
        .result()
    {
        Err(Error::DeadlineExceeded(e)) => println!("   sleep(60 s) with a 300 ms deadline: {e}"),
        other => println!("   sleep(60 s) unexpectedly gave {other:?}"),
    }
    let ten = ex.submit_fn(square, 10)?.result()?;
    println!("   pool broken: {}; square(10) = {ten}", ex.is_broken());
    Ok(())
}

fn map_with_progress() -> loky::Result<()> {
    const N: u64 = 400;
    println!("\n5. map over {N} inputs, in order, with progress");
    let ex = loky::get_reusable_executor(2)?;
    let mut progress = Progress::new(N);
    let mut sum = 0;
    // A closure: squares, taking three milliseconds (work worth a progress
    // bar).
    let slow_square = |x: u64| {
        std::thread::sleep(Duration::from_millis(3));
        x * x
    };
    for (done, square) in ex.map_fn(slow_square, 0..N).chunksize(10).enumerate() {
        sum += square?;
        progress.show(done as u64 + 1);
    }
    println!("   sum of squares = {sum}");
    Ok(())
}

/// A progress bar: redrawn in place on a terminal, a line at every
/// quarter otherwise.
struct Progress {
    total: u64,
    terminal: bool,
}

impl Progress {
    const WIDTH: u64 = 40;

    fn new(total: u64) -> Self {
        Progress {
            total,
            terminal: std::io::stdout().is_terminal(),
        }
    }

    fn show(&mut self, done: u64) {
        let filled = (done * Self::WIDTH / self.total) as usize;
        let bar = format!(
            "   [{}{}] {done}/{}",
            "#".repeat(filled),
            "-".repeat(Self::WIDTH as usize - filled),
            self.total
        );
        if self.terminal {
            print!("\r{bar}");
            if done == self.total {
                println!();
            }
            let _ = std::io::stdout().flush();
        } else if (done * 4).is_multiple_of(self.total) {
            println!("{bar}");
        }
    }
}

fn sorted_pids(ex: &ProcessPoolExecutor) -> Vec<u32> {
    let mut pids = ex.worker_pids();
    pids.sort_unstable();
    pids
}

/// The text up to and including the first full stop.
fn first_sentence(text: &str) -> &str {
    text.find(". ").map_or(text, |end| &text[..=end])
}
