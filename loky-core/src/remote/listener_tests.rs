//! The listener against genuine workers' agents (in-process), replays,
//! other executors' credentials and strangers.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use loky_proto::remote::{
    ConnectError, Connected, Control, Endpoint, Liveness, Relay, Ticket, WorkerStatus, connect,
};

use super::*;

const WAIT: Duration = Duration::from_secs(30);

fn config(handshake_timeout: Duration, max_pending: usize) -> ListenerConfig {
    ListenerConfig {
        handshake_timeout,
        max_pending,
        liveness: Liveness {
            interval: Duration::from_millis(200),
            timeout: Duration::from_secs(5),
        },
    }
}

fn listener(config: ListenerConfig) -> Listener {
    Listener::bind("127.0.0.1:0".parse().unwrap(), config).unwrap()
}

/// A launch awaited, as a supervisor holds it: the credentials, the
/// executor's end of its channel, and where its worker arrives.
struct Launch {
    expected: Expected,
    channel: UnixStream,
    arrivals: mpsc::Receiver<Arrival>,
}

impl Launch {
    fn ticket(&self) -> &Ticket {
        self.expected.ticket()
    }

    fn wait(&self, timeout: Duration) -> Option<Arrival> {
        self.arrivals.recv_timeout(timeout).ok()
    }
}

fn expect(listener: &Listener, launch: u64) -> Launch {
    let worker = WorkerSettings {
        dial: vec![listener.local_addr().to_string()],
        connect_timeout: Duration::from_secs(20),
        env: vec![("LOKY_DEPTH".into(), "1".into())],
        env_remove: vec!["RUST_BACKTRACE".into()],
    };
    let (tx, arrivals) = mpsc::channel();
    let deliver = Box::new(move |arrival| {
        let _ = tx.send(arrival);
    });
    let (expected, channel) = listener.expect(launch, &worker, deliver).unwrap();
    let ticket = expected.ticket();
    assert_eq!(
        (&ticket.env, &ticket.env_remove),
        (&worker.env, &worker.env_remove)
    );
    Launch {
        expected,
        channel,
        arrivals,
    }
}

/// An agent's endpoint with nothing behind it.
struct Quiet;

impl Endpoint for Quiet {
    fn signal(&mut self, _signal: i32) -> Result<(), String> {
        Ok(())
    }

    fn local_closed(&mut self) -> Option<WorkerStatus> {
        None
    }
}

fn introduction(name: &str) -> Control {
    Control::Agent {
        host: name.into(),
        pid: 7,
    }
}

/// Connects as the agent of `ticket`, in a thread.
fn dial(ticket: &Ticket, name: &str) -> thread::JoinHandle<Result<Connected, ConnectError>> {
    let ticket = ticket.clone();
    let introduction = introduction(name);
    thread::spawn(move || connect(&ticket, &introduction))
}

/// A connected agent relaying for a stand-in worker; returns the worker's
/// end of the channel.
fn relay_worker(connected: Connected, liveness: Liveness) -> UnixStream {
    let (worker, local) = UnixStream::pair().unwrap();
    let relay = Relay::new(connected.conn, connected.tcp, local, liveness, Quiet).unwrap();
    thread::spawn(move || relay.run());
    worker.set_read_timeout(Some(WAIT)).unwrap();
    worker
}

/// Bytes both ways through an admitted link.
fn assert_relays(launch: &Launch, worker: &UnixStream, tag: &[u8]) {
    launch.channel.set_read_timeout(Some(WAIT)).unwrap();
    (&launch.channel).write_all(tag).unwrap();
    let mut got = vec![0; tag.len()];
    (&*worker).read_exact(&mut got).unwrap();
    assert_eq!(got, tag);
    (&*worker).write_all(tag).unwrap();
    (&launch.channel).read_exact(&mut got).unwrap();
    assert_eq!(got, tag);
}

/// Waits until `stats` satisfies `done`.
fn settle(listener: &Listener, done: impl Fn(&ListenerStats) -> bool) -> ListenerStats {
    let deadline = Instant::now() + WAIT;
    let mut backoff = Duration::from_millis(1);
    loop {
        let stats = listener.stats();
        if done(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "stats never settled: {stats:?}");
        thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_millis(50));
    }
}

