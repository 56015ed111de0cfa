//! Length-prefixed framing: a little-endian `u32` body length, then a
//! MessagePack body holding exactly one message.
//!
//! A length is checked against the maximum before anything is allocated, and
//! buffers grow with the bytes that actually arrive, so a garbage length
//! never makes a reader allocate past what it received.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 4;

/// Default maximum frame body size: 2 GiB.
pub const DEFAULT_MAX_FRAME: usize = 2 << 30;

/// Largest body a `u32` length can describe.
pub const ABSOLUTE_MAX_FRAME: usize = u32::MAX as usize;

/// A buffer up to this size is kept between frames.
const KEEP_BUFFER: usize = 32 << 20;

/// Initial read size for a frame body whose bytes have not arrived yet.
pub(crate) const READ_CHUNK: usize = 64 << 10;

/// Every way a frame can be bad.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream ended cleanly between two frames.
    #[error("the channel was closed")]
    Closed,
    /// The stream ended inside a frame.
    #[error("frame truncated: {got} of {expected} bytes arrived before the channel closed")]
    Truncated {
        /// Bytes the frame (header or body) should have had.
        expected: usize,
        /// Bytes that arrived.
        got: usize,
    },
    /// The length prefix is over the maximum.
    #[error("frame of {len} bytes exceeds the maximum frame size of {max} bytes")]
    TooLarge {
        /// The announced body length.
        len: usize,
        /// The maximum in force.
        max: usize,
    },
    /// The body holds more than one message.
    #[error("frame has {0} trailing bytes after its message")]
    TrailingBytes(usize),
    /// The body is not a valid message.
    #[error("malformed message")]
    Decode(#[source] rmp_serde::decode::Error),
    /// A descriptor frame (see [`shm`](crate::shm)) is malformed or came
    /// with descriptors that are not sealed memory files of the announced
    /// sizes.
    #[error("invalid descriptor frame: {0}")]
    Descriptor(String),
    /// A message could not be encoded.
    #[error("message could not be encoded")]
    Encode(#[source] rmp_serde::encode::Error),
    /// The channel failed.
    #[error("i/o error on the channel")]
    Io(#[source] io::Error),
}

/// Appends `msg` as one frame to `out`.
///
/// Fails with [`FrameError::TooLarge`] (leaving `out` as it was) when the
/// body would exceed `max` bytes.
pub fn encode_frame<T: Serialize + ?Sized, O: FrameSink>(
    msg: &T,
    out: &mut O,
    max: usize,
) -> Result<(), FrameError> {
    let start = out.begin();
    let local = out.is_local();
    let (written, attached) = in_frame_context(local, || {
        out.append(&[0; HEADER_LEN]);
        rmp_serde::encode::write_named(out, msg).map_err(FrameError::Encode)?;
        let len = out.len() - start - HEADER_LEN;
        if len > max.min(ABSOLUTE_MAX_FRAME) {
            return Err(FrameError::TooLarge { len, max });
        }
        out.patch(start, &(len as u32).to_le_bytes());
        Ok(())
    });
    if let Err(err) = written {
        out.abort(start);
        return Err(err);
    }
    out.finish(attached).map_err(FrameError::Io)
}

/// Where frames are encoded: a `Vec<u8>` (bytes for any channel), or a
/// [`FrameBuf`](crate::shm::FrameBuf) (for a local channel, which may
/// carry descriptors).
pub trait FrameSink: sealed::Sink {}

impl FrameSink for Vec<u8> {}

pub(crate) mod sealed {
    use crate::SharedBytes;

    /// What the frame encoders need of a [`FrameSink`](super::FrameSink):
    /// a growable byte buffer, and the start and end of each frame.
    pub trait Sink: std::io::Write {
        fn len(&self) -> usize;
        /// Makes room for `additional` more bytes at once.
        fn reserve(&mut self, additional: usize);
        fn append(&mut self, bytes: &[u8]);
        fn truncate(&mut self, len: usize);
        fn patch(&mut self, at: usize, bytes: &[u8]);
        fn bytes_at(&self, range: std::ops::Range<usize>) -> &[u8];
        /// Whether frames may attach descriptors.
        fn is_local(&self) -> bool;
        /// Starts a frame; returns where.
        fn begin(&mut self) -> usize;
        /// Drops the frame begun at `start`.
        fn abort(&mut self, start: usize);
        /// Ends the frame begun last, with the shared buffers it attaches.
        fn finish(&mut self, attached: Vec<SharedBytes>) -> std::io::Result<()>;
    }

    impl Sink for Vec<u8> {
        fn len(&self) -> usize {
            Vec::len(self)
        }
        fn reserve(&mut self, additional: usize) {
            Vec::reserve(self, additional);
        }
        fn append(&mut self, bytes: &[u8]) {
            self.extend_from_slice(bytes);
        }
        fn truncate(&mut self, len: usize) {
            Vec::truncate(self, len);
        }
        fn patch(&mut self, at: usize, bytes: &[u8]) {
            self[at..at + bytes.len()].copy_from_slice(bytes);
        }
        fn bytes_at(&self, range: std::ops::Range<usize>) -> &[u8] {
            &self[range]
        }
        fn is_local(&self) -> bool {
            false
        }
        fn begin(&mut self) -> usize {
            Vec::len(self)
        }
        fn abort(&mut self, start: usize) {
            Vec::truncate(self, start);
        }
        fn finish(&mut self, attached: Vec<SharedBytes>) -> std::io::Result<()> {
            debug_assert!(attached.is_empty(), "bytes frames attach nothing");
            Ok(())
        }
    }
}

/// Runs `encode` as the encoding of a frame: with a side table for shared
/// buffers if the frame may attach them (`local`), else with none (they
/// become bytes), whatever frame this thread may be encoding around it.
pub(crate) fn in_frame_context<R>(
    local: bool,
    encode: impl FnOnce() -> R,
) -> (R, Vec<crate::SharedBytes>) {
    if local {
        crate::shared::encoding_attached(encode)
    } else {
        (crate::shared::encoding_plain(encode), Vec::new())
    }
}

/// Writes `msg` as one frame to `w`.
pub fn write_frame<T: Serialize + ?Sized, W: Write>(
    w: &mut W,
    msg: &T,
    max: usize,
) -> Result<(), FrameError> {
    let mut buf = Vec::new();
    encode_frame(msg, &mut buf, max)?;
    w.write_all(&buf).map_err(FrameError::Io)
}

/// Decodes a frame body holding exactly one message, borrowing strings and
/// bytes from `body` where the message type allows.
pub fn decode_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, FrameError> {
    let msg = rmp_serde::from_slice(body).map_err(FrameError::Decode)?;
    // The message decoded, so it is well formed; whatever follows it is extra.
    let used = msgpack_value_len(body).unwrap_or(body.len());
    if used < body.len() {
        return Err(FrameError::TrailingBytes(body.len() - used));
    }
    Ok(msg)
}

/// The elements of the encoded MessagePack array `bytes`, each as the bytes
/// of its encoding, or `None` if `bytes` is not exactly one well-formed
/// array. Lets a sequence whose decoding as a whole failed be decoded item
/// by item, so one bad item fails alone.
pub fn split_array(bytes: &[u8]) -> Option<Vec<&[u8]>> {
    let (count, header) = match *bytes.first()? {
        m @ 0x90..=0x9f => (usize::from(m & 0x0f), 1),
        0xdc => (
            usize::from(u16::from_be_bytes([*bytes.get(1)?, *bytes.get(2)?])),
            3,
        ),
        0xdd => (
            u32::from_be_bytes(bytes.get(1..5)?.try_into().ok()?) as usize,
            5,
        ),
        _ => return None,
    };
    let mut items = Vec::with_capacity(count.min(bytes.len()));
    let mut rest = &bytes[header..];
    for _ in 0..count {
        let len = msgpack_value_len(rest)?;
        items.push(&rest[..len]);
        rest = &rest[len..];
    }
    rest.is_empty().then_some(items)
}

/// The length in bytes of the MessagePack value at the start of `buf`, or
/// `None` if it is cut short or malformed. Iterative, so deep nesting cannot
/// overflow the stack.
fn msgpack_value_len(buf: &[u8]) -> Option<usize> {
    let be = |at: usize, n: usize| -> Option<usize> {
        let bytes = buf.get(at..at + n)?;
        Some(
            bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b)),
        )
    };
    let mut pos = 0usize;
    // Values still to skip.
    let mut todo = 1usize;
    while todo > 0 {
        todo -= 1;
        let marker = *buf.get(pos)?;
        pos += 1;
        // (bytes of length field, extra fixed bytes, what the length counts)
        let (skip, children) = match marker {
            0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => (0, 0),
            0x80..=0x8f => (0, 2 * usize::from(marker & 0x0f)),
            0x90..=0x9f => (0, usize::from(marker & 0x0f)),
            0xa0..=0xbf => (usize::from(marker & 0x1f), 0),
            0xc4 | 0xd9 => (1 + be(pos, 1)?, 0),
            0xc5 | 0xda => (2 + be(pos, 2)?, 0),
            0xc6 | 0xdb => (4 + be(pos, 4)?, 0),
            0xc7 => (2 + be(pos, 1)?, 0),
            0xc8 => (3 + be(pos, 2)?, 0),
            0xc9 => (5 + be(pos, 4)?, 0),
            0xca => (4, 0),
            0xcb => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xce | 0xd2 => (4, 0),
            0xcf | 0xd3 => (8, 0),
            0xd4..=0xd8 => (1 + (1 << (marker - 0xd4)), 0),
            0xdc => (2, be(pos, 2)?),
            0xdd => (4, be(pos, 4)?),
            0xde => (2, 2 * be(pos, 2)?),
            0xdf => (4, 2 * be(pos, 4)?),
            0xc1 => return None,
        };
        pos = pos.checked_add(skip)?;
        todo = todo.checked_add(children)?;
        if pos > buf.len() {
            return None;
        }
    }
    Some(pos)
}

