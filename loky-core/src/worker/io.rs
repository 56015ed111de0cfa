//! One worker's I/O threads, whatever the transport.
//!
//! The *reader* thread owns the worker's end: it waits for the hello,
//! settles futures as replies arrive (replies come in call order: the
//! [`Link`]'s FIFO), notices the worker's death at once (end of the channel,
//! or the process's exit), reaps it, and reports to the supervisor. A panic
//! in it (a bug) still reaps the worker and reports an internal error.
//! On a local worker's socket, a caller that waits for the reply to a call
//! it sent itself reads the channel in its stead for the time it would
//! otherwise watch its future (see [`Desk`]): its reply then reaches it
//! with no thread in between.
//!
//! The *writer* thread sends the frames that did not fit the socket at
//! once, several per write when they queue up, and ends the worker's input
//! when the supervisor closes it: that is how a worker is told to leave.
//! Whoever sends a frame (the supervisor, or a caller sending its own
//! call) writes it itself when nothing is queued for the writer (no thread
//! hand-off on the common path), through the worker's port; the calls the
//! supervisor sends together go out in one write.

use std::io::{self, BufWriter, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use loky_proto::shm::EncodedFrame;
use loky_proto::{FrameError, Hello, PROTOCOL_VERSION, Response};

use inbox::{Inbox, Incoming};

use super::{Port, Stop, Whereabouts, WorkerHandle};
use crate::call::{self, InFlight, WorkerInfo, settle_outcome};
use crate::config::LinkSettings;
use crate::deadline;
use crate::events::{End, Event, LinkError, StartFailure, WorkerId};
use crate::exit::WorkerExit;
use crate::future::ReadReplies;
use crate::link::Link;
use crate::output::ReplyFrame;
use crate::pool_thread::{self, Role};

/// A worker's byte channel and its process (or what stands for it), as
/// its reader, its writer and its handle share them. Nothing here is
/// called by the supervisor but [`try_write`](Self::try_write),
/// [`stop`](Self::stop) and [`disconnect`](Self::disconnect), none of which
/// blocks.
pub(crate) trait Transport: Send + Sync + 'static {
    /// The worker's process id; 0 while it is not known (see
    /// [`introduced`](Self::introduced)).
    fn pid(&self) -> u32;

    /// Reads what the worker sent: blocks until some bytes arrive; `Ok(0)`
    /// at the end of the channel.
    fn read(&self, buf: &mut [u8]) -> io::Result<usize>;

    /// The channel as a Unix socket to a worker on this machine, which
    /// carries descriptors: frames with shared memory go (and come) only
    /// through it. `None` (the default) for any other channel, whose
    /// launcher's pool encodes bytes only.
    fn local_socket(&self) -> Option<&UnixStream> {
        None
    }

    /// Waits until a read would not block, the worker's process ended, or
    /// `timeout` passed (`None`: no limit).
    fn wait(&self, timeout: Option<Duration>) -> io::Result<Readiness>;

    /// Stops data on the channel from ending [`wait`](Self::wait) (the
    /// channel's end still does) while another thread reads it, until
    /// [`resume_wait`](Self::resume_wait); false if the transport cannot,
    /// and then only its reader reads it (the default).
    fn pause_wait(&self) -> bool {
        false
    }

    /// Data on the channel ends [`wait`](Self::wait) again, at once if some
    /// is there.
    fn resume_wait(&self) -> io::Result<()> {
        Ok(())
    }

    /// Writes what fits of `bytes` without blocking; how much it took (0
    /// when nothing fits or the channel failed: the writer then finds out).
    fn try_write(&self, bytes: &[u8]) -> usize;

    /// Writes some of `bytes`, blocking while the worker does not read.
    fn write(&self, bytes: &[u8]) -> io::Result<usize>;

    /// Ends the worker's input after what was written.
    fn close_input(&self);

    /// Shuts the channel down both ways: a blocked read or write returns at
    /// once, whoever else holds the other end.
    fn disconnect(&self);

    /// Stops the worker and what it started, unless it was reaped.
    fn stop(&self, how: Stop);

    /// Once the worker's end was seen: stops what is left of it, reaps it,
    /// and says how it ended.
    fn reap(&self) -> io::Result<WorkerExit>;

    /// Once the worker's end was seen: stops what is left of it and waits
    /// for its exit, which it says (or takes the worker's word for it and
    /// leaves the stopping to `finish`); [`finish`](Self::finish) then
    /// reaps it. By default (a transport that learns the end only as it
    /// reaps), this reaps it.
    fn exited(&self) -> io::Result<WorkerExit> {
        self.reap()
    }

    /// After [`exited`](Self::exited): reaps the worker, if that did not.
    fn finish(&self) -> io::Result<()> {
        Ok(())
    }

    /// The worker said hello: a transport that reaches it through another
    /// process (an agent on its machine) learns its pid here.
    fn introduced(&self, _hello: &Hello) {}

    /// Where the worker runs, for one started through a launcher command.
    fn whereabouts(&self) -> Option<Whereabouts> {
        None
    }

    /// Once the worker is dead: what it held back past the first
    /// `received` bytes it wrote (see the protocol crate's
    /// `JournalReader::recover`). Nothing for a worker without a journal.
    fn recover(&self, _received: u64) -> Vec<u8> {
        Vec::new()
    }
}

