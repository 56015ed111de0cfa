//! The worker's side of the shared-memory transport: calls whose body or
//! arguments come as descriptors, replies past the executor's threshold in
//! shared memory, descriptor hygiene, and a peer that dies in a transfer.

mod common;

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::sync::{Mutex, MutexGuard};

use common::{DEADLINE, Worker};
use loky_proto::shm::{FrameBuf, LocalFrames};
use loky_proto::{
    Attachments, CallKind, DEFAULT_MAX_FRAME, FrameError, Outcome, Response, SharedBytes, Task,
    decode_body, decode_payload, encode_call_frame, encode_payload_into, env,
};
use loky_worker::diagnostics::{ECHO_BYTES, ECHO_SHARED, NOOP};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;

const MIB: usize = 1 << 20;

/// A worker told to send replies over `threshold` bytes in shared memory,
/// and the parent's reader of its frames.
struct Local {
    worker: Worker,
    frames: LocalFrames,
    threshold: usize,
    /// Held until the worker is gone: some tests count this process's
    /// descriptors, which a test running beside them (under `cargo test`,
    /// tests share the process) would change.
    _serial: MutexGuard<'static, ()>,
}

/// Taken by every test of this file, through [`Local::start`].
static SERIAL: Mutex<()> = Mutex::new(());

/// A reply as received: its value bytes, attachments, and whether its body
/// came in shared memory.
struct Reply {
    value: Vec<u8>,
    attachments: Attachments,
    in_shm: bool,
}

impl Reply {
    fn decode<O: DeserializeOwned>(&mut self) -> O {
        let value = &self.value;
        self.attachments
            .decode(|| decode_payload(value))
            .expect("decode the value")
    }
}

impl Local {
    fn start(threshold: usize) -> Local {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let worker = Worker::start_with(|command| {
            command.env(env::SHM_THRESHOLD, threshold.to_string());
        });
        let mut local = Local {
            frames: LocalFrames::new(DEFAULT_MAX_FRAME),
            threshold,
            worker,
            _serial: serial,
        };
        match local.next().0 {
            Response::Hello(_) => {}
            other => panic!("expected the hello, got {other:?}"),
        }
        local
    }

    /// Sends call `id` of `task` through a frame buffer for this channel.
    fn send<I: Serialize, O>(&mut self, id: u64, task: Task<I, O>, arg: &I) {
        let mut out = FrameBuf::local(self.threshold);
        encode_call_frame(
            id,
            task.name(),
            CallKind::Single,
            &mut out,
            DEFAULT_MAX_FRAME,
            |o| encode_payload_into(arg, o),
        )
        .unwrap()
        .unwrap();
        out.send_to(self.worker.channel()).expect("send the call");
    }

    /// The next message, with what came with it.
    fn next(&mut self) -> (Response<'static>, Attachments, bool) {
        loop {
            if self.frames.has_frame() {
                let frame = self.frames.next_frame().expect("a valid frame").unwrap();
                let response = match decode_body::<Response<'_>>(frame.body).unwrap() {
                    Response::Reply(reply) => Response::Reply(loky_proto::Reply {
                        id: reply.id,
                        outcome: reply.outcome.into_owned(),
                    }),
                    Response::Hello(hello) => Response::Hello(hello),
                    Response::Retiring(reason) => Response::Retiring(reason),
                    Response::Progress(progress) => Response::Progress(loky_proto::Progress {
                        id: progress.id,
                        items: progress
                            .items
                            .into_iter()
                            .map(loky_proto::Outcome::into_owned)
                            .collect(),
                    }),
                };
                return (response, frame.attachments, frame.body_in_shared_memory);
            }
            let channel = self.worker.channel().try_clone().unwrap();
            match self.frames.fill_from(&channel) {
                Ok(0) => panic!(
                    "the worker closed its channel: {:?}",
                    self.frames.end_of_stream()
                ),
                Ok(_) => {}
                Err(err) => panic!("reading the channel failed (deadline {DEADLINE:?}): {err}"),
            }
        }
    }

    fn reply(&mut self, id: u64) -> Reply {
        match self.next() {
            (Response::Reply(reply), attachments, in_shm) if reply.id == id => {
                match reply.outcome {
                    Outcome::Value(value) => Reply {
                        value: value.into_owned(),
                        attachments,
                        in_shm,
                    },
                    other => panic!("call {id} failed: {other:?}"),
                }
            }
            (other, ..) => panic!("expected the reply to call {id}, got {other:?}"),
        }
    }

    fn call<I: Serialize, O: DeserializeOwned>(
        &mut self,
        id: u64,
        task: Task<I, O>,
        arg: &I,
    ) -> (O, bool) {
        self.send(id, task, arg);
        let mut reply = self.reply(id);
        (reply.decode(), reply.in_shm)
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13) ^ (i >> 10) as u8 ^ seed)
        .collect()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn large_calls_and_replies_travel_through_shared_memory_intact() {
    let mut local = Local::start(MIB);
    for (id, len) in [
        (1, MIB),
        (2, 3 * MIB),
        (3, 64 * MIB),
        (4, MIB - 64),
        (5, 100),
    ] {
        let payload = ByteBuf::from(pattern(len, id as u8));
        let (back, in_shm) = local.call(id, ECHO_BYTES, &payload);
        assert!(back == payload, "{len} bytes came back intact");
        assert_eq!(in_shm, len >= MIB, "a reply of {len} bytes");
    }
}

