//! A worker that runs out of its memory limit leaves one line on stderr
//! that names the limit and says the worker exits with its code: the stock
//! worker, with its allocator, that line alone.

mod common;

use std::io::Read;
use std::process::Stdio;

use common::{DEADLINE, Worker};
use loky_proto::{env, exit_code};
use loky_worker::diagnostics::ALLOCATE;

#[test]
fn running_out_of_the_memory_limit_says_so_on_stderr() {
    let limit: u64 = 1 << 30;
    let mut worker = Worker::start_with(|command| {
        command
            .env(env::MEMORY_LIMIT, limit.to_string())
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .stderr(Stdio::piped());
    });
    worker.hello();
    worker.send_one(1, ALLOCATE, &(2 * limit));
    let status = worker.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(exit_code::MEMORY_LIMIT), "{status:?}");
    let mut stderr = String::new();
    worker
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("loky-worker:"))
        .collect();
    assert_eq!(ours.len(), 1, "{stderr}");
    // The stock worker's allocator ends it before std prints its own
    // message (`memory allocation of N bytes failed`).
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!ours[0].contains("the note above"), "{stderr}");
    assert!(
        ours[0].contains(&format!("memory limit of {limit} bytes"))
            && ours[0].contains(&format!("exits with code {}", exit_code::MEMORY_LIMIT)),
        "{stderr}"
    );
}
