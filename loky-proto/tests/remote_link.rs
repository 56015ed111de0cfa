//! A remote link end to end over loopback: authentication, relaying both
//! ways, heartbeats, orderly and abrupt ends.

#![cfg(feature = "remote")]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use loky_proto::remote::{
    Authority, ConnectError, Control, EndReason, Endpoint, LinkEnd, Liveness, Relay, RelayHandle,
    Ticket, WorkerStatus, connect, handshake, receive_control, send_control, spawn_executor_relay,
};
use rustls::{Connection, ServerConnection};

const WAIT: Duration = Duration::from_secs(20);

fn liveness() -> Liveness {
    Liveness {
        interval: Duration::from_millis(50),
        timeout: Duration::from_secs(2),
    }
}

fn ticket(authority: &Authority, executor: SocketAddr, liveness: Liveness) -> Ticket {
    let identity = authority.issue_client("launch-1").unwrap();
    Ticket {
        executor: vec![executor.to_string()],
        ca: authority.certificate().to_vec(),
        cert: identity.cert.to_vec(),
        key: identity.key.secret_pkcs8_der().to_vec(),
        liveness,
        connect_timeout: Duration::from_secs(10),
        env: Vec::new(),
        env_remove: Vec::new(),
    }
}

/// The executor's side of one link: accepts one connection, authenticates
/// it, welcomes the agent and starts the relay.
fn accept_one(
    listener: TcpListener,
    authority: &Authority,
    liveness: Liveness,
) -> thread::JoinHandle<Result<(UnixStream, RelayHandle, Control), String>> {
    let config = authority.server_config();
    thread::spawn(move || {
        let (mut tcp, _) = listener.accept().map_err(|e| e.to_string())?;
        let deadline = Instant::now() + WAIT;
        let mut conn = Connection::Server(ServerConnection::new(config).unwrap());
        handshake(&mut conn, &mut tcp, deadline).map_err(|e| format!("{e:?}"))?;
        let agent = receive_control(&mut conn, &mut tcp, deadline).map_err(|e| e.to_string())?;
        send_control(&mut conn, &mut tcp, &Control::Welcome, deadline)
            .map_err(|e| e.to_string())?;
        let (channel, handle) =
            spawn_executor_relay(conn, tcp, liveness).map_err(|e| e.to_string())?;
        Ok((channel, handle, agent))
    })
}

/// The agent's end as a test sees it: signals it was asked to send, and
/// the status it reports when the local side closes.
#[derive(Clone, Default)]
struct TestAgent {
    signals: Arc<Mutex<Vec<i32>>>,
}

impl Endpoint for TestAgent {
    fn signal(&mut self, signal: i32) -> Result<(), String> {
        self.signals.lock().unwrap().push(signal);
        Ok(())
    }

    fn local_closed(&mut self) -> Option<WorkerStatus> {
        Some(WorkerStatus::Code(3))
    }
}

struct Link {
    /// The executor's channel.
    channel: UnixStream,
    executor: RelayHandle,
    /// The worker's channel.
    worker: UnixStream,
    agent: TestAgent,
    agent_end: mpsc::Receiver<LinkEnd>,
}

fn agent_control() -> Control {
    Control::Agent {
        host: "test-host".into(),
        pid: std::process::id(),
    }
}

/// A link through `via` (a proxy) or straight to the executor.
fn link_with(liveness: Liveness, via: Option<&Proxy>) -> Link {
    let authority = Authority::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = accept_one(listener, &authority, liveness);
    let dial = via.map_or(addr, |proxy| proxy.start(addr));
    let connected = connect(&ticket(&authority, dial, liveness), &agent_control()).unwrap();
    let (channel, executor, introduced) = accepted.join().unwrap().unwrap();
    assert_eq!(introduced, agent_control());
    let (worker, local) = UnixStream::pair().unwrap();
    let agent = TestAgent::default();
    let relay = Relay::new(
        connected.conn,
        connected.tcp,
        local,
        liveness,
        agent.clone(),
    )
    .unwrap();
    let (tx, agent_end) = mpsc::channel();
    thread::spawn(move || tx.send(relay.run().0));
    for socket in [&channel, &worker] {
        socket.set_read_timeout(Some(WAIT)).unwrap();
    }
    Link {
        channel,
        executor,
        worker,
        agent,
        agent_end,
    }
}