/// What became ready in [`Transport::wait`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Readiness {
    /// The channel has data, or reached its end.
    pub(crate) channel: bool,
    /// The process exited.
    pub(crate) exited: bool,
}

/// After the process exited, at most this many more reads are made from
/// its channel: what it wrote before it died is in the socket's buffers, a
/// few reads' worth; more could only come from a process it left behind
/// that holds its end and keeps writing.
const DRAIN_READS: usize = 256;

/// At most this many bytes of small frames sent together are gathered into
/// one write (a burst of calls: one system call, not one per call).
const GATHER: usize = 64 << 10;

/// A frame for the writer thread, from `offset` on.
type Queued = (Arc<EncodedFrame>, usize);

/// The socket for a frame with descriptors: only a pool of local workers
/// makes such frames, and only local transports have one.
fn socket_for_descriptors(transport: &dyn Transport) -> &UnixStream {
    transport
        .local_socket()
        .expect("frames with descriptors are made only for local workers")
}

/// Writes what fits of `frame` without blocking; how much went.
fn write_nonblocking(transport: &dyn Transport, frame: &EncodedFrame) -> usize {
    match frame {
        EncodedFrame::Bytes(bytes) => transport.try_write(bytes),
        // Nothing sent (the socket is full, or failed): the writer goes on
        // from the start, and finds out.
        EncodedFrame::Descriptors(frame) => frame
            .send(socket_for_descriptors(transport), 0, true)
            .unwrap_or(0),
    }
}

/// The input of a worker whose I/O threads run here: frames go straight
/// onto the channel when nothing is queued for the writer and they fit,
/// else (what is left of them) through the writer thread. Every send holds
/// the lock, so frames stay in order whoever sends them: a direct write
/// happens only when the writer has put everything queued on the channel.
struct ChannelPort {
    transport: Arc<dyn Transport>,
    /// Frames for the writer; `None` once closed (dropping the sender ends
    /// the worker's input).
    frames: Mutex<Option<Sender<Queued>>>,
    /// Frames queued for the writer and not yet on the socket.
    backlog: Arc<AtomicUsize>,
    /// Where a caller waiting for the reply to a call it sent reads it
    /// (see [`Desk`]); `None` where only the reader thread reads.
    replies: Option<Weak<dyn ReadReplies>>,
}

impl ChannelPort {
    fn frames(&self) -> MutexGuard<'_, Option<Sender<Queued>>> {
        // A poisoned lock only means a panic elsewhere while it was held.
        self.frames.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `frame` on `frames`, the lock held.
    fn write(&self, frames: &Option<Sender<Queued>>, frame: Arc<EncodedFrame>) {
        if frames.is_none() {
            return;
        }
        let mut offset = 0;
        if self.backlog.load(Ordering::Acquire) == 0 {
            offset = write_nonblocking(&*self.transport, &frame);
            if offset == frame.len() {
                return;
            }
        }
        self.queue(frames, frame, offset);
    }

