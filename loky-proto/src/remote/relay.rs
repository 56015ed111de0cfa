//! The relay: one thread that moves a link's bytes between its TLS
//! connection and a local Unix socket, sends and checks heartbeats, and
//! carries control messages.
//!
//! At the executor, the local socket's other end is the worker's channel as
//! the supervisor sees it; at the worker's machine, it is the channel of the
//! worker process the agent started. Either side therefore reads and writes a
//! plain socket, exactly as with a local worker, and learns of the link's end
//! as the end of that socket.
//!
//! Liveness: each side sends a heartbeat record whenever it has sent
//! nothing for the heartbeat interval, and reads every byte that arrives at
//! once (the relay never stops reading the network, however slow its local
//! side), so silence for the heartbeat timeout means the peer or the path to
//! it is gone.
//!
//! Closing is in order and by halves, like a socket's: when the local side
//! ends, the relay sends what remains, then the TLS `close_notify`; when the
//! peer's `close_notify` arrives, the relay passes on what remains, then
//! shuts the local socket for writing. A connection that ends without
//! `close_notify`, a silent peer, a TLS or protocol error, and
//! [`RelayHandle::close`] end the link at once in both directions.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustls::Connection;

use super::Liveness;
use super::link::{
    Control, Demux, HEARTBEAT, MAX_DATA_RECORD, RECORD_HEADER, Received, WorkerStatus, data_header,
    encode_control,
};

/// At most this many socket reads per wake-up, so that a fast peer cannot
/// starve the other direction and the timers.
const READS_PER_TURN: usize = 32;

/// What one end of a link does beyond relaying bytes.
pub trait Endpoint: Send + 'static {
    /// The peer asks for `signal` to go to the worker's process group; an
    /// error ends the link as a protocol violation.
    fn signal(&mut self, signal: i32) -> Result<(), String>;

    /// The local side has ended (no more bytes will come from it); returns
    /// the worker's exit status to report to the peer, if this end knows it.
    fn local_closed(&mut self) -> Option<WorkerStatus>;

    /// How long the link may stay open once this side has closed its
    /// direction, waiting for the peer to close its own; `None`: until it
    /// does. An agent whose worker has exited has nothing more to wait for,
    /// and should not wait long on an executor that is slow to let go.
    fn linger(&self) -> Option<Duration> {
        None
    }

    /// The peer closed its direction in order and everything it sent was
    /// passed on: the local side is about to see the end of its input.
    fn peer_closed(&mut self) {}
}

/// The executor's end: it never takes signals and has no status to report.
#[derive(Debug, Default, Clone, Copy)]
pub struct ExecutorEnd;

impl Endpoint for ExecutorEnd {
    fn signal(&mut self, _signal: i32) -> Result<(), String> {
        Err("a worker's agent asked its executor to take a signal".into())
    }

    fn local_closed(&mut self) -> Option<WorkerStatus> {
        None
    }
}

/// Why a link ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The peer closed the link in order.
    Closed,
    /// The connection ended or failed without the peer closing the link: its
    /// process or machine died, or the network failed.
    ConnectionLost(String),
    /// Nothing arrived from the peer for this long (the heartbeat timeout).
    HeartbeatsStopped(Duration),
    /// TLS or the link protocol failed.
    Protocol(String),
    /// This side dropped the link ([`RelayHandle::close`]).
    Dropped,
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndReason::Closed => f.write_str("the link was closed"),
            EndReason::ConnectionLost(why) => write!(f, "connection lost ({why})"),
            EndReason::HeartbeatsStopped(silent) => {
                write!(f, "heartbeats stopped (nothing for {silent:.1?})")
            }
            EndReason::Protocol(why) => write!(f, "link protocol error ({why})"),
            EndReason::Dropped => f.write_str("the link was dropped"),
        }
    }
}

/// How the peer-to-local direction of a link ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEnd {
    /// Why.
    pub reason: EndReason,
    /// The worker's exit status, if the peer reported it.
    pub status: Option<WorkerStatus>,
}

/// What the relay and its handles share.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// Written to wake the relay.
    wake: UnixStream,
}

