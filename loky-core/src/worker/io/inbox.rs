//! Where a worker's reader gathers what the worker sends into frames: bytes
//! from any channel, or, from a local socket, frames that may bring
//! descriptors (a body in shared memory, shared buffers).

use std::io::{self, Read};

use loky_proto::shm::{LocalFrames, MappedBody};
use loky_proto::{Attachments, FrameBuffer, FrameError};

use super::Transport;

/// The frames arriving from one worker.
pub(super) enum Inbox {
    Bytes(FrameBuffer),
    Local(LocalFrames),
}

/// One frame taken from an [`Inbox`].
pub(super) struct Incoming<'a> {
    pub(super) body: &'a [u8],
    /// The body's mapping, if it came in a memory file.
    pub(super) mapped: Option<MappedBody>,
    /// The shared buffers that came with it.
    pub(super) attachments: Attachments,
}

impl Inbox {
    /// The inbox for `transport`'s channel, taking frames of at most `max`
    /// bytes.
    pub(super) fn new(transport: &dyn Transport, max: usize) -> Inbox {
        match transport.local_socket() {
            Some(_) => Inbox::Local(LocalFrames::new(max)),
            None => Inbox::Bytes(FrameBuffer::new(max)),
        }
    }

    /// One read from `transport` (the one it was made for); `Ok(0)` at the
    /// end of the channel.
    pub(super) fn fill(&mut self, transport: &dyn Transport) -> io::Result<usize> {
        match self {
            Inbox::Bytes(buffer) => buffer.fill_from(&mut ReadHalf(transport)),
            Inbox::Local(frames) => frames.fill_from(
                transport
                    .local_socket()
                    .expect("a local inbox is made for a local socket"),
            ),
        }
    }

    /// The next whole frame, if one has arrived.
    pub(super) fn next_frame(&mut self) -> Result<Option<Incoming<'_>>, FrameError> {
        match self {
            Inbox::Bytes(buffer) => Ok(buffer.next_frame()?.map(|body| Incoming {
                body,
                mapped: None,
                attachments: Attachments::default(),
            })),
            Inbox::Local(frames) => Ok(frames.next_frame()?.map(|frame| Incoming {
                body: frame.body,
                mapped: frame.mapped_body,
                attachments: frame.attachments,
            })),
        }
    }
}

/// `Read` for a shared transport.
struct ReadHalf<'a>(&'a dyn Transport);

impl Read for ReadHalf<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}