    /// Sends `batch` on `frames`, in order, the lock held: the leading
    /// frames of bytes, up to [`GATHER`] bytes of them, in one write.
    fn write_all(&self, frames: &Option<Sender<Queued>>, batch: Vec<Arc<EncodedFrame>>) {
        if frames.is_none() {
            return;
        }
        let mut batch = batch.into_iter().peekable();
        if self.backlog.load(Ordering::Acquire) == 0 {
            let mut gathered = Vec::new();
            let mut size = 0;
            while let Some(frame) = batch.next_if(|frame| match &**frame {
                EncodedFrame::Bytes(b) => size + b.len() <= GATHER,
                EncodedFrame::Descriptors(_) => false,
            }) {
                size += frame.len();
                gathered.push(frame);
            }
            let mut written = match gathered.as_slice() {
                [] => 0,
                // Alone, a frame is written from where it is.
                [one] => write_nonblocking(&*self.transport, one),
                several => {
                    let mut bytes = Vec::with_capacity(size);
                    for frame in several {
                        if let EncodedFrame::Bytes(b) = &**frame {
                            bytes.extend_from_slice(b);
                        }
                    }
                    self.transport.try_write(&bytes)
                }
            };
            let mut gathered = gathered.into_iter();
            for frame in gathered.by_ref() {
                if written < frame.len() {
                    // What did not fit goes through the writer, in order.
                    self.queue(frames, frame, written);
                    break;
                }
                written -= frame.len();
            }
            for frame in gathered {
                self.queue(frames, frame, 0);
            }
        }
        for frame in batch {
            self.write(frames, frame);
        }
    }

    /// Queues `frame`, from `offset` on, for the writer.
    fn queue(&self, frames: &Option<Sender<Queued>>, frame: Arc<EncodedFrame>, offset: usize) {
        let Some(frames) = frames else { return };
        self.backlog.fetch_add(1, Ordering::AcqRel);
        // If the writer is gone the worker is dying; its reader reports it.
        let _ = frames.send((frame, offset));
    }

    fn close(&self) {
        *self.frames() = None;
    }
}

impl Port for ChannelPort {
    fn send(&self, link: &Link, call: InFlight, recorded: &mut dyn FnMut()) {
        let frames = self.frames();
        let frame = call.item.frame.clone();
        if let Some(replies) = &self.replies {
            call.item.future.replies_from(replies.clone());
        }
        // Recorded first: its reply may come before the write returns.
        link.push(call);
        recorded();
        self.write(&frames, frame);
    }

    fn send_all(&self, link: &Link, calls: Vec<InFlight>) {
        let frames = self.frames();
        let batch = calls
            .into_iter()
            .map(|call| {
                let frame = call.item.frame.clone();
                link.push(call);
                frame
            })
            .collect();
        self.write_all(&frames, batch);
    }
}

/// The handle on a worker whose I/O threads run here.
struct Connection {
    transport: Arc<dyn Transport>,
    port: Arc<ChannelPort>,
    threads: Vec<JoinHandle<()>>,
    /// What its reader shares with callers (for tests).
    #[cfg(test)]
    desk: Arc<Desk>,
}

/// Starts the reader and writer threads of worker `id`, reached through
/// `transport`; its replies settle the calls in `link`.
pub(crate) fn start(
    id: WorkerId,
    transport: Arc<dyn Transport>,
    link: Arc<Link>,
    settings: &LinkSettings,
    events: Sender<Event>,
) -> io::Result<Box<dyn WorkerHandle>> {
    Ok(Box::new(connect(id, transport, link, settings, events)?))
}