#[derive(Debug, Default)]
struct State {
    /// Control messages to send.
    outbox: Vec<Control>,
    /// [`RelayHandle::close`] was called.
    drop_requested: bool,
    /// Set when nothing more will reach the local side, before it is told.
    inbound: Option<LinkEnd>,
    /// Set when the relay has stopped.
    finished: bool,
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.state.lock().unwrap_or_else(|e| e.into_inner())
}

/// A handle on a relay: send control messages, drop the link, learn how it
/// ended. Dropping the handle of a spawned relay drops the link and waits
/// for the relay thread (which ends at once).
#[derive(Debug)]
pub struct RelayHandle {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<LinkEnd>>,
}

impl RelayHandle {
    /// Asks the peer's agent to send `signal` to the worker's process group.
    pub fn signal(&self, signal: i32) {
        self.send(Control::Signal(signal));
    }

    /// Queues a control message for the peer.
    pub fn send(&self, control: Control) {
        lock(&self.shared).outbox.push(control);
        self.wake();
    }

    /// Drops the link at once, without closing it in order: at a worker's
    /// machine, the agent takes this as the loss of its executor and kills
    /// the worker.
    pub fn close(&self) {
        lock(&self.shared).drop_requested = true;
        self.wake();
    }

    fn wake(&self) {
        // A full wake socket already holds a wake-up; a failed write means
        // the relay is gone.
        let _ = (&self.shared.wake).write(&[1]);
    }

    /// How the peer-to-local direction ended, once it has. It is set before
    /// the local side sees the end of its socket, so a reader that saw the
    /// end finds it here.
    pub fn end(&self) -> Option<LinkEnd> {
        lock(&self.shared).inbound.clone()
    }

