//! `loky-map-chaos`: the map scenario of the chaos suite (see
//! `loky_tests::map_chaos`): `--rounds N` (default 100), `--seed S`
//! (default: from the clock, printed, to replay a run). Exits 1 if the
//! invariant broke in any round.
//!
//! The program is its own worker program.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use loky::{ProcessPoolExecutor, WorkerProgram};

fn main() -> ExitCode {
    loky::serve_if_worker(&loky_tests::registry());
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| -> Option<u64> {
        let at = args.iter().position(|a| a == flag)?;
        args.get(at + 1)?.parse().ok()
    };
    let rounds = value("--rounds").unwrap_or(100);
    let seed = value("--seed").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    println!("map chaos: {rounds} rounds, seed {seed} (replay with --seed {seed})");
    let builder = || {
        ProcessPoolExecutor::builder()
            .max_workers(2)
            .worker_program(WorkerProgram::CurrentExe)
    };
    let summary = loky_tests::map_chaos::run(seed, rounds, &builder);
    println!("{summary}");
    if summary.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