/// Waits until the worker's executing (main) thread blocks reading its
/// channel: it is done with the last call and waits for the next.
fn wait_until_reading(pid: u32) {
    let path = format!("/proc/{pid}/task/{pid}/syscall");
    let reading = libc::SYS_recvmsg.to_string();
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let syscall = std::fs::read_to_string(&path).expect("the worker's system call");
        if syscall.split(' ').next() == Some(reading.as_str()) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never waited for a call: {syscall}"
        );
        std::thread::yield_now();
    }
}

/// The worker's mappings of memory files (`memfd:` in its map).
fn mapped_memory_files(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .expect("the worker's mappings")
        .lines()
        .filter(|line| line.contains("/memfd:"))
        .count()
}

/// Waits until the worker maps no memory file (a large mapping is
/// unmapped by a thread of its own, soon after it is dropped).
fn wait_until_unmapped(pid: u32, after: &str) {
    let deadline = std::time::Instant::now() + DEADLINE;
    while mapped_memory_files(pid) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker kept a memory file mapped after {after}, waiting for the next call"
        );
        std::thread::yield_now();
    }
}

#[test]
fn a_large_calls_memory_file_is_unmapped_without_waiting_for_the_next_call() {
    let mut local = Local::start(MIB);
    let pid = local.worker.pid();
    for (id, len) in [(1, 3 * MIB), (2, 100)] {
        let payload = ByteBuf::from(pattern(len, id as u8));
        let (back, _) = local.call(id, ECHO_BYTES, &payload);
        assert!(back == payload);
        // No next call comes until the file is unmapped.
        wait_until_reading(pid);
        wait_until_unmapped(pid, &format!("a call of {len} bytes"));
    }
}

#[test]
fn the_executors_threshold_decides_which_replies_use_shared_memory() {
    let threshold = 200_000;
    let mut local = Local::start(threshold);
    // The body of an echo's reply, as the worker encodes it, is its
    // envelope, the headers and the bytes.
    let body_of = |len: usize| {
        let mut frame = Vec::new();
        loky_proto::encode_value_reply_frame(1, &mut frame, DEFAULT_MAX_FRAME, |o| {
            encode_payload_into(&ByteBuf::from(vec![0; len]), o)
        })
        .unwrap()
        .unwrap();
        frame.len() - loky_proto::HEADER_LEN
    };
    let overhead = body_of(100_000) - 100_000;
    for (id, body, in_shm) in [
        (2, threshold - 1, false),
        (3, threshold, false),
        (4, threshold + 1, true),
    ] {
        let payload = ByteBuf::from(pattern(body - overhead, 7));
        let (back, shm) = local.call(id, ECHO_BYTES, &payload);
        assert!(back == payload);
        assert_eq!(shm, in_shm, "a reply body of {body} bytes");
    }
}

