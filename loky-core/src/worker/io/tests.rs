//! The reader and writer threads over a fake transport: a peer that never
//! reads, settings at their extremes, a reader that panics.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use loky_proto::shm::EncodedFrame;
use loky_proto::{Hello, Outcome, PROTOCOL_VERSION, Reply, Response};

use super::{ChannelPort, GATHER, Readiness, Transport, start};
use crate::call::InFlight;
use crate::config::LinkSettings;
use crate::events::{End, Event, StartFailure};
use crate::exit::WorkerExit;
use crate::future::FutureState;
use crate::link::Link;
use crate::worker::Stop;
use crate::worker::local::LocalTransport;
use crate::worker::{Port, WorkerHandle};

/// A worker's end of a transport, in memory.
#[derive(Default)]
struct Pipe {
    /// What the worker sent and the parent did not read yet.
    incoming: VecDeque<u8>,
    /// The worker closed its end.
    closed: bool,
    disconnected: bool,
    /// Reads panic once this many reads happened.
    panic_at_read: Option<usize>,
    reads: usize,
}

#[derive(Default)]
struct FakeTransport {
    pipe: Mutex<Pipe>,
    changed: Condvar,
    /// Writes block until disconnected: a peer that never reads.
    stuck_peer: bool,
    reaped: AtomicBool,
    /// What each direct (non-blocking) write took.
    direct_writes: Mutex<Vec<Vec<u8>>>,
    /// How many bytes a direct write takes at most (`None`: all).
    direct_room: Option<usize>,
}

impl FakeTransport {
    fn lock(&self) -> MutexGuard<'_, Pipe> {
        self.pipe.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn worker_sends(&self, response: &Response<'_>) {
        let mut frame = Vec::new();
        loky_proto::encode_frame(response, &mut frame, 1 << 20).expect("encodes");
        self.lock().incoming.extend(frame);
        self.changed.notify_all();
    }

    fn worker_closes(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }
}

impl Transport for FakeTransport {
    fn pid(&self) -> u32 {
        4242
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut pipe = self.lock();
        pipe.reads += 1;
        if pipe.panic_at_read == Some(pipe.reads) {
            drop(pipe);
            panic!("a bug in the reader");
        }
        while pipe.incoming.is_empty() && !pipe.closed && !pipe.disconnected {
            pipe = self.changed.wait(pipe).unwrap_or_else(|e| e.into_inner());
        }
        let n = buf.len().min(pipe.incoming.len());
        for (slot, byte) in buf.iter_mut().zip(pipe.incoming.drain(..n)) {
            *slot = byte;
        }
        Ok(n)
    }

    fn wait(&self, timeout: Option<Duration>) -> io::Result<Readiness> {
        let deadline = timeout.map(|t| Instant::now() + t.min(Duration::from_secs(3600)));
        let mut pipe = self.lock();
        loop {
            if !pipe.incoming.is_empty() || pipe.closed || pipe.disconnected {
                return Ok(Readiness {
                    channel: true,
                    exited: false,
                });
            }
            pipe = match deadline {
                None => self.changed.wait(pipe).unwrap_or_else(|e| e.into_inner()),
                Some(at) if at <= Instant::now() => return Ok(Readiness::default()),
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    let waited = self.changed.wait_timeout(pipe, left);
                    waited.unwrap_or_else(|e| e.into_inner()).0
                }
            };
        }
    }

    fn try_write(&self, bytes: &[u8]) -> usize {
        if self.stuck_peer {
            return 0;
        }
        let taken = bytes.len().min(self.direct_room.unwrap_or(usize::MAX));
        let mut writes = self.direct_writes.lock().unwrap_or_else(|e| e.into_inner());
        writes.push(bytes[..taken].to_vec());
        taken
    }

    fn write(&self, bytes: &[u8]) -> io::Result<usize> {
        if !self.stuck_peer {
            return Ok(bytes.len());
        }
        let mut pipe = self.lock();
        while !pipe.disconnected {
            pipe = self.changed.wait(pipe).unwrap_or_else(|e| e.into_inner());
        }
        Err(io::ErrorKind::BrokenPipe.into())
    }

    fn close_input(&self) {}

    fn disconnect(&self) {
        self.lock().disconnected = true;
        self.changed.notify_all();
    }

    fn stop(&self, _how: Stop) {}

    fn reap(&self) -> io::Result<WorkerExit> {
        self.reaped.store(true, Ordering::SeqCst);
        Ok(WorkerExit::Code(0))
    }
}