fn link() -> Link {
    link_with(liveness(), None)
}

fn read_exact(mut socket: &UnixStream, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    socket.read_exact(&mut buf).unwrap();
    buf
}

/// Compares long byte strings, naming the first difference only.
fn assert_same(got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len());
    if let Some(at) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "first difference at byte {at} of {}: {:?} instead of {:?}",
            want.len(),
            &got[at..(at + 16).min(got.len())],
            &want[at..(at + 16).min(want.len())]
        );
    }
}

fn assert_eof(mut socket: &UnixStream) {
    let mut byte = [0; 1];
    assert_eq!(socket.read(&mut byte).unwrap(), 0, "expected end of stream");
}

#[test]
fn bytes_cross_both_ways_and_a_large_transfer_does_not_deadlock() {
    let link = link();
    (&link.channel).write_all(b"call").unwrap();
    assert_eq!(read_exact(&link.worker, 4), b"call");
    (&link.worker).write_all(b"reply").unwrap();
    assert_eq!(read_exact(&link.channel, 5), b"reply");

    // 8 MiB each way at once: neither relay may stop reading while it
    // cannot write.
    let big: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
    let (channel, worker) = (
        link.channel.try_clone().unwrap(),
        link.worker.try_clone().unwrap(),
    );
    let (a, b) = (big.clone(), big.clone());
    let to_worker = thread::spawn(move || (&channel).write_all(&a).unwrap());
    let to_executor = thread::spawn(move || (&worker).write_all(&b).unwrap());
    assert_same(&read_exact(&link.worker, big.len()), &big);
    assert_same(&read_exact(&link.channel, big.len()), &big);
    to_worker.join().unwrap();
    to_executor.join().unwrap();
    assert_eq!(link.executor.end(), None);
}

#[test]
fn an_orderly_close_reaches_the_worker_and_brings_back_its_status() {
    let link = link();
    (&link.worker).write_all(b"last words").unwrap();
    // The executor asks the worker to leave.
    link.channel.shutdown(Shutdown::Write).unwrap();
    assert_eof(&link.worker);
    // The worker leaves; its agent reports the status.
    link.worker.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_exact(&link.channel, 10), b"last words");
    assert_eof(&link.channel);
    let end = link.executor.end().expect("set before the channel ended");
    assert_eq!(end.reason, EndReason::Closed);
    assert_eq!(end.status, Some(WorkerStatus::Code(3)));
    let agent_end = link.agent_end.recv_timeout(WAIT).unwrap();
    assert_eq!(agent_end.reason, EndReason::Closed);
}

#[test]
fn a_worker_that_ends_mid_frame_still_gets_its_status_through() {
    let link = link();
    // Half a frame, then the worker is gone.
    (&link.worker).write_all(&[100, 0, 0, 0, 1, 2, 3]).unwrap();
    link.worker.shutdown(Shutdown::Both).unwrap();
    assert_eq!(read_exact(&link.channel, 7), [100, 0, 0, 0, 1, 2, 3]);
    assert_eof(&link.channel);
    let end = link.executor.end().unwrap();
    assert_eq!(end.status, Some(WorkerStatus::Code(3)));
}

#[test]
fn signals_reach_the_agent() {
    let link = link();
    link.executor.signal(15);
    link.executor.signal(9);
    // A round trip after the signals: they were handled before it.
    (&link.channel).write_all(b"x").unwrap();
    read_exact(&link.worker, 1);
    assert_eq!(*link.agent.signals.lock().unwrap(), [15, 9]);
}