#[test]
fn shared_bytes_go_and_come_back_as_descriptors() {
    let mut local = Local::start(MIB);
    let shared = SharedBytes::from(pattern(10 * MIB, 3));
    local.send(1, ECHO_SHARED, &shared);
    let mut reply = local.reply(1);
    assert!(
        reply.value.len() < 16,
        "the value is an index: {:?}",
        reply.value
    );
    assert_eq!(reply.attachments.len(), 1);
    let back: SharedBytes = reply.decode();
    assert!(back.is_shared());
    assert_eq!(back, shared);
}

#[test]
fn a_thousand_large_calls_leave_no_descriptor_open_on_either_side() {
    let mut local = Local::start(64 << 10);
    let worker = local.worker.pid();
    let shared = SharedBytes::from(pattern(MIB, 9));
    let round = |local: &mut Local, from: u64| {
        for id in from..from + 500 {
            let payload = ByteBuf::from(vec![id as u8; 100 << 10]);
            let (back, in_shm) = local.call(id, ECHO_BYTES, &payload);
            assert!(in_shm && back == payload);
            let (echoed, _) = local.call(id + 10_000, ECHO_SHARED, &shared);
            assert_eq!(echoed.len(), MIB);
        }
    };
    round(&mut local, 0);
    // A reply is read before the worker is done with its call: a no-op's
    // reply says it is.
    let _: ((), bool) = local.call(99_998, NOOP, &());
    let (parent_before, worker_before) = (open_fds(std::process::id()), open_fds(worker));
    round(&mut local, 500);
    let _: ((), bool) = local.call(99_999, NOOP, &());
    assert_eq!(
        open_fds(std::process::id()),
        parent_before,
        "parent's descriptors"
    );
    assert_eq!(open_fds(worker), worker_before, "worker's descriptors");
}

#[test]
fn an_executor_dying_inside_a_descriptor_frame_ends_the_worker_as_a_hangup() {
    let mut local = Local::start(MIB);
    // A descriptor frame (see `loky_proto::shm`) announcing one attached
    // descriptor and a body of 600 000 bytes on the socket, of which only
    // 1000 arrive before the executor is gone.
    let mut head = [0u8; 16];
    head[4..6].copy_from_slice(&1u16.to_le_bytes());
    head[8..16].copy_from_slice(&600_000u64.to_le_bytes());
    let attached = std::fs::File::open("/dev/null").unwrap();
    let channel = local.worker.channel().try_clone().unwrap();
    let sent = loky_proto::shm::send_with_fds(&channel, &head, &[attached.as_fd()]).unwrap();
    assert_eq!(sent, head.len());
    (&channel).write_all(&[0x92; 1000]).unwrap();
    drop(channel);
    local.worker.close();
    let status = local.worker.wait_exit(DEADLINE);
    // The end of the channel, not a protocol error: as a group leader it
    // SIGKILLs its group, itself included.
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
}

#[test]
fn a_worker_killed_while_a_large_call_is_in_flight_leaves_the_parent_clean() {
    let mut local = Local::start(MIB);
    let _: ((), bool) = local.call(1, NOOP, &());
    let before = open_fds(std::process::id());
    local.send(2, ECHO_BYTES, &ByteBuf::from(pattern(64 * MIB, 5)));
    common::kill_group(local.worker.pid());
    let channel = local.worker.channel().try_clone().unwrap();
    let end = loop {
        match local.frames.fill_from(&channel) {
            Ok(0) => break local.frames.end_of_stream(),
            Ok(_) => {
                if local.frames.has_frame() {
                    // The reply made it before the kill.
                    let frame = local.frames.next_frame().unwrap().unwrap();
                    assert!(frame.body_in_shared_memory);
                }
            }
            Err(err) => break FrameError::Io(err),
        }
    };
    assert!(
        matches!(end, FrameError::Closed)
            || matches!(&end, FrameError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{end:?}"
    );
    drop(channel);
    local.worker.wait_exit(DEADLINE);
    assert_eq!(open_fds(std::process::id()), before);
}
