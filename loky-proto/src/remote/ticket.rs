//! The launch ticket: what an executor writes on the standard input of the
//! command that starts one connect-back worker.
//!
//! Standard input, because arguments and the environment of a process can
//! be read by other users of the machine (`ps`, `/proc/PID/environ`) and are
//! copied into job records by schedulers; a pipe is read once, by the worker.
//!
//! Layout: the 12 bytes [`TICKET_MAGIC`], a little-endian `u32` length, then
//! that many bytes of MessagePack ([`Ticket`] with field names), at most
//! [`MAX_TICKET`] bytes.

use std::fmt;
use std::io::{self, Read};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Liveness;

/// The first bytes of every ticket (its format version included).
pub const TICKET_MAGIC: &[u8; 12] = b"loky-ticket1";

/// Largest ticket body accepted, in bytes.
pub const MAX_TICKET: usize = 64 << 10;

/// Everything a connect-back worker needs to reach and prove itself to the
/// executor that launched it. Fresh for every launch; holds a private key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// Where the executor listens, as `host:port`, tried in order.
    pub executor: Vec<String>,
    /// The executor's certificate authority (DER): the only one the worker
    /// trusts.
    #[serde(with = "serde_bytes")]
    pub ca: Vec<u8>,
    /// This launch's client certificate (DER), issued by that authority.
    #[serde(with = "serde_bytes")]
    pub cert: Vec<u8>,
    /// The certificate's private key (PKCS#8 DER).
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Heartbeat interval and timeout of the link.
    pub liveness: Liveness,
    /// How long the worker keeps trying to connect and authenticate.
    pub connect_timeout: Duration,
    /// Environment variables for the worker process (the executor's
    /// settings for its workers: never secrets).
    pub env: Vec<(String, String)>,
    /// Environment variables to remove from the worker's environment
    /// (before `env` is applied).
    pub env_remove: Vec<String>,
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("executor", &self.executor)
            .field("ca", &format_args!("{} bytes", self.ca.len()))
            .field("cert", &format_args!("{} bytes", self.cert.len()))
            .field("key", &format_args!("<redacted>"))
            .field("liveness", &self.liveness)
            .field("connect_timeout", &self.connect_timeout)
            .field("env", &self.env)
            .field("env_remove", &self.env_remove)
            .finish()
    }
}

