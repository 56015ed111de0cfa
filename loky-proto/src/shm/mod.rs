//! Large frames and shared buffers through shared memory, on local
//! channels (memory files are Linux only: elsewhere every frame stays on
//! the socket and shared buffers on the heap).
//!
//! A local channel is a Unix socket between an executor and a worker it
//! spawned, so file descriptors can travel with its bytes (`SCM_RIGHTS`).
//! Two things use that:
//!
//! - A frame whose body exceeds a threshold is encoded straight into a
//!   memory file ([`FrameBuf`]), sealed (no one can write, shrink or grow it
//!   any more) and sent as a descriptor; the receiver maps it read-only and
//!   decodes from the mapping ([`LocalFrames`]).
//! - A [`SharedBytes`](crate::SharedBytes) serialized in a frame attaches
//!   its own memory file to the frame and writes only its index there.
//!
//! # Frame format
//!
//! A plain frame is unchanged: a little-endian `u32` body length (never 0:
//! no message encodes to nothing), then the body. A *descriptor frame*
//! starts with a `u32` 0, then a 12-byte rest of its header:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | `0`: a descriptor frame |
//! | 4..6 | `u16`: descriptors attached (1 to 64) |
//! | 6..8 | `u16` flags: bit 0 set when the body is the first descriptor |
//! | 8..16 | `u64`: body length |
//!
//! followed by the body itself unless it is in the first descriptor. The
//! descriptors travel with the first byte of the header (the receiver keeps
//! descriptors that arrive ahead of their frame in order). Each must be a
//! sealed memory file; a body's file must have the announced length.
//!
//! Only a [`UnixStream`](std::os::unix::net::UnixStream) can send or
//! receive these frames ([`FrameBuf::send_to`], [`LocalFrames::fill_from`]):
//! the generic framing ([`encode_frame`](crate::encode_frame),
//! [`FrameBuffer`](crate::FrameBuffer)) never produces them, and serializes
//! shared buffers as bytes, so a remote channel never carries a descriptor.

mod buf;
mod journal;
pub(crate) mod os;
mod reader;
#[cfg(test)]
mod tests;

pub use buf::{DescriptorFrame, EncodedFrame, FrameBuf, FrameBytes};
pub use journal::{DeathNote, JOURNAL_LEN, JournalReader, JournalWriter};
pub use os::send_with_fds_blocking as send_with_fds;
pub use reader::{Frame, LocalFrames, MappedBody};

/// The length a descriptor frame's first header word announces.
pub(crate) const FD_FRAME: u32 = 0;

/// Bytes of a descriptor frame's header.
pub(crate) const DESCRIPTOR_LEN: usize = 16;

/// Descriptor frame flag: the body is in the first descriptor.
pub(crate) const BODY_IN_FD: u16 = 1;

/// At most this many descriptors may wait for their frame.
pub(crate) const MAX_QUEUED_FDS: usize = 4 * os::MAX_FDS_PER_MESSAGE;

/// Default body size past which a frame for a local worker travels in
/// shared memory: 1 MiB.
pub const DEFAULT_SHM_THRESHOLD: usize = 1 << 20;
