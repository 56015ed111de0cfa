//! The shared-memory transport end to end over a socketpair: integrity,
//! the threshold, descriptor hygiene, and what a hostile or dying peer can
//! do.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::thread;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::buf::descriptor;
use super::os::{self, MapMut};
use super::{BODY_IN_FD, FrameBuf, LocalFrames};
use crate::{
    Attachments, DEFAULT_MAX_FRAME, FrameError, HEADER_LEN, Outcome, Response, SharedBytes,
    decode_body, decode_payload, encode_frame, encode_payload_into, encode_value_reply_frame,
};

/// Descriptor counts are per process: tests that count them run alone.
static FDS: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    FDS.lock().unwrap_or_else(|e| e.into_inner())
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

const MIB: usize = 1 << 20;

/// A frame as received, its body copied out.
struct Received {
    body: Vec<u8>,
    attachments: Attachments,
    in_shm: bool,
}

impl Received {
    /// The payload of a value reply, decoded with the frame's attachments.
    fn value<T: serde::de::DeserializeOwned>(&mut self) -> T {
        let Response::Reply(reply) = decode_body::<Response<'_>>(&self.body).unwrap() else {
            panic!("not a reply");
        };
        let Outcome::Value(bytes) = reply.outcome else {
            panic!("not a value");
        };
        self.attachments
            .decode(|| decode_payload::<T>(&bytes))
            .unwrap()
    }
}

/// Sends everything in `out` through a socketpair and receives it.
fn transfer(mut out: FrameBuf) -> Vec<Received> {
    let (tx, rx) = UnixStream::pair().unwrap();
    let sender = thread::spawn(move || out.send_to(&tx));
    let frames = receive_all(&rx, DEFAULT_MAX_FRAME).unwrap();
    sender.join().unwrap().unwrap();
    frames
}

fn receive_all(rx: &UnixStream, max: usize) -> Result<Vec<Received>, FrameError> {
    let mut frames = LocalFrames::new(max);
    let mut got = Vec::new();
    loop {
        while let Some(frame) = frames.next_frame()? {
            got.push(Received {
                body: frame.body.to_vec(),
                attachments: frame.attachments,
                in_shm: frame.body_in_shared_memory,
            });
        }
        if frames.fill_from(rx).map_err(FrameError::Io)? == 0 {
            return match frames.end_of_stream() {
                FrameError::Closed => Ok(got),
                err => Err(err),
            };
        }
    }
}

fn push_value<T: Serialize>(out: &mut FrameBuf, id: u64, value: &T) {
    encode_value_reply_frame(id, out, DEFAULT_MAX_FRAME, |o| {
        encode_payload_into(value, o)
    })
    .unwrap()
    .unwrap();
}

/// Distinct bytes, so that a misplaced chunk shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ (i >> 12) as u8 ^ seed)
        .collect()
}

#[test]
fn large_frames_arrive_whole_through_shared_memory() {
    let _lock = lock();
    for (len, seed) in [(MIB, 1), (3 * MIB, 2), (64 * MIB, 3)] {
        let payload = ByteBuf::from(pattern(len, seed));
        let mut out = FrameBuf::local(MIB);
        push_value(&mut out, 1, &payload);
        push_value(&mut out, 2, &7u32);
        let mut frames = transfer(out);
        assert_eq!(frames.len(), 2);
        assert!(frames[0].in_shm, "{len} bytes travel in shared memory");
        assert!(!frames[1].in_shm, "a small frame stays on the socket");
        assert!(
            frames[0].value::<ByteBuf>() == payload,
            "{len} bytes intact"
        );
        assert_eq!(frames[1].value::<u32>(), 7);
    }
}

