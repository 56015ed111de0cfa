//! The records of a remote link: what travels inside the TLS stream between
//! an executor and a connect-back worker.
//!
//! The link is a tunnel for the ordinary frame stream of this crate, cut
//! into records so that heartbeats and control messages can go between any
//! two records, whatever the frames inside are doing. Each record starts with
//! a little-endian `u32` header:
//!
//! | header | record |
//! |---|---|
//! | `0` | a heartbeat: nothing follows |
//! | `1 ..= 0x7fff_ffff` | that many bytes of the tunnelled stream follow |
//! | `0x8000_0000 \| n` | a [`Control`] message of `n` bytes follows (MessagePack), `n <=` [`MAX_CONTROL`] |
//!
//! A frame of the tunnelled stream may span many records and a record may
//! hold parts of several frames: the records only carry bytes. So a worker
//! that dies in the middle of a reply leaves the executor a truncated frame
//! followed by the end of the stream, as a local worker would, and the
//! control message that reports its exit still arrives intact.

use serde::{Deserialize, Serialize};

/// Bytes in a record header.
pub const RECORD_HEADER: usize = 4;

/// The header bit that marks a control record.
const CONTROL_BIT: u32 = 0x8000_0000;

/// Largest control message accepted, in bytes.
pub const MAX_CONTROL: usize = 4096;

/// Largest data record the relay writes (a receiver accepts any length up
/// to `0x7fff_ffff` and never buffers a whole record).
pub const MAX_DATA_RECORD: usize = 64 << 10;

/// A heartbeat record.
pub const HEARTBEAT: [u8; RECORD_HEADER] = [0; RECORD_HEADER];

/// A message of the link itself, between an executor and the agent that a
/// launcher started for one worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// Agent to executor, first message after the TLS handshake: where the
    /// worker runs.
    Agent {
        /// The host name of the machine the agent runs on.
        host: String,
        /// The agent's process id on that machine.
        pid: u32,
    },
    /// Executor to agent, in answer to [`Control::Agent`]: the connection
    /// belongs to a launch the executor is waiting for; start the worker.
    Welcome,
    /// Executor to agent: send this signal (a Unix signal number) to the
    /// worker's process group.
    Signal(i32),
    /// Agent to executor: the worker process ended so. The agent closes the
    /// link after it.
    Exited(WorkerStatus),
}

/// How a worker process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WorkerStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal (a Unix signal number) killed it.
    Signal(i32),
}

/// A record that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// A control record longer than [`MAX_CONTROL`].
    #[error("control record of {len} bytes exceeds the maximum of {MAX_CONTROL} bytes")]
    ControlTooLarge {
        /// The announced length.
        len: usize,
    },
    /// A control record whose body is not a [`Control`] message.
    #[error("malformed control record: {0}")]
    MalformedControl(String),
}

/// Appends `control` as one record to `out`.
pub fn encode_control(control: &Control, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER]);
    // Control messages are small enums of plain fields: encoding them
    // cannot fail, and their size is far below MAX_CONTROL.
    rmp_serde::encode::write_named(out, control).expect("a control message always encodes");
    let len = out.len() - start - RECORD_HEADER;
    debug_assert!(len <= MAX_CONTROL);
    let header = CONTROL_BIT | len as u32;
    out[start..start + RECORD_HEADER].copy_from_slice(&header.to_le_bytes());
}

/// The header of a data record of `len` bytes (`1..=MAX_DATA_RECORD`).
pub fn data_header(len: usize) -> [u8; RECORD_HEADER] {
    debug_assert!((1..=MAX_DATA_RECORD).contains(&len));
    (len as u32).to_le_bytes()
}

/// What the receiving side of a link makes of its records: fed the
/// decrypted stream in pieces of any size, it passes the tunnelled bytes on
/// and hands out control messages, never holding more than one control
/// record.
#[derive(Debug, Default)]
pub struct Demux {
    state: State,
}

#[derive(Debug)]
enum State {
    /// Between records: `got` bytes of the next header are in `buf`.
    Header {
        buf: [u8; RECORD_HEADER],
        got: usize,
    },
    /// Inside a data record with `remaining` bytes to come.
    Data { remaining: usize },
    /// Inside a control record of `len` bytes, received so far in `body`.
    Control { len: usize, body: Vec<u8> },
}

impl Default for State {
    fn default() -> Self {
        State::Header {
            buf: [0; RECORD_HEADER],
            got: 0,
        }
    }
}

/// What one [`Demux::feed`] produced besides tunnelled bytes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Heartbeat records seen.
    pub heartbeats: usize,
    /// Control messages, in order.
    pub controls: Vec<Control>,
}

impl Demux {
    /// A demultiplexer at the start of a link.
    pub fn new() -> Self {
        Demux::default()
    }

