//! Workers started by a launcher beyond this network namespace: in another
//! namespace whose link is taken down (needs root and iproute2), and
//! through a real Slurm cluster (needs one: `cargo xtask test --slurm`
//! starts a single-node cluster and runs these). Both are `#[ignore]`d;
//! `cargo xtask test` runs them where it can.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use loky::diagnostics::{EXIT, GETENV, PID, SLEEP, SQUARE};
use loky::{CrashPolicy, Error, Launcher, ProcessPoolExecutor, WorkerExit, WorkerLost};

use common::{RESULT_TIMEOUT, dead_within, run};

/// Heartbeats of the namespace test: the executor and the worker each
/// notice a silent link within `TIMEOUT`.
const INTERVAL: Duration = Duration::from_millis(250);
const TIMEOUT: Duration = Duration::from_secs(2);

/// How long past the heartbeat timeout a loaded machine may take to act.
const SLACK: Duration = Duration::from_secs(10);

fn terminated(result: loky::Result<impl std::fmt::Debug>) -> loky::TerminatedWorker {
    match result {
        Err(Error::TerminatedWorker(dead)) => dead,
        other => panic!("expected TerminatedWorker, got {other:?}"),
    }
}

/// A network namespace joined to this one by a veth pair, each end with an
/// address of a /30 of 198.18.0.0/15 (the range set aside for network
/// tests, which never leaves this machine). Dropping it deletes both.
struct Namespace {
    name: String,
    /// This namespace's end of the pair.
    host_link: String,
    host_addr: Ipv4Addr,
}

/// Runs `ip ARGS`, failing the test with its stderr.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Namespace {
    fn create() -> Namespace {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // Another range of ids than the worker's own namespace tests.
        let id = (std::process::id().wrapping_mul(37).wrapping_add(n) % (1 << 14)) + (1 << 14);
        let base = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + id * 4;
        let namespace = Namespace {
            name: format!("loky-x{id}"),
            host_link: format!("lkx{id}h"),
            host_addr: Ipv4Addr::from(base + 1),
        };
        let inner_link = format!("lkx{id}n");
        let inner_addr = Ipv4Addr::from(base + 2);
        let (name, host_link) = (&namespace.name, &namespace.host_link);
        ip(&["netns", "add", name]);
        let pair = ["link", "add", host_link, "type", "veth", "peer", "name"];
        ip(&[&pair[..], &[&inner_link]].concat());
        ip(&["link", "set", &inner_link, "netns", name]);
        let host_cidr = format!("{}/30", namespace.host_addr);
        ip(&["addr", "add", &host_cidr, "dev", host_link]);
        ip(&["link", "set", host_link, "up"]);
        let inner_cidr = format!("{inner_addr}/30");
        ip(&["-n", name, "addr", "add", &inner_cidr, "dev", &inner_link]);
        ip(&["-n", name, "link", "set", &inner_link, "up"]);
        ip(&["-n", name, "link", "set", "lo", "up"]);
        namespace
    }

    /// Takes this side's end of the link down: nothing crosses any more,
    /// and neither side is told.
    fn take_link_down(&self) {
        ip(&["link", "set", &self.host_link, "down"]);
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and so both.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_link])
            .output();
    }
}

#[test]
#[ignore = "needs root and iproute2: cargo xtask test runs it as root"]
fn netns_a_worker_whose_link_goes_down_is_declared_dead_and_exits_on_its_own() {
    let namespace = Namespace::create();
    // `setsid` forks the agent into a session of its own and returns: the
    // launcher ends well at once, and only the link can end the worker.
    let launcher = format!("ip netns exec {} setsid {{worker}}", namespace.name);
    let ex = common::builder(1)
        .launcher(Launcher::command(launcher))
        .listen(SocketAddr::new(namespace.host_addr.into(), 0))
        .heartbeat_interval(INTERVAL)
        .heartbeat_timeout(TIMEOUT)
        .build()
        .unwrap();
    assert_eq!(run(&ex, SQUARE, 6).unwrap(), 36);
    let worker = run(&ex, PID, ()).unwrap();
    let long = ex.submit(SLEEP, Duration::from_secs(300)).unwrap();
    let queued = ex.submit(SQUARE, 3).unwrap();
    namespace.take_link_down();
    let down = Instant::now();
    let dead = terminated(long.result_timeout(TIMEOUT + SLACK));
    let noticed = down.elapsed();
    assert_eq!(
        dead.exit(),
        WorkerExit::Lost(WorkerLost::HeartbeatsStopped),
        "{dead}"
    );
    assert_eq!(dead.pid(), worker);
    assert!(dead.host().is_some_and(|host| !host.is_empty()), "{dead}");
    assert!(dead.to_string().contains("heartbeats stopped"), "{dead}");
    // The default crash policy breaks the pool: the queued call fails too.
    let err = queued.result_timeout(RESULT_TIMEOUT).unwrap_err();
    assert!(err.is_broken_pool(), "{err:?}");
    assert!(
        dead_within(&[worker], TIMEOUT + SLACK),
        "the worker beyond the link still runs"
    );
    eprintln!(
        "link down: the executor failed the worker's call after {noticed:.2?}, the worker \
         exited by {:.2?} (heartbeat timeout {TIMEOUT:?})",
        down.elapsed()
    );
}

