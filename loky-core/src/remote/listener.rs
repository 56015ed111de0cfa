//! The executor's listener for connect-back workers.
//!
//! One thread accepts TCP connections; each gets a thread of its own for
//! its TLS handshake, under a deadline, and only as many run at once as the
//! configuration allows (a connection past that is closed at once: a
//! genuine worker retries). A connection is admitted only if its client
//! certificate was issued by this executor's authority *and* is the one
//! made for a launch still waiting for its worker: each certificate is
//! admitted once. Only then does its agent get a welcome, and the link a
//! relay; until then nothing the peer sends reaches anything but TLS, which
//! buffers a handshake's few kilobytes at most.
//!
//! Each launch's channel exists from the start: [`Listener::expect`] makes
//! a socket pair, hands the executor's end to the caller at once and keeps
//! the other for the relay of the launch's worker. So the executor reads
//! and writes a worker's channel whether or not the worker has arrived (its
//! hello is simply the first thing to come), and a launch given up is the
//! end of that channel.
//!
//! A launch that is no longer awaited (its [`Expected`] dropped) admits
//! nothing: a worker that connects late is turned away and exits.

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use loky_proto::remote::{
    Authority, Control, CredentialError, ExecutorEnd, HandshakeError, Liveness, Relay, RelayHandle,
    Ticket, configure_socket, handshake, receive_control, send_control,
};
use rustix::event::{PollFd, PollFlags, poll};
use rustls::{Connection, ServerConnection};

/// How a listener treats the connections it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ListenerConfig {
    /// A connection must complete its TLS handshake and introduce its agent
    /// within this long.
    pub(crate) handshake_timeout: Duration,
    /// At most this many connections may be in their handshake at once.
    pub(crate) max_pending: usize,
    /// The heartbeats of admitted links.
    pub(crate) liveness: Liveness,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            handshake_timeout: Duration::from_secs(5),
            max_pending: 64,
            liveness: Liveness::DEFAULT,
        }
    }
}

/// What every launch's ticket tells its worker besides its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorkerSettings {
    /// Where to dial the executor (`host:port`, in order).
    pub(crate) dial: Vec<String>,
    /// How long the worker keeps trying to connect.
    pub(crate) connect_timeout: Duration,
    /// Environment variables for the worker.
    pub(crate) env: Vec<(String, String)>,
    /// Environment variables removed from the worker's environment.
    pub(crate) env_remove: Vec<String>,
}

/// A worker that connected back for a launch and was admitted; its bytes
/// flow through the launch's channel.
#[derive(Debug)]
pub(crate) struct Arrival {
    /// The launch it belongs to.
    pub(crate) launch: u64,
    /// The link's relay.
    pub(crate) relay: RelayHandle,
    /// The host its agent runs on, as the agent names it.
    pub(crate) host: String,
    /// The agent's pid on that host.
    pub(crate) agent_pid: u32,
    /// Where the connection came from.
    pub(crate) peer: SocketAddr,
}

/// What became of the connections accepted so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ListenerStats {
    /// Connections accepted from the socket.
    pub(crate) accepted: u64,
    /// Closed at once: too many handshakes under way.
    pub(crate) busy: u64,
    /// The handshake failed or timed out, or the agent did not introduce
    /// itself.
    pub(crate) failed: u64,
    /// Authenticated, but for no launch awaited (stale, replayed, or late).
    pub(crate) unexpected: u64,
    /// Admitted and handed to their launch.
    pub(crate) admitted: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    busy: AtomicU64,
    failed: AtomicU64,
    unexpected: AtomicU64,
    admitted: AtomicU64,
}

/// Takes the worker of a launch as it is admitted (on a thread of the
/// listener). Dropping the arrival drops the link, and so the worker.
pub(crate) type Deliver = Box<dyn FnOnce(Arrival) + Send>;

/// A launch awaiting its worker.
struct Awaited {
    launch: u64,
    /// The relay's end of the launch's channel.
    local: UnixStream,
    deliver: Deliver,
}

impl std::fmt::Debug for Awaited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Awaited")
            .field("launch", &self.launch)
            .finish_non_exhaustive()
    }
}