    /// Waits up to `timeout` for [`RelayHandle::end`].
    pub fn wait_end(&self, timeout: Duration) -> Option<LinkEnd> {
        let deadline = Instant::now() + timeout;
        let mut state = lock(&self.shared);
        loop {
            if let Some(end) = &state.inbound {
                return Some(end.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Whether the relay has stopped.
    pub fn is_finished(&self) -> bool {
        lock(&self.shared).finished
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.close();
            let _ = thread.join();
        }
    }
}

/// Starts a relay thread for the executor's end of an authenticated link;
/// returns the socket the supervisor uses as the worker's channel, and the
/// handle.
pub fn spawn_executor_relay(
    conn: Connection,
    tcp: TcpStream,
    liveness: Liveness,
) -> io::Result<(UnixStream, RelayHandle)> {
    let (channel, local) = UnixStream::pair()?;
    let relay = Relay::new(conn, tcp, local, liveness, ExecutorEnd)?;
    let handle = relay.spawn("loky-remote-relay")?;
    Ok((channel, handle))
}

/// One link's relay, not yet running.
pub struct Relay<E: Endpoint> {
    conn: Connection,
    tcp: TcpStream,
    local: UnixStream,
    wake: UnixStream,
    shared: Arc<Shared>,
    endpoint: E,
    liveness: Liveness,
    demux: Demux,
    /// Bytes for the local side, from `to_local_at` on.
    to_local: Vec<u8>,
    to_local_at: usize,
    /// A record header's room, then a read from the local side.
    scratch: Box<[u8]>,
    last_rx: Instant,
    last_tx: Instant,
    status: Option<WorkerStatus>,
    /// The local side may still send.
    reading_local: bool,
    /// The local side still takes bytes.
    writing_local: bool,
    /// Our `close_notify` is queued.
    close_sent: bool,
    /// The TCP socket still takes bytes.
    tcp_writable: bool,
    /// The peer's `close_notify` arrived.
    peer_closed: bool,
    /// Once our direction is closed: when to stop waiting for the peer's.
    linger_until: Option<Instant>,
}

impl<E: Endpoint> std::fmt::Debug for Relay<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").finish_non_exhaustive()
    }
}

impl<E: Endpoint> Relay<E> {
    /// A relay between the authenticated `conn` over `tcp` and `local`.
    /// Plaintext `conn` already decrypted is relayed first.
    pub fn new(
        conn: Connection,
        tcp: TcpStream,
        local: UnixStream,
        liveness: Liveness,
        endpoint: E,
    ) -> io::Result<Relay<E>> {
        let mut conn = conn;
        // Records must go into TLS whole: the relay applies backpressure
        // itself (see `wait`), so TLS's own buffer limit must not cut them.
        conn.set_buffer_limit(None);
        let (wake_tx, wake) = UnixStream::pair()?;
        for socket in [&wake_tx, &wake, &local] {
            socket.set_nonblocking(true)?;
        }
        tcp.set_nonblocking(true)?;
        let now = Instant::now();
        Ok(Relay {
            conn,
            tcp,
            local,
            wake,
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
                wake: wake_tx,
            }),
            endpoint,
            liveness,
            demux: Demux::new(),
            to_local: Vec::new(),
            to_local_at: 0,
            scratch: vec![0; RECORD_HEADER + MAX_DATA_RECORD].into_boxed_slice(),
            last_rx: now,
            last_tx: now,
            status: None,
            reading_local: true,
            writing_local: true,
            close_sent: false,
            tcp_writable: true,
            peer_closed: false,
            linger_until: None,
        })
    }

    /// A handle for a relay run with [`Relay::run`] (dropping it does not
    /// stop the relay).
    pub fn handle(&self) -> RelayHandle {
        RelayHandle {
            shared: self.shared.clone(),
            thread: None,
        }
    }

    /// Runs the relay on a thread of its own.
    pub fn spawn(self, name: &str) -> io::Result<RelayHandle> {
        let shared = self.shared.clone();
        let thread = thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || self.run().0)?;
        Ok(RelayHandle {
            shared,
            thread: Some(thread),
        })
    }

    /// Relays until the link ends in both directions, or fails; returns how
    /// it ended, and the endpoint. Both sockets are shut down when it
    /// returns.
    pub fn run(mut self) -> (LinkEnd, E) {
        let reason = match self.pump() {
            Ok(()) => EndReason::Closed,
            Err(reason) => reason,
        };
        self.finish(reason)
    }

    fn pump(&mut self) -> Result<(), EndReason> {
        self.drain_plaintext()?;
        loop {
            self.flush_tls()?;
            self.flush_local();
            self.publish_inbound_end();
            if self.done() {
                return Ok(());
            }
            let ready = self.wait()?;
            if ready.wake {
                self.take_requests()?;
            }
            if ready.tcp {
                self.read_tcp()?;
            }
            if ready.local {
                self.read_local();
            }
            self.timers()?;
        }
    }

    /// Both directions are over, or ours is and lingering is over.
    fn done(&self) -> bool {
        let outbound_over = !self.reading_local
            && self.close_sent
            && (!self.tcp_writable || !self.conn.wants_write());
        let inbound_over = lock(&self.shared).inbound.is_some()
            || self
                .linger_until
                .is_some_and(|until| Instant::now() >= until);
        inbound_over && outbound_over
    }

    /// Waits for a socket or a timer.
    fn wait(&mut self) -> Result<Ready, EndReason> {
        let mut tcp_events = PollFlags::empty();
        if !self.peer_closed {
            tcp_events |= PollFlags::IN;
        }
        if self.tcp_writable && self.conn.wants_write() {
            tcp_events |= PollFlags::OUT;
        }
        let mut local_events = PollFlags::empty();
        // Backpressure: take more from the local side only once TLS has
        // handed everything before it to the kernel.
        if self.reading_local && !self.conn.wants_write() {
            local_events |= PollFlags::IN;
        }
        if self.writing_local && self.to_local_at < self.to_local.len() {
            local_events |= PollFlags::OUT;
        }
        let mut fds = vec![PollFd::new(&self.wake, PollFlags::IN)];
        let tcp_at = (!tcp_events.is_empty()).then(|| {
            fds.push(PollFd::new(&self.tcp, tcp_events));
            fds.len() - 1
        });
        let local_at = (!local_events.is_empty()).then(|| {
            fds.push(PollFd::new(&self.local, local_events));
            fds.len() - 1
        });
        let timeout = Timespec::try_from(self.next_timer()).unwrap_or(Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        });
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(err) => return Err(EndReason::Protocol(format!("poll failed: {err}"))),
        }
        let input = PollFlags::IN | PollFlags::HUP | PollFlags::ERR;
        let readable = |at: Option<usize>| at.is_some_and(|i| fds[i].revents().intersects(input));
        Ok(Ready {
            wake: readable(Some(0)),
            tcp: readable(tcp_at),
            local: local_at.is_some_and(|i| {
                local_events.contains(PollFlags::IN) && fds[i].revents().intersects(input)
            }),
        })
    }

    /// Time until the next heartbeat is due, the silence check fires, or
    /// lingering ends.
    fn next_timer(&self) -> Duration {
        let now = Instant::now();
        let beat = (self.last_tx + self.liveness.interval).saturating_duration_since(now);
        if let Some(until) = self.linger_until {
            return until.saturating_duration_since(now);
        }
        if self.peer_closed {
            return beat;
        }
        let silence = (self.last_rx + self.liveness.timeout).saturating_duration_since(now);
        beat.min(silence)
    }

    fn timers(&mut self) -> Result<(), EndReason> {
        let now = Instant::now();
        let silent = now.saturating_duration_since(self.last_rx);
        let waiting = !self.peer_closed && self.linger_until.is_none();
        if waiting && silent >= self.liveness.timeout {
            return Err(EndReason::HeartbeatsStopped(silent));
        }
        if !self.close_sent && now.saturating_duration_since(self.last_tx) >= self.liveness.interval
        {
            self.send_plain(&HEARTBEAT);
        }
        Ok(())
    }

    /// Queues bytes for TLS to encrypt and send.
    fn send_plain(&mut self, bytes: &[u8]) {
        // Without a buffer limit, TLS takes every byte.
        let _ = self.conn.writer().write_all(bytes);
        self.last_tx = Instant::now();
    }

    fn take_requests(&mut self) -> Result<(), EndReason> {
        let mut sink = [0u8; 64];
        while matches!((&self.wake).read(&mut sink), Ok(n) if n > 0) {}
        let (outbox, dropped) = {
            let mut state = lock(&self.shared);
            (std::mem::take(&mut state.outbox), state.drop_requested)
        };
        if dropped {
            return Err(EndReason::Dropped);
        }
        for control in outbox {
            self.send_control(&control);
        }
        Ok(())
    }

    fn send_control(&mut self, control: &Control) {
        if self.close_sent {
            return;
        }
        let mut record = Vec::new();
        encode_control(control, &mut record);
        self.send_plain(&record);
    }

    /// Reads what the network has, decrypts it and passes it on.
    fn read_tcp(&mut self) -> Result<(), EndReason> {
        for _ in 0..READS_PER_TURN {
            match self.conn.read_tls(&mut self.tcp) {
                Ok(0) => return self.tcp_ended(),
                Ok(_) => self.last_rx = Instant::now(),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(EndReason::ConnectionLost(err.to_string())),
            }
            let state = match self.conn.process_new_packets() {
                Ok(state) => state,
                Err(err) => {
                    // Tell the peer why, best effort.
                    let _ = self.conn.write_tls(&mut self.tcp);
                    return Err(EndReason::Protocol(format!("TLS: {err}")));
                }
            };
            self.drain_plaintext()?;
            if state.peer_has_closed() {
                self.peer_closed = true;
                return Ok(());
            }
        }
        Ok(())
    }

    /// The TCP stream ended: in order if `close_notify` came first.
    fn tcp_ended(&mut self) -> Result<(), EndReason> {
        if self.peer_closed {
            return Ok(());
        }
        Err(EndReason::ConnectionLost(
            "the connection ended without the link being closed".into(),
        ))
    }

    /// Moves decrypted bytes through the record demultiplexer.
    fn drain_plaintext(&mut self) -> Result<(), EndReason> {
        let mut received = Received::default();
        loop {
            let n = match self.conn.reader().read(&mut self.scratch) {
                Ok(0) => {
                    self.peer_closed = true;
                    break;
                }
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(EndReason::ConnectionLost(
                        "the connection ended without the link being closed".into(),
                    ));
                }
                Err(err) => return Err(EndReason::Protocol(err.to_string())),
            };
            self.demux
                .feed(&self.scratch[..n], &mut self.to_local, &mut received)
                .map_err(|err| EndReason::Protocol(err.to_string()))?;
            if !self.writing_local {
                self.to_local.clear();
                self.to_local_at = 0;
            }
        }
        for control in received.controls {
            self.on_control(control)?;
        }
        Ok(())
    }

    fn on_control(&mut self, control: Control) -> Result<(), EndReason> {
        match control {
            Control::Exited(status) => {
                self.status = Some(status);
                Ok(())
            }
            Control::Signal(signal) => self.endpoint.signal(signal).map_err(EndReason::Protocol),
            other => Err(EndReason::Protocol(format!(
                "unexpected {other:?} on an established link"
            ))),
        }
    }

    /// Takes what the local side has written and sends it as one record.
    fn read_local(&mut self) {
        let (header, body) = self.scratch.split_at_mut(RECORD_HEADER);
        let n = match self.local.read(body) {
            Ok(0) => return self.local_ended(),
            Ok(n) => n,
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return;
            }
            // Reset: the local side died; its end either way.
            Err(_) => return self.local_ended(),
        };
        header.copy_from_slice(&data_header(n));
        let record = &self.scratch[..RECORD_HEADER + n];
        // Without a buffer limit, TLS takes every byte.
        let _ = self.conn.writer().write_all(record);
        self.last_tx = Instant::now();
    }

    /// The local side sends no more: report the worker's status if known,
    /// then close our direction of the link.
    fn local_ended(&mut self) {
        self.reading_local = false;
        if let Some(status) = self.endpoint.local_closed() {
            self.send_control(&Control::Exited(status));
        }
        if !self.close_sent {
            self.conn.send_close_notify();
            self.close_sent = true;
        }
        self.linger_until = self.endpoint.linger().map(|linger| Instant::now() + linger);
    }

    /// Hands TLS's output to the kernel, as far as it takes it.
    fn flush_tls(&mut self) -> Result<(), EndReason> {
        while self.tcp_writable && self.conn.wants_write() {
            match self.conn.write_tls(&mut self.tcp) {
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                // The peer closed in order and is gone: nothing it would read.
                Err(_) if self.peer_closed => self.tcp_writable = false,
                Err(err) => return Err(EndReason::ConnectionLost(err.to_string())),
            }
        }
        if self.close_sent && self.tcp_writable && !self.conn.wants_write() {
            let _ = self.tcp.shutdown(Shutdown::Write);
            self.tcp_writable = false;
        }
        Ok(())
    }

    /// Writes pending bytes to the local side, as far as it takes them.
    fn flush_local(&mut self) {
        while self.writing_local && self.to_local_at < self.to_local.len() {
            match self.local.write(&self.to_local[self.to_local_at..]) {
                Ok(n) => self.to_local_at += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                // The local side is gone: what it would have read is moot.
                Err(_) => self.writing_local = false,
            }
        }
        self.to_local.clear();
        self.to_local_at = 0;
    }

    /// Once the peer closed and everything it sent is passed on, records
    /// how the link ended, then tells the local side.
    fn publish_inbound_end(&mut self) {
        let drained = self.to_local_at >= self.to_local.len() || !self.writing_local;
        if !self.peer_closed || !drained {
            return;
        }
        let mut state = lock(&self.shared);
        if state.inbound.is_some() {
            return;
        }
        state.inbound = Some(LinkEnd {
            reason: EndReason::Closed,
            status: self.status,
        });
        drop(state);
        self.shared.changed.notify_all();
        self.endpoint.peer_closed();
        let _ = self.local.shutdown(Shutdown::Write);
        self.writing_local = false;
    }

    /// Shuts everything down and records the end.
    fn finish(self, reason: EndReason) -> (LinkEnd, E) {
        let end = LinkEnd {
            reason,
            status: self.status,
        };
        {
            let mut state = lock(&self.shared);
            if state.inbound.is_none() {
                state.inbound = Some(end.clone());
            }
            state.finished = true;
        }
        self.shared.changed.notify_all();
        let _ = self.local.shutdown(Shutdown::Both);
        let _ = self.tcp.shutdown(Shutdown::Both);
        (end, self.endpoint)
    }
}

/// Which of the polled sources are ready.
struct Ready {
    wake: bool,
    tcp: bool,
    local: bool,
}
