//! The worker's side of setting up a link: dial the executor, prove the
//! ticket's identity, introduce the agent and wait to be welcomed.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use rustls::{ClientConnection, Connection};

use super::authority::{CredentialError, client_config, server_name};
use super::link::Control;
use super::session::{HandshakeError, configure_socket, handshake, receive_control, send_control};
use super::ticket::Ticket;

/// Longest pause between two rounds of attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Longest wait for one TCP connect, so that one dead address does not eat
/// the whole deadline.
const CONNECT_ATTEMPT: Duration = Duration::from_secs(5);

/// An authenticated link to the executor, welcomed for this launch.
#[derive(Debug)]
pub struct Connected {
    /// The TLS connection; anything it already decrypted is still in it.
    pub conn: Connection,
    /// Its socket (blocking).
    pub tcp: TcpStream,
    /// The executor's address.
    pub executor: SocketAddr,
}

/// Why a worker could not join its executor.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The ticket's credentials are not usable by TLS.
    #[error("the launch ticket's credentials are unusable")]
    Credentials(#[from] CredentialError),
    /// The executor could not be reached before the deadline.
    #[error("could not reach the executor at {addresses} within {timeout:?} (last error: {last})")]
    Unreachable {
        /// The addresses tried.
        addresses: String,
        /// The ticket's connect timeout.
        timeout: Duration,
        /// The last failure, as text.
        last: String,
    },
    /// The peer's certificate is not from the ticket's authority.
    #[error("the server at {peer} is not the executor that issued this launch ticket")]
    WrongExecutor {
        /// The address dialled.
        peer: SocketAddr,
        /// The certificate check's error.
        #[source]
        source: rustls::Error,
    },
    /// The executor did not accept this launch.
    #[error(
        "the executor at {peer} refused this worker: its credentials were already used, the \
         launch was abandoned, or they belong to another executor ({reason})"
    )]
    Refused {
        /// The executor's address.
        peer: SocketAddr,
        /// What it said or did.
        reason: String,
    },
}

/// What one attempt on one address came to.
enum Attempt {
    Joined(Box<Connected>),
    /// Worth trying again (the executor busy, restarting, not yet listening).
    Retry(String),
    Fatal(ConnectError),
}

/// Dials the ticket's addresses in turn until one welcomes this launch,
/// introducing the agent with `agent` (a [`Control::Agent`]), or until the
/// ticket's connect timeout passes.
pub fn connect(ticket: &Ticket, agent: &Control) -> Result<Connected, ConnectError> {
    let config = client_config(ticket)?;
    let deadline = Instant::now() + ticket.connect_timeout;
    let mut backoff = Duration::from_millis(50);
    let mut last = String::from("none");
    loop {
        for address in &ticket.executor {
            let addrs = match address.to_socket_addrs() {
                Ok(addrs) => addrs,
                Err(err) => {
                    last = format!("cannot resolve `{address}`: {err}");
                    continue;
                }
            };
            for addr in addrs {
                match attempt(&config, addr, ticket, agent, deadline) {
                    Attempt::Joined(connected) => return Ok(*connected),
                    Attempt::Retry(why) => last = format!("{addr}: {why}"),
                    Attempt::Fatal(err) => return Err(err),
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ConnectError::Unreachable {
                addresses: ticket.executor.join(", "),
                timeout: ticket.connect_timeout,
                last,
            });
        }
        // A pause between rounds of attempts, not a wait for an event:
        // there is nothing to wait on until the executor answers.
        std::thread::sleep(backoff.min(left));
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn attempt(
    config: &std::sync::Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    ticket: &Ticket,
    agent: &Control,
    deadline: Instant,
) -> Attempt {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Attempt::Retry("timed out".into());
    }
    let mut tcp = match TcpStream::connect_timeout(&addr, left.min(CONNECT_ATTEMPT)) {
        Ok(tcp) => tcp,
        Err(err) => return Attempt::Retry(err.to_string()),
    };
    if let Err(err) = configure_socket(&tcp, &ticket.liveness) {
        return Attempt::Retry(format!("cannot configure the socket: {err}"));
    }
    let client = match ClientConnection::new(config.clone(), server_name()) {
        Ok(client) => client,
        Err(source) => {
            return Attempt::Fatal(ConnectError::Credentials(CredentialError::Tls {
                what: "a client connection",
                source,
            }));
        }
    };
    let mut conn = Connection::Client(client);
    if let Err(err) = handshake(&mut conn, &mut tcp, deadline) {
        return classify(addr, err, false);
    }
    let welcomed = send_control(&mut conn, &mut tcp, agent, deadline)
        .and_then(|()| receive_control(&mut conn, &mut tcp, deadline));
    match welcomed {
        Ok(Control::Welcome) => Attempt::Joined(Box::new(Connected {
            conn,
            tcp,
            executor: addr,
        })),
        Ok(other) => Attempt::Fatal(ConnectError::Refused {
            peer: addr,
            reason: format!("it answered {other:?} instead of a welcome"),
        }),
        Err(err) => classify(addr, err, true),
    }
}

/// Sorts a failure into worth retrying or final. `handshaken`: the TLS
/// handshake had completed, so the executor knew who we were and took the
/// ticket's one admission: whatever fails after that is final.
fn classify(peer: SocketAddr, err: HandshakeError, handshaken: bool) -> Attempt {
    if handshaken
        && !matches!(
            err,
            HandshakeError::Tls(rustls::Error::InvalidCertificate(_))
        )
    {
        let reason = match err {
            HandshakeError::Tls(rustls::Error::AlertReceived(alert)) => {
                format!("TLS alert {alert:?}")
            }
            HandshakeError::Closed => "it closed the connection".into(),
            other => chain(&other),
        };
        return Attempt::Fatal(ConnectError::Refused { peer, reason });
    }
    match err {
        HandshakeError::Tls(source @ rustls::Error::InvalidCertificate(_)) => {
            Attempt::Fatal(ConnectError::WrongExecutor { peer, source })
        }
        HandshakeError::Tls(rustls::Error::AlertReceived(alert)) => {
            Attempt::Fatal(ConnectError::Refused {
                peer,
                reason: format!("TLS alert {alert:?}"),
            })
        }
        HandshakeError::Protocol(what) => {
            Attempt::Fatal(ConnectError::Refused { peer, reason: what })
        }
        other => Attempt::Retry(chain(&other)),
    }
}

/// `err` followed by its sources.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    text
}