/// As [`start`], the handle unboxed.
fn connect(
    id: WorkerId,
    transport: Arc<dyn Transport>,
    link: Arc<Link>,
    settings: &LinkSettings,
    events: Sender<Event>,
) -> io::Result<Connection> {
    let pid = transport.pid();
    let backlog = Arc::new(AtomicUsize::new(0));
    let (frames_tx, frames_rx) = crossbeam_channel::unbounded();
    let writer = Writer {
        id,
        transport: transport.clone(),
        frames: frames_rx,
        backlog: backlog.clone(),
        events: events.clone(),
    };
    let desk = Arc::new(Desk {
        id,
        transport: transport.clone(),
        link,
        events,
        inflow: Mutex::new(Inflow {
            frames: Inbox::new(&*transport, settings.max_frame),
            info: None,
            ended: None,
        }),
        #[cfg(test)]
        caller_reads: AtomicUsize::new(0),
    });
    // Callers read replies themselves only where the reader's wait can be
    // paused.
    let replies = transport.local_socket().map(|_| {
        let desk: Arc<dyn ReadReplies> = desk.clone();
        Arc::downgrade(&desk)
    });
    let reader = Reader {
        desk: desk.clone(),
        settings: settings.clone(),
    };
    let writer = pool_thread::spawn(Role::Writer, format!("loky-writer-{pid}"), move || {
        writer.run()
    })?;
    let reader = match pool_thread::spawn(Role::Reader, format!("loky-reader-{pid}"), move || {
        reader.run()
    }) {
        Ok(reader) => reader,
        Err(err) => {
            // The worker is killed and reaped as the transport drops.
            transport.disconnect();
            drop(frames_tx);
            let _ = writer.join();
            return Err(err);
        }
    };
    let port = Arc::new(ChannelPort {
        transport: transport.clone(),
        frames: Mutex::new(Some(frames_tx)),
        backlog,
        replies,
    });
    Ok(Connection {
        transport,
        port,
        threads: vec![reader, writer],
        #[cfg(test)]
        desk,
    })
}

impl WorkerHandle for Connection {
    fn pid(&self) -> u32 {
        self.transport.pid()
    }

    /// Through the port, as the calls of callers go.
    fn send(&mut self, frame: Arc<EncodedFrame>) {
        let frames = self.port.frames();
        self.port.write(&frames, frame);
    }

    fn close(&mut self) {
        self.port.close();
    }

    fn is_closed(&self) -> bool {
        self.port.frames().is_none()
    }

    fn stop(&self, how: Stop) {
        self.transport.stop(how);
    }

    fn whereabouts(&self) -> Option<Whereabouts> {
        self.transport.whereabouts()
    }

    fn port(&self) -> Option<Arc<dyn Port>> {
        Some(self.port.clone())
    }

    fn release(mut self: Box<Self>) {
        self.port.close();
        // A process the worker left behind may hold its end of the channel
        // and never read: without this, the writer could block for good.
        self.transport.disconnect();
        for thread in self.threads.drain(..) {
            // Both threads end at once now: the reader reported the end,
            // and the writer's channel is shut down. A panic there was
            // reported already.
            let _ = thread.join();
        }
    }
}

struct Writer {
    id: WorkerId,
    transport: Arc<dyn Transport>,
    frames: Receiver<Queued>,
    backlog: Arc<AtomicUsize>,
    events: Sender<Event>,
}

impl Writer {
    fn run(self) {
        if let Err(message) = pool_thread::guarded(|| self.write_all()) {
            // The supervisor breaks the pool. The news goes first: the
            // worker's death, which the disconnection below causes, must
            // not be taken for a crash.
            let _ = self.events.send(Event::ThreadPanicked {
                worker: self.id,
                role: Role::Writer,
                message,
            });
            // The worker must not wait for frames that will never come.
            self.transport.disconnect();
        }
    }

    fn write_all(&self) {
        let mut out = BufWriter::with_capacity(64 << 10, WriteHalf(&*self.transport));
        while let Ok(queued) = self.frames.recv() {
            pool_thread::injected_panic_point(Role::Writer);
            let mut written = 1;
            if self.write(&mut out, queued).is_err() {
                return; // The worker is gone; its reader reports it.
            }
            while let Ok(queued) = self.frames.try_recv() {
                written += 1;
                if self.write(&mut out, queued).is_err() {
                    return;
                }
            }
            if out.flush().is_err() {
                return;
            }
            // Only now are these frames on the socket: direct writes may follow.
            self.backlog.fetch_sub(written, Ordering::AcqRel);
        }
        if out.flush().is_ok() {
            // Every sender is gone: tell the worker to leave.
            self.transport.close_input();
        }
    }

    /// Writes one queued frame: bytes through `out`, which gathers them
    /// into large writes; a frame with descriptors after what `out` holds.
    fn write(&self, out: &mut BufWriter<WriteHalf<'_>>, (frame, offset): Queued) -> io::Result<()> {
        match &*frame {
            EncodedFrame::Bytes(bytes) => out.write_all(&bytes[offset..]),
            EncodedFrame::Descriptors(frame) => {
                out.flush()?;
                let socket = socket_for_descriptors(&*self.transport);
                let mut sent = offset;
                while sent < frame.len() {
                    sent += frame.send(socket, sent, false)?;
                }
                Ok(())
            }
        }
    }
}

