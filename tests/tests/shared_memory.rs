//! Large payloads between an executor and its local workers: frames past
//! the threshold travel in sealed memory files, shared buffers as
//! descriptors. Payloads arrive intact on both sides of the threshold, no
//! descriptor outlives what holds it, in the parent or in the worker, and a
//! worker killed with a large payload in flight loses nothing else.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::RESULT_TIMEOUT;
use loky::diagnostics::{ECHO_BYTES, ECHO_SHARED, PID};
use loky::{CrashPolicy, Error, ProcessPoolExecutor, SharedBytes};
use serde_bytes::ByteBuf;

/// The tests here count the descriptors of the whole test process, so
/// they must not overlap.
static EXCLUSIVE: Mutex<()> = Mutex::new(());

fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    EXCLUSIVE.lock().unwrap_or_else(|e| e.into_inner())
}

const MIB: usize = 1 << 20;

/// `len` bytes that differ from one position to the next and from one
/// seed to the next: a shifted or mixed-up payload does not compare equal.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 11)) as u8 ^ seed)
        .collect()
}

fn echo_bytes(ex: &ProcessPoolExecutor, bytes: Vec<u8>) -> loky::Result<ByteBuf> {
    common::run(ex, ECHO_BYTES, ByteBuf::from(bytes))
}

/// Open descriptors of process `pid`.
fn fds_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.count())
        .unwrap_or(0)
}

#[test]
fn payloads_of_1_3_and_64_mib_come_back_intact_as_bytes_and_as_shared_buffers() {
    let _guard = exclusive();
    let ex = common::pool(1);
    for (i, len) in [MIB, 3 * MIB, 64 * MIB].into_iter().enumerate() {
        let sent = pattern(len, i as u8);
        let back = echo_bytes(&ex, sent.clone()).unwrap();
        assert!(
            back.as_slice() == sent.as_slice(),
            "{len} bytes came back changed"
        );
        let shared = SharedBytes::from(sent.as_slice());
        assert!(shared.is_shared());
        let back = common::run(&ex, ECHO_SHARED, shared.clone()).unwrap();
        assert!(back.is_shared(), "a shared buffer came back as bytes");
        assert!(
            *back == *sent,
            "a shared buffer of {len} bytes came back changed"
        );
    }
    assert!(common::shutdown_within(&ex, RESULT_TIMEOUT));
}

#[test]
fn payloads_at_the_threshold_and_one_byte_either_side_come_back_intact() {
    let _guard = exclusive();
    const THRESHOLD: usize = 64 << 10;
    let ex = common::builder(1).shm_threshold(THRESHOLD).build().unwrap();
    // A call's body is its payload plus an envelope of a few dozen bytes:
    // payloads over this range give bodies of THRESHOLD - 1, THRESHOLD and
    // THRESHOLD + 1 bytes, both ways.
    for len in THRESHOLD - 96..=THRESHOLD + 8 {
        let sent = pattern(len, len as u8);
        let back = echo_bytes(&ex, sent.clone()).unwrap();
        assert!(
            back.as_slice() == sent.as_slice(),
            "{len} bytes came back changed"
        );
    }
    assert!(common::shutdown_within(&ex, RESULT_TIMEOUT));
}

#[test]
fn a_thousand_large_calls_leave_no_descriptor_open_in_the_parent_or_the_worker() {
    let _guard = exclusive();
    // A low threshold: every call and reply goes through a memory file.
    let ex = common::builder(1).shm_threshold(4 << 10).build().unwrap();
    let worker = common::run(&ex, PID, ()).unwrap();
    let payload = pattern(16 << 10, 7);
    let shared = SharedBytes::from(pattern(128 << 10, 9));
    // Once, so that what opens lazily is open.
    echo_bytes(&ex, payload.clone()).unwrap();
    drop(common::run(&ex, ECHO_SHARED, shared.clone()).unwrap());
    // Counted in the state the counts below are taken in: just after a
    // small call, whose reply the reader handles after it is done with
    // every earlier one (a count taken right after a large reply could
    // still see its descriptor, held by the reader for a moment).
    assert_eq!(common::run(&ex, PID, ()).unwrap(), worker);
    let (parent, in_worker) = (common::open_fds(), fds_of(worker));
    for i in 0..1000 {
        if i % 2 == 0 {
            let back = echo_bytes(&ex, payload.clone()).unwrap();
            assert!(back.as_slice() == payload.as_slice(), "call {i}");
        } else {
            let back = common::run(&ex, ECHO_SHARED, shared.clone()).unwrap();
            assert!(*back == *shared, "call {i}");
        }
    }
    // A small call after them: the worker sends its replies and the
    // parent's reader handles them in order, so both are done with every
    // large one.
    assert_eq!(
        common::run(&ex, PID, ()).unwrap(),
        worker,
        "one worker did it all"
    );
    assert_eq!(
        common::open_fds(),
        parent,
        "descriptors leaked in the parent"
    );
    assert_eq!(
        fds_of(worker),
        in_worker,
        "descriptors leaked in the worker"
    );
    // A shared buffer received holds its descriptor while it lives.
    let held: Vec<SharedBytes> = (0..10)
        .map(|_| common::run(&ex, ECHO_SHARED, shared.clone()).unwrap())
        .collect();
    common::run(&ex, PID, ()).unwrap();
    assert_eq!(common::open_fds(), parent + held.len());
    drop(held);
    assert_eq!(common::open_fds(), parent);
    assert!(common::shutdown_within(&ex, RESULT_TIMEOUT));
}

