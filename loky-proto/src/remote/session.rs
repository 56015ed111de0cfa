//! Setting up a link: socket options, the TLS handshake and the first
//! control messages, each step blocking under one deadline.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rustls::Connection;
use socket2::{SockRef, TcpKeepalive};

use super::Liveness;
use super::link::{Control, Demux, LinkError, Received, encode_control};

/// Why a link could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The deadline passed first.
    #[error("timed out")]
    TimedOut,
    /// The peer closed the connection.
    #[error("the connection was closed")]
    Closed,
    /// The connection failed.
    #[error("i/o error")]
    Io(#[source] io::Error),
    /// TLS failed: a certificate was refused, or the peer is not speaking TLS.
    #[error("TLS failed")]
    Tls(#[source] rustls::Error),
    /// The peer broke the link protocol.
    #[error("link protocol violated: {0}")]
    Protocol(String),
}

impl From<LinkError> for HandshakeError {
    fn from(err: LinkError) -> Self {
        HandshakeError::Protocol(err.to_string())
    }
}

/// Sets the options every link socket gets: no Nagle delay (frames are
/// latency-bound), and TCP keepalive probing at the heartbeat interval (in
/// whole seconds, at least one), so that the kernel also notices a silent
/// peer.
pub fn configure_socket(tcp: &TcpStream, liveness: &Liveness) -> io::Result<()> {
    tcp.set_nodelay(true)?;
    let probe = Duration::from_secs(liveness.interval.as_secs().max(1));
    let keepalive = TcpKeepalive::new().with_time(probe).with_interval(probe);
    #[cfg(any(
        target_os = "linux",
        target_os = "macos",
        target_os = "freebsd",
        target_os = "netbsd"
    ))]
    let keepalive = keepalive.with_retries(2);
    SockRef::from(tcp).set_tcp_keepalive(&keepalive)
}

/// Time left before `deadline`, or `TimedOut`.
fn remaining(deadline: Instant) -> Result<Duration, HandshakeError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(HandshakeError::TimedOut)
    } else {
        Ok(left)
    }
}

fn io_error(err: io::Error) -> HandshakeError {
    match err.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => HandshakeError::TimedOut,
        io::ErrorKind::UnexpectedEof => HandshakeError::Closed,
        _ => HandshakeError::Io(err),
    }
}

/// Writes everything TLS has to send.
fn flush(
    conn: &mut Connection,
    tcp: &mut TcpStream,
    deadline: Instant,
) -> Result<(), HandshakeError> {
    while conn.wants_write() {
        tcp.set_write_timeout(Some(remaining(deadline)?))
            .map_err(HandshakeError::Io)?;
        conn.write_tls(tcp).map_err(io_error)?;
    }
    Ok(())
}

/// Reads once from the socket into TLS and processes what arrived. A TLS
/// error is answered with its alert, best effort.
fn receive(
    conn: &mut Connection,
    tcp: &mut TcpStream,
    deadline: Instant,
) -> Result<(), HandshakeError> {
    tcp.set_read_timeout(Some(remaining(deadline)?))
        .map_err(HandshakeError::Io)?;
    match conn.read_tls(tcp) {
        Ok(0) => return Err(HandshakeError::Closed),
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::Interrupted => return Ok(()),
        Err(err) => return Err(io_error(err)),
    }
    if let Err(err) = conn.process_new_packets() {
        let _ = flush(conn, tcp, deadline);
        return Err(HandshakeError::Tls(err));
    }
    Ok(())
}

/// Runs the TLS handshake on the blocking socket `tcp` until it completes
/// or `deadline` passes. A peer that sends nothing, too little or garbage
/// costs at most the deadline and the few kilobytes TLS buffers.
pub fn handshake(
    conn: &mut Connection,
    tcp: &mut TcpStream,
    deadline: Instant,
) -> Result<(), HandshakeError> {
    loop {
        flush(conn, tcp, deadline)?;
        if !conn.is_handshaking() {
            return Ok(());
        }
        receive(conn, tcp, deadline)?;
    }
}

/// Sends one control message.
pub fn send_control(
    conn: &mut Connection,
    tcp: &mut TcpStream,
    control: &Control,
    deadline: Instant,
) -> Result<(), HandshakeError> {
    let mut record = Vec::new();
    encode_control(control, &mut record);
    conn.writer()
        .write_all(&record)
        .map_err(HandshakeError::Io)?;
    flush(conn, tcp, deadline)
}

/// Waits for one control message. Heartbeats are skipped; tunnelled bytes
/// before it are a protocol error, and nothing is read past it.
pub fn receive_control(
    conn: &mut Connection,
    tcp: &mut TcpStream,
    deadline: Instant,
) -> Result<Control, HandshakeError> {
    let mut demux = Demux::new();
    let mut received = Received::default();
    let mut data = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        // One byte at a time: this runs once per link, on a few dozen
        // bytes, and must not swallow what follows the message.
        match conn.reader().read(&mut byte) {
            Ok(0) => return Err(HandshakeError::Closed),
            Ok(_) => {
                demux.feed(&byte, &mut data, &mut received)?;
                if !data.is_empty() {
                    return Err(HandshakeError::Protocol(
                        "stream data before the first control message".into(),
                    ));
                }
                if let Some(control) = received.controls.pop() {
                    return Ok(control);
                }
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => receive(conn, tcp, deadline)?,
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(HandshakeError::Closed);
            }
            Err(err) => return Err(HandshakeError::Io(err)),
        }
    }
}