fn slurm_pool(n: usize, policy: CrashPolicy) -> ProcessPoolExecutor {
    common::builder(n)
        .launcher(Launcher::slurm())
        .listen("127.0.0.1:0".parse().unwrap())
        .on_worker_crash(policy)
        .build()
        .unwrap()
}

/// The Slurm job step of the pool's worker, `JOB.STEP`: a job of its own
/// outside an allocation, a step of the caller's job inside one (an
/// `sbatch` script, `salloc`).
fn slurm_step(ex: &ProcessPoolExecutor) -> String {
    let var = |name: &str| {
        run(ex, GETENV, name.to_owned())
            .unwrap()
            .unwrap_or_else(|| panic!("the worker runs as a Slurm job step: no {name}"))
    };
    let job = var("SLURM_JOB_ID");
    if let Ok(ours) = std::env::var("SLURM_JOB_ID") {
        assert_eq!(job, ours, "inside an allocation, a step of its job");
    }
    format!("{job}.{}", var("SLURM_STEP_ID"))
}

#[test]
#[ignore = "needs a Slurm cluster: cargo xtask test --slurm"]
fn slurm_workers_run_tasks_and_a_crash_under_respawn_is_replaced_through_slurm() {
    let started = Instant::now();
    let ex = slurm_pool(1, CrashPolicy::Respawn);
    assert_eq!(run(&ex, SQUARE, 11).unwrap(), 121);
    eprintln!("a first result through srun in {:.2?}", started.elapsed());
    let first_step = slurm_step(&ex);
    let first = run(&ex, PID, ()).unwrap();
    let dead = terminated(run(&ex, EXIT, 3));
    assert_eq!(dead.exit_code(), Some(3), "{dead}");
    assert_eq!(dead.pid(), first);
    assert!(dead.host().is_some(), "{dead}");
    let second = run(&ex, PID, ()).unwrap();
    assert_ne!(first, second, "a new worker");
    let second_step = slurm_step(&ex);
    assert_ne!(first_step, second_step, "started by a new srun");
    let squares: Vec<i64> = ex.map(SQUARE, 0..100).collect::<loky::Result<_>>().unwrap();
    assert_eq!(squares, (0..100).map(|x| x * x).collect::<Vec<i64>>());
    assert!(common::shutdown_within(&ex, RESULT_TIMEOUT));
}

#[test]
#[ignore = "needs a Slurm cluster: cargo xtask test --slurm"]
fn slurm_scancel_of_a_workers_step_is_a_terminated_worker() {
    let ex = slurm_pool(1, CrashPolicy::Respawn);
    let step = slurm_step(&ex);
    let worker = run(&ex, PID, ()).unwrap();
    let long = ex.submit(SLEEP, Duration::from_secs(300)).unwrap();
    // The call is running before the step goes.
    let running = common::eventually(RESULT_TIMEOUT, || long.running());
    assert!(running, "the call never ran");
    let cancelled = Instant::now();
    let status = Command::new("scancel").arg(&step).status().unwrap();
    assert!(status.success());
    let dead = terminated(long.result_timeout(RESULT_TIMEOUT));
    eprintln!(
        "scancel: the call failed after {:.2?} with {}",
        cancelled.elapsed(),
        dead.exit()
    );
    assert_eq!(dead.pid(), worker);
    assert!(dead.host().is_some(), "{dead}");
    assert_eq!(dead.task(), Some("sleep"));
    assert!(dead_within(&[worker], RESULT_TIMEOUT));
    // Respawn: a new job serves on.
    assert_eq!(run(&ex, SQUARE, 4).unwrap(), 16);
    assert_ne!(slurm_step(&ex), step);
}
