//! [`LocalFrames`]: the receiving side of a local channel, frames whose
//! body or shared buffers came as descriptors included.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use super::os::{self, Mapping};
use super::{BODY_IN_FD, DESCRIPTOR_LEN, FD_FRAME, MAX_QUEUED_FDS};
use crate::frame::{FrameBuffer, FrameError, HEADER_LEN};
use crate::shared::{Attachments, MAX_ATTACHED};

/// Bytes offered to a read when no frame has announced its size.
const IDLE_READ: usize = 4 << 10;

/// An incremental frame reader for a local channel (a Unix socket): feed
/// it with [`LocalFrames::fill_from`], take whole frames with
/// [`LocalFrames::next_frame`].
///
/// Bounded like [`FrameBuffer`]: a body, in the socket or in a memory
/// file, is at most the maximum frame size; so is the total size of the
/// shared buffers attached to one frame; at most 64 descriptors come with
/// one frame, each checked to be a sealed memory file (which cannot change
/// or shrink while mapped) of the announced size. Every descriptor
/// received is closed once its frame is done with it, or at once when the
/// frame is refused.
#[derive(Debug)]
pub struct LocalFrames {
    buf: FrameBuffer,
    /// Descriptors received and not yet claimed by a frame, in order.
    fds: VecDeque<OwnedFd>,
    /// The mapped body of the last frame taken.
    body: Option<MappedBody>,
}

/// One frame taken from a [`LocalFrames`].
#[derive(Debug)]
pub struct Frame<'a> {
    /// The frame's body (in the socket's buffer, or mapped).
    pub body: &'a [u8],
    /// The shared buffers that came with it, for decoding its payloads.
    pub attachments: Attachments,
    /// Whether the body came in a memory file rather than on the socket.
    pub body_in_shared_memory: bool,
    /// The body's mapping when it came in a memory file: parts of the body
    /// can be kept from it without copying them.
    pub mapped_body: Option<MappedBody>,
}

/// The mapped body of a frame that came in a memory file: a cheap
/// [`Clone`], immutable (the file is sealed), unmapped when the last clone
/// goes. It holds no descriptor.
#[derive(Debug, Clone)]
pub struct MappedBody(Arc<Mapping>);

impl std::ops::Deref for MappedBody {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.0.bytes()
    }
}

impl LocalFrames {
    /// An empty reader accepting bodies of at most `max` bytes.
    pub fn new(max: usize) -> LocalFrames {
        LocalFrames {
            buf: FrameBuffer::new(max),
            fds: VecDeque::new(),
            body: None,
        }
    }

    /// Receives once from `stream` (bytes and descriptors); `Ok(0)` means
    /// end of stream.
    pub fn fill_from(&mut self, stream: &UnixStream) -> io::Result<usize> {
        self.receive(stream, false)
    }

    /// As [`fill_from`](Self::fill_from), without blocking: when nothing
    /// has arrived, an error of kind [`io::ErrorKind::WouldBlock`].
    pub fn try_fill_from(&mut self, stream: &UnixStream) -> io::Result<usize> {
        self.receive(stream, true)
    }

    fn receive(&mut self, stream: &UnixStream, nonblocking: bool) -> io::Result<usize> {
        let want = self.wanted();
        let fds = &mut self.fds;
        let n = self.buf.fill_with(want, |space| {
            os::recv_with_fds(stream, space, fds, nonblocking)
        })?;
        if self.fds.len() > MAX_QUEUED_FDS {
            self.fds.clear();
            return Err(io::Error::other(format!(
                "the peer sent more than {MAX_QUEUED_FDS} descriptors ahead of their frames"
            )));
        }
        Ok(n)
    }

