//! An async service on a process pool: 200 concurrent requests on one
//! tokio thread, each awaiting its task; some tasks crash their worker,
//! some hang past their deadline; a batch request streams its results as
//! they come; the service shuts down without blocking its runtime.
//!
//! ```text
//! cargo run --example async_service
//! ```
//!
//! # Output
//!
//! ```text
//! 200 requests: 188 answered, 4 crashed their worker, 4 past their deadline, 4 rejected by the handler
//! the pool is not broken: true
//! batch of 50: 50 results streamed, sum = 122650
//! a request whose client gave up after 1 ms: its task still finished: Ok(99)
//! shut down: true, workers left: 0
//! ```
//!
//! Crash policy `Respawn` keeps the pool serving after a crash: only the
//! request whose task crashed fails, with `TerminatedWorker`. A deadline
//! (`CallOptions::timeout`) kills a task that hangs and fails it with
//! `DeadlineExceeded`. Nothing in the service blocks its one thread: the
//! awaits, the stream and `shutdown_async` park no thread.

use std::time::Duration;

use loky::{CallOptions, CrashPolicy, Error, ProcessPoolExecutor, Registry, Shutdown, Task};

/// What a request asks the pool to do.
const HANDLE: Task<u64, Result<u64, String>> = Task::new("handle");

/// The request handler, run in a worker: most requests compute; some make
/// the worker crash or hang, as a bug in native code would.
fn handle(request: u64) -> Result<u64, String> {
    match request % 50 {
        7 => std::process::exit(3),
        13 => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        21 => Err(format!("request {request} is invalid")),
        _ => Ok(request * 2 + 1),
    }
}

#[derive(Default)]
struct Tally {
    answered: usize,
    crashed: usize,
    late: usize,
    rejected: usize,
}

async fn serve(ex: ProcessPoolExecutor) -> loky::Result<()> {
    let deadline = CallOptions::new().timeout(Duration::from_millis(500));
    let mut requests = tokio::task::JoinSet::new();
    for request in 0..200 {
        let ex = ex.clone();
        // Each request awaits its own task; none blocks the others.
        requests.spawn(async move { ex.submit_with(HANDLE, request, deadline)?.await });
    }
    let mut tally = Tally::default();
    while let Some(outcome) = requests.join_next().await {
        match outcome.expect("a request task panicked") {
            Ok(Ok(_)) => tally.answered += 1,
            Ok(Err(_)) => tally.rejected += 1,
            Err(Error::TerminatedWorker(_)) => tally.crashed += 1,
            Err(Error::DeadlineExceeded(_)) => tally.late += 1,
            Err(e) => return Err(e),
        }
    }
    println!(
        "200 requests: {} answered, {} crashed their worker, {} past their deadline, {} rejected \
         by the handler",
        tally.answered, tally.crashed, tally.late, tally.rejected
    );
    println!("the pool is not broken: {}", !ex.is_broken());

    // A batch request: results streamed in the order they are done.
    let mut batch = ex
        .map_unordered(HANDLE, (0..50).map(|i| i * 50 + 1))
        .chunksize(5)
        .into_stream();
    let (mut count, mut sum) = (0, 0);
    while let Some((i, result)) = batch.next().await {
        count += 1;
        match result? {
            Ok(value) => sum += value,
            Err(message) => println!("batch item {i}: {message}"),
        }
    }
    println!("batch of 50: {count} results streamed, sum = {sum}");

    // A client that gives up after 1 ms: its await is dropped, the task
    // goes on, and its handle still gets the result.
    let task = ex.submit(HANDLE, 49)?;
    let _gave_up = tokio::time::timeout(Duration::from_millis(1), task.wait_async()).await;
    let value = task.wait_async().await?;
    println!("a request whose client gave up after 1 ms: its task still finished: {value:?}");

    ex.shutdown_async(Shutdown::default()).await;
    println!(
        "shut down: {}, workers left: {}",
        ex.is_shutdown(),
        ex.worker_pids().len()
    );
    Ok(())
}

fn main() -> loky::Result<()> {
    // Started by the executor, this program serves tasks here.
    loky::serve_if_worker(&Registry::new().register(HANDLE, handle));
    // Building an executor is quick (workers start on the first submit),
    // but it is a blocking call: make it before the runtime starts.
    let ex = ProcessPoolExecutor::builder()
        .max_workers(2)
        .worker_program(loky::WorkerProgram::CurrentExe)
        .on_worker_crash(CrashPolicy::Respawn)
        .build()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(serve(ex))
}
