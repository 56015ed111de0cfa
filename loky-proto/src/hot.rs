//! The envelopes of the two frames every call makes, a [`Request::Call`]
//! (or a [`Request::CallFn`]) and a [`Response::Reply`] with an
//! [`Outcome::Value`], written and read by hand.
//!
//! They are byte for byte what `rmp_serde`'s `write_named` writes, as every
//! other frame is written (an enum as a one-entry map from its variant's
//! name to its fields, a struct as a map from its field names to their
//! values), so either side may use either way. By hand, a call's frames
//! skip serde's variant names checked as UTF-8 and matched one by one, its
//! field-by-field dispatch and, when reading, the second walk over the body
//! that checks nothing trails the message: work that a burst of small calls
//! pays in full on every thread it crosses.
//!
//! Reading falls back to serde for anything else, so the result is always
//! what [`decode_body`] gives.

use std::borrow::Cow;

use crate::frame::sealed::Sink;
use crate::frame::{FrameError, decode_body};
use crate::function::FnRef;
use crate::message::{Call, CallKind, FnCall, Outcome, Reply, Request, Response};
use crate::program::IdKind;

/// `{"Call": {"id": ` : a map of one entry from the variant's name to a
/// map of 4 fields, and the first field's name.
const CALL: &[u8] = b"\x81\xa4Call\x84\xa2id";
/// The names of the call's other fields.
const TASK: &[u8] = b"\xa4task";
const KIND: &[u8] = b"\xa4kind";
const ARGS: &[u8] = b"\xa4args";
/// `{"CallFn": {"id": ` : the variant, a map of 4 fields, the first's
/// name.
const CALL_FN: &[u8] = b"\x81\xa6CallFn\x84\xa2id";
/// `"function": {"trampoline": ` : the call's second field, a map of 3
/// fields, and its first field's name.
const FUNCTION: &[u8] = b"\xa8function\x83\xaatrampoline";
/// The name of the reference's second field.
const OFFSET: &[u8] = b"\xa8function";
/// `"program": {"kind": ` : the reference's third field, a map of 2
/// fields, and its first field's name.
const PROGRAM: &[u8] = b"\xa7program\x82\xa4kind";
/// The name of the program identity's second field.
const BYTES: &[u8] = b"\xa5bytes";
/// The kinds of program identity, unit variants written as their names.
const BUILD_ID: &[u8] = b"\xa7BuildId";
const FILE_ID: &[u8] = b"\xa6FileId";
const UNKNOWN: &[u8] = b"\xa7Unknown";
/// `{"Reply": {"id": ` : the variant, a map of 2 fields, the first's name.
const REPLY: &[u8] = b"\x81\xa5Reply\x82\xa2id";
/// `"outcome": {"Value": ` : the second field and the outcome's variant.
const VALUE: &[u8] = b"\xa7outcome\x81\xa5Value";
/// The call kinds, unit variants written as their names.
const SINGLE: &[u8] = b"\xa6Single";
const CHUNK: &[u8] = b"\xa5Chunk";

/// The envelope of a [`Request::Call`] frame up to its arguments:
/// everything serde writes before the `bin` value of `args`.
pub(crate) struct CallEnvelope<'t> {
    id: Small<9>,
    header: Small<5>,
    task: &'t str,
    kind: &'static [u8],
}

impl<'t> CallEnvelope<'t> {
    /// Fails only for a task name longer than MessagePack can carry
    /// (4 GiB).
    pub(crate) fn new(id: u64, task: &'t str, kind: CallKind) -> Result<Self, FrameError> {
        let header = str_header(task.len()).ok_or(FrameError::TooLarge {
            len: task.len(),
            max: u32::MAX as usize,
        })?;
        Ok(CallEnvelope {
            id: uint(id),
            header,
            task,
            kind: call_kind(kind),
        })
    }

    /// How many bytes [`write`](Self::write) appends.
    pub(crate) fn len(&self) -> usize {
        let fixed = CALL.len() + TASK.len() + KIND.len() + ARGS.len();
        fixed + self.id.len + self.header.len + self.task.len() + self.kind.len()
    }

    pub(crate) fn write(&self, out: &mut impl Sink) {
        out.append(CALL);
        out.append(self.id.as_slice());
        out.append(TASK);
        out.append(self.header.as_slice());
        out.append(self.task.as_bytes());
        out.append(KIND);
        out.append(self.kind);
        out.append(ARGS);
    }
}

