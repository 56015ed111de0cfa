//! [`FrameBuf`]: frames being encoded for a local channel, the large ones
//! straight into a memory file, and their sending with descriptors.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use super::os::{self, MapMut};
use super::{BODY_IN_FD, DESCRIPTOR_LEN, FD_FRAME};
use crate::frame::HEADER_LEN;
use crate::shared::SharedBytes;

/// A memory file for a spilled body starts this large, and grows in steps
/// of at least this much.
const SPILL_STEP: usize = 2 << 20;

/// Writes of at least this many bytes go into a memory file through the
/// file (`pwrite`), not the mapping: fresh pages are filled from the data
/// instead of being zeroed, then faulted in one by one.
const WRITE_THROUGH_FROM: usize = 64 << 10;

/// The room an empty buffer takes when a frame begins: a call of a short
/// task name and small arguments (a `noop` call's frame is 52 bytes) fits,
/// in one allocation instead of the 8, 16, 32 and 64 bytes a growing
/// vector would allocate in turn.
const FIRST_FRAME: usize = 64;

/// Encoded frames waiting to be sent on a local channel (a Unix socket).
///
/// Frames are appended as to a `Vec<u8>` (positions are the same as if
/// every byte were in one vector). A frame whose body grows past the
/// threshold moves into a memory file as it is encoded and goes on there
/// (the bytes before the threshold are copied once, the rest is written in
/// place); when the frame ends, the file is sealed and the channel carries
/// a descriptor frame with the file attached. Shared buffers serialized in
/// a frame are attached to it too. Only a [`UnixStream`] can send these
/// frames: descriptors never reach any other kind of channel.
#[derive(Debug)]
pub struct FrameBuf {
    bytes: Vec<u8>,
    /// Descriptors to send with the byte at each offset (ascending).
    attached: Vec<(usize, Vec<Attached>)>,
    /// Bytes of `bytes` already on the socket.
    sent: usize,
    /// Where the frame being encoded starts.
    frame: Option<usize>,
    /// That frame's body, once it grew past the threshold, and its length.
    spill: Option<(MapMut, usize)>,
    /// Body size past which a frame travels in a memory file.
    threshold: usize,
    /// Whether shared buffers and spilled bodies are attached at all.
    local: bool,
}

#[derive(Debug)]
enum Attached {
    Body(OwnedFd),
    Shared(SharedBytes),
}

impl Attached {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Attached::Body(fd) => fd.as_fd(),
            Attached::Shared(bytes) => bytes.shm_fd().expect("only shared buffers are attached"),
        }
    }
}

impl FrameBuf {
    /// Frames for a peer that takes descriptors: bodies over `threshold`
    /// bytes travel in memory files (`usize::MAX`: never), shared buffers
    /// as descriptors.
    pub fn local(threshold: usize) -> FrameBuf {
        FrameBuf {
            bytes: Vec::new(),
            attached: Vec::new(),
            sent: 0,
            frame: None,
            spill: None,
            threshold,
            local: true,
        }
    }

    /// Frames for a peer that takes no descriptors: every byte on the
    /// socket, shared buffers serialized as bytes.
    pub fn plain() -> FrameBuf {
        FrameBuf {
            local: false,
            ..FrameBuf::local(usize::MAX)
        }
    }

    /// [`local`](Self::local), in the memory of `spare` (its bytes are
    /// dropped): a buffer given back by [`into_spare`](Self::into_spare).
    pub fn local_in(threshold: usize, mut spare: Vec<u8>) -> FrameBuf {
        spare.clear();
        FrameBuf {
            bytes: spare,
            ..FrameBuf::local(threshold)
        }
    }

    /// [`plain`](Self::plain), in the memory of `spare` (its bytes are
    /// dropped).
    pub fn plain_in(mut spare: Vec<u8>) -> FrameBuf {
        spare.clear();
        FrameBuf {
            bytes: spare,
            ..FrameBuf::plain()
        }
    }

    /// The length the bytes would have in one vector.
    #[inline]
    pub fn len(&self) -> usize {
        match &self.spill {
            Some((_, len)) => self.spill_base() + len,
            None => self.bytes.len(),
        }
    }

