//! Workers started by Slurm's `srun`, as `Launcher::slurm()` starts them.
//! Needs a Slurm cluster: `cargo xtask test --slurm` starts a single-node
//! one and runs these.

use std::process::Command;
use std::time::Instant;

use loky_proto::remote::EndReason;
use loky_worker::diagnostics::{ECHO_I64, GETENV, SLEEP};

use crate::NOTICE;
use crate::executor::TestExecutor;

/// The words `Launcher::slurm()` puts before the worker.
const SRUN: &[&str] = &["srun", "--nodes=1", "--ntasks=1", "--quiet"];

#[test]
#[ignore = "needs a Slurm cluster: cargo xtask test --slurm"]
fn slurm_srun_starts_workers_that_connect_back_and_scancel_ends_one() {
    let executor = TestExecutor::new();
    let started = Instant::now();
    let mut remotes: Vec<_> = (0..2)
        .map(|_| {
            let ticket = executor.ticket(&[]).encode().unwrap();
            executor.accept(TestExecutor::launch_with(SRUN, &ticket))
        })
        .collect();
    eprintln!("two workers through srun in {:.2?}", started.elapsed());
    let mut jobs = Vec::new();
    for remote in &mut remotes {
        remote.worker.hello();
        assert_eq!(remote.worker.call(1, ECHO_I64, &9), 9);
        let job: Option<String> = remote.worker.call(2, GETENV, &"SLURM_JOB_ID".to_string());
        jobs.push(job.expect("the worker runs as a Slurm job"));
    }
    // scancel ends a worker's job while its task runs: its link ends.
    let remote = &mut remotes[0];
    remote
        .worker
        .send_one(3, SLEEP, &std::time::Duration::from_secs(300));
    let cancelled = Instant::now();
    let status = Command::new("scancel").arg(&jobs[0]).status().unwrap();
    assert!(status.success());
    let end = remote.relay.wait_end(NOTICE).expect("the link ends");
    assert_ne!(end.reason, EndReason::Dropped, "{end:?}");
    remote.worker.expect_end();
    eprintln!(
        "scancel ended the worker's link in {:.2?} ({end:?})",
        cancelled.elapsed()
    );
    // The other worker serves on, and leaves when told to, as its job.
    let remote = &mut remotes[1];
    assert_eq!(remote.worker.call(3, ECHO_I64, &10), 10);
    remote.worker.close();
    assert!(remote.worker.wait_exit(NOTICE).code().is_some());
    // srun of the cancelled job ends too.
    remotes[0].worker.wait_exit(NOTICE);
}