/// `Write` for a shared transport.
struct WriteHalf<'a>(&'a dyn Transport);

impl Write for WriteHalf<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A worker's incoming side, as its reader thread and a caller waiting for
/// a reply share it. The reader thread waits on the channel and handles
/// what comes; a caller that waits for the reply to a call it sent itself
/// may, for the time it would otherwise spin, read the channel itself
/// ([`ReadReplies`]): it pauses the reader's wait on the channel's data,
/// takes the frames as the reader would (its own reply among them), and
/// gives the channel back. Whoever reads holds `inflow`; a caller never
/// blocks for it, and never handles the worker's end: it leaves that (or
/// an error it met) to the reader thread, which reports every end.
pub(crate) struct Desk {
    id: WorkerId,
    transport: Arc<dyn Transport>,
    link: Arc<Link>,
    events: Sender<Event>,
    inflow: Mutex<Inflow>,
    /// How often a caller began to read (for tests).
    #[cfg(test)]
    caller_reads: AtomicUsize,
}

/// What the reading thread of the moment works with.
struct Inflow {
    frames: Inbox,
    /// From the worker's hello on; `None` before it, and again after its
    /// end: callers read only in between.
    info: Option<WorkerInfo>,
    /// An end a caller met, for the reader thread to report.
    ended: Option<End>,
}

impl Desk {
    fn lock(&self) -> MutexGuard<'_, Inflow> {
        // A poisoned lock only means a panic while it was held, which the
        // reader thread turns into an internal error.
        self.inflow.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn internal(&self, message: &str) -> String {
        pool_thread::internal_error(Some(Role::Reader), Some(self.transport.pid()), message)
    }

    /// Takes what the worker wrote before it died, then reports its end.
    fn drain(&self, inflow: &mut Inflow) -> End {
        for _ in 0..DRAIN_READS {
            match self.transport.wait(Some(Duration::ZERO)) {
                Ok(ready) if ready.channel => {}
                _ => break,
            }
            if let Some(end) = self.read_once(inflow) {
                return end;
            }
        }
        self.recover(inflow, End::Exited)
    }

    /// Takes the replies the dead worker held back (its journal's), as if
    /// they had come on the channel, then reports `end`. A journal that
    /// does not hold whole, valid frames loses its replies (their calls
    /// fail with the worker's death), nothing else.
    fn recover(&self, inflow: &mut Inflow, end: End) -> End {
        let held = self.transport.recover(inflow.frames.received());
        if !held.is_empty() {
            inflow.frames.extend(&held);
            let _ = self.take_frames(inflow);
        }
        end
    }

