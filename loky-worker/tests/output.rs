//! A task's own output passes through stdout untouched and never disturbs
//! the channel.

mod common;

use std::io::Read;
use std::process::Stdio;
use std::thread;

use common::{DEADLINE, Worker};
use loky_worker::diagnostics::{ECHO_I64, PRINT, WRITE_STDOUT};

const MIB: u64 = 1 << 20;

#[test]
fn a_task_writing_a_mebibyte_to_stdout_leaves_the_frames_intact() {
    let mut worker = Worker::start_with(|command| {
        command.stdout(Stdio::piped());
    });
    let mut stdout = worker.child.stdout.take().unwrap();
    // Drain stdout concurrently: the pipe holds far less than 1 MiB.
    let drain = thread::spawn(move || {
        let mut all = Vec::new();
        stdout.read_to_end(&mut all).unwrap();
        all
    });
    worker.hello();
    assert_eq!(worker.call(1, WRITE_STDOUT, &MIB), MIB);
    assert_eq!(worker.call(2, ECHO_I64, &5), 5);
    worker.call(3, PRINT, &"last line".to_owned());
    worker.close();
    worker.wait_exit(DEADLINE);
    let all = drain.join().unwrap();
    assert_eq!(all.len() as u64, MIB + "last line\n".len() as u64);
    assert!(
        all[..MIB as usize]
            .iter()
            .all(|b| *b == b'x' || *b == b'\n')
    );
    assert!(all.ends_with(b"\nlast line\n"));
}