    /// Whether nothing is waiting to be sent.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn spill_base(&self) -> usize {
        self.frame.expect("only a frame being encoded spills") + HEADER_LEN
    }

    /// Appends bytes (to the spilled body once there is one).
    #[inline]
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        // Inline, as a `Vec` would be: the encoder writes each integer of a
        // chunk's outputs as one or two calls of a few bytes.
        if self.spill.is_none() && !self.should_spill(data.len()) {
            self.bytes.extend_from_slice(data);
        } else {
            self.extend_spilling(data);
        }
    }

    /// [`extend_from_slice`](Self::extend_from_slice) once the body is in a
    /// memory file, or when `data` takes it past the threshold (which
    /// `extend_from_slice` checked).
    #[cold]
    fn extend_spilling(&mut self, data: &[u8]) {
        if self.spill.is_none() && self.start_spill(data.len()).is_err() {
            // No memory file to be had (out of descriptors or memory): this
            // frame and the next ones go over the socket.
            self.threshold = usize::MAX;
        }
        match &mut self.spill {
            None => self.bytes.extend_from_slice(data),
            Some((map, len)) => {
                let end = *len + data.len();
                if end > map.capacity()
                    && let Err(err) = map.grow(round_up(end.max(2 * map.capacity())))
                {
                    // Out of memory for a frame: as for a vector.
                    panic!("cannot grow the memory file of a frame to {end} bytes: {err}");
                }
                if data.len() < WRITE_THROUGH_FROM || !map.write_at(*len, data) {
                    map.bytes_mut()[*len..end].copy_from_slice(data);
                }
                *len = end;
            }
        }
    }

    #[inline]
    fn should_spill(&self, more: usize) -> bool {
        match self.frame {
            Some(frame) => {
                self.local && self.bytes.len() + more - (frame + HEADER_LEN) > self.threshold
            }
            None => false,
        }
    }

    /// Moves the body encoded so far into a new memory file with room for
    /// `more` bytes after it.
    fn start_spill(&mut self, more: usize) -> io::Result<()> {
        let base = self.spill_base();
        let so_far = self.bytes.len() - base;
        let mut map = MapMut::new(round_up((so_far + more).max(SPILL_STEP)))?;
        map.bytes_mut()[..so_far].copy_from_slice(&self.bytes[base..]);
        self.bytes.truncate(base);
        self.spill = Some((map, so_far));
        Ok(())
    }

    /// Cuts the bytes back to `len`.
    pub fn truncate(&mut self, len: usize) {
        if let Some((_, spilled)) = &mut self.spill {
            let base = self.frame.expect("a spill belongs to a frame") + HEADER_LEN;
            if len >= base {
                *spilled = (*spilled).min(len - base);
                return;
            }
            self.spill = None;
        }
        self.bytes.truncate(len);
    }

    /// The bytes at `range` (positions as in one vector); a range must not
    /// straddle the start of a spilled body.
    pub fn slice(&self, range: std::ops::Range<usize>) -> &[u8] {
        match &self.spill {
            Some((map, _)) if range.start >= self.spill_base() => {
                let base = self.spill_base();
                &map.bytes()[range.start - base..range.end - base]
            }
            _ => &self.bytes[range],
        }
    }

    /// Overwrites bytes at `at` (positions as in one vector).
    pub(crate) fn patch(&mut self, at: usize, data: &[u8]) {
        match &mut self.spill {
            Some((map, _)) if at >= self.frame.unwrap_or(0) + HEADER_LEN => {
                let base = self.frame.expect("a spill belongs to a frame") + HEADER_LEN;
                map.bytes_mut()[at - base..at - base + data.len()].copy_from_slice(data);
            }
            _ => self.bytes[at..at + data.len()].copy_from_slice(data),
        }
    }

    /// Starts a frame at the current end.
    pub(crate) fn begin_frame(&mut self) {
        debug_assert!(self.frame.is_none() && self.spill.is_none());
        if self.bytes.capacity() == 0 {
            self.bytes.reserve_exact(FIRST_FRAME);
        }
        self.frame = Some(self.bytes.len());
    }

    /// Drops the frame being encoded.
    pub(crate) fn abort_frame(&mut self) {
        if let Some(frame) = self.frame.take() {
            self.spill = None;
            self.bytes.truncate(frame);
        }
    }

    /// Ends the frame being encoded (its header already holds its body
    /// length): a spilled body is sealed, and a frame with descriptors
    /// gets a descriptor frame's header.
    pub(crate) fn end_frame(&mut self, shared: Vec<SharedBytes>) -> io::Result<()> {
        let frame = self.frame.expect("a frame was begun");
        if self.spill.is_none() && shared.is_empty() {
            // A plain frame, as most are: nothing to attach.
            self.frame = None;
            return Ok(());
        }
        let mut fds: Vec<Attached> = Vec::with_capacity(shared.len() + 1);
        let (flags, len) = match self.spill.take() {
            Some((map, len)) => {
                let fd = map.seal(len).inspect_err(|_| self.abort_frame())?;
                fds.push(Attached::Body(fd));
                self.bytes.truncate(frame);
                self.bytes.extend_from_slice(&[0; HEADER_LEN]);
                (BODY_IN_FD, len)
            }
            None => (0, self.bytes.len() - frame - HEADER_LEN),
        };
        self.frame = None;
        fds.extend(shared.into_iter().map(Attached::Shared));
        let descriptor = descriptor(fds.len(), flags, len);
        self.bytes
            .splice(frame..frame + HEADER_LEN, descriptor.iter().copied());
        self.attached.push((frame, fds));
        Ok(())
    }

    /// The frames queued, if they are plain bytes: no descriptor to
    /// attach, none of it sent, no frame being encoded.
    pub fn plain_bytes(&self) -> Option<&[u8]> {
        (self.frame.is_none() && self.attached.is_empty() && self.sent == 0)
            .then_some(&self.bytes[..])
    }

    /// Drops every frame queued (those of [`plain_bytes`](Self::plain_bytes)
    /// once they went another way).
    pub fn clear(&mut self) {
        debug_assert!(self.frame.is_none(), "a frame is still being encoded");
        self.bytes.clear();
        self.attached.clear();
        self.sent = 0;
    }

    /// Sends everything queued on `stream`, blocking until it is sent.
    pub fn send_to(&mut self, stream: &UnixStream) -> io::Result<()> {
        self.send(stream, false).map(|_| ())
    }

    /// Sends what `stream` takes without blocking; true once everything
    /// queued is sent (the rest stays queued, in order).
    pub fn send_nonblocking(&mut self, stream: &UnixStream) -> io::Result<bool> {
        self.send(stream, true)
    }

    fn send(&mut self, stream: &UnixStream, nonblocking: bool) -> io::Result<bool> {
        debug_assert!(self.frame.is_none(), "a frame is still being encoded");
        while self.sent < self.bytes.len() {
            let result = match self.attached.first() {
                Some((at, fds)) if *at == self.sent => {
                    let fds: Vec<BorrowedFd<'_>> = fds.iter().map(Attached::fd).collect();
                    let end = self.sent + DESCRIPTOR_LEN;
                    os::send_with_fds(stream, &self.bytes[self.sent..end], &fds, nonblocking)
                        .inspect(|_| {
                            // The descriptors went with the first byte.
                            self.attached.remove(0);
                        })
                }
                next => {
                    let end = next.map_or(self.bytes.len(), |(at, _)| *at);
                    os::send_bytes(stream, &self.bytes[self.sent..end], nonblocking)
                }
            };
            match result {
                Ok(n) => self.sent += n,
                Err(err) if nonblocking && err.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(false);
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        self.bytes.clear();
        self.sent = 0;
        Ok(true)
    }

    /// Takes the frame encoded here, before any of it is sent, to be kept
    /// and sent whole (as many times as needed) with [`DescriptorFrame::send`]
    /// or as bytes: a frame that carries no descriptor is plain bytes, for
    /// any channel. Leaves this buffer empty. Holds exactly the frames
    /// encoded since it was made (or last emptied); call it after one.
    ///
    /// A small frame without descriptors is copied out, in place in the
    /// [`EncodedFrame`], and this buffer keeps its memory for the next
    /// frame (see [`into_spare`](Self::into_spare)).
    pub fn take_frame(&mut self) -> EncodedFrame {
        debug_assert!(self.frame.is_none() && self.sent == 0);
        if self.attached.is_empty()
            && let Some(small) = FrameBytes::inline(&self.bytes)
        {
            self.bytes.clear();
            return EncodedFrame::Bytes(small);
        }
        let bytes = std::mem::take(&mut self.bytes);
        match std::mem::take(&mut self.attached).pop() {
            None => EncodedFrame::Bytes(bytes.into()),
            Some((at, fds)) => {
                debug_assert_eq!(at, 0, "one frame, its descriptors with its first byte");
                EncodedFrame::Descriptors(DescriptorFrame { bytes, fds })
            }
        }
    }

    /// This buffer's memory, emptied, to make the next one with
    /// [`local_in`](Self::local_in) or [`plain_in`](Self::plain_in): its
    /// frames were taken (or sent) whole.
    pub fn into_spare(mut self) -> Vec<u8> {
        debug_assert!(self.frame.is_none());
        self.bytes.clear();
        self.bytes
    }

    /// Gives back the memory of an exceptionally large frame.
    pub fn shrink_to(&mut self, keep: usize) {
        if self.bytes.is_empty() && self.bytes.capacity() > keep {
            self.bytes = Vec::new();
        }
    }
}

impl io::Write for FrameBuf {
    #[inline]
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.extend_from_slice(data);
        Ok(data.len())
    }

    #[inline]
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.extend_from_slice(data);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl crate::frame::FrameSink for FrameBuf {}

impl crate::frame::sealed::Sink for FrameBuf {
    // Inline: called for every item of a chunk (as `append` is for every
    // small value).
    #[inline]
    fn len(&self) -> usize {
        FrameBuf::len(self)
    }
    fn reserve(&mut self, additional: usize) {
        if self.bytes.capacity() == 0 {
            // What `begin_frame` would take, or more if the frame needs it.
            self.bytes.reserve_exact(additional.max(FIRST_FRAME));
        } else {
            self.bytes.reserve(additional);
        }
    }
    #[inline]
    fn append(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn truncate(&mut self, len: usize) {
        FrameBuf::truncate(self, len);
    }
    fn patch(&mut self, at: usize, bytes: &[u8]) {
        FrameBuf::patch(self, at, bytes);
    }
    fn bytes_at(&self, range: std::ops::Range<usize>) -> &[u8] {
        self.slice(range)
    }
    fn is_local(&self) -> bool {
        self.local
    }
    fn begin(&mut self) -> usize {
        self.begin_frame();
        self.bytes.len()
    }
    fn abort(&mut self, _start: usize) {
        self.abort_frame();
    }
    fn finish(&mut self, attached: Vec<SharedBytes>) -> io::Result<()> {
        self.end_frame(attached)
    }
}

/// One encoded frame, kept whole to be sent (maybe more than once: a call
/// goes again to the worker that replaces a dead one).
#[derive(Debug)]
pub enum EncodedFrame {
    /// A plain frame, for any channel.
    Bytes(FrameBytes),
    /// A frame with descriptors attached (its body in a memory file, or
    /// shared buffers): only a local channel carries it.
    Descriptors(DescriptorFrame),
}

impl EncodedFrame {
    /// The bytes the frame takes on the socket (a descriptor frame's body
    /// in a memory file is not counted).
    pub fn len(&self) -> usize {
        match self {
            EncodedFrame::Bytes(bytes) => bytes.len(),
            EncodedFrame::Descriptors(frame) => frame.len(),
        }
    }

    /// Whether the frame has no byte (never, for a frame encoded whole).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The bytes of a plain frame: a small one (a call of small arguments) in
/// place, so that an [`EncodedFrame`] in its shared handle is one
/// allocation; a larger one in a vector of its own.
#[derive(Clone, PartialEq, Eq)]
pub struct FrameBytes(Held);

#[derive(Clone, PartialEq, Eq)]
enum Held {
    Inline { len: u8, bytes: [u8; INLINE_FRAME] },
    Heap(Vec<u8>),
}

/// The largest frame kept in place: a task call with a name and arguments
/// of a few dozen bytes each (a `noop` call's frame is 52 bytes). No
/// larger, so that an `Arc<EncodedFrame>` takes at most 120 bytes: blocks
/// up to 128 bytes, header included, are what glibc's allocator frees on
/// its fast path (a frame is freed by another thread than its maker).
const INLINE_FRAME: usize = 96;

// An `Arc` adds its two counts.
const _: () = assert!(2 * size_of::<usize>() + size_of::<EncodedFrame>() <= 120);

impl FrameBytes {
    /// `bytes` in place, if they fit.
    fn inline(bytes: &[u8]) -> Option<FrameBytes> {
        let mut held = [0; INLINE_FRAME];
        held.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(FrameBytes(Held::Inline {
            len: bytes.len() as u8,
            bytes: held,
        }))
    }
}

impl From<Vec<u8>> for FrameBytes {
    fn from(bytes: Vec<u8>) -> FrameBytes {
        FrameBytes(Held::Heap(bytes))
    }
}

impl std::ops::Deref for FrameBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Held::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Held::Heap(bytes) => bytes,
        }
    }
}

