//! The executor's maximum frame size reaches the worker through its
//! environment; a value that is not a number ends the worker.

mod common;

use common::{DEADLINE, Worker};
use loky_proto::{env, exit_code};

#[test]
fn a_malformed_max_frame_ends_the_worker_with_the_protocol_error_code() {
    let mut worker = Worker::start_with(|command| {
        command
            .env(env::MAX_FRAME, "big")
            .stderr(std::process::Stdio::piped());
    });
    let mut stderr = worker.child.stderr.take().unwrap();
    let status = worker.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(exit_code::PROTOCOL_ERROR), "{status:?}");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut text).unwrap();
    assert!(
        text.contains(env::MAX_FRAME) && text.contains("big"),
        "{text}"
    );
}
