//! One worker process seen from the parent: its channel, its calls in
//! flight, and the two threads that move its frames.
//!
//! The *reader* thread owns the child process: it waits for the hello,
//! settles futures as replies arrive (replies come in call order, so calls in
//! flight form a FIFO), notices the death of the worker at once (end of the
//! channel, or the pidfd of the process), kills what is left of the
//! worker's process group, reaps it, and reports to the supervisor. The
//! *writer* thread sends frames, several per write when they queue up, and
//! half-closes the channel when the supervisor drops its sender: that is how
//! a worker is told to leave.

use std::collections::VecDeque;
use std::io::{self, BufWriter, Write};
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use loky_proto::{FrameBuffer, Hello, PROTOCOL_VERSION, Response, decode_body};

use crate::call::{InFlight, WorkerInfo, settle_outcome};
use crate::exit::WorkerExit;
use crate::future::Core;
use crate::os;
use crate::supervisor::Event;

/// Identifies a worker within its pool (pids can be reused; these are not).
pub(crate) type WorkerId = u64;

/// The state the supervisor and a worker's reader share.
pub(crate) struct Link {
    pub(crate) id: WorkerId,
    pub(crate) pid: u32,
    calls: Mutex<Calls>,
    /// Held while the group is signalled or the process reaped, so that a
    /// signal never reaches a reused pid.
    reaped: Mutex<bool>,
    /// Moving average of the time a call takes on this worker, in ns.
    service_ns: AtomicU64,
}