impl std::fmt::Debug for FrameBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameBytes")
            .field("len", &self.len())
            .field("inline", &matches!(self.0, Held::Inline { .. }))
            .finish()
    }
}

/// A frame with descriptors attached, sendable only on a
/// [`UnixStream`]: its bytes are no frame without the descriptors, so
/// nothing else can send them.
#[derive(Debug)]
pub struct DescriptorFrame {
    bytes: Vec<u8>,
    fds: Vec<Attached>,
}

impl DescriptorFrame {
    /// The bytes the frame takes on the socket.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the frame has no byte (never: its header is there).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// How many descriptors travel with it.
    pub fn descriptors(&self) -> usize {
        self.fds.len()
    }

    /// Whether its body is in a memory file (rather than after its header).
    pub fn body_in_shared_memory(&self) -> bool {
        matches!(self.fds.first(), Some(Attached::Body(_)))
    }

    /// A copy of its body, read back from its memory file, when that file
    /// is all the frame carries: `None` if the body follows the header or
    /// shared buffers travel with it (its bytes then name them by their
    /// place in the frame, so they mean nothing on their own). For rare
    /// paths, such as running the items of a chunk again one by one.
    pub fn spilled_body(&self) -> Option<io::Result<Vec<u8>>> {
        let [Attached::Body(fd)] = self.fds.as_slice() else {
            return None;
        };
        let read = || {
            let len = os::sealed_len(fd.as_fd())?;
            Ok(os::Mapping::new(fd.as_fd(), len, true)?.bytes().to_vec())
        };
        Some(read())
    }

