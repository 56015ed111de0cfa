//! The wire protocol of loky-rs.
//!
//! A parent process and each of its worker processes talk over a private
//! channel (any `Read + Write` stream) in frames: a little-endian `u32` body
//! length followed by one MessagePack message. The worker speaks first with a
//! [`Hello`] naming its protocol version, pid, program identity and task
//! table; then the parent sends [`Call`]s (of named tasks) and [`FnCall`]s
//! (of functions, as [`FnRef`]s) and the worker answers each with a
//! [`Reply`], in order.
//!
//! This crate also holds the typed [`Task`] handle shared by applications and
//! worker programs, the code both sides run for a call ([`invoke()`]), the
//! identity and role of this program ([`program`]), the environment
//! variables an executor sets for its workers ([`env`](mod@env)) and the
//! documented worker exit codes ([`exit_code`]).
//! With the feature `remote`, the module `remote` holds what an executor and
//! its workers on other machines share: launch tickets, the per-executor
//! certificate authority and the relay of a TLS link with heartbeats.
//!
//! ```
//! use loky_proto::{decode_body, encode_frame, Call, CallKind, Request, HEADER_LEN};
//!
//! let call = Request::Call(Call {
//!     id: 7,
//!     task: "square".into(),
//!     kind: CallKind::Single,
//!     args: rmp_serde::to_vec(&12i64).unwrap().into(),
//! });
//! let mut frame = Vec::new();
//! encode_frame(&call, &mut frame, loky_proto::DEFAULT_MAX_FRAME).unwrap();
//! let back: Request<'_> = decode_body(&frame[HEADER_LEN..]).unwrap();
//! assert_eq!(back, call);
//! ```

#![deny(missing_docs)]

pub mod env;
pub mod exit_code;
mod frame;
mod function;
mod hot;
mod inplace;
mod invoke;
mod message;
mod os;
pub mod program;
#[cfg(feature = "remote")]
pub mod remote;
mod scalar;
mod shared;
#[cfg(unix)]
pub mod shm;
mod task;
mod typename;

pub use frame::{
    ABSOLUTE_MAX_FRAME, DEFAULT_MAX_FRAME, FrameBuffer, FrameError, FrameSink, HEADER_LEN,
    decode_body, encode_frame, read_frame, split_array, write_frame,
};
pub use function::{FnRef, FnRefError};
pub use inplace::{encode_call_frame, encode_fn_call_frame, encode_value_reply_frame};
pub use invoke::{Runtime, invoke};
pub use message::{
    Call, CallError, CallKind, FnCall, Hello, Outcome, PROTOCOL_VERSION, PanicInfo, Progress,
    Reply, Request, Response, RetireReason, TaskInfo,
};
pub use shared::{Attachments, SHARE_FROM, SharedAttachments, SharedBytes, outside_frames};
pub use task::{Payload, Signature, Task};
pub use typename::{same_type_name, short_type_name, without_crate_names};

/// Encodes a task argument or output (MessagePack with field names, so any
/// serde type round-trips).
pub fn encode_payload<T: serde::Serialize + ?Sized>(
    value: &T,
) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    let mut out = Vec::new();
    encode_payload_into(value, &mut out)?;
    Ok(out)
}

/// Appends the encoding of `value` (as [`encode_payload`] makes it) to `out`.
/// On error `out` may hold a partial value; truncate it back.
pub fn encode_payload_into<T: serde::Serialize + ?Sized, W: std::io::Write + ?Sized>(
    value: &T,
    out: &mut W,
) -> Result<(), rmp_serde::encode::Error> {
    scalar::encode(value, out)
}

/// Appends a MessagePack array header for `len` elements: followed by `len`
/// encoded values it is the encoding of a sequence of them.
pub fn encode_array_header<O: FrameSink + ?Sized>(len: usize, out: &mut O) {
    match len {
        0..=15 => out.append(&[0x90 | len as u8]),
        16..=0xffff => {
            out.append(&[0xdc]);
            out.append(&(len as u16).to_be_bytes());
        }
        _ => {
            out.append(&[0xdd]);
            out.append(&(len as u32).to_be_bytes());
        }
    }
}

/// Decodes a task argument or output encoded by [`encode_payload`].
pub fn decode_payload<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, rmp_serde::decode::Error> {
    match scalar::decode(bytes) {
        Some(value) => Ok(value),
        None => rmp_serde::from_slice(bytes),
    }
}