    /// Appends `bytes` as if received without descriptors (see
    /// [`FrameBuffer::extend`]).
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend(bytes);
    }

    /// How many bytes to offer the next read (as [`FrameBuffer`] does).
    fn wanted(&self) -> usize {
        let pending = self.buf.unread();
        match frame_span(pending) {
            Some(total) if total > pending.len() => {
                (total - pending.len()).min(crate::frame::READ_CHUNK.max(pending.len()))
            }
            // Calls come one or a few at a time: a small first read keeps
            // an idle worker's resident memory small; announced frames get
            // the room they need.
            _ => IDLE_READ,
        }
    }

    /// Whether [`LocalFrames::next_frame`] would give a frame (or an error)
    /// now, rather than wait for more bytes.
    pub fn has_frame(&self) -> bool {
        let pending = self.buf.unread();
        match frame_span(pending) {
            None => false,
            Some(span) => {
                let head = if pending[..HEADER_LEN] == FD_FRAME.to_le_bytes() {
                    DESCRIPTOR_LEN
                } else {
                    HEADER_LEN
                };
                pending.len() >= span || span - head > self.buf.max()
            }
        }
    }

    /// Lets go of the last frame's mapped body (clones of it given out
    /// keep it mapped). [`LocalFrames::next_frame`] does this too; a reader
    /// that is done with a frame calls this first to unmap its memory file
    /// while it has nothing else to do, rather than once the next frame has
    /// arrived.
    pub fn release(&mut self) {
        self.body = None;
    }

    /// The next whole frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, FrameError> {
        self.body = None;
        let pending = self.buf.unread();
        if pending.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_le_bytes(pending[..HEADER_LEN].try_into().expect("4 bytes"));
        if len != FD_FRAME {
            return Ok(self.buf.next_frame()?.map(|body| Frame {
                body,
                attachments: Attachments::default(),
                body_in_shared_memory: false,
                mapped_body: None,
            }));
        }
        if pending.len() < DESCRIPTOR_LEN {
            return Ok(None);
        }
        let descriptor = Descriptor::parse(&pending[..DESCRIPTOR_LEN], self.buf.max())?;
        let in_fd = descriptor.body_in_fd();
        if !in_fd && pending.len() < DESCRIPTOR_LEN + descriptor.len {
            return Ok(None);
        }
        if self.fds.len() < descriptor.fds {
            return Err(refused(
                "a descriptor frame arrived without its descriptors",
            ));
        }
        let fds: Vec<OwnedFd> = self.fds.drain(..descriptor.fds).collect();
        let (body_fd, shared) = if in_fd {
            let mut fds = fds.into_iter();
            (fds.next(), fds.collect())
        } else {
            (None, fds)
        };
        let attachments = check_shared(shared, self.buf.max())?;
        let taken = self
            .buf
            .take(DESCRIPTOR_LEN + if in_fd { 0 } else { descriptor.len });
        if let Some(fd) = body_fd {
            let len = os::sealed_len(fd.as_fd()).map_err(|e| refused_io("the body", e))?;
            if len != descriptor.len {
                return Err(refused(
                    "the body's memory file has another size than announced",
                ));
            }
            // Not populated: the decoder reads the body once, front to back,
            // and its read faults map the file's pages a batch at a time,
            // which costs less than populating them one by one.
            let map =
                Mapping::new(fd.as_fd(), len, false).map_err(|e| refused_io("the body", e))?;
            self.body = Some(MappedBody(Arc::new(map)));
        }
        let body = match &self.body {
            Some(map) => &**map,
            None => &taken[DESCRIPTOR_LEN..],
        };
        Ok(Some(Frame {
            body,
            attachments,
            body_in_shared_memory: in_fd,
            mapped_body: self.body.clone(),
        }))
    }

    /// The error to report when the stream ends now: `Closed` between
    /// frames, `Truncated` inside one.
    pub fn end_of_stream(&self) -> FrameError {
        let pending = self.buf.unread();
        match frame_span(pending) {
            Some(span) if pending[..HEADER_LEN] == FD_FRAME.to_le_bytes() => {
                FrameError::Truncated {
                    expected: span.saturating_sub(DESCRIPTOR_LEN),
                    got: pending.len().saturating_sub(DESCRIPTOR_LEN),
                }
            }
            _ => self.buf.end_of_stream(),
        }
    }
}

/// The parsed header of a descriptor frame.
struct Descriptor {
    fds: usize,
    flags: u16,
    len: usize,
}

impl Descriptor {
    fn parse(bytes: &[u8], max: usize) -> Result<Descriptor, FrameError> {
        let fds = usize::from(u16::from_le_bytes([bytes[4], bytes[5]]));
        let flags = u16::from_le_bytes([bytes[6], bytes[7]]);
        let len = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        if flags & !BODY_IN_FD != 0 {
            return Err(refused("unknown flags"));
        }
        let most = MAX_ATTACHED + usize::from(flags & BODY_IN_FD != 0);
        if fds == 0 || fds > most {
            return Err(refused("a descriptor frame must carry 1 to 64 descriptors"));
        }
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > max {
            return Err(FrameError::TooLarge { len, max });
        }
        Ok(Descriptor { fds, flags, len })
    }

    fn body_in_fd(&self) -> bool {
        self.flags & BODY_IN_FD != 0
    }
}

/// Bytes the frame at the start of `pending` spans on the socket, once its
/// header says.
fn frame_span(pending: &[u8]) -> Option<usize> {
    let len = u32::from_le_bytes(pending.get(..HEADER_LEN)?.try_into().ok()?);
    if len != FD_FRAME {
        return Some(HEADER_LEN + len as usize);
    }
    let descriptor = pending.get(..DESCRIPTOR_LEN)?;
    let flags = u16::from_le_bytes([descriptor[6], descriptor[7]]);
    if flags & BODY_IN_FD != 0 {
        return Some(DESCRIPTOR_LEN);
    }
    let len = u64::from_le_bytes(descriptor[8..16].try_into().ok()?);
    Some(DESCRIPTOR_LEN.saturating_add(usize::try_from(len).unwrap_or(usize::MAX)))
}

/// Checks that every attached descriptor is a sealed memory file and that
/// together they hold at most `max` bytes.
fn check_shared(fds: Vec<OwnedFd>, max: usize) -> Result<Attachments, FrameError> {
    let mut total = 0usize;
    let mut checked = Vec::with_capacity(fds.len());
    for fd in fds {
        let len = os::sealed_len(fd.as_fd()).map_err(|e| refused_io("a shared buffer", e))?;
        total = total.saturating_add(len);
        if total > max {
            return Err(FrameError::TooLarge { len: total, max });
        }
        checked.push((fd, len));
    }
    Ok(Attachments::from_fds(checked))
}

fn refused(why: &str) -> FrameError {
    FrameError::Descriptor(why.to_owned())
}

fn refused_io(what: &str, err: io::Error) -> FrameError {
    FrameError::Descriptor(format!("{what} is not a usable memory file: {err}"))
}