/// Reads one frame body from `r` into `body` (replacing its contents).
///
/// Blocks until a whole frame arrived. `body` grows only with the bytes that
/// arrive, whatever length the header announces.
pub fn read_frame<R: Read + ?Sized>(
    r: &mut R,
    body: &mut Vec<u8>,
    max: usize,
) -> Result<(), FrameError> {
    let mut header = [0u8; HEADER_LEN];
    let got = read_full(r, &mut header).map_err(FrameError::Io)?;
    if got == 0 {
        return Err(FrameError::Closed);
    }
    if got < HEADER_LEN {
        return Err(FrameError::Truncated {
            expected: HEADER_LEN,
            got,
        });
    }
    let len = check_len(header, max)?;
    body.clear();
    let got = r
        .take(len as u64)
        .read_to_end(body)
        .map_err(FrameError::Io)?;
    if got < len {
        return Err(FrameError::Truncated { expected: len, got });
    }
    Ok(())
}

fn check_len(header: [u8; HEADER_LEN], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(header) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
pub(crate) fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(got)
}

/// An incremental frame reader for a non-blocking or polled stream: feed it
/// with [`FrameBuffer::fill_from`], take whole frames with
/// [`FrameBuffer::next_frame`]. One `read` can bring many frames.
#[derive(Debug)]
pub struct FrameBuffer {
    /// Storage; `buf[start..end]` holds received bytes not yet taken.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max: usize,
}