/// A small deterministic generator for the fault timings.
struct Jitter(u64);

impl Jitter {
    /// A delay of up to `max`.
    fn next(&mut self, max: Duration) -> Duration {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        max.mul_f64((self.0 >> 11) as f64 / (1u64 << 53) as f64)
    }
}

#[test]
fn a_worker_killed_with_a_large_payload_in_flight_fails_that_call_alone_and_leaks_nothing() {
    let _guard = exclusive();
    let payload = pattern(8 * MIB, 3);
    let shared = SharedBytes::from(pattern(8 * MIB, 5));
    // A first pool, so that what opens lazily in this process is open.
    let ex = common::pool(1);
    echo_bytes(&ex, payload.clone()).unwrap();
    assert!(common::shutdown_within(&ex, RESULT_TIMEOUT));
    let fds = common::open_fds();
    let ex = common::builder(1)
        .on_worker_crash(CrashPolicy::Respawn)
        .build()
        .unwrap();
    echo_bytes(&ex, payload.clone()).unwrap();
    let mut jitter = Jitter(0x5eed);
    let (mut killed, mut answered) = (0, 0);
    let mut workers = Vec::new();
    for round in 0..24 {
        let pid = ex.worker_pids()[0];
        workers.push(pid);
        // Killed before, while or after it reads the call, runs, or sends
        // its reply: whenever the delay ends.
        let delay = jitter.next(Duration::from_millis(15));
        let outcome = if round % 2 == 0 {
            let fut = ex
                .submit(ECHO_BYTES, ByteBuf::from(payload.clone()))
                .unwrap();
            std::thread::sleep(delay);
            kill(pid);
            fut.result_timeout(RESULT_TIMEOUT)
                .map(|back| back.as_slice() == payload.as_slice())
        } else {
            let fut = ex.submit(ECHO_SHARED, shared.clone()).unwrap();
            std::thread::sleep(delay);
            kill(pid);
            fut.result_timeout(RESULT_TIMEOUT)
                .map(|back| *back == *shared)
        };
        match outcome {
            Ok(intact) => {
                assert!(intact, "round {round}: the payload came back changed");
                answered += 1;
            }
            Err(Error::TerminatedWorker(t)) => {
                assert_eq!(t.pid(), pid, "round {round}: {t}");
                killed += 1;
            }
            Err(other) => panic!("round {round}: {other:?}"),
        }
        // The pool goes on: the next call is answered, intact. (A kill that
        // landed after the answer may take the next call with it, before
        // the pool hears of the death: that call fails with the same pid.)
        let back = match echo_bytes(&ex, payload.clone()) {
            Err(Error::TerminatedWorker(t)) if t.pid() == pid => echo_bytes(&ex, payload.clone()),
            other => other,
        }
        .unwrap();
        assert!(back.as_slice() == payload.as_slice(), "round {round}");
    }
    eprintln!("{killed} calls failed with their worker, {answered} answered first");
    assert!(killed > 0, "no kill landed while a call was in flight");
    workers.extend(ex.worker_pids());
    assert!(common::shutdown_within(&ex, RESULT_TIMEOUT));
    assert_eq!(common::open_fds(), fds, "descriptors leaked");
    assert!(
        common::reaped_within(&workers, RESULT_TIMEOUT),
        "a worker was left unreaped"
    );
}

fn kill(pid: u32) {
    loky_tests::chaos::probe::signal_child(pid, libc::SIGKILL);
}
