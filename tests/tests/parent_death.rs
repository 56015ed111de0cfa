//! Parent death: every worker dies with its parent, even on SIGKILL, and so
//! does what its tasks started, pools they built included.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::RESULT_TIMEOUT;
use loky_tests::Gate;
use loky_tests::chaos::probe::PidFd;

/// How long a worker may outlive its SIGKILLed parent. The design says
/// milliseconds; a worker that does not notice runs its minute-long task
/// (or forever); the rest is slack for a loaded machine.
const DIE_WITHIN: Duration = Duration::from_secs(10);

/// A parent program, SIGKILLed and reaped when dropped (a failing test
/// leaves nothing running).
struct Parent(Child);

impl Parent {
    fn start(args: &[&str], stdout: Stdio) -> Parent {
        let child = Command::new(env!("CARGO_BIN_EXE_loky-test-parent"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .spawn()
            .expect("cannot start loky-test-parent");
        Parent(child)
    }

    /// SIGKILLs the parent and reaps it.
    fn kill(&mut self) {
        self.0.kill().expect("SIGKILL to the parent");
        self.0.wait().expect("reaping the parent");
    }
}

impl Drop for Parent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a parent program with 2 busy workers; returns it and their pids.
fn busy_parent(extra: &[&str]) -> (Parent, Vec<u32>) {
    let worker = common::worker_program();
    let mut args = vec!["busy", worker.to_str().unwrap(), "2"];
    args.extend(extra);
    let mut parent = Parent::start(&args, Stdio::piped());
    let stdout = parent.0.stdout.take().unwrap();
    let line = common::bounded("the parent's report of its workers", RESULT_TIMEOUT, || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .expect("reading the parent's report");
    let pids: Vec<u32> = line
        .trim()
        .strip_prefix("pids: ")
        .unwrap_or_else(|| panic!("unexpected output {line:?}"))
        .split(' ')
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|&pid| common::alive(pid)));
    (parent, pids)
}

/// Handles on `pids`, opened while they run: waiting on them never
/// mistakes another process that reuses a pid for one of them.
fn handles(pids: &[u32]) -> Vec<PidFd> {
    pids.iter()
        .map(|&pid| PidFd::open(pid).unwrap_or_else(|| panic!("process {pid} is gone")))
        .collect()
}

/// Each of `handles` has exited within [`DIE_WITHIN`] (of the first wait).
fn assert_all_die(handles: &[PidFd], what: &str) {
    let deadline = std::time::Instant::now() + DIE_WITHIN;
    let survivors: Vec<u32> = handles
        .iter()
        .filter(|h| !h.wait_exit(deadline.saturating_duration_since(std::time::Instant::now())))
        .map(PidFd::pid)
        .collect();
    for handle in handles {
        handle.send(libc::SIGKILL);
    }
    assert!(
        survivors.is_empty(),
        "{what} {survivors:?} outlived their parent"
    );
}

#[test]
fn workers_die_of_their_parent_being_sigkilled() {
    let (mut parent, pids) = busy_parent(&[]);
    let workers = handles(&pids);
    parent.kill();
    assert_all_die(&workers, "workers");
}

#[test]
fn processes_a_running_task_spawned_die_with_the_parent_too() {
    let dir = std::env::temp_dir().join(format!("loky-parent-death-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (mut parent, mut pids) = busy_parent(&[dir.to_str().unwrap()]);
    for i in 0..2 {
        let path = dir.join(format!("child-{i}"));
        pids.push(common::wait_for_pid(&path));
    }
    let doomed = handles(&pids);
    parent.kill();
    assert_all_die(&doomed, "workers or their tasks' processes");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Catches a pool built inside a worker whose workers survive when the
/// top parent dies: the inner worker's parent is the outer worker, which
/// dies with the top parent, and the inner one must follow.
#[test]
fn workers_of_a_pool_a_task_built_die_with_the_top_parent() {
    let gate = Gate::new();
    let worker = common::worker_program();
    let mut parent = Parent::start(
        &["nested", worker.to_str().unwrap(), &gate.arg()],
        Stdio::null(),
    );
    let held = gate.entered(RESULT_TIMEOUT);
    let inner = held.pid;
    let (_, outer) = common::stat(inner).expect("the inner worker runs");
    let (_, top) = common::stat(outer).expect("the outer worker runs");
    assert_eq!(top, parent.0.id(), "the outer worker is the parent's");
    let workers = handles(&[outer, inner]);
    parent.kill();
    assert_all_die(&workers, "the outer and inner workers");
}