/// What the listener's threads share.
#[derive(Debug)]
struct Shared {
    authority: Authority,
    config: ListenerConfig,
    /// Launches awaiting their worker, by client certificate (DER).
    expected: Mutex<HashMap<Vec<u8>, Awaited>>,
    /// Connections in their handshake, with their threads.
    pending: Mutex<HashMap<u64, (TcpStream, JoinHandle<()>)>>,
    next_pending: AtomicU64,
    stopping: AtomicBool,
    counters: Counters,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ListenError {
    /// The socket could not be bound or configured.
    #[error("cannot listen on {addr} for workers")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// The executor's credentials could not be made.
    #[error("cannot make the executor's credentials")]
    Credentials(#[from] CredentialError),
    /// A launch's channel could not be made.
    #[error("cannot make a worker's channel")]
    Channel(#[source] io::Error),
}

/// The executor's listener for connect-back workers.
#[derive(Debug)]
pub(crate) struct Listener {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Written to stop the accepting thread.
    wake: UnixStream,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// Listens on `addr` under a new authority.
    pub(crate) fn bind(addr: SocketAddr, config: ListenerConfig) -> Result<Listener, ListenError> {
        let bind_error = |source| ListenError::Bind { addr, source };
        let socket = TcpListener::bind(addr).map_err(bind_error)?;
        socket.set_nonblocking(true).map_err(bind_error)?;
        let local = socket.local_addr().map_err(bind_error)?;
        let shared = Arc::new(Shared {
            authority: Authority::new()?,
            config,
            expected: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            next_pending: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            counters: Counters::default(),
        });
        let (wake, woken) = UnixStream::pair().map_err(bind_error)?;
        let accepting = shared.clone();
        let thread = thread::Builder::new()
            .name("loky-remote-accept".into())
            .spawn(move || accept_loop(&socket, &woken, &accepting))
            .map_err(bind_error)?;
        Ok(Listener {
            addr: local,
            shared,
            wake,
            thread: Some(thread),
        })
    }

    /// The address the listener is bound to.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Awaits the worker of launch `launch`: issues its credentials (in the
    /// ticket of the returned [`Expected`]) and makes its channel, whose
    /// executor's end is returned. `deliver` takes the worker once it is
    /// admitted; until then, and if it never comes, the channel carries
    /// nothing.
    pub(crate) fn expect(
        &self,
        launch: u64,
        worker: &WorkerSettings,
        deliver: Deliver,
    ) -> Result<(Expected, UnixStream), ListenError> {
        let (channel, local) = UnixStream::pair().map_err(ListenError::Channel)?;
        let identity = self
            .shared
            .authority
            .issue_client(&format!("launch-{launch}"))?;
        let cert = identity.cert.to_vec();
        let ticket = Ticket {
            executor: worker.dial.clone(),
            ca: self.shared.authority.certificate().to_vec(),
            cert: cert.clone(),
            key: identity.key.secret_pkcs8_der().to_vec(),
            liveness: self.shared.config.liveness,
            connect_timeout: worker.connect_timeout,
            env: worker.env.clone(),
            env_remove: worker.env_remove.clone(),
        };
        let awaited = Awaited {
            launch,
            local,
            deliver,
        };
        lock(&self.shared.expected).insert(cert.clone(), awaited);
        let expected = Expected {
            ticket,
            cert,
            shared: self.shared.clone(),
        };
        Ok((expected, channel))
    }

    /// What became of the connections accepted so far.
    pub(crate) fn stats(&self) -> ListenerStats {
        let c = &self.shared.counters;
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        ListenerStats {
            accepted: load(&c.accepted),
            busy: load(&c.busy),
            failed: load(&c.failed),
            unexpected: load(&c.unexpected),
            admitted: load(&c.admitted),
        }
    }
}

impl Drop for Listener {
    /// Stops accepting, cuts the handshakes under way short and waits for
    /// every thread of the listener. Admitted links live on.
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = io::Write::write(&mut &self.wake, &[1]);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let pending: Vec<_> = lock(&self.shared.pending).drain().collect();
        for (_, (socket, thread)) in pending {
            let _ = socket.shutdown(Shutdown::Both);
            let _ = thread.join();
        }
    }
}

/// A launch awaiting its worker. Dropping it withdraws the launch's
/// credentials: its worker, should it connect later, is turned away, and
/// the launch's channel ends (unless its worker was admitted).
#[derive(Debug)]
pub(crate) struct Expected {
    ticket: Ticket,
    cert: Vec<u8>,
    shared: Arc<Shared>,
}

impl Expected {
    /// The ticket for the launched command's standard input.
    pub(crate) fn ticket(&self) -> &Ticket {
        &self.ticket
    }
}

impl Drop for Expected {
    fn drop(&mut self) {
        lock(&self.shared.expected).remove(&self.cert);
    }
}

/// Accepts connections until the listener is dropped.
fn accept_loop(socket: &TcpListener, woken: &UnixStream, shared: &Arc<Shared>) {
    loop {
        let mut fds = [
            PollFd::new(socket, PollFlags::IN),
            PollFd::new(woken, PollFlags::IN),
        ];
        if let Err(err) = poll(&mut fds, None)
            && err != rustix::io::Errno::INTR
        {
            log::error!("the listener for remote workers stopped: poll failed: {err}");
            return;
        }
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        loop {
            match socket.accept() {
                Ok((tcp, peer)) => admit(shared, tcp, peer),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) => {
                    // Out of descriptors, or a connection aborted before
                    // it was taken: nothing to do about it here but not
                    // spinning on it.
                    log::warn!("accepting a worker's connection failed: {err}");
                    thread::sleep(Duration::from_millis(50));
                    break;
                }
            }
        }
    }
}

/// Starts the handshake of a new connection, unless too many are under
/// way.
fn admit(shared: &Arc<Shared>, tcp: TcpStream, peer: SocketAddr) {
    shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
    let mut pending = lock(&shared.pending);
    if pending.len() >= shared.config.max_pending {
        shared.counters.busy.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let Ok(handle) = tcp.try_clone() else {
        shared.counters.failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let id = shared.next_pending.fetch_add(1, Ordering::Relaxed);
    let authenticating = shared.clone();
    let spawned = thread::Builder::new()
        .name("loky-remote-handshake".into())
        .spawn(move || {
            let outcome = authenticate(&authenticating, tcp, peer);
            lock(&authenticating.pending).remove(&id);
            let counter = match outcome {
                Ok(()) => &authenticating.counters.admitted,
                Err(Refusal::Failed(err)) => {
                    log::debug!("a connection from {peer} failed to authenticate: {err}");
                    &authenticating.counters.failed
                }
                Err(Refusal::Unexpected) => {
                    log::debug!("a connection from {peer} is for no awaited launch");
                    &authenticating.counters.unexpected
                }
            };
            counter.fetch_add(1, Ordering::Relaxed);
        });
    match spawned {
        Ok(thread) => {
            pending.insert(id, (handle, thread));
        }
        Err(_) => {
            shared.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Why a connection was not admitted.
enum Refusal {
    Failed(HandshakeError),
    Unexpected,
}

impl From<HandshakeError> for Refusal {
    fn from(err: HandshakeError) -> Self {
        Refusal::Failed(err)
    }
}

/// Authenticates one connection, and hands it to its launch.
fn authenticate(shared: &Shared, mut tcp: TcpStream, peer: SocketAddr) -> Result<(), Refusal> {
    let deadline = Instant::now() + shared.config.handshake_timeout;
    configure_socket(&tcp, &shared.config.liveness).map_err(HandshakeError::Io)?;
    let server =
        ServerConnection::new(shared.authority.server_config()).map_err(HandshakeError::Tls)?;
    let mut conn = Connection::Server(server);
    handshake(&mut conn, &mut tcp, deadline)?;
    let cert = conn
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|cert| cert.to_vec())
        .ok_or(Refusal::Unexpected)?;
    // Admitted once: the entry goes as the launch's worker arrives.
    let Some(awaited) = lock(&shared.expected).remove(&cert) else {
        // Say so in order, so the worker knows it was refused.
        conn.send_close_notify();
        let _ = conn.write_tls(&mut tcp);
        return Err(Refusal::Unexpected);
    };
    let Control::Agent { host, pid } = receive_control(&mut conn, &mut tcp, deadline)? else {
        return Err(HandshakeError::Protocol("the agent did not introduce itself".into()).into());
    };
    send_control(&mut conn, &mut tcp, &Control::Welcome, deadline)?;
    let relay = Relay::new(
        conn,
        tcp,
        awaited.local,
        shared.config.liveness,
        ExecutorEnd,
    )
    .and_then(|relay| relay.spawn("loky-remote-relay"))
    .map_err(HandshakeError::Io)?;
    // A launch that gave up meanwhile drops the link, and so its worker.
    (awaited.deliver)(Arrival {
        launch: awaited.launch,
        relay,
        host,
        agent_pid: pid,
        peer,
    });
    Ok(())
}

#[cfg(test)]
#[path = "listener_tests.rs"]
mod tests;
