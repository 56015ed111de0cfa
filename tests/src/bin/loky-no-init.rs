//! `loky-no-init`: an application that forgets `loky::init()` but names
//! itself as its worker program, as a user might. Started as a worker, its
//! `main` would build an executor of its own, whose workers would do the
//! same: the executor must stop that at the first level.
//!
//! `loky-no-init N [respawn] [hold]`: builds a pool of N workers running
//! this program (with `CrashPolicy::Respawn` if asked), submits a function
//! and prints `result: R` or `error: E` and `kind: K`. With `hold`, it
//! first waits for the end of its stdin: until then a test sees it run.

use std::io::Read;

use loky::{CrashPolicy, Error, ProcessPoolExecutor, WorkerProgram};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "hold") {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
    }
    let workers = args.first().and_then(|n| n.parse().ok()).unwrap_or(2);
    let policy = if args.iter().any(|a| a == "respawn") {
        CrashPolicy::Respawn
    } else {
        CrashPolicy::BreakPool
    };
    let outcome = ProcessPoolExecutor::builder()
        .max_workers(workers)
        .worker_program(WorkerProgram::CurrentExe)
        .on_worker_crash(policy)
        .build()
        .and_then(|ex| ex.submit_fn(|x: i64| x * x, 7))
        .and_then(|fut| fut.result());
    match outcome {
        Ok(result) => println!("result: {result}"),
        Err(e) => {
            println!("error: {e}");
            let kind = match e {
                Error::MissingInit(_) => "MissingInit",
                Error::BrokenProcessPool(_) => "BrokenProcessPool",
                Error::TerminatedWorker(_) => "TerminatedWorker",
                _ => "other",
            };
            println!("kind: {kind}");
        }
    }
}