impl FrameBuffer {
    /// An empty buffer accepting bodies of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        FrameBuffer {
            buf: Vec::new(),
            start: 0,
            end: 0,
            max,
        }
    }

    /// Bytes received and not yet taken as frames.
    pub fn pending(&self) -> usize {
        self.end - self.start
    }

    /// Reads once from `r` into the buffer; `Ok(0)` means end of stream.
    pub fn fill_from<R: Read + ?Sized>(&mut self, r: &mut R) -> io::Result<usize> {
        let want = self.wanted();
        self.fill_with(want, |space| r.read(space))
    }

    /// Appends `bytes` as if read from the stream (frames recovered from
    /// elsewhere, such as a dead worker's journal).
    pub fn extend(&mut self, bytes: &[u8]) {
        let _ = self.fill_with(bytes.len(), |space| {
            space[..bytes.len()].copy_from_slice(bytes);
            Ok(bytes.len())
        });
    }

    /// Reads once with `read`, offering it room for `want` bytes.
    pub(crate) fn fill_with(
        &mut self,
        want: usize,
        read: impl FnOnce(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            // Give back the memory of an exceptionally large frame; keep
            // the rest, as fresh memory costs page faults on every frame.
            if self.buf.len() > KEEP_BUFFER {
                self.buf = Vec::new();
            }
        } else if self.start >= self.buf.len() / 2 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() < self.end + want {
            // Bytes are zeroed once, when the storage grows, not per read.
            self.buf.resize(self.end + want, 0);
        }
        let n = read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// How many bytes to offer the next read: the rest of the frame being
    /// received if it has announced itself, bounded by what has arrived so
    /// far (so a garbage length cannot make the buffer balloon).
    fn wanted(&self) -> usize {
        let pending = self.pending();
        if pending >= HEADER_LEN {
            let len = u32::from_le_bytes(self.header()) as usize;
            let missing = (HEADER_LEN + len).saturating_sub(pending);
            if missing > 0 {
                return missing.min(READ_CHUNK.max(pending));
            }
        }
        READ_CHUNK
    }

    /// Bytes received and not yet taken.
    pub(crate) fn unread(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Takes the next `n` unread bytes (which have arrived).
    pub(crate) fn take(&mut self, n: usize) -> &[u8] {
        let at = self.start;
        self.start += n;
        &self.buf[at..at + n]
    }

    /// The maximum body size.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    fn header(&self) -> [u8; HEADER_LEN] {
        let mut header = [0; HEADER_LEN];
        header.copy_from_slice(&self.buf[self.start..self.start + HEADER_LEN]);
        header
    }

    /// The next whole frame body, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        if self.pending() < HEADER_LEN {
            return Ok(None);
        }
        let len = check_len(self.header(), self.max)?;
        if self.pending() < HEADER_LEN + len {
            return Ok(None);
        }
        let body = self.start + HEADER_LEN;
        self.start = body + len;
        Ok(Some(&self.buf[body..body + len]))
    }

    /// The error to report when the stream ends now: `Closed` between
    /// frames, `Truncated` inside one.
    pub fn end_of_stream(&self) -> FrameError {
        let pending = self.pending();
        if pending == 0 {
            return FrameError::Closed;
        }
        if pending < HEADER_LEN {
            return FrameError::Truncated {
                expected: HEADER_LEN,
                got: pending,
            };
        }
        let len = u32::from_le_bytes(self.header()) as usize;
        FrameError::Truncated {
            expected: len,
            got: pending - HEADER_LEN,
        }
    }
}