fn settings(start_timeout: Duration) -> LinkSettings {
    LinkSettings {
        start_timeout,
        max_frame: 1 << 20,
    }
}

fn hello() -> Response<'static> {
    Response::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        pid: 4242,
        program: "fake".to_owned(),
        identity: loky_proto::program::ProgramId::current().clone(),
        tasks: Vec::new(),
    })
}

fn next_event(events: &Receiver<Event>) -> Event {
    events
        .recv_timeout(Duration::from_secs(10))
        .expect("the reader reports within 10 s")
}

#[test]
fn release_returns_while_a_peer_holding_the_channel_never_reads() {
    let transport = Arc::new(FakeTransport {
        stuck_peer: true,
        ..FakeTransport::default()
    });
    let (events_tx, events) = crossbeam_channel::unbounded();
    let link = Arc::new(Link::new(Arc::default()));
    let mut handle = start(
        1,
        transport.clone(),
        link,
        &settings(Duration::from_secs(5)),
        events_tx,
    )
    .expect("threads start");
    // Nothing fits: the frame goes to the writer, which blocks in `write`.
    handle.send(Arc::new(EncodedFrame::Bytes(vec![0; 1 << 16].into())));
    transport.worker_closes();
    assert!(matches!(
        next_event(&events),
        Event::StartFailed {
            failure: StartFailure::Died,
            ..
        }
    ));
    let (done_tx, done) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        handle.release();
        let _ = done_tx.send(());
    });
    assert!(
        done.recv_timeout(Duration::from_secs(10)).is_ok(),
        "release waited for a writer the peer blocks"
    );
    assert!(transport.reaped.load(Ordering::SeqCst));
}

#[test]
fn a_start_timeout_too_long_for_an_instant_means_no_limit() {
    let transport = Arc::new(FakeTransport::default());
    let (events_tx, events) = crossbeam_channel::unbounded();
    let link = Arc::new(Link::new(Arc::default()));
    let handle = start(
        1,
        transport.clone(),
        link,
        &settings(Duration::MAX),
        events_tx,
    )
    .expect("threads start");
    transport.worker_sends(&hello());
    assert!(matches!(
        next_event(&events),
        Event::Ready { worker: 1, .. }
    ));
    transport.worker_closes();
    assert!(matches!(
        next_event(&events),
        Event::Died {
            end: End::Closed,
            ..
        }
    ));
    handle.release();
}

#[test]
fn a_reader_that_panics_still_reaps_its_worker_and_reports_an_internal_error() {
    let transport = Arc::new(FakeTransport::default());
    transport.lock().panic_at_read = Some(2);
    let (events_tx, events) = crossbeam_channel::unbounded();
    let link = Arc::new(Link::new(Arc::default()));
    let handle = start(
        1,
        transport.clone(),
        link,
        &settings(Duration::from_secs(5)),
        events_tx,
    )
    .expect("threads start");
    transport.worker_sends(&hello());
    assert!(matches!(next_event(&events), Event::Ready { .. }));
    transport.worker_sends(&hello());
    match next_event(&events) {
        Event::Died {
            end: End::Internal { reason, .. },
            ..
        } => {
            assert!(
                reason.contains("internal error in the reader thread of worker 4242"),
                "{reason}"
            );
            assert!(reason.contains("a bug in the reader"), "{reason}");
        }
        _ => panic!("expected the reader's internal error"),
    }
    assert!(
        transport.reaped.load(Ordering::SeqCst),
        "reaped after the panic"
    );
    handle.release();
}

/// A port over `transport` whose writer is the returned receiver.
fn port(transport: Arc<FakeTransport>) -> (ChannelPort, Receiver<super::Queued>) {
    let (frames, queued) = crossbeam_channel::unbounded();
    let port = ChannelPort {
        transport,
        frames: Mutex::new(Some(frames)),
        backlog: Arc::new(AtomicUsize::new(0)),
        replies: None,
    };
    (port, queued)
}

fn frame(byte: u8, len: usize) -> Arc<EncodedFrame> {
    Arc::new(EncodedFrame::Bytes(vec![byte; len].into()))
}

