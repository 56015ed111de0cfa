//! Memory-leak recycling and the memory limit.

mod common;

use common::{DEADLINE, Worker, value};
use loky_proto::{Response, RetireReason, env, exit_code};
use loky_worker::diagnostics::{ALLOCATE, ECHO_I64, LEAK};

const MB: u64 = 1_000_000;

#[test]
fn a_leaking_worker_asks_to_retire_once_and_serves_on() {
    let mut worker = Worker::start_with(|command| {
        command
            .env(env::MEMORY_CHECK_INTERVAL, "0")
            .env(env::MAX_MEMORY_LEAK_SIZE, (20 * MB).to_string());
    });
    worker.hello();
    let mut retiring = Vec::new();
    for id in 0..12 {
        worker.send_one(id, LEAK, &(5 * MB));
        loop {
            match worker.recv() {
                Response::Reply(reply) if reply.id == id => {
                    assert_eq!(value::<u64>(reply.outcome), 5 * MB);
                    break;
                }
                Response::Retiring(reason) => retiring.push((id, reason)),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    let [(id, RetireReason::MemoryLeak { baseline, current })] = retiring[..] else {
        panic!("expected one Retiring message, got {retiring:?}");
    };
    // The baseline is taken after the first call; 20 MB more takes at least
    // four more leaks of 5 MB.
    assert!(id >= 4, "retired after call {id}");
    assert!(current - baseline > 20 * MB);
    assert_eq!(worker.call(100, ECHO_I64, &1), 1);
}

/// The worker caps its own address space at the limit its environment names.
#[test]
fn running_out_of_memory_under_a_limit_exits_with_its_code() {
    let limit: u64 = 1 << 30;
    let mut worker = Worker::start_with(|command| {
        // With backtraces on, std's out-of-memory path prints one before
        // aborting, and that clobbers the `errno` the worker relies on to
        // tell out-of-memory from other aborts (see the worker's docs).
        command
            .env(env::MEMORY_LIMIT, limit.to_string())
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE");
    });
    worker.hello();
    assert_eq!(worker.call(1, ALLOCATE, &(10 * MB)), 10 * MB);
    worker.send_one(2, ALLOCATE, &(2 * limit));
    let status = worker.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(exit_code::MEMORY_LIMIT), "{status:?}");
}

#[test]
fn a_malformed_memory_limit_ends_the_worker_with_the_protocol_error_code() {
    let mut worker = Worker::start_with(|command| {
        command
            .env(env::MEMORY_LIMIT, "lots")
            .stderr(std::process::Stdio::piped());
    });
    let mut stderr = worker.child.stderr.take().unwrap();
    let status = worker.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(exit_code::PROTOCOL_ERROR), "{status:?}");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut text).unwrap();
    assert!(
        text.contains(env::MEMORY_LIMIT) && text.contains("lots"),
        "{text}"
    );
}