    /// Sends the frame's bytes from `offset` (how many went already) on
    /// `stream`, the descriptors with its first byte; returns how many
    /// more bytes went. Without blocking when `nonblocking`, then failing
    /// with [`io::ErrorKind::WouldBlock`] if the socket takes nothing.
    pub fn send(&self, stream: &UnixStream, offset: usize, nonblocking: bool) -> io::Result<usize> {
        loop {
            let sent = if offset == 0 {
                let fds: Vec<BorrowedFd<'_>> = self.fds.iter().map(Attached::fd).collect();
                os::send_with_fds(stream, &self.bytes, &fds, nonblocking)
            } else {
                os::send_bytes(stream, &self.bytes[offset..], nonblocking)
            };
            match sent {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                sent => return sent,
            }
        }
    }
}

/// The header of a descriptor frame.
pub(super) fn descriptor(fds: usize, flags: u16, len: usize) -> [u8; DESCRIPTOR_LEN] {
    let mut out = [0; DESCRIPTOR_LEN];
    out[..4].copy_from_slice(&FD_FRAME.to_le_bytes());
    out[4..6].copy_from_slice(&(fds as u16).to_le_bytes());
    out[6..8].copy_from_slice(&flags.to_le_bytes());
    out[8..].copy_from_slice(&(len as u64).to_le_bytes());
    out
}

fn round_up(len: usize) -> usize {
    len.div_ceil(SPILL_STEP) * SPILL_STEP
}