/// Why a ticket could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    /// Standard input ended before a whole ticket arrived.
    #[error(
        "standard input ended after {got} bytes, before a whole launch ticket: a connect-back \
         worker is started by an executor's launcher, which writes its credentials there"
    )]
    Missing {
        /// Bytes that arrived.
        got: usize,
    },
    /// Standard input does not start with [`TICKET_MAGIC`].
    #[error(
        "standard input does not start with a launch ticket: a connect-back worker is started \
         by an executor's launcher, which writes its credentials there"
    )]
    NotATicket,
    /// The announced length is over [`MAX_TICKET`].
    #[error("launch ticket of {len} bytes exceeds the maximum of {MAX_TICKET} bytes")]
    TooLarge {
        /// The announced length.
        len: usize,
    },
    /// The body is not a ticket.
    #[error("malformed launch ticket")]
    Malformed(#[source] rmp_serde::decode::Error),
    /// The ticket decoded but cannot be used.
    #[error("unusable launch ticket: {0}")]
    Invalid(&'static str),
    /// No ticket arrived in time.
    #[error("no launch ticket arrived on standard input within {0:?}")]
    TimedOut(Duration),
    /// Reading failed.
    #[error("cannot read the launch ticket")]
    Io(#[source] io::Error),
}

impl Ticket {
    /// The ticket as the launched command reads it.
    pub fn encode(&self) -> Result<Vec<u8>, TicketError> {
        self.check()?;
        let mut out = TICKET_MAGIC.to_vec();
        out.extend_from_slice(&[0; 4]);
        // Plain owned fields: encoding cannot fail.
        rmp_serde::encode::write_named(&mut out, self).expect("a ticket always encodes");
        let len = out.len() - TICKET_MAGIC.len() - 4;
        if len > MAX_TICKET {
            return Err(TicketError::TooLarge { len });
        }
        out[TICKET_MAGIC.len()..TICKET_MAGIC.len() + 4]
            .copy_from_slice(&(len as u32).to_le_bytes());
        Ok(out)
    }

    /// Reads one ticket from `input`, consuming nothing past it. Allocates
    /// no more than the bytes that arrive, whatever length is announced.
    pub fn read_from<R: Read + ?Sized>(input: &mut R) -> Result<Ticket, TicketError> {
        let mut magic = [0; TICKET_MAGIC.len()];
        let got = read_up_to(input, &mut magic)?;
        if magic[..got] != TICKET_MAGIC[..got] {
            return Err(TicketError::NotATicket);
        }
        if got < magic.len() {
            return Err(TicketError::Missing { got });
        }
        let mut len = [0; 4];
        let got_len = read_up_to(input, &mut len)?;
        if got_len < len.len() {
            return Err(TicketError::Missing { got: got + got_len });
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_TICKET {
            return Err(TicketError::TooLarge { len });
        }
        let mut body = Vec::new();
        let got_body = input
            .take(len as u64)
            .read_to_end(&mut body)
            .map_err(TicketError::Io)?;
        if got_body < len {
            return Err(TicketError::Missing {
                got: got + got_len + got_body,
            });
        }
        let ticket: Ticket = rmp_serde::from_slice(&body).map_err(TicketError::Malformed)?;
        ticket.check()?;
        Ok(ticket)
    }

    /// Refuses a ticket no worker could use.
    fn check(&self) -> Result<(), TicketError> {
        let problem = if self.executor.is_empty() {
            "no executor address"
        } else if self.ca.is_empty() || self.cert.is_empty() || self.key.is_empty() {
            "missing certificate or key"
        } else if self.liveness.interval.is_zero() {
            "zero heartbeat interval"
        } else if self.liveness.timeout <= self.liveness.interval {
            "the heartbeat timeout must exceed the heartbeat interval"
        } else if self.connect_timeout.is_zero() {
            "zero connect timeout"
        } else {
            return Ok(());
        };
        Err(TicketError::Invalid(problem))
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_up_to<R: Read + ?Sized>(input: &mut R, buf: &mut [u8]) -> Result<usize, TicketError> {
    crate::frame::read_full(input, buf).map_err(TicketError::Io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Ticket {
        Ticket {
            executor: vec!["login1:4242".into(), "10.0.0.1:4242".into()],
            ca: vec![1; 300],
            cert: vec![2; 400],
            key: vec![3; 100],
            liveness: Liveness::default(),
            connect_timeout: Duration::from_secs(30),
            env: vec![("LOKY_DEPTH".into(), "1".into())],
            env_remove: vec!["RUST_BACKTRACE".into()],
        }
    }

    #[test]
    fn a_ticket_round_trips_and_consumes_only_itself() {
        let ticket = sample();
        let mut bytes = ticket.encode().unwrap();
        bytes.extend_from_slice(b"rest");
        let mut input = &bytes[..];
        assert_eq!(Ticket::read_from(&mut input).unwrap(), ticket);
        assert_eq!(input, b"rest");
    }

    #[test]
    fn debug_never_shows_the_key() {
        let text = format!("{:?}", sample());
        assert!(text.contains("<redacted>"), "{text}");
        assert!(!text.contains("3, 3"), "{text}");
    }

    #[test]
    fn every_way_of_being_cut_short_is_missing() {
        let bytes = sample().encode().unwrap();
        for cut in [0, 5, 12, 14, 16, bytes.len() - 1] {
            let err = Ticket::read_from(&mut &bytes[..cut]).unwrap_err();
            assert!(
                matches!(err, TicketError::Missing { got } if got == cut),
                "cut at {cut}: {err:?}"
            );
        }
    }

    #[test]
    fn bad_tickets_get_clear_errors() {
        let err = Ticket::read_from(&mut &b"hello, worker\n"[..]).unwrap_err();
        assert!(matches!(err, TicketError::NotATicket), "{err:?}");

        let mut huge = TICKET_MAGIC.to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        let err = Ticket::read_from(&mut &huge[..]).unwrap_err();
        assert!(matches!(err, TicketError::TooLarge { .. }), "{err:?}");

        let mut garbage = TICKET_MAGIC.to_vec();
        garbage.extend_from_slice(&3u32.to_le_bytes());
        garbage.extend_from_slice(&[0xc1; 3]);
        let err = Ticket::read_from(&mut &garbage[..]).unwrap_err();
        assert!(matches!(err, TicketError::Malformed(_)), "{err:?}");
    }

    #[test]
    fn unusable_tickets_are_refused_on_both_sides() {
        let mut ticket = sample();
        ticket.executor.clear();
        assert!(matches!(ticket.encode(), Err(TicketError::Invalid(_))));
        let mut ticket = sample();
        ticket.liveness.timeout = ticket.liveness.interval;
        let err = ticket.encode().unwrap_err();
        assert!(err.to_string().contains("must exceed"), "{err}");
    }
}