/// The envelope of a [`Request::CallFn`] frame up to its arguments:
/// everything serde writes before the `bin` value of `args`.
pub(crate) struct FnCallEnvelope<'f> {
    id: Small<9>,
    trampoline: Small<9>,
    function: Small<9>,
    id_kind: &'static [u8],
    bytes_header: Small<5>,
    bytes: &'f [u8],
    kind: &'static [u8],
}

impl<'f> FnCallEnvelope<'f> {
    /// Fails only for a program identity longer than MessagePack can carry
    /// (4 GiB).
    pub(crate) fn new(id: u64, function: &'f FnRef, kind: CallKind) -> Result<Self, FrameError> {
        let program = function.program();
        let bytes = program.bytes.as_slice();
        let bytes_header = bin_header(bytes.len()).ok_or(FrameError::TooLarge {
            len: bytes.len(),
            max: u32::MAX as usize,
        })?;
        let (trampoline, offset) = function.offsets();
        Ok(FnCallEnvelope {
            id: uint(id),
            trampoline: sint(trampoline),
            function: sint(offset),
            id_kind: match program.kind {
                IdKind::BuildId => BUILD_ID,
                IdKind::FileId => FILE_ID,
                IdKind::Unknown => UNKNOWN,
            },
            bytes_header,
            bytes,
            kind: call_kind(kind),
        })
    }

    /// How many bytes [`write`](Self::write) appends.
    pub(crate) fn len(&self) -> usize {
        let fixed = CALL_FN.len()
            + FUNCTION.len()
            + OFFSET.len()
            + PROGRAM.len()
            + BYTES.len()
            + KIND.len()
            + ARGS.len();
        fixed
            + self.id.len
            + self.trampoline.len
            + self.function.len
            + self.id_kind.len()
            + self.bytes_header.len
            + self.bytes.len()
            + self.kind.len()
    }

    pub(crate) fn write(&self, out: &mut impl Sink) {
        out.append(CALL_FN);
        out.append(self.id.as_slice());
        out.append(FUNCTION);
        out.append(self.trampoline.as_slice());
        out.append(OFFSET);
        out.append(self.function.as_slice());
        out.append(PROGRAM);
        out.append(self.id_kind);
        out.append(BYTES);
        out.append(self.bytes_header.as_slice());
        out.append(self.bytes);
        out.append(KIND);
        out.append(self.kind);
        out.append(ARGS);
    }
}

/// A call kind as serde writes it: its name.
fn call_kind(kind: CallKind) -> &'static [u8] {
    match kind {
        CallKind::Single => SINGLE,
        CallKind::Chunk => CHUNK,
    }
}

/// The envelope of a [`Response::Reply`] frame with an [`Outcome::Value`],
/// up to its value.
pub(crate) struct ValueReplyEnvelope {
    id: Small<9>,
}

impl ValueReplyEnvelope {
    pub(crate) fn new(id: u64) -> Self {
        ValueReplyEnvelope { id: uint(id) }
    }

    /// How many bytes [`write`](Self::write) appends.
    pub(crate) fn len(&self) -> usize {
        REPLY.len() + self.id.len + VALUE.len()
    }

    pub(crate) fn write(&self, out: &mut impl Sink) {
        out.append(REPLY);
        out.append(self.id.as_slice());
        out.append(VALUE);
    }
}

impl<'a> Request<'a> {
    /// Decodes a frame body holding one request: the same as
    /// [`decode_body::<Request>`](decode_body), faster for a
    /// [`Request::Call`] and a [`Request::CallFn`].
    pub fn decode(body: &'a [u8]) -> Result<Self, FrameError> {
        if let Some(call) = read_call(body) {
            return Ok(Request::Call(call));
        }
        match read_fn_call(body) {
            Some(call) => Ok(Request::CallFn(call)),
            None => decode_body(body),
        }
    }
}

impl<'a> Response<'a> {
    /// Decodes a frame body holding one response: the same as
    /// [`decode_body::<Response>`](decode_body), faster for a
    /// [`Response::Reply`] with an [`Outcome::Value`].
    pub fn decode(body: &'a [u8]) -> Result<Self, FrameError> {
        match read_value_reply(body) {
            Some(reply) => Ok(Response::Reply(reply)),
            None => decode_body(body),
        }
    }
}