#[test]
fn a_launchs_worker_is_admitted_and_mapped_to_its_launch() {
    let listener = listener(ListenerConfig::default());
    let first = expect(&listener, 1);
    let second = expect(&listener, 2);
    // The second launch's worker comes first.
    let b = dial(second.ticket(), "node-b").join().unwrap().unwrap();
    let a = dial(first.ticket(), "node-a").join().unwrap().unwrap();
    let arrived_b = second.wait(WAIT).expect("launch 2 arrives");
    let arrived_a = first.wait(WAIT).expect("launch 1 arrives");
    assert_eq!((arrived_a.launch, arrived_a.host.as_str()), (1, "node-a"));
    assert_eq!((arrived_b.launch, arrived_b.host.as_str()), (2, "node-b"));
    assert_eq!(arrived_a.agent_pid, 7);
    assert!(arrived_a.peer.ip().is_loopback());
    assert_eq!(arrived_a.relay.end(), None, "the link is up");
    let liveness = listener.shared.config.liveness;
    assert_relays(&first, &relay_worker(a, liveness), b"to a");
    assert_relays(&second, &relay_worker(b, liveness), b"to b");
    // A launch has its link before the handshake's thread counts it.
    let stats = settle(&listener, |s| s.admitted >= 2);
    assert_eq!((stats.accepted, stats.admitted), (2, 2), "{stats:?}");
}

#[test]
fn credentials_are_admitted_once() {
    let listener = listener(ListenerConfig::default());
    let launch = expect(&listener, 1);
    let _joined = dial(launch.ticket(), "first").join().unwrap().unwrap();
    assert!(launch.wait(WAIT).is_some());
    let replay = dial(launch.ticket(), "replay").join().unwrap().unwrap_err();
    assert!(matches!(replay, ConnectError::Refused { .. }), "{replay:?}");
    let stats = settle(&listener, |s| s.unexpected == 1 && s.admitted >= 1);
    assert_eq!(stats.admitted, 1, "{stats:?}");
}

#[test]
fn an_abandoned_launch_admits_nothing() {
    let listener = listener(ListenerConfig::default());
    let launch = expect(&listener, 1);
    let ticket = launch.ticket().clone();
    drop(launch);
    let late = dial(&ticket, "late").join().unwrap().unwrap_err();
    assert!(matches!(late, ConnectError::Refused { .. }), "{late:?}");
    settle(&listener, |s| s.unexpected == 1);
}

#[test]
fn another_executors_workers_are_refused_both_ways() {
    let ours = listener(ListenerConfig::default());
    let theirs = listener(ListenerConfig::default());
    let _awaited = expect(&ours, 1);
    // A worker of theirs dialling us: it does not trust our certificate.
    let mut stray = expect(&theirs, 1).ticket().clone();
    stray.executor = vec![ours.local_addr().to_string()];
    let err = dial(&stray, "stray").join().unwrap().unwrap_err();
    assert!(matches!(err, ConnectError::WrongExecutor { .. }), "{err:?}");
    // A client that trusts us but holds their certificate: we refuse it.
    let mut forged = stray.clone();
    forged.ca = expect(&ours, 2).ticket().ca.clone();
    let err = dial(&forged, "forged").join().unwrap().unwrap_err();
    assert!(matches!(err, ConnectError::Refused { .. }), "{err:?}");
    let stats = settle(&ours, |s| s.failed == 2);
    assert_eq!(stats.admitted, 0, "{stats:?}");
}

/// What a stranger does to the port.
#[derive(Debug, Clone, Copy)]
enum Stranger {
    Garbage,
    /// A frame header announcing 4 GiB, then as many bytes as it can push.
    HugeLength,
    Http,
    /// Connects and says nothing.
    Silent,
    /// A TLS client with no certificate.
    Anonymous,
}

/// Runs one stranger; returns how many bytes it could push before the
/// listener shut it out.
fn stranger(addr: SocketAddr, kind: Stranger, ca: Vec<u8>) -> usize {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp.set_write_timeout(Some(WAIT)).unwrap();
    let payload: Vec<u8> = match kind {
        Stranger::Garbage => (0..4096u32).map(|i| (i * 7 + 3) as u8).collect(),
        Stranger::HugeLength => {
            let mut bytes = vec![0u8; 1 << 20];
            bytes[..4].copy_from_slice(&[0xff; 4]);
            bytes
        }
        Stranger::Http => b"GET / HTTP/1.1\r\nHost: executor\r\n\r\n".to_vec(),
        Stranger::Silent => Vec::new(),
        Stranger::Anonymous => return anonymous_tls(tcp, ca),
    };
    let mut pushed = 0;
    if matches!(kind, Stranger::HugeLength) {
        // Push up to 64 MiB: the listener must close long before.
        for _ in 0..64 {
            match tcp.write(&payload) {
                Ok(n) => pushed += n,
                Err(_) => break,
            }
        }
    } else {
        let _ = tcp.write_all(&payload);
        pushed = payload.len();
    }
    // The listener closes the connection: end of stream or reset.
    let mut sink = [0u8; 1024];
    while matches!(tcp.read(&mut sink), Ok(n) if n > 0) {}
    pushed
}