struct Calls {
    queue: VecDeque<InFlight>,
    /// When the call at the front of the queue started running.
    front_since: Instant,
    /// When the previous reply arrived.
    last_reply: Option<Instant>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Link {
    fn new(id: WorkerId, pid: u32) -> Link {
        Link {
            id,
            pid,
            calls: Mutex::new(Calls {
                queue: VecDeque::new(),
                front_since: Instant::now(),
                last_reply: None,
            }),
            reaped: Mutex::new(false),
            service_ns: AtomicU64::new(0),
        }
    }

    /// Records a call sent to the worker.
    pub(crate) fn push(&self, call: InFlight) {
        let mut calls = lock(&self.calls);
        if calls.queue.is_empty() {
            calls.front_since = call.sent;
        }
        calls.queue.push_back(call);
    }

    /// Takes the call a reply is for: always the oldest one.
    fn pop(&self, id: u64) -> Result<InFlight, String> {
        let mut calls = lock(&self.calls);
        match calls.queue.front() {
            Some(front) if front.item.id == id => {}
            Some(front) => {
                return Err(format!(
                    "reply for call {id} while call {} was first",
                    front.item.id
                ));
            }
            None => return Err(format!("reply for call {id}, which was not sent")),
        }
        let call = calls.queue.pop_front().expect("front checked above");
        let now = Instant::now();
        let started = match calls.last_reply {
            Some(last) if last > call.sent => last,
            _ => call.sent,
        };
        calls.last_reply = Some(now);
        calls.front_since = now;
        drop(calls);
        self.record_service(now.saturating_duration_since(started));
        Ok(call)
    }

    fn record_service(&self, took: Duration) {
        let took = took.as_nanos().min(u64::MAX as u128) as u64;
        let old = self.service_ns.load(Ordering::Relaxed);
        let new = if old == 0 {
            took
        } else {
            old - old / 8 + took / 8
        };
        self.service_ns.store(new.max(1), Ordering::Relaxed);
    }

    /// The typical duration of a call on this worker, once one has finished.
    pub(crate) fn service_time(&self) -> Option<Duration> {
        match self.service_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// How many calls the worker holds now: a reply the caller has seen is
    /// no longer counted (the reader takes the call off before it settles
    /// the future), whether or not the supervisor has heard of it yet.
    pub(crate) fn held(&self) -> usize {
        lock(&self.calls).queue.len()
    }

    /// Every call still in flight (the first one was running).
    pub(crate) fn take_all(&self) -> Vec<InFlight> {
        lock(&self.calls).queue.drain(..).collect()
    }

    /// The running call's future, its timeout, and when it started.
    pub(crate) fn front(&self) -> Option<(Arc<Core>, Option<Duration>, Instant)> {
        let calls = lock(&self.calls);
        calls
            .queue
            .front()
            .map(|c| (c.item.core.clone(), c.item.timeout, calls.front_since))
    }

    /// Where `core` is in the queue (0: running).
    pub(crate) fn position(&self, core: &Arc<Core>) -> Option<usize> {
        lock(&self.calls)
            .queue
            .iter()
            .position(|c| Arc::ptr_eq(&c.item.core, core))
    }

    /// Sends `signal` to the worker's process group unless it was reaped.
    pub(crate) fn signal(&self, signal: i32) {
        let reaped = lock(&self.reaped);
        if !*reaped {
            os::signal_group(self.pid, signal);
        }
    }
}

/// A frame for the writer thread, from `offset` on.
type Queued = (Arc<Vec<u8>>, usize);

/// The supervisor's handle on a started worker.
pub(crate) struct Worker {
    pub(crate) link: Arc<Link>,
    /// Frames for the writer; dropping it closes the channel.
    pub(crate) frames: Option<Sender<Queued>>,
    /// The channel, for frames written without the writer thread.
    direct: UnixStream,
    /// Frames queued for the writer and not yet on the socket.
    backlog: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Worker {
    /// Sends a frame: straight onto the socket when nothing is queued and
    /// it fits (no thread hand-off), else (the rest of it) through the
    /// writer thread, which may block. Frames stay in order: only the
    /// supervisor sends, and it writes directly only when the writer has
    /// put everything queued on the socket.
    pub(crate) fn send_frame(&self, frame: Arc<Vec<u8>>) {
        let Some(frames) = &self.frames else { return };
        let mut offset = 0;
        if self.backlog.load(Ordering::Acquire) == 0 {
            offset = os::send_nonblocking(&self.direct, &frame);
            if offset == frame.len() {
                return;
            }
        }
        self.backlog.fetch_add(1, Ordering::AcqRel);
        // If the writer is gone the worker is dying; its reader reports it.
        let _ = frames.send((frame, offset));
    }

    /// Waits for the reader and writer threads to end, once the reader has
    /// reported the worker's end: afterwards no descriptor of this worker is
    /// open in this process.
    pub(crate) fn join(mut self) {
        self.frames = None;
        for thread in self.threads.drain(..) {
            // A panic there was already reported by the panic hook; the
            // worker is gone either way.
            let _ = thread.join();
        }
    }
}

/// Settings a worker's threads need.
#[derive(Clone)]
pub(crate) struct LinkSettings {
    pub(crate) start_timeout: Duration,
    pub(crate) max_frame: usize,
}

/// Starts the reader and writer threads of a spawned worker.
pub(crate) fn start(
    id: WorkerId,
    spawned: os::SpawnedWorker,
    settings: &LinkSettings,
    events: Sender<Event>,
) -> io::Result<Worker> {
    let link = Arc::new(Link::new(id, spawned.process.id()));
    let write_end = spawned.channel.try_clone()?;
    let direct = spawned.channel.try_clone()?;
    let backlog = Arc::new(AtomicUsize::new(0));
    let (frames_tx, frames_rx) = crossbeam_channel::unbounded();
    let reader = Reader {
        link: link.clone(),
        channel: spawned.channel,
        process: spawned.process,
        pidfd: spawned.pidfd,
        events,
        settings: settings.clone(),
        info: None,
    };
    let writer = std::thread::Builder::new()
        .name(format!("loky-writer-{}", link.pid))
        .spawn({
            let backlog = backlog.clone();
            move || run_writer(write_end, frames_rx, &backlog)
        })?;
    let reader = std::thread::Builder::new()
        .name(format!("loky-reader-{}", link.pid))
        .spawn(move || reader.run())?;
    Ok(Worker {
        link,
        frames: Some(frames_tx),
        direct,
        backlog,
        threads: vec![reader, writer],
    })
}

fn run_writer(channel: UnixStream, frames: Receiver<Queued>, backlog: &AtomicUsize) {
    let mut out = BufWriter::with_capacity(64 << 10, &channel);
    while let Ok((frame, offset)) = frames.recv() {
        let mut written = 1;
        if out.write_all(&frame[offset..]).is_err() {
            return; // The worker is gone; its reader reports it.
        }
        while let Ok((frame, offset)) = frames.try_recv() {
            written += 1;
            if out.write_all(&frame[offset..]).is_err() {
                return;
            }
        }
        if out.flush().is_err() {
            return;
        }
        // Only now are these frames on the socket: direct writes may follow.
        backlog.fetch_sub(written, Ordering::AcqRel);
    }
    let _ = out.flush();
    // Every sender is gone: tell the worker to leave.
    let _ = channel.shutdown(Shutdown::Write);
}

/// Why a worker never became ready.
struct StartFailure {
    reason: String,
    /// It died (its channel ended) rather than answering wrongly or not
    /// at all.
    died: bool,
}

/// Why a reader stopped reading.
enum End {
    Closed,
    Exited,
    Failed(String),
}

struct Reader {
    link: Arc<Link>,
    channel: UnixStream,
    process: os::Process,
    pidfd: Option<OwnedFd>,
    events: Sender<Event>,
    settings: LinkSettings,
    info: Option<WorkerInfo>,
}

impl Reader {
    fn run(mut self) {
        crate::supervisor::mark_pool_thread();
        let mut frames = FrameBuffer::new(self.settings.max_frame);
        let started = match self.read_hello(&mut frames) {
            Ok(hello) => {
                self.info = Some(WorkerInfo {
                    pid: self.link.pid,
                    program: hello.program.clone(),
                    tasks: hello.tasks.iter().map(|t| t.name.clone()).collect(),
                });
                let _ = self.events.send(Event::Ready {
                    worker: self.link.id,
                    hello,
                });
                true
            }
            Err(StartFailure { reason, died }) => {
                let exit = self.reap();
                let _ = self.events.send(Event::StartFailed {
                    worker: self.link.id,
                    reason,
                    exit,
                    died,
                });
                false
            }
        };
        if !started {
            return;
        }
        let end = self.read_replies(&mut frames);
        let exit = self.reap();
        let protocol_error = match end {
            End::Failed(reason) => Some(reason),
            End::Closed | End::Exited => None,
        };
        let _ = self.events.send(Event::Died {
            worker: self.link.id,
            exit,
            protocol_error,
        });
    }

    /// Kills what is left of the worker's group and reaps the worker.
    fn reap(&mut self) -> WorkerExit {
        let mut reaped = lock(&self.link.reaped);
        os::signal_group(self.link.pid, os::SIGKILL);
        let exit = match self.process.wait() {
            Ok(status) => WorkerExit::from_status(status),
            Err(_) => WorkerExit::Code(-1),
        };
        *reaped = true;
        exit
    }

    fn read_hello(&mut self, frames: &mut FrameBuffer) -> Result<Hello, StartFailure> {
        let deadline = Instant::now() + self.settings.start_timeout;
        let refused = |reason: String| StartFailure {
            reason,
            died: false,
        };
        let died = || StartFailure {
            reason: "it closed its channel before its hello: it is not a loky worker \
                     program, or it failed at start-up"
                .to_owned(),
            died: true,
        };
        loop {
            let frame = frames.next_frame().map_err(|e| refused(describe(&e)))?;
            if let Some(body) = frame {
                return check_hello(decode_body::<Response<'_>>(body)).map_err(refused);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(refused(format!(
                    "it sent no hello within {:?}: it is not a loky worker program",
                    self.settings.start_timeout
                )));
            }
            let ready = os::poll_channel(&self.channel, self.pidfd.as_ref(), Some(left))
                .map_err(|e| refused(format!("could not wait for its hello: {e}")))?;
            if ready.channel || ready.exited {
                match frames.fill_from(&mut self.channel) {
                    Ok(0) => return Err(died()),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Err(died()),
                    Err(e) => return Err(refused(format!("its channel failed: {e}"))),
                }
            }
        }
    }

    fn read_replies(&mut self, frames: &mut FrameBuffer) -> End {
        loop {
            let ready = match os::poll_channel(&self.channel, self.pidfd.as_ref(), None) {
                Ok(ready) => ready,
                Err(e) => return End::Failed(format!("could not watch the worker: {e}")),
            };
            if ready.channel {
                if let Some(end) = self.read_once(frames) {
                    return end;
                }
            } else if ready.exited {
                // Take what it wrote before it died, then report.
                loop {
                    match os::poll_channel(&self.channel, None, Some(Duration::ZERO)) {
                        Ok(r) if r.channel => {}
                        _ => return End::Exited,
                    }
                    if let Some(end) = self.read_once(frames) {
                        return end;
                    }
                }
            }
        }
    }

    /// One read, then every whole frame it completed.
    fn read_once(&mut self, frames: &mut FrameBuffer) -> Option<End> {
        match frames.fill_from(&mut self.channel) {
            // The end of the channel, even inside a frame: a worker that
            // dies while writing a reply died; it broke no protocol.
            Ok(0) => return Some(End::Closed),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return None,
            // A worker that dies with unread input resets the connection:
            // that is its death, not a protocol failure.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Some(End::Closed),
            Err(e) => return Some(End::Failed(format!("its channel failed: {e}"))),
        }
        let mut replies = 0;
        let result = loop {
            match frames.next_frame() {
                Ok(Some(body)) => match self.handle_frame(body) {
                    Ok(is_reply) => replies += usize::from(is_reply),
                    Err(reason) => break Some(End::Failed(reason)),
                },
                Ok(None) => break None,
                Err(err) => break Some(End::Failed(describe(&err))),
            }
        };
        if replies > 0 {
            let _ = self.events.send(Event::Completed {
                worker: self.link.id,
                replies,
            });
        }
        result
    }

    /// Handles one frame; true if it was a reply.
    fn handle_frame(&self, body: &[u8]) -> Result<bool, String> {
        let response = decode_body::<Response<'_>>(body).map_err(|e| describe(&e))?;
        match response {
            Response::Reply(reply) => {
                let call = self.link.pop(reply.id)?;
                let info = self.info.as_ref().expect("the hello came first");
                let settled = settle_outcome(&call.item, reply.outcome, info);
                call.item.core.settle(settled);
                Ok(true)
            }
            Response::Retiring(reason) => {
                let _ = self.events.send(Event::Retiring {
                    worker: self.link.id,
                    reason,
                });
                Ok(false)
            }
            Response::Hello(_) => Err("it sent a second hello".to_owned()),
        }
    }
}

fn check_hello(response: Result<Response<'_>, loky_proto::FrameError>) -> Result<Hello, String> {
    match response {
        Ok(Response::Hello(hello)) if hello.protocol == PROTOCOL_VERSION => Ok(hello),
        Ok(Response::Hello(hello)) => Err(format!(
            "it speaks protocol version {}, this executor speaks version {PROTOCOL_VERSION}",
            hello.protocol
        )),
        Ok(_) => Err("its first message was not a hello".to_owned()),
        Err(e) => Err(format!(
            "its first message was not a hello ({}): it is not a loky worker program",
            describe(&e)
        )),
    }
}

/// An error with its chain of causes, on one line.
pub(crate) fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