/// The call `body` holds if it is written as [`CallEnvelope`] writes it,
/// its arguments a `bin` that ends the body.
fn read_call(body: &[u8]) -> Option<Call<'_>> {
    let mut rest = body.strip_prefix(CALL)?;
    let id = take_uint(&mut rest)?;
    rest = rest.strip_prefix(TASK)?;
    let task = take_str(&mut rest)?;
    let (kind, args) = take_kind_and_args(rest)?;
    Some(Call {
        id,
        task: Cow::Borrowed(task),
        kind,
        args: Cow::Borrowed(args),
    })
}

/// The function call `body` holds if it is written as [`FnCallEnvelope`]
/// writes it, its arguments a `bin` that ends the body.
fn read_fn_call(body: &[u8]) -> Option<FnCall<'_>> {
    let mut rest = body.strip_prefix(CALL_FN)?;
    let id = take_uint(&mut rest)?;
    rest = rest.strip_prefix(FUNCTION)?;
    let trampoline = take_sint(&mut rest)?;
    rest = rest.strip_prefix(OFFSET)?;
    let function = take_sint(&mut rest)?;
    rest = rest.strip_prefix(PROGRAM)?;
    let id_kind = take_id_kind(&mut rest)?;
    rest = rest.strip_prefix(BYTES)?;
    let bytes = take_bin(&mut rest)?;
    let (kind, args) = take_kind_and_args(rest)?;
    Some(FnCall {
        id,
        function: FnRef::from_wire(trampoline, function, id_kind, bytes),
        kind,
        args: Cow::Borrowed(args),
    })
}

/// The last two fields of a call, its kind and its arguments, which end
/// the body.
fn take_kind_and_args(rest: &[u8]) -> Option<(CallKind, &[u8])> {
    let mut rest = rest.strip_prefix(KIND)?;
    let kind = take_call_kind(&mut rest)?;
    Some((kind, take_last_bin(rest.strip_prefix(ARGS)?)?))
}

/// Takes a call kind written as its name.
fn take_call_kind(rest: &mut &[u8]) -> Option<CallKind> {
    take_name(
        rest,
        &[(SINGLE, CallKind::Single), (CHUNK, CallKind::Chunk)],
    )
}

/// Takes a kind of program identity written as its name.
fn take_id_kind(rest: &mut &[u8]) -> Option<IdKind> {
    take_name(
        rest,
        &[
            (BUILD_ID, IdKind::BuildId),
            (FILE_ID, IdKind::FileId),
            (UNKNOWN, IdKind::Unknown),
        ],
    )
}

/// Takes the first of `names` that `rest` starts with, as its value.
fn take_name<T: Copy>(rest: &mut &[u8], names: &[(&[u8], T)]) -> Option<T> {
    names.iter().find_map(|&(name, value)| {
        let after = rest.strip_prefix(name)?;
        *rest = after;
        Some(value)
    })
}

/// The reply `body` holds if it is written as [`ValueReplyEnvelope`]
/// writes it, its value a `bin` that ends the body.
fn read_value_reply(body: &[u8]) -> Option<Reply<'_>> {
    let mut rest = body.strip_prefix(REPLY)?;
    let id = take_uint(&mut rest)?;
    let value = take_last_bin(rest.strip_prefix(VALUE)?)?;
    Some(Reply {
        id,
        outcome: Outcome::Value(Cow::Borrowed(value)),
    })
}

