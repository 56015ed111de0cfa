//! Workers started by `Launcher::ssh` through a real ssh server: its
//! unchanged command line (`ssh -T -o BatchMode=yes -- HOST "exec
//! {worker}"`) against an `sshd` that `cargo xtask test --ssh` starts on a
//! loopback port, with `LOKY_SSH_HOST` naming a host it logs in to and
//! `LOKY_SSH_DENIED_HOST` one that refuses the login. `#[ignore]`d:
//! `cargo xtask test --ssh` runs them.

mod common;

use loky::diagnostics::{EXIT, GETENV, PID, SQUARE};
use loky::{CrashPolicy, Error, Launcher, ProcessPoolExecutor};

use common::{RESULT_TIMEOUT, dead_within, run};

/// The host the environment names in `var`.
fn host(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: run cargo xtask test --ssh"))
}

/// A pool of one worker started over ssh on `host`.
fn ssh_pool(host: &str, policy: CrashPolicy) -> ProcessPoolExecutor {
    common::builder(1)
        .launcher(Launcher::ssh(host))
        .listen("127.0.0.1:0".parse().unwrap())
        .on_worker_crash(policy)
        .build()
        .unwrap()
}

/// The `SSH_CONNECTION` the pool's worker sees: set by `sshd` for what
/// runs in its sessions.
fn ssh_connection(ex: &ProcessPoolExecutor) -> String {
    run(ex, GETENV, "SSH_CONNECTION".to_owned())
        .unwrap()
        .expect("the worker runs in an ssh session")
}

#[test]
#[ignore = "needs an ssh server: cargo xtask test --ssh"]
fn ssh_workers_run_tasks_and_a_crash_under_respawn_is_replaced_through_ssh() {
    let ex = ssh_pool(&host("LOKY_SSH_HOST"), CrashPolicy::Respawn);
    assert_eq!(run(&ex, SQUARE, 12).unwrap(), 144);
    let first_session = ssh_connection(&ex);
    assert!(first_session.starts_with("127.0.0.1 "), "{first_session}");
    let first = run(&ex, PID, ()).unwrap();
    let dead = match run(&ex, EXIT, 3) {
        Err(Error::TerminatedWorker(dead)) => dead,
        other => panic!("expected TerminatedWorker, got {other:?}"),
    };
    assert_eq!(dead.exit_code(), Some(3), "{dead}");
    assert_eq!(dead.pid(), first);
    assert!(dead.host().is_some(), "{dead}");
    let second = run(&ex, PID, ()).unwrap();
    assert_ne!(first, second, "a new worker");
    // Each ssh connection comes from a port of its own.
    assert_ne!(ssh_connection(&ex), first_session, "started by a new ssh");
    let squares: Vec<i64> = ex.map(SQUARE, 0..100).collect::<loky::Result<_>>().unwrap();
    assert_eq!(squares, (0..100).map(|x| x * x).collect::<Vec<i64>>());
    assert!(common::shutdown_within(&ex, RESULT_TIMEOUT));
    assert!(
        dead_within(&[first, second], RESULT_TIMEOUT),
        "a worker outlived the pool"
    );
}

#[test]
#[ignore = "needs an ssh server: cargo xtask test --ssh"]
fn ssh_a_host_that_refuses_the_login_breaks_the_pool_naming_the_launcher() {
    let denied = host("LOKY_SSH_DENIED_HOST");
    let ex = ssh_pool(&denied, CrashPolicy::BreakPool);
    let err = run(&ex, SQUARE, 2).unwrap_err();
    assert!(matches!(err, Error::BrokenProcessPool(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&format!(
            "never connected back through the launcher `ssh -T -o BatchMode=yes -- {denied}"
        )),
        "{message}"
    );
    // ssh's own code for a failed connection or login.
    assert!(message.contains("EXIT(255)"), "{message}");
}
