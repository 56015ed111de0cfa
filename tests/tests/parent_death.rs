//! Parent death: every worker dies with its parent, even on SIGKILL.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn workers_die_within_a_second_of_their_parent_being_sigkilled() {
    let mut parent = Command::new(env!("CARGO_BIN_EXE_loky-test-parent"))
        .args(["busy", common::worker_program().to_str().unwrap(), "2"])
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
    parent.kill().unwrap(); // SIGKILL
    parent.wait().unwrap();
    assert!(
        common::eventually(Duration::from_secs(1), || pids
            .iter()
            .all(|&pid| !common::alive(pid))),
        "workers {pids:?} outlived their parent"
    );
}
