//! What the security of remote workers costs, measured over loopback:
//! making an authority and a launch's credentials, a worker's whole
//! connection (TCP, TLS handshake, introduction and welcome), and a small
//! round trip through a link's two relays next to a bare socket pair.
//!
//! `cargo run --release -p loky-proto --features remote --example remote_costs`

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use loky_proto::remote::{
    Authority, Control, Endpoint, Liveness, Relay, Ticket, WorkerStatus, connect, handshake,
    receive_control, send_control, spawn_executor_relay,
};
use rustls::{Connection, ServerConnection};

/// The median and the 90th percentile of `samples`.
fn summary(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (samples[samples.len() / 2], samples[samples.len() * 9 / 10])
}

fn row(what: &str, samples: Vec<Duration>) {
    let n = samples.len();
    let (median, p90) = summary(samples);
    println!("| {what} | {n} | {median:.1?} | {p90:.1?} |");
}

fn timed<T>(mut f: impl FnMut() -> T) -> Duration {
    let start = Instant::now();
    std::hint::black_box(f());
    start.elapsed()
}

struct Quiet;

impl Endpoint for Quiet {
    fn signal(&mut self, _: i32) -> Result<(), String> {
        Ok(())
    }
    fn local_closed(&mut self) -> Option<WorkerStatus> {
        None
    }
}

fn ticket(authority: &Authority, addr: String) -> Ticket {
    let identity = authority.issue_client("launch").unwrap();
    Ticket {
        executor: vec![addr],
        ca: authority.certificate().to_vec(),
        cert: identity.cert.to_vec(),
        key: identity.key.secret_pkcs8_der().to_vec(),
        liveness: Liveness::DEFAULT,
        connect_timeout: Duration::from_secs(10),
        env: Vec::new(),
        env_remove: Vec::new(),
    }
}

/// The executor's side of one connection, up to the welcome.
fn welcome(listener: &TcpListener, authority: &Authority) -> (Connection, TcpStream) {
    let (mut tcp, _) = listener.accept().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut conn = Connection::Server(ServerConnection::new(authority.server_config()).unwrap());
    handshake(&mut conn, &mut tcp, deadline).unwrap();
    receive_control(&mut conn, &mut tcp, deadline).unwrap();
    send_control(&mut conn, &mut tcp, &Control::Welcome, deadline).unwrap();
    (conn, tcp)
}

fn agent() -> Control {
    Control::Agent {
        host: "bench".into(),
        pid: 1,
    }
}

/// Sends `rounds` 64-byte messages from `a` and echoes them back from `b`;
/// returns each round trip.
fn round_trips(a: &UnixStream, b: &UnixStream, rounds: usize) -> Vec<Duration> {
    let echo = b.try_clone().unwrap();
    let echoer = thread::spawn(move || {
        let mut buf = [0u8; 64];
        for _ in 0..rounds {
            (&echo).read_exact(&mut buf).unwrap();
            (&echo).write_all(&buf).unwrap();
        }
    });
    let mut buf = [7u8; 64];
    let samples = (0..rounds)
        .map(|_| {
            timed(|| {
                (&*a).write_all(&buf).unwrap();
                (&*a).read_exact(&mut buf).unwrap();
            })
        })
        .collect();
    echoer.join().unwrap();
    samples
}

fn main() {
    println!("| what | n | median | p90 |");
    println!("|---|---|---|---|");
    row(
        "make an executor's authority (CA + server certificate)",
        (0..50)
            .map(|_| timed(|| Authority::new().unwrap()))
            .collect(),
    );
    let authority = Arc::new(Authority::new().unwrap());
    row(
        "issue one launch's client certificate and key",
        (0..200)
            .map(|_| timed(|| authority.issue_client("launch").unwrap()))
            .collect(),
    );

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let tickets: Vec<Ticket> = (0..100).map(|_| ticket(&authority, addr.clone())).collect();
    let accepted = {
        let listener = listener.try_clone().unwrap();
        let authority = authority.clone();
        thread::spawn(move || {
            for _ in 0..100 {
                welcome(&listener, &authority);
            }
        })
    };
    row(
        "a worker joins: TCP, TLS 1.3 handshake, introduction, welcome",
        tickets
            .iter()
            .map(|ticket| timed(|| connect(ticket, &agent()).unwrap()))
            .collect(),
    );
    accepted.join().unwrap();

    let (a, b) = UnixStream::pair().unwrap();
    row(
        "64-byte round trip, bare socket pair",
        round_trips(&a, &b, 2000),
    );

    let ticket = ticket(&authority, addr);
    let executor = thread::spawn(move || {
        let (conn, tcp) = welcome(&listener, &authority);
        spawn_executor_relay(conn, tcp, Liveness::DEFAULT).unwrap()
    });
    let connected = connect(&ticket, &agent()).unwrap();
    let (channel, relay) = executor.join().unwrap();
    let (worker, local) = UnixStream::pair().unwrap();
    let agent_relay = Relay::new(
        connected.conn,
        connected.tcp,
        local,
        Liveness::DEFAULT,
        Quiet,
    )
    .unwrap()
    .spawn("bench-agent-relay")
    .unwrap();
    row(
        "64-byte round trip through a link (two relays, TLS over loopback TCP)",
        round_trips(&channel, &worker, 2000),
    );
    drop((relay, agent_relay));
}
