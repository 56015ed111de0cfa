//! A task's own output passes through stdout and stderr untouched and never
//! disturbs the channel.

mod common;

use std::io::Read;
use std::process::Stdio;
use std::thread;

use common::{DEADLINE, Worker};
use loky_worker::diagnostics::{ECHO_I64, PRINT, WRITE_STDERR, WRITE_STDOUT};

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

/// Reads all of `stream` on a thread of its own, so that a writer is never
/// blocked on a full pipe.
fn drain(mut stream: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut all = Vec::new();
        stream.read_to_end(&mut all).unwrap();
        all
    })
}

#[test]
fn a_task_writing_to_stderr_reaches_it_whole_and_leaves_the_frames_intact() {
    // A mebibyte and a partial line of 36 bytes.
    const LEN: u64 = MIB + 100;
    let mut worker = Worker::start_with(|command| {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
    });
    let stdout = drain(worker.child.stdout.take().unwrap());
    let stderr = drain(worker.child.stderr.take().unwrap());
    worker.hello();
    assert_eq!(worker.call(1, WRITE_STDERR, &LEN), LEN);
    assert_eq!(worker.call(2, ECHO_I64, &-5), -5);
    assert_eq!(worker.call(3, WRITE_STDERR, &1), 1);
    worker.close();
    worker.wait_exit(DEADLINE);
    let err = stderr.join().unwrap();
    assert_eq!(err.len() as u64, LEN + 1);
    let (first, second) = err.split_at(LEN as usize);
    // Lines of 64 bytes, the last one shorter, each ending in a newline.
    for (i, line) in first.split_inclusive(|&b| b == b'\n').enumerate() {
        let full = i < (LEN / 64) as usize;
        assert_eq!(line.len(), if full { 64 } else { (LEN % 64) as usize });
        assert!(line[..line.len() - 1].iter().all(|&b| b == b'x'));
        assert!(line.ends_with(b"\n"));
    }
    assert_eq!(second, b"\n");
    assert!(
        stdout.join().unwrap().is_empty(),
        "stderr output went to stdout"
    );
}