/// A TLS client that trusts the executor but has no certificate.
fn anonymous_tls(mut tcp: TcpStream, ca: Vec<u8>) -> usize {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.into()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client =
        rustls::ClientConnection::new(Arc::new(config), loky_proto::remote::server_name()).unwrap();
    let mut conn = rustls::Connection::Client(client);
    let deadline = Instant::now() + WAIT;
    let _ = loky_proto::remote::handshake(&mut conn, &mut tcp, deadline);
    let _ = loky_proto::remote::send_control(&mut conn, &mut tcp, &introduction("anon"), deadline);
    let welcome = loky_proto::remote::receive_control(&mut conn, &mut tcp, deadline);
    assert!(welcome.is_err(), "an anonymous client was welcomed");
    0
}

#[test]
fn fifty_strangers_change_nothing() {
    let listener = listener(config(Duration::from_secs(1), 64));
    let addr = listener.local_addr();
    let launches: Vec<Launch> = (0..4).map(|i| expect(&listener, i)).collect();
    let ca = launches[0].ticket().ca.clone();
    let kinds = [
        Stranger::Garbage,
        Stranger::HugeLength,
        Stranger::Http,
        Stranger::Silent,
        Stranger::Anonymous,
    ];
    let strangers: Vec<_> = (0..50)
        .map(|i| {
            let (kind, ca) = (kinds[i % kinds.len()], ca.clone());
            thread::spawn(move || (kind, stranger(addr, kind, ca)))
        })
        .collect();
    // Genuine workers arrive in the middle of it.
    let agents: Vec<_> = launches
        .iter()
        .map(|launch| dial(launch.ticket(), "genuine"))
        .collect();
    let liveness = listener.shared.config.liveness;
    for (launch, agent) in launches.iter().zip(agents) {
        let worker = relay_worker(agent.join().unwrap().unwrap(), liveness);
        let _arrival = launch.wait(WAIT).expect("the genuine worker arrives");
        for round in 0..50u32 {
            assert_relays(launch, &worker, &round.to_le_bytes());
        }
    }
    for stranger in strangers {
        let (kind, pushed) = stranger.join().unwrap();
        if let Stranger::HugeLength = kind {
            assert!(pushed < 64 << 20, "the listener took {pushed} bytes");
        }
    }
    let stats = settle(&listener, |s| s.failed + s.admitted + s.busy == 54);
    assert_eq!(stats.admitted, 4, "{stats:?}");
    assert_eq!(stats.failed, 50, "{stats:?}");
}

#[test]
fn handshakes_under_way_are_bounded_and_timed() {
    let listener = listener(config(Duration::from_secs(3), 2));
    let addr = listener.local_addr();
    let silent: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
    settle(&listener, |s| s.accepted == 2);
    // A third connection is closed at once.
    let mut third = TcpStream::connect(addr).unwrap();
    third.set_read_timeout(Some(WAIT)).unwrap();
    let mut byte = [0u8; 1];
    assert!(matches!(third.read(&mut byte), Ok(0) | Err(_)));
    assert_eq!(listener.stats().busy, 1);
    // The silent ones are closed at their deadline; a genuine worker,
    // retrying, gets in.
    let launch = expect(&listener, 1);
    let _agent = dial(launch.ticket(), "patient").join().unwrap().unwrap();
    assert!(launch.wait(WAIT).is_some());
    for mut socket in silent {
        socket.set_read_timeout(Some(WAIT)).unwrap();
        assert!(matches!(socket.read(&mut byte), Ok(0) | Err(_)));
    }
    // The launch has its link before the handshake's thread counts it.
    let stats = settle(&listener, |s| s.failed == 2 && s.admitted >= 1);
    assert_eq!(stats.admitted, 1, "{stats:?}");
}

#[test]
fn dropping_the_listener_cuts_handshakes_short() {
    let listener = listener(config(Duration::from_secs(600), 4));
    let addr = listener.local_addr();
    let mut silent = TcpStream::connect(addr).unwrap();
    settle(&listener, |s| s.accepted == 1);
    let (done, dropped) = mpsc::channel();
    thread::spawn(move || {
        drop(listener);
        done.send(()).unwrap();
    });
    dropped
        .recv_timeout(WAIT)
        .expect("the listener's threads end without waiting for the deadline");
    silent.set_read_timeout(Some(WAIT)).unwrap();
    let mut byte = [0u8; 1];
    assert!(matches!(silent.read(&mut byte), Ok(0) | Err(_)));
}