    /// One read (which does not block on a local socket: a caller may have
    /// taken what woke the reader), then every whole frame it completed.
    fn read_once(&self, inflow: &mut Inflow) -> Option<End> {
        match inflow.frames.fill(&*self.transport) {
            // The end of the channel, even inside a frame: a worker that
            // dies while writing a reply died; it broke no protocol.
            Ok(0) => return Some(self.recover(inflow, End::Closed)),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) =>
            {
                return None;
            }
            // A worker that dies with unread input resets the connection:
            // that is its death, not a protocol failure.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Some(self.recover(inflow, End::Closed));
            }
            Err(e) => return Some(End::Protocol(LinkError::Channel(e))),
        }
        self.take_frames(inflow)
    }

    /// Handles every whole frame received, and tells the supervisor of the
    /// replies among them.
    fn take_frames(&self, inflow: &mut Inflow) -> Option<End> {
        let Inflow { frames, info, .. } = inflow;
        let info = info.as_ref().expect("the hello came first");
        // Replies the supervisor must hear of.
        let mut replies = 0;
        // The frames of one read came in together.
        let now = Instant::now();
        let result = loop {
            match frames.next_frame() {
                Ok(Some(frame)) => match self.handle_frame(info, frame, now) {
                    Ok(tell) => replies += usize::from(tell),
                    Err(err) => break Some(End::Protocol(err)),
                },
                Ok(None) => break None,
                Err(err) => break Some(End::Protocol(LinkError::Frame(err))),
            }
        };
        if replies > 0 {
            let _ = self.events.send(Event::Completed {
                worker: self.id,
                replies,
            });
        }
        result
    }

    /// Handles one frame, read `now`; true if it was a reply the supervisor
    /// must hear of.
    fn handle_frame(
        &self,
        info: &WorkerInfo,
        frame: Incoming<'_>,
        now: Instant,
    ) -> Result<bool, LinkError> {
        let response = Response::decode(frame.body).map_err(LinkError::Frame)?;
        match response {
            Response::Reply(reply) => {
                pool_thread::injected_panic_point(Role::Reader);
                let call = self.link.pop(reply.id, now).map_err(LinkError::Reply)?;
                // Before the future is settled: its caller's next call
                // finds the worker free.
                let tell = !self.link.replied();
                let came_in = ReplyFrame::new(frame.mapped, frame.attachments.share());
                let settled = settle_outcome(&call.item, reply.outcome, info, &came_in);
                if let Some(note) = &info.stale_note {
                    call.item.future.note_stale_worker(note);
                }
                call.item.future.settle(settled);
                Ok(tell)
            }
            Response::Progress(progress) => {
                let came_in = ReplyFrame::new(frame.mapped, frame.attachments.share());
                self.link
                    .progress(progress.id, now, |item| {
                        let items = call::item_results(item, progress.items, info, &came_in);
                        item.future.add_partial(items);
                    })
                    .map_err(LinkError::Reply)?;
                Ok(false)
            }
            Response::Retiring(reason) => {
                let _ = self.events.send(Event::Retiring {
                    worker: self.id,
                    reason,
                });
                Ok(false)
            }
            Response::Hello(_) => Err(LinkError::SecondHello),
        }
    }

    /// A caller's reads, until `settled` is set or `until`: what the
    /// reader thread would do with what comes meanwhile; the end met, if
    /// any.
    fn read_while(&self, inflow: &mut Inflow, settled: &AtomicBool, until: Instant) -> Option<End> {
        loop {
            if settled.load(Ordering::Acquire) {
                return None;
            }
            if let Some(end) = self.read_once(inflow) {
                return Some(end);
            }
            if settled.load(Ordering::Acquire) || Instant::now() >= until {
                return None;
            }
            std::hint::spin_loop();
        }
    }
}

impl ReadReplies for Desk {
    fn read_until(&self, settled: &AtomicBool, until: Instant) -> bool {
        // The reader thread is at work, or the worker is not serving: the
        // caller watches its future instead.
        let Ok(mut inflow) = self.inflow.try_lock() else {
            return false;
        };
        if inflow.info.is_none() || inflow.ended.is_some() || !self.transport.pause_wait() {
            return false;
        }
        #[cfg(test)]
        self.caller_reads.fetch_add(1, Ordering::SeqCst);
        // As the reader thread: the callbacks of the futures it settles go
        // to the pool's runner threads, and a panic here (a bug) is the
        // reader's internal error.
        let mut end = pool_thread::acting_as(Role::Reader, || {
            pool_thread::guarded(|| self.read_while(&mut inflow, settled, until)).unwrap_or_else(
                |message| {
                    Some(End::Internal {
                        reason: self.internal(&message),
                        orphans: call::take_orphans(),
                    })
                },
            )
        });
        if let Err(e) = self.transport.resume_wait() {
            end = end.or(Some(End::Protocol(LinkError::Watch(e))));
        }
        if let Some(end) = end {
            inflow.ended = Some(end);
            // The reader thread wakes at the channel's end, and reports it.
            self.transport.disconnect();
        }
        true
    }
}

struct Reader {
    desk: Arc<Desk>,
    settings: LinkSettings,
}