    /// Whether the bytes fed so far end exactly at a record boundary.
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Header { got: 0, .. })
    }

    /// Consumes `input`: tunnelled bytes are appended to `data`; heartbeats
    /// and control messages are counted and collected in `received`.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        data: &mut Vec<u8>,
        received: &mut Received,
    ) -> Result<(), LinkError> {
        while !input.is_empty() {
            input = self.step(input, data, received)?;
        }
        Ok(())
    }

    /// Consumes the start of `input`, returning the rest.
    fn step<'a>(
        &mut self,
        input: &'a [u8],
        data: &mut Vec<u8>,
        received: &mut Received,
    ) -> Result<&'a [u8], LinkError> {
        match &mut self.state {
            State::Header { buf, got } => {
                let take = (RECORD_HEADER - *got).min(input.len());
                buf[*got..*got + take].copy_from_slice(&input[..take]);
                *got += take;
                if *got == RECORD_HEADER {
                    let header = u32::from_le_bytes(*buf);
                    self.state = start_record(header, received)?;
                }
                Ok(&input[take..])
            }
            State::Data { remaining } => {
                let take = (*remaining).min(input.len());
                data.extend_from_slice(&input[..take]);
                *remaining -= take;
                if *remaining == 0 {
                    self.state = State::default();
                }
                Ok(&input[take..])
            }
            State::Control { len, body } => {
                let take = (*len - body.len()).min(input.len());
                body.extend_from_slice(&input[..take]);
                if body.len() == *len {
                    let control = rmp_serde::from_slice(body)
                        .map_err(|err| LinkError::MalformedControl(err.to_string()))?;
                    received.controls.push(control);
                    self.state = State::default();
                }
                Ok(&input[take..])
            }
        }
    }
}

/// The state after a record header.
fn start_record(header: u32, received: &mut Received) -> Result<State, LinkError> {
    if header == 0 {
        received.heartbeats += 1;
        return Ok(State::default());
    }
    if header & CONTROL_BIT == 0 {
        return Ok(State::Data {
            remaining: header as usize,
        });
    }
    let len = (header & !CONTROL_BIT) as usize;
    if len > MAX_CONTROL {
        return Err(LinkError::ControlTooLarge { len });
    }
    if len == 0 {
        return Err(LinkError::MalformedControl("empty control record".into()));
    }
    Ok(State::Control {
        len,
        body: Vec::with_capacity(len),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> (Vec<u8>, Vec<Control>) {
        let controls = vec![
            Control::Agent {
                host: "node7".into(),
                pid: 42,
            },
            Control::Exited(WorkerStatus::Signal(9)),
        ];
        let mut out = Vec::new();
        out.extend_from_slice(&data_header(5));
        out.extend_from_slice(b"hello");
        out.extend_from_slice(&HEARTBEAT);
        encode_control(&controls[0], &mut out);
        out.extend_from_slice(&data_header(3));
        out.extend_from_slice(b" wo");
        out.extend_from_slice(&HEARTBEAT);
        out.extend_from_slice(&data_header(3));
        out.extend_from_slice(b"rld");
        encode_control(&controls[1], &mut out);
        (out, controls)
    }

    #[test]
    fn records_split_anywhere_give_the_same_result() {
        let (bytes, controls) = stream();
        for piece in [1, 2, 3, 5, 7, bytes.len()] {
            let mut demux = Demux::new();
            let mut data = Vec::new();
            let mut received = Received::default();
            for chunk in bytes.chunks(piece) {
                demux.feed(chunk, &mut data, &mut received).unwrap();
            }
            assert_eq!(data, b"hello world", "pieces of {piece}");
            assert_eq!(received.heartbeats, 2);
            assert_eq!(received.controls, controls);
            assert!(demux.at_boundary());
        }
    }

    #[test]
    fn a_record_cut_short_is_not_at_a_boundary() {
        let mut demux = Demux::new();
        let mut data = Vec::new();
        let mut received = Received::default();
        demux
            .feed(&data_header(10)[..2], &mut data, &mut received)
            .unwrap();
        assert!(!demux.at_boundary());
        demux
            .feed(&data_header(10)[2..], &mut data, &mut received)
            .unwrap();
        demux.feed(b"12345", &mut data, &mut received).unwrap();
        assert!(!demux.at_boundary());
        assert_eq!(data, b"12345");
    }

    #[test]
    fn an_oversized_control_record_is_refused_before_any_allocation() {
        let mut demux = Demux::new();
        let header = (CONTROL_BIT | 0x7fff_ffff).to_le_bytes();
        let err = demux
            .feed(&header, &mut Vec::new(), &mut Received::default())
            .unwrap_err();
        assert_eq!(err, LinkError::ControlTooLarge { len: 0x7fff_ffff });
    }

    #[test]
    fn a_garbage_control_record_is_an_error() {
        let mut demux = Demux::new();
        let mut bytes = (CONTROL_BIT | 3).to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0xc1, 0xc1, 0xc1]);
        let err = demux
            .feed(&bytes, &mut Vec::new(), &mut Received::default())
            .unwrap_err();
        assert!(matches!(err, LinkError::MalformedControl(_)), "{err:?}");
        let mut demux = Demux::new();
        let err = demux
            .feed(
                &CONTROL_BIT.to_le_bytes(),
                &mut Vec::new(),
                &mut Received::default(),
            )
            .unwrap_err();
        assert!(matches!(err, LinkError::MalformedControl(_)), "{err:?}");
    }

    #[test]
    fn a_large_data_record_streams_through() {
        let mut demux = Demux::new();
        let mut data = Vec::new();
        let mut received = Received::default();
        let len = 0x7fff_ffffu32;
        demux
            .feed(&len.to_le_bytes(), &mut data, &mut received)
            .unwrap();
        demux.feed(&[7; 1000], &mut data, &mut received).unwrap();
        // Only what arrived is held.
        assert_eq!(data.len(), 1000);
        assert!(data.capacity() < 1 << 20);
    }
}