/// What went to the writer: each frame's first byte and its offset.
fn queued(queued: &Receiver<super::Queued>) -> Vec<(u8, usize)> {
    queued
        .try_iter()
        .map(|(frame, offset)| match &*frame {
            EncodedFrame::Bytes(bytes) => (bytes[0], offset),
            EncodedFrame::Descriptors(_) => panic!("only bytes here"),
        })
        .collect()
}

#[test]
fn small_frames_sent_together_go_out_in_one_write() {
    let transport = Arc::new(FakeTransport::default());
    let (port, writer) = port(transport.clone());
    let frames = port.frames();
    port.write_all(&frames, vec![frame(1, 10), frame(2, 10), frame(3, 10)]);
    let writes = transport.direct_writes.lock().unwrap().clone();
    let mut expected = vec![1; 10];
    expected.extend([2; 10]);
    expected.extend([3; 10]);
    assert_eq!(writes, vec![expected]);
    assert!(queued(&writer).is_empty());
    assert_eq!(port.backlog.load(Ordering::SeqCst), 0);
}

#[test]
fn what_a_gathered_write_leaves_goes_to_the_writer_in_order_from_where_it_stopped() {
    let transport = Arc::new(FakeTransport {
        direct_room: Some(15),
        ..FakeTransport::default()
    });
    let (port, writer) = port(transport.clone());
    let frames = port.frames();
    port.write_all(&frames, vec![frame(1, 10), frame(2, 10), frame(3, 10)]);
    assert_eq!(transport.direct_writes.lock().unwrap().len(), 1);
    // The first frame went whole, the second from its sixth byte on.
    assert_eq!(queued(&writer), vec![(2, 5), (3, 0)]);
    assert_eq!(port.backlog.load(Ordering::SeqCst), 2);
    // With frames queued, later ones queue behind them, none written.
    port.write_all(&frames, vec![frame(4, 10)]);
    assert_eq!(transport.direct_writes.lock().unwrap().len(), 1);
    assert_eq!(queued(&writer), vec![(4, 0)]);
}

#[test]
fn frames_past_the_gathering_limit_are_written_one_by_one_after_it() {
    let transport = Arc::new(FakeTransport::default());
    let (port, writer) = port(transport.clone());
    let frames = port.frames();
    let big = GATHER / 2 + 1;
    port.write_all(&frames, vec![frame(1, 8), frame(2, big), frame(3, big)]);
    let writes = transport.direct_writes.lock().unwrap().clone();
    let lens: Vec<usize> = writes.iter().map(Vec::len).collect();
    assert_eq!(lens, vec![8 + big, big]);
    assert_eq!(writes[1][0], 3);
    assert!(queued(&writer).is_empty());
}

#[test]
fn a_closed_port_writes_nothing() {
    let transport = Arc::new(FakeTransport::default());
    let (port, writer) = port(transport.clone());
    port.close();
    let frames = port.frames();
    port.write_all(&frames, vec![frame(1, 10)]);
    assert!(transport.direct_writes.lock().unwrap().is_empty());
    assert!(queued(&writer).is_empty());
}

/// The worker writes `response` as one frame.
fn worker_writes(worker: &mut UnixStream, response: &Response<'_>) {
    let mut frame = Vec::new();
    loky_proto::encode_frame(response, &mut frame, 1 << 20).expect("encodes");
    worker.write_all(&frame).unwrap();
}

/// The worker reads one frame (a call) and returns its body.
fn worker_reads_a_call(worker: &mut UnixStream) -> Vec<u8> {
    let mut len = [0; 4];
    worker.read_exact(&mut len).unwrap();
    let mut body = vec![0; u32::from_le_bytes(len) as usize];
    worker.read_exact(&mut body).unwrap();
    body
}

/// A connection to the worker end `worker` after its hello, and a call
/// `id` sent through its port as a caller sends its own, whose waiter may
/// watch for 10 s.
fn serving_with_a_call(
    worker: &mut UnixStream,
    transport: Arc<LocalTransport>,
    id: u64,
) -> (super::Connection, Receiver<Event>, Arc<FutureState>) {
    let (events_tx, events) = crossbeam_channel::unbounded();
    let link = Arc::new(Link::new(Arc::default()));
    let connection = super::connect(
        1,
        transport,
        link.clone(),
        &settings(Duration::from_secs(5)),
        events_tx,
    )
    .expect("threads start");
    worker_writes(worker, &hello());
    assert!(matches!(next_event(&events), Event::Ready { .. }));
    let call = InFlight::of_unit_task(id, 1);
    let future = call.item.future.clone();
    assert!(future.set_running());
    future.expect_soon(Duration::from_secs(10));
    connection.port.send(&link, call, &mut || {});
    worker_reads_a_call(worker);
    (connection, events, future)
}