#[test]
fn the_threshold_is_the_largest_body_on_the_socket() {
    let _lock = lock();
    let threshold = 256 << 10;
    // The body of a reply is its envelope plus the payload.
    let mut probe = Vec::new();
    encode_value_reply_frame(1, &mut probe, DEFAULT_MAX_FRAME, |o| {
        o.extend_from_slice(&[0xc0]);
        Ok::<_, ()>(())
    })
    .unwrap()
    .unwrap();
    let envelope = probe.len() - HEADER_LEN - 1;
    for (body, in_shm) in [
        (threshold - 1, false),
        (threshold, false),
        (threshold + 1, true),
    ] {
        let raw = pattern(body - envelope, 9);
        let mut out = FrameBuf::local(threshold);
        encode_value_reply_frame(1, &mut out, DEFAULT_MAX_FRAME, |o| {
            o.extend_from_slice(&raw);
            Ok::<_, ()>(())
        })
        .unwrap()
        .unwrap();
        let frames = transfer(out);
        assert_eq!(frames[0].body.len(), body);
        assert_eq!(frames[0].in_shm, in_shm, "a body of {body} bytes");
        assert!(frames[0].body.ends_with(&raw));
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Model {
    name: String,
    weights: SharedBytes,
    again: SharedBytes,
    small: SharedBytes,
}

#[test]
fn shared_bytes_travel_as_descriptors_inside_any_type() {
    let _lock = lock();
    let weights = SharedBytes::from(pattern(5 * MIB, 4));
    assert!(weights.is_shared());
    let model = Model {
        name: "m".into(),
        weights: weights.clone(),
        again: weights.clone(),
        small: SharedBytes::from(vec![1, 2, 3]),
    };
    let mut out = FrameBuf::local(MIB);
    push_value(&mut out, 1, &model);
    let mut frames = transfer(out);
    assert!(!frames[0].in_shm, "only an index travels in the body");
    assert!(frames[0].body.len() < 100, "{} bytes", frames[0].body.len());
    assert_eq!(frames[0].attachments.len(), 1, "one buffer, attached once");
    let back: Model = frames[0].value();
    assert_eq!(back, model);
    assert!(back.weights.is_shared() && !back.small.is_shared());
}

#[test]
fn shared_bytes_are_plain_bytes_outside_a_local_frame() {
    let _lock = lock();
    let bytes = SharedBytes::from(pattern(SHARE, 5));
    let mut frame = Vec::new();
    encode_value_reply_frame(1, &mut frame, DEFAULT_MAX_FRAME, |o| {
        encode_payload_into(&bytes, o)
    })
    .unwrap()
    .unwrap();
    assert!(frame.len() > SHARE, "a bytes frame carries the bytes");
    let back: SharedBytes = decode_payload(&crate::encode_payload(&bytes).unwrap()).unwrap();
    assert_eq!(back, bytes);
    let json = serde_json::to_string(&SharedBytes::from(vec![0, 255])).unwrap();
    assert_eq!(json, "[0,255]");
    assert_eq!(
        serde_json::from_str::<SharedBytes>(&json).unwrap(),
        SharedBytes::from(vec![0, 255])
    );
}

const SHARE: usize = crate::SHARE_FROM;

#[test]
fn no_descriptor_outlives_its_frame() {
    let _lock = lock();
    let before = open_fds();
    let shared = SharedBytes::from(pattern(SHARE, 6));
    let (tx, rx) = UnixStream::pair().unwrap();
    let sender = thread::spawn(move || {
        let mut out = FrameBuf::local(64 << 10);
        for i in 0..1_000u64 {
            let big = ByteBuf::from(vec![i as u8; 80 << 10]);
            push_value(&mut out, i, &(big, shared.clone()));
            out.send_to(&tx).unwrap();
        }
    });
    let mut frames = receive_all(&rx, DEFAULT_MAX_FRAME).unwrap();
    sender.join().unwrap();
    assert_eq!(frames.len(), 1_000);
    for (i, frame) in frames.iter_mut().enumerate().step_by(97) {
        let (big, back): (ByteBuf, SharedBytes) = frame.value();
        assert!(frame.in_shm && big.iter().all(|b| *b == i as u8));
        assert_eq!(back.len(), SHARE);
    }
    drop(frames);
    drop(rx);
    assert_eq!(open_fds(), before, "every descriptor was closed");
}

/// A raw descriptor frame with an inline body of `len` bytes, of which only
/// `sent` are written before the peer goes away.
#[test]
fn a_peer_dying_inside_a_frame_leaves_no_descriptor_open() {
    let _lock = lock();
    let before = open_fds();
    {
        let (tx, rx) = UnixStream::pair().unwrap();
        let file = sealed(SHARE);
        let head = descriptor(1, 0, 1000);
        os::send_with_fds(&tx, &head, &[file.as_fd()], false).unwrap();
        (&tx).write_all(&[0x90; 300]).unwrap();
        drop((tx, file));
        let err = receive_all(&rx, DEFAULT_MAX_FRAME).err().unwrap();
        assert!(
            matches!(
                err,
                FrameError::Truncated {
                    expected: 1000,
                    got: 300
                }
            ),
            "{err:?}"
        );
    }
    {
        // Dead before the descriptors went: a header without them.
        let (tx, rx) = UnixStream::pair().unwrap();
        (&tx).write_all(&descriptor(1, BODY_IN_FD, 10)).unwrap();
        drop(tx);
        let err = receive_all(&rx, DEFAULT_MAX_FRAME).err().unwrap();
        assert!(matches!(err, FrameError::Descriptor(_)), "{err:?}");
    }
    assert_eq!(open_fds(), before);
}

/// A sealed memory file of `len` bytes.
fn sealed(len: usize) -> OwnedFd {
    MapMut::new(len.max(1)).unwrap().seal(len).unwrap()
}

/// Sends one descriptor frame as a hostile peer would: `head`, with `fds`.
fn hostile(head: &[u8], fds: &[OwnedFd], tail: &[u8]) -> FrameError {
    let (tx, rx) = UnixStream::pair().unwrap();
    let borrowed: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
    os::send_with_fds(&tx, head, &borrowed, false).unwrap();
    (&tx).write_all(tail).unwrap();
    drop(tx);
    receive_all(&rx, 1 << 20).err().expect("refused")
}

#[test]
fn a_hostile_peer_cannot_make_the_receiver_map_what_it_should_not() {
    let _lock = lock();
    let before = open_fds();
    let unsealed = os::memfd(4096).unwrap();
    let err = hostile(&descriptor(1, BODY_IN_FD, 4096), &[unsealed], &[]);
    assert!(
        matches!(err, FrameError::Descriptor(ref m) if m.contains("sealed")),
        "{err}"
    );
    let file = std::fs::File::open("/proc/self/exe").unwrap();
    let err = hostile(&descriptor(1, BODY_IN_FD, 10), &[file.into()], &[]);
    assert!(
        matches!(err, FrameError::Descriptor(ref m) if m.contains("memory file")),
        "{err}"
    );
    let err = hostile(&descriptor(1, BODY_IN_FD, 100), &[sealed(50)], &[]);
    assert!(
        matches!(err, FrameError::Descriptor(ref m) if m.contains("size")),
        "{err}"
    );
    let err = hostile(&descriptor(1, BODY_IN_FD, 2 << 20), &[sealed(2 << 20)], &[]);
    assert!(matches!(err, FrameError::TooLarge { .. }), "{err}");
    // Attached buffers count against the frame limit too.
    let err = hostile(
        &descriptor(2, 0, 1),
        &[sealed(700 << 10), sealed(700 << 10)],
        &[0xc0],
    );
    assert!(matches!(err, FrameError::TooLarge { .. }), "{err}");
    let err = hostile(&descriptor(0, 0, 1), &[sealed(1)], &[0xc0]);
    assert!(matches!(err, FrameError::Descriptor(_)), "{err}");
    let err = hostile(&descriptor(1, 6, 1), &[sealed(1)], &[0xc0]);
    assert!(matches!(err, FrameError::Descriptor(_)), "{err}");
    assert_eq!(open_fds(), before, "refused descriptors are closed");
}

#[test]
fn too_many_descriptors_at_once_are_refused_and_closed() {
    let _lock = lock();
    let before = open_fds();
    let (tx, rx) = UnixStream::pair().unwrap();
    let files: Vec<OwnedFd> = (0..os::MAX_FDS_PER_MESSAGE).map(|_| sealed(1)).collect();
    for _ in 0..5 {
        let borrowed: Vec<_> = files.iter().map(|fd| fd.as_fd()).collect();
        os::send_with_fds(&tx, &[0], &borrowed, false).unwrap();
    }
    drop((tx, files));
    let mut frames = LocalFrames::new(DEFAULT_MAX_FRAME);
    let err = loop {
        match frames.fill_from(&rx) {
            Ok(0) => panic!("end of stream without an error"),
            Ok(_) => {}
            Err(err) => break err,
        }
    };
    assert!(err.to_string().contains("descriptors"), "{err}");
    drop((frames, rx));
    assert_eq!(open_fds(), before);
}

#[test]
fn plain_frames_are_unchanged_and_attach_nothing() {
    let _lock = lock();
    let shared = SharedBytes::from(pattern(SHARE, 7));
    let mut local = FrameBuf::plain();
    push_value(&mut local, 3, &shared);
    encode_frame(
        &Response::Retiring(crate::RetireReason::MemoryLeak {
            baseline: 1,
            current: 2,
        }),
        &mut local,
        DEFAULT_MAX_FRAME,
    )
    .unwrap();
    let mut frames = transfer(local);
    assert!(frames.iter().all(|f| f.attachments.is_empty() && !f.in_shm));
    assert_eq!(frames[0].value::<SharedBytes>(), shared);
}

/// Whether this process maps the range of `len` bytes at `start` (rounded
/// to pages) now.
fn mapped(start: usize, len: usize) -> bool {
    let end = (start + len).next_multiple_of(4096);
    let range = format!("{start:x}-{end:x} ");
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .any(|line| line.starts_with(&range))
}

#[test]
fn large_mappings_are_unmapped_in_the_background_and_small_ones_at_once() {
    // Odd lengths, so that no other test's mapping has the same range.
    let small = 4096 * 3 + 17;
    let large = 2 * MIB + 4096 * 5 + 17;
    for (len, at_once) in [(small, true), (large, false)] {
        let fd = sealed(len);
        let map = os::Mapping::new(fd.as_fd(), len, false).unwrap();
        drop(fd);
        assert!(map.bytes().iter().all(|&b| b == 0));
        let start = map.bytes().as_ptr() as usize;
        assert!(mapped(start, len));
        drop(map);
        if at_once {
            assert!(
                !mapped(start, len),
                "a small mapping is unmapped when dropped"
            );
        }
        os::wait_for_unmapping();
        assert!(!mapped(start, len), "{len} bytes still mapped");
    }
}

#[test]
fn a_forked_child_unmaps_at_once_without_the_parents_thread() {
    let len = 3 * MIB + 4096 * 7 + 17;
    let map = |len| {
        let fd = sealed(len);
        let map = os::Mapping::new(fd.as_fd(), len, false).unwrap();
        let start = map.bytes().as_ptr() as usize;
        (map, start)
    };
    // The parent's thread runs.
    drop(map(len).0);
    os::wait_for_unmapping();
    // SAFETY: the child only maps, unmaps, reads a file and exits with
    // `_exit`; glibc's `fork` leaves the allocator usable in the child.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let (mapping, start) = map(len);
        drop(mapping);
        let unmapped = !mapped(start, len);
        // SAFETY: ends the child without running the parent's destructors
        // or test harness.
        unsafe { libc::_exit(if unmapped { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child left its mapping to a thread it does not have (status {status:#x})"
    );
}