/// A few bytes of MessagePack made on the stack: a number, a header.
#[derive(Clone, Copy)]
struct Small<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Small<N> {
    /// `marker`, then the last `len - 1` bytes of `be`.
    fn new(marker: u8, be: &[u8], len: usize) -> Self {
        let mut bytes = [0; N];
        bytes[0] = marker;
        bytes[1..len].copy_from_slice(&be[be.len() + 1 - len..]);
        Small { bytes, len }
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// `n` as MessagePack writes an unsigned integer, in its shortest form.
fn uint(n: u64) -> Small<9> {
    let be = n.to_be_bytes();
    match n {
        0..0x80 => Small::new(n as u8, &be, 1),
        0x80..=0xff => Small::new(0xcc, &be, 2),
        0x100..=0xffff => Small::new(0xcd, &be, 3),
        0x1_0000..=0xffff_ffff => Small::new(0xce, &be, 5),
        _ => Small::new(0xcf, &be, 9),
    }
}

/// `n` as MessagePack writes a signed integer (`rmp::encode::write_sint`):
/// in the shortest unsigned form if it is not negative, else in the
/// shortest signed one.
fn sint(n: i64) -> Small<9> {
    let mut bytes = [0; 9];
    let len = {
        let mut free = &mut bytes[..];
        rmp::encode::write_sint(&mut free, n).expect("9 bytes hold any integer");
        9 - free.len()
    };
    Small { bytes, len }
}

/// The header of a `bin` of `len` bytes, in its shortest form; `None` past
/// 4 GiB.
fn bin_header(len: usize) -> Option<Small<5>> {
    let be = u32::try_from(len).ok()?.to_be_bytes();
    Some(match len {
        0..=0xff => Small::new(0xc4, &be, 2),
        0x100..=0xffff => Small::new(0xc5, &be, 3),
        _ => Small::new(0xc6, &be, 5),
    })
}

/// The header of a string of `len` bytes, in its shortest form; `None`
/// past 4 GiB.
fn str_header(len: usize) -> Option<Small<5>> {
    let be = u32::try_from(len).ok()?.to_be_bytes();
    Some(match len {
        0..32 => Small::new(0xa0 | len as u8, &be, 1),
        32..=0xff => Small::new(0xd9, &be, 2),
        0x100..=0xffff => Small::new(0xda, &be, 3),
        _ => Small::new(0xdb, &be, 5),
    })
}

/// Takes `n` bytes off the front of `rest`.
fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, tail) = rest.split_at_checked(n)?;
    *rest = tail;
    Some(head)
}

/// Takes a big-endian number of `N` bytes off the front of `rest`.
fn take_be<const N: usize>(rest: &mut &[u8]) -> Option<u64> {
    let bytes: [u8; N] = take(rest, N)?.try_into().ok()?;
    Some(bytes.iter().fold(0, |n, b| (n << 8) | u64::from(*b)))
}

/// Takes an unsigned integer in any of MessagePack's unsigned forms.
fn take_uint(rest: &mut &[u8]) -> Option<u64> {
    let (&marker, tail) = rest.split_first()?;
    *rest = tail;
    match marker {
        0x00..=0x7f => Some(u64::from(marker)),
        0xcc => take_be::<1>(rest),
        0xcd => take_be::<2>(rest),
        0xce => take_be::<4>(rest),
        0xcf => take_be::<8>(rest),
        _ => None,
    }
}

/// Takes a signed integer in any of MessagePack's integer forms, if it
/// fits an `i64`.
fn take_sint(rest: &mut &[u8]) -> Option<i64> {
    rmp::decode::read_int(rest).ok()
}

/// Takes a UTF-8 string in any of MessagePack's string forms.
fn take_str<'a>(rest: &mut &'a [u8]) -> Option<&'a str> {
    let (&marker, tail) = rest.split_first()?;
    *rest = tail;
    let len = match marker {
        0xa0..=0xbf => u64::from(marker & 0x1f),
        0xd9 => take_be::<1>(rest)?,
        0xda => take_be::<2>(rest)?,
        0xdb => take_be::<4>(rest)?,
        _ => return None,
    };
    std::str::from_utf8(take(rest, usize::try_from(len).ok()?)?).ok()
}

/// Takes a `bin` value in any of MessagePack's `bin` forms.
fn take_bin<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (&marker, tail) = rest.split_first()?;
    *rest = tail;
    let len = match marker {
        0xc4 => take_be::<1>(rest)?,
        0xc5 => take_be::<2>(rest)?,
        0xc6 => take_be::<4>(rest)?,
        _ => return None,
    };
    take(rest, usize::try_from(len).ok()?)
}