/// Waits, on another thread, for `future`; returns that thread.
fn waiter(future: &Arc<FutureState>) -> std::thread::JoinHandle<crate::future::Settled> {
    let future = future.clone();
    std::thread::spawn(move || future.wait(None))
}

/// Blocks until a caller began to read `desk`'s channel.
fn until_a_caller_reads(desk: &super::Desk) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while desk.caller_reads.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no caller read within 10 s");
        std::thread::yield_now();
    }
}

#[test]
fn a_caller_waiting_for_the_reply_to_its_call_reads_it_itself() {
    let (ours, mut worker) = UnixStream::pair().unwrap();
    let transport = Arc::new(LocalTransport::over(ours));
    let (connection, _events, future) = serving_with_a_call(&mut worker, transport, 7);
    let waiting = waiter(&future);
    until_a_caller_reads(&connection.desk);
    // The channel's data no longer wakes the reader thread: only the
    // caller can take this reply.
    let output = loky_proto::encode_payload(&()).unwrap();
    worker_writes(
        &mut worker,
        &Response::Reply(Reply {
            id: 7,
            outcome: Outcome::Value(output.into()),
        }),
    );
    let settled = waiting.join().expect("the waiter returns");
    assert!(settled.is_ok(), "{settled:?}");
    assert_eq!(connection.desk.caller_reads.load(Ordering::SeqCst), 1);
    Box::new(connection).release();
}

#[test]
fn a_worker_whose_channel_ends_while_a_caller_reads_is_reported_by_the_reader() {
    let (ours, mut worker) = UnixStream::pair().unwrap();
    let transport = Arc::new(LocalTransport::over(ours));
    let (connection, events, future) = serving_with_a_call(&mut worker, transport, 7);
    let waiting = waiter(&future);
    until_a_caller_reads(&connection.desk);
    drop(worker);
    assert!(matches!(
        next_event(&events),
        Event::Died {
            end: End::Closed,
            ..
        }
    ));
    // The supervisor settles the calls of a dead worker; the waiter, which
    // stopped reading at the end, is then woken.
    future.settle(Err(crate::error::Error::Cancelled));
    assert!(waiting.join().expect("the waiter returns").is_err());
    Box::new(connection).release();
}

#[test]
fn a_malformed_frame_a_caller_reads_is_reported_by_the_reader_as_a_protocol_error() {
    let (ours, mut worker) = UnixStream::pair().unwrap();
    let transport = Arc::new(LocalTransport::over(ours));
    let (connection, events, future) = serving_with_a_call(&mut worker, transport, 7);
    let waiting = waiter(&future);
    until_a_caller_reads(&connection.desk);
    // A frame whose body is no response.
    worker.write_all(&[3, 0, 0, 0, 0xc1, 0xc1, 0xc1]).unwrap();
    assert!(matches!(
        next_event(&events),
        Event::Died {
            end: End::Protocol(_),
            ..
        }
    ));
    future.settle(Err(crate::error::Error::Cancelled));
    assert!(waiting.join().expect("the waiter returns").is_err());
    Box::new(connection).release();
}

#[test]
fn a_worker_that_exits_before_its_hello_while_its_channel_stays_open_did_not_start() {
    let (ours, worker_end) = UnixStream::pair().unwrap();
    let transport = Arc::new(LocalTransport::over(ours));
    let (events_tx, events) = crossbeam_channel::unbounded();
    let connection = super::connect(
        1,
        transport.clone(),
        Arc::new(Link::new(Arc::default())),
        &settings(Duration::from_secs(3600)),
        events_tx,
    )
    .expect("threads start");
    // The process dies; its channel stays open (held here, as by a
    // process it started), so only its exit says it is gone.
    transport.stop(Stop::Kill);
    assert!(matches!(
        next_event(&events),
        Event::StartFailed {
            failure: StartFailure::Died,
            ..
        }
    ));
    drop(worker_end);
    Box::new(connection).release();
}