impl Reader {
    fn run(self) {
        let desk = &*self.desk;
        let hello = pool_thread::guarded(|| self.read_hello())
            .unwrap_or_else(|message| Err(StartFailure::Internal(desk.internal(&message))));
        match hello {
            Ok(hello) => {
                desk.transport.introduced(&hello);
                desk.lock().info = Some(WorkerInfo::new(desk.transport.pid(), &hello));
                let _ = desk.events.send(Event::Ready {
                    worker: desk.id,
                    hello,
                });
            }
            Err(failure) => {
                let exit = self.reap();
                let _ = desk.events.send(Event::StartFailed {
                    worker: desk.id,
                    failure,
                    exit,
                });
                return;
            }
        }
        let end =
            pool_thread::guarded(|| self.read_replies()).unwrap_or_else(|message| End::Internal {
                reason: desk.internal(&message),
                orphans: call::take_orphans(),
            });
        // Whatever ended it, a panic too: no caller reads any more.
        desk.lock().info = None;
        // Its status is known once it exited (or said what it dies of):
        // the supervisor hears of the death before the reap, and has this
        // thread joined once the reap is done (`Reaped`).
        let exit = self.exit_status(|t| t.exited());
        let _ = desk.events.send(Event::Died {
            worker: desk.id,
            exit,
            end,
        });
        // The supervisor, likely woken on this core, settles the calls
        // first; the rest of the reap and this thread's exit come after.
        std::thread::yield_now();
        let _ = pool_thread::guarded(|| desk.transport.finish());
        let _ = desk.events.send(Event::Reaped { worker: desk.id });
    }

    /// Stops what is left of the worker and reaps it.
    fn reap(&self) -> WorkerExit {
        self.exit_status(|t| t.reap())
    }

    /// How the worker ended, as `wait` says.
    fn exit_status(
        &self,
        wait: impl FnOnce(&dyn Transport) -> io::Result<WorkerExit>,
    ) -> WorkerExit {
        match pool_thread::guarded(|| wait(&*self.desk.transport)) {
            Ok(Ok(exit)) => exit,
            // Not reaped here: the transport reaps it as it drops.
            Ok(Err(_)) | Err(_) => WorkerExit::Code(-1),
        }
    }

    fn read_hello(&self) -> Result<Hello, StartFailure> {
        let transport = &*self.desk.transport;
        let timeout = self.settings.start_timeout;
        let deadline = deadline::from_now(timeout);
        let mut inflow = self.desk.lock();
        loop {
            let frame = inflow
                .frames
                .next_frame()
                .map_err(StartFailure::NotAWorker)?;
            if let Some(frame) = frame {
                return check_hello(Response::decode(frame.body));
            }
            let left = deadline.map(|at| at.saturating_duration_since(Instant::now()));
            if left.is_some_and(|left| left.is_zero()) {
                return Err(StartFailure::NoHello(timeout));
            }
            let ready = transport.wait(left).map_err(StartFailure::Channel)?;
            if ready.channel || ready.exited {
                match inflow.frames.fill(transport) {
                    Ok(0) => return Err(StartFailure::Died),
                    Ok(_) => {}
                    // The process exited and left nothing more to read: a
                    // process it started may hold its end of the channel,
                    // which would never end.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock && ready.exited => {
                        return Err(StartFailure::Died);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                        ) => {}
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                        return Err(StartFailure::Died);
                    }
                    Err(e) => return Err(StartFailure::Channel(e)),
                }
            }
        }
    }

    /// Handles the worker's frames until its end, which it returns.
    fn read_replies(&self) -> End {
        let desk = &*self.desk;
        loop {
            let ready = match desk.transport.wait(None) {
                Ok(ready) => ready,
                Err(e) => return End::Protocol(LinkError::Watch(e)),
            };
            let mut inflow = desk.lock();
            if let Some(end) = inflow.ended.take() {
                return end;
            }
            if ready.channel {
                if let Some(end) = desk.read_once(&mut inflow) {
                    return end;
                }
            } else if ready.exited {
                return desk.drain(&mut inflow);
            }
        }
    }
}

fn check_hello(response: Result<Response<'_>, FrameError>) -> Result<Hello, StartFailure> {
    match response {
        Ok(Response::Hello(hello)) if hello.protocol == PROTOCOL_VERSION => Ok(hello),
        Ok(Response::Hello(hello)) => Err(StartFailure::Protocol {
            theirs: hello.protocol,
            ours: PROTOCOL_VERSION,
        }),
        Ok(_) => Err(StartFailure::NoHelloFirst),
        Err(e) => Err(StartFailure::NotAWorker(e)),
    }
}

mod inbox;
#[cfg(test)]
mod tests;