/// The bytes of a `bin` value that is all of `rest`, in any of
/// MessagePack's `bin` forms.
fn take_last_bin(mut rest: &[u8]) -> Option<&[u8]> {
    let bin = take_bin(&mut rest)?;
    rest.is_empty().then_some(bin)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::message::PanicInfo;

    /// What serde writes for `msg`, as frames are written.
    fn serde_bytes_of<T: serde::Serialize>(msg: &T) -> Vec<u8> {
        rmp_serde::encode::to_vec_named(msg).unwrap()
    }

    /// Serde's encoding of a message whose payload is `bin`-encoded empty
    /// bytes, without that payload: the envelope.
    fn serde_envelope<T: serde::Serialize>(msg: &T) -> Vec<u8> {
        let mut bytes = serde_bytes_of(msg);
        assert_eq!(bytes[bytes.len() - 2..], [0xc4, 0], "the payload is last");
        bytes.truncate(bytes.len() - 2);
        bytes
    }

    fn call(id: u64, task: &str, kind: CallKind, args: &[u8]) -> Request<'static> {
        Request::Call(Call {
            id,
            task: Cow::Owned(task.to_owned()),
            kind,
            args: Cow::Owned(args.to_vec()),
        })
    }

    fn fn_call(id: u64, function: FnRef, kind: CallKind, args: &[u8]) -> Request<'static> {
        Request::CallFn(FnCall {
            id,
            function,
            kind,
            args: Cow::Owned(args.to_vec()),
        })
    }

    fn value_reply(id: u64, value: &[u8]) -> Response<'static> {
        Response::Reply(Reply {
            id,
            outcome: Outcome::Value(Cow::Owned(value.to_vec())),
        })
    }

    fn kinds() -> impl Strategy<Value = CallKind> {
        prop_oneof![Just(CallKind::Single), Just(CallKind::Chunk)]
    }

    /// Ids at the edges of every width, and anything.
    fn ids() -> impl Strategy<Value = u64> {
        prop_oneof![
            prop::sample::select(vec![
                0,
                0x7f,
                0x80,
                0xff,
                0x100,
                0xffff,
                0x1_0000,
                0xffff_ffff,
                0x1_0000_0000,
                u64::MAX
            ]),
            any::<u64>(),
        ]
    }

    /// Offsets at the edges of every signed and unsigned width, and
    /// anything.
    fn offsets() -> impl Strategy<Value = i64> {
        let edges = [0i64, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x1_0000, 0xffff_ffff];
        let mut picks: Vec<i64> = edges.iter().flat_map(|&n| [n, n + 1]).collect();
        picks.extend([-1, -32, -33, -0x80, -0x81, -0x8000, -0x8001]);
        picks.extend([-0x8000_0000, -0x8000_0001, i64::MIN, i64::MAX]);
        prop_oneof![prop::sample::select(picks), any::<i64>()]
    }

    /// References of any offsets, from programs of every kind of identity,
    /// their bytes around the `bin` header widths.
    fn functions() -> impl Strategy<Value = FnRef> {
        let kinds = prop::sample::select(vec![IdKind::BuildId, IdKind::FileId, IdKind::Unknown]);
        let bytes = prop_oneof![
            prop::collection::vec(any::<u8>(), 0..40),
            prop::collection::vec(any::<u8>(), 250..300),
        ];
        (offsets(), offsets(), kinds, bytes)
            .prop_map(|(t, f, kind, bytes)| FnRef::from_wire(t, f, kind, &bytes))
    }

    /// Task names around every string header width.
    fn names() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z_:]{0,40}",
            (0usize..300).prop_map(|n| "é".repeat(n / 2) + &"x".repeat(n % 2)),
            Just("t".repeat(70_000)),
        ]
    }

    proptest! {
        #[test]
        fn a_call_envelope_is_what_serde_writes(id in ids(), task in names(), kind in kinds()) {
            let mut ours = Vec::new();
            let envelope = CallEnvelope::new(id, &task, kind).unwrap();
            envelope.write(&mut ours);
            prop_assert_eq!(ours.len(), envelope.len());
            prop_assert_eq!(ours, serde_envelope(&call(id, &task, kind, &[])));
        }

        #[test]
        fn a_function_call_envelope_is_what_serde_writes(
            id in ids(),
            function in functions(),
            kind in kinds(),
        ) {
            let mut ours = Vec::new();
            let envelope = FnCallEnvelope::new(id, &function, kind).unwrap();
            envelope.write(&mut ours);
            prop_assert_eq!(ours.len(), envelope.len());
            prop_assert_eq!(ours, serde_envelope(&fn_call(id, function, kind, &[])));
        }

        #[test]
        fn a_function_call_reads_as_serde_reads_it(
            id in ids(),
            function in functions(),
            kind in kinds(),
            args in prop::collection::vec(any::<u8>(), 0..300),
        ) {
            let msg = fn_call(id, function, kind, &args);
            let body = serde_bytes_of(&msg);
            prop_assert_eq!(read_fn_call(&body).map(Request::CallFn), Some(msg.clone()));
            prop_assert_eq!(Request::decode(&body).unwrap(), msg);
        }

        #[test]
        fn a_value_reply_envelope_is_what_serde_writes(id in ids()) {
            let mut ours = Vec::new();
            let envelope = ValueReplyEnvelope::new(id);
            envelope.write(&mut ours);
            prop_assert_eq!(ours.len(), envelope.len());
            prop_assert_eq!(ours, serde_envelope(&value_reply(id, &[])));
        }

        #[test]
        fn a_call_reads_as_serde_reads_it(
            id in ids(),
            task in names(),
            kind in kinds(),
            args in prop::collection::vec(any::<u8>(), 0..300),
        ) {
            let msg = call(id, &task, kind, &args);
            let body = serde_bytes_of(&msg);
            prop_assert_eq!(read_call(&body), match &msg {
                Request::Call(call) => Some(call.clone()),
                Request::CallFn(_) => None,
            });
            prop_assert_eq!(Request::decode(&body).unwrap(), msg);
        }

        #[test]
        fn a_value_reply_reads_as_serde_reads_it(
            id in ids(),
            value in prop::collection::vec(any::<u8>(), 0..70_000),
        ) {
            let msg = value_reply(id, &value);
            let body = serde_bytes_of(&msg);
            prop_assert!(read_value_reply(&body).is_some());
            prop_assert_eq!(Response::decode(&body).unwrap(), msg);
        }

        /// Whatever a changed byte, a cut or an extra byte makes of a frame,
        /// the fast readers give what serde gives, or leave it to serde.
        #[test]
        fn any_body_reads_as_serde_reads_it(
            id in ids(),
            task in "[a-z]{0,40}",
            function in functions(),
            args in prop::collection::vec(any::<u8>(), 0..40),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            edit in 0..3u8,
        ) {
            let edited = |mut body: Vec<u8>| {
                let i = at.index(body.len());
                match edit {
                    0 => body[i] = byte,
                    1 => body.truncate(i),
                    _ => body.insert(i, byte),
                }
                body
            };
            let body = edited(serde_bytes_of(&call(id, &task, CallKind::Single, &args)));
            if let Some(call) = read_call(&body) {
                prop_assert_eq!(Ok(Request::Call(call)), decode_body::<Request<'_>>(&body).map_err(|e| e.to_string()));
            }
            let body = edited(serde_bytes_of(&fn_call(id, function, CallKind::Chunk, &args)));
            if let Some(call) = read_fn_call(&body) {
                prop_assert_eq!(Ok(Request::CallFn(call)), decode_body::<Request<'_>>(&body).map_err(|e| e.to_string()));
            }
            let body = edited(serde_bytes_of(&value_reply(id, &args)));
            if let Some(reply) = read_value_reply(&body) {
                prop_assert_eq!(Ok(Response::Reply(reply)), decode_body::<Response<'_>>(&body).map_err(|e| e.to_string()));
            }
        }
    }

    #[test]
    fn other_messages_fall_back_to_serde() {
        let panic = Response::Reply(Reply {
            id: 3,
            outcome: Outcome::Panic(PanicInfo {
                message: "boom".into(),
                location: None,
                backtrace: String::new(),
            }),
        });
        let body = serde_bytes_of(&panic);
        assert!(read_value_reply(&body).is_none());
        assert_eq!(Response::decode(&body).unwrap(), panic);
    }

    #[test]
    fn errors_are_serde_errors() {
        let mut body = serde_bytes_of(&call(1, "t", CallKind::Single, b"\x01"));
        body.push(0);
        assert!(matches!(
            Request::decode(&body),
            Err(FrameError::TrailingBytes(1))
        ));
        let mut bad_name = serde_bytes_of(&call(1, "xy", CallKind::Single, b""));
        let at = bad_name.windows(2).position(|w| w == b"xy").unwrap();
        bad_name[at] = 0xff;
        assert!(read_call(&bad_name).is_none());
        assert!(matches!(
            Request::decode(&bad_name),
            Err(FrameError::Decode(_))
        ));
    }
}
