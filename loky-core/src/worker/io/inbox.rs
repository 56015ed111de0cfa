//! Where a worker's reader gathers what the worker sends into frames: bytes
//! from any channel, or, from a local socket, frames that may bring
//! descriptors (a body in shared memory, shared buffers).

use std::io::{self, Read};

use loky_proto::shm::{LocalFrames, MappedBody};
use loky_proto::{Attachments, FrameBuffer, FrameError};

use super::Transport;

/// The frames arriving from one worker.
pub(super) struct Inbox {
    frames: Frames,
    /// Bytes read from the channel so far.
    received: u64,
}

enum Frames {
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
        let frames = match transport.local_socket() {
            Some(_) => Frames::Local(LocalFrames::new(max)),
            None => Frames::Bytes(FrameBuffer::new(max)),
        };
        Inbox {
            frames,
            received: 0,
        }
    }

    /// One read from `transport` (the one it was made for); `Ok(0)` at the
    /// end of the channel. From a local socket, which callers may read too,
    /// it does not block: nothing there is an error of kind
    /// [`io::ErrorKind::WouldBlock`].
    pub(super) fn fill(&mut self, transport: &dyn Transport) -> io::Result<usize> {
        let n = match &mut self.frames {
            Frames::Bytes(buffer) => buffer.fill_from(&mut ReadHalf(transport)),
            Frames::Local(frames) => frames.try_fill_from(
                transport
                    .local_socket()
                    .expect("a local inbox is made for a local socket"),
            ),
        }?;
        self.received += n as u64;
        Ok(n)
    }

    /// Bytes read from the channel so far.
    pub(super) fn received(&self) -> u64 {
        self.received
    }

    /// Appends bytes that did not come on the channel (what a dead
    /// worker's journal held), as if they had.
    pub(super) fn extend(&mut self, bytes: &[u8]) {
        match &mut self.frames {
            Frames::Bytes(buffer) => buffer.extend(bytes),
            Frames::Local(frames) => frames.extend(bytes),
        }
    }

    /// The next whole frame, if one has arrived.
    pub(super) fn next_frame(&mut self) -> Result<Option<Incoming<'_>>, FrameError> {
        match &mut self.frames {
            Frames::Bytes(buffer) => Ok(buffer.next_frame()?.map(|body| Incoming {
                body,
                mapped: None,
                attachments: Attachments::default(),
            })),
            Frames::Local(frames) => Ok(frames.next_frame()?.map(|frame| Incoming {
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
