//! Parent death: every worker dies with its parent, even on SIGKILL.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Starts a parent program with 2 busy workers; returns it and their pids.
fn busy_parent(extra: &[&str]) -> (Child, Vec<u32>) {
    let mut parent = Command::new(env!("CARGO_BIN_EXE_loky-test-parent"))
        .args(["busy", common::worker_program().to_str().unwrap(), "2"])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(parent.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
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

#[test]
fn workers_die_within_a_second_of_their_parent_being_sigkilled() {
    let (mut parent, pids) = busy_parent(&[]);
    parent.kill().unwrap(); // SIGKILL
    parent.wait().unwrap();
    assert!(
        common::eventually(Duration::from_secs(1), || pids
            .iter()
            .all(|&pid| !common::alive(pid))),
        "workers {pids:?} outlived their parent"
    );
}

#[test]
fn processes_a_running_task_spawned_die_with_the_parent_too() {
    let dir = std::env::temp_dir().join(format!("loky-parent-death-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (mut parent, mut pids) = busy_parent(&[dir.to_str().unwrap()]);
    let files = [dir.join("child-0"), dir.join("child-1")];
    // The tasks write their child's pid once it runs: no other notice.
    assert!(common::eventually(Duration::from_secs(10), || files
        .iter()
        .all(|f| f.exists())));
    for file in &files {
        pids.push(std::fs::read_to_string(file).unwrap().parse().unwrap());
    }
    assert!(pids.iter().all(|&pid| common::alive(pid)));
    parent.kill().unwrap(); // SIGKILL
    parent.wait().unwrap();
    assert!(
        common::eventually(Duration::from_secs(1), || pids
            .iter()
            .all(|&pid| !common::alive(pid))),
        "workers or their tasks' processes {pids:?} outlived their parent"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