#[test]
fn an_idle_link_lives_on_heartbeats() {
    let liveness = Liveness {
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(1500),
    };
    let link = link_with(liveness, None);
    // Idle for twice the timeout: only heartbeats cross. This wait is the
    // condition under test, not a synchronisation.
    thread::sleep(liveness.timeout * 2);
    assert_eq!(link.executor.end(), None);
    (&link.channel).write_all(b"still there?").unwrap();
    assert_eq!(read_exact(&link.worker, 12), b"still there?");
}

#[test]
fn dropping_the_link_is_a_lost_connection_for_the_agent() {
    let link = link();
    link.executor.close();
    let end = link.agent_end.recv_timeout(WAIT).unwrap();
    assert!(
        matches!(end.reason, EndReason::ConnectionLost(_)),
        "{end:?}"
    );
    assert_eof(&link.worker);
    assert_eof(&link.channel);
    assert_eq!(link.executor.end().unwrap().reason, EndReason::Dropped);
}

#[test]
fn a_silent_partition_is_noticed_by_both_sides_within_the_timeout() {
    let liveness = Liveness {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(1000),
    };
    let proxy = Proxy::new();
    let link = link_with(liveness, Some(&proxy));
    (&link.channel).write_all(b"ping").unwrap();
    assert_eq!(read_exact(&link.worker, 4), b"ping");
    let cut = Instant::now();
    proxy.blackhole();
    let agent_end = link.agent_end.recv_timeout(WAIT).unwrap();
    assert!(
        matches!(agent_end.reason, EndReason::HeartbeatsStopped(_)),
        "{agent_end:?}"
    );
    let end = link.executor.wait_end(WAIT).unwrap();
    assert!(
        matches!(end.reason, EndReason::HeartbeatsStopped(_)),
        "{end:?}"
    );
    eprintln!("partition noticed after {:?}", cut.elapsed());
    assert_eof(&link.channel);
    assert_eof(&link.worker);
}

#[test]
fn a_server_of_another_authority_is_not_trusted() {
    let ours = Authority::new().unwrap();
    let theirs = Authority::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = accept_one(listener, &theirs, liveness());
    let err = connect(&ticket(&ours, addr, liveness()), &agent_control()).unwrap_err();
    assert!(matches!(err, ConnectError::WrongExecutor { .. }), "{err:?}");
    assert!(accepted.join().unwrap().is_err());
}

#[test]
fn a_certificate_of_another_authority_is_refused() {
    let ours = Authority::new().unwrap();
    let theirs = Authority::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = accept_one(listener, &ours, liveness());
    // Trusts our executor, but presents a certificate it did not issue.
    let mut forged = ticket(&theirs, addr, liveness());
    forged.ca = ours.certificate().to_vec();
    let err = connect(&forged, &agent_control()).unwrap_err();
    assert!(matches!(err, ConnectError::Refused { .. }), "{err:?}");
    let refused = accepted.join().unwrap().err().unwrap();
    assert!(refused.contains("Tls"), "{refused}");
}

/// A TCP proxy that forwards both ways until told to drop everything on
/// the floor while keeping both connections open: a silent partition.
struct Proxy {
    silent: Arc<AtomicBool>,
}

impl Proxy {
    fn new() -> Proxy {
        Proxy {
            silent: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Listens, and forwards its first connection to `target`.
    fn start(&self, target: SocketAddr) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let silent = self.silent.clone();
        thread::spawn(move || {
            let (client, _) = listener.accept().unwrap();
            let server = TcpStream::connect(target).unwrap();
            let pipes = [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ];
            for (from, to) in pipes {
                let silent = silent.clone();
                thread::spawn(move || forward(from, to, &silent));
            }
        });
        addr
    }

    fn blackhole(&self) {
        self.silent.store(true, Ordering::SeqCst);
    }
}

fn forward(mut from: TcpStream, mut to: TcpStream, silent: &AtomicBool) {
    let mut buf = [0; 64 << 10];
    let mut held = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                // Keep the other side's connection open while silent, as a
                // partition would.
                if silent.load(Ordering::SeqCst) {
                    held.push(to);
                    thread::park();
                }
                return;
            }
            Ok(n) => n,
        };
        if !silent.load(Ordering::SeqCst) && to.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}
