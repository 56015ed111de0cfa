//! Frames whose payload is encoded in place.
//!
//! A call's arguments and a reply's value are the last field of their
//! message, so a frame can be written as the message's envelope, a `bin 32`
//! header, then the payload encoded straight into the same buffer. The
//! payload is never encoded into a buffer of its own and copied: for large
//! arguments and results that copy (and its fresh memory) costs more than
//! the socket itself. Decoders read these frames as any other, since
//! MessagePack lets a `bin 32` header carry any length.

use crate::frame::{ABSOLUTE_MAX_FRAME, FrameError, FrameSink, HEADER_LEN, in_frame_context};
use crate::function::FnRef;
use crate::hot;
use crate::message::CallKind;

/// MessagePack's marker of a `bin 32` value.
const BIN32: u8 = 0xc6;

/// Appends a [`Request::Call`](crate::Request::Call) frame to `out`, its arguments written by
/// `encode_args` directly after the envelope.
///
/// Gives back `encode_args`'s error (leaving `out` as it was) as
/// `Ok(Err(..))`; fails with [`FrameError::TooLarge`] when the body would
/// exceed `max` bytes.
pub fn encode_call_frame<O: FrameSink, E>(
    id: u64,
    task: &str,
    kind: CallKind,
    out: &mut O,
    max: usize,
    encode_args: impl FnOnce(&mut O) -> Result<(), E>,
) -> Result<Result<(), E>, FrameError> {
    let envelope = hot::CallEnvelope::new(id, task, kind)?;
    let write = |out: &mut O| {
        envelope.write(out);
        Ok(())
    };
    encode_around(write, frame_room(envelope.len()), out, max, encode_args)
}

/// Appends a [`Request::CallFn`](crate::Request::CallFn) frame to `out`, its arguments written by
/// `encode_args` directly after the envelope.
///
/// Errors as [`encode_call_frame`].
pub fn encode_fn_call_frame<O: FrameSink, E>(
    id: u64,
    function: &FnRef,
    kind: CallKind,
    out: &mut O,
    max: usize,
    encode_args: impl FnOnce(&mut O) -> Result<(), E>,
) -> Result<Result<(), E>, FrameError> {
    let envelope = hot::FnCallEnvelope::new(id, function, kind)?;
    let write = |out: &mut O| {
        envelope.write(out);
        Ok(())
    };
    encode_around(write, frame_room(envelope.len()), out, max, encode_args)
}

/// Appends a [`Response::Reply`](crate::Response::Reply) frame with an
/// [`Outcome::Value`](crate::Outcome::Value) to `out`,
/// the value written by `encode_value` directly after the envelope.
///
/// Errors as [`encode_call_frame`].
pub fn encode_value_reply_frame<O: FrameSink, E>(
    id: u64,
    out: &mut O,
    max: usize,
    encode_value: impl FnOnce(&mut O) -> Result<(), E>,
) -> Result<Result<(), E>, FrameError> {
    let envelope = hot::ValueReplyEnvelope::new(id);
    let write = |out: &mut O| {
        envelope.write(out);
        Ok(())
    };
    encode_around(write, frame_room(envelope.len()), out, max, encode_value)
}

/// A payload this long or shorter fits in the room a frame is first given.
const SMALL_PAYLOAD: usize = 8;

/// The room to make at once for a frame whose envelope is `envelope` bytes
/// long: the whole frame if its payload is small. A call's frame starts in
/// a buffer of its own, which would otherwise grow several times over.
fn frame_room(envelope: usize) -> usize {
    HEADER_LEN + envelope + 1 + 4 + SMALL_PAYLOAD
}

/// Writes the message's envelope, `envelope` (everything before its
/// payload), then the payload from `encode`, and fixes up the lengths; on
/// any error `out` is left as it was. `room` bytes are reserved first.
fn encode_around<O: FrameSink, E>(
    envelope: impl FnOnce(&mut O) -> Result<(), FrameError>,
    room: usize,
    out: &mut O,
    max: usize,
    encode: impl FnOnce(&mut O) -> Result<(), E>,
) -> Result<Result<(), E>, FrameError> {
    // Before the frame begins, so that a fresh buffer takes `room` in one
    // allocation, not a first frame's usual room and then `room`.
    out.reserve(room);
    let start = out.begin();
    let local = out.is_local();
    let (written, attached) =
        in_frame_context(local, || write_around(envelope, out, start, max, encode));
    match written {
        Ok(Ok(())) => {}
        failed => {
            out.abort(start);
            return failed;
        }
    }
    out.finish(attached).map_err(FrameError::Io)?;
    Ok(Ok(()))
}

fn write_around<O: FrameSink, E>(
    envelope: impl FnOnce(&mut O) -> Result<(), FrameError>,
    out: &mut O,
    start: usize,
    max: usize,
    encode: impl FnOnce(&mut O) -> Result<(), E>,
) -> Result<Result<(), E>, FrameError> {
    out.append(&[0; HEADER_LEN]);
    envelope(out)?;
    out.append(&[BIN32]);
    let len_at = out.len();
    out.append(&[0; 4]);
    let payload_at = out.len();
    if let Err(err) = encode(out) {
        return Ok(Err(err));
    }
    let body = out.len() - start - HEADER_LEN;
    let payload = out.len() - payload_at;
    if body > max.min(ABSOLUTE_MAX_FRAME) {
        return Err(FrameError::TooLarge { len: body, max });
    }
    out.patch(len_at, &(payload as u32).to_be_bytes());
    out.patch(start, &(body as u32).to_le_bytes());
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Call, FnCall, Outcome, Reply, Request, Response};
    use crate::{DEFAULT_MAX_FRAME, decode_body, encode_frame};

    fn encode_bytes(bytes: &[u8]) -> impl FnOnce(&mut Vec<u8>) -> Result<(), ()> + '_ {
        move |out| {
            out.extend_from_slice(bytes);
            Ok(())
        }
    }

    #[test]
    fn a_call_frame_decodes_as_the_call() {
        for len in [0, 1, 255, 256, 70_000] {
            let args = vec![7u8; len];
            let mut out = vec![1, 2, 3];
            encode_call_frame(
                9,
                "square",
                CallKind::Chunk,
                &mut out,
                DEFAULT_MAX_FRAME,
                |o| encode_bytes(&args)(o),
            )
            .unwrap()
            .unwrap();
            assert_eq!(out[..3], [1, 2, 3], "what was in the buffer stays");
            let body = &out[3 + HEADER_LEN..];
            assert_eq!(
                u32::from_le_bytes(out[3..7].try_into().unwrap()) as usize,
                body.len()
            );
            let call: Request<'_> = decode_body(body).unwrap();
            let expected = Request::Call(Call {
                id: 9,
                task: "square".into(),
                kind: CallKind::Chunk,
                args: args.as_slice().into(),
            });
            assert_eq!(call, expected);
        }
    }

    #[test]
    fn a_small_call_frame_is_allocated_once() {
        for payload in [0, 1, SMALL_PAYLOAD] {
            let mut out = Vec::new();
            encode_call_frame(
                70_000,
                "a_task_name",
                CallKind::Single,
                &mut out,
                DEFAULT_MAX_FRAME,
                encode_bytes(&vec![1; payload]),
            )
            .unwrap()
            .unwrap();
            let envelope = hot::CallEnvelope::new(70_000, "a_task_name", CallKind::Single);
            let room = frame_room(envelope.unwrap().len());
            assert_eq!(out.capacity(), room, "reserved once, never grown");
            assert_eq!(out.len(), room - SMALL_PAYLOAD + payload);
        }
    }

    #[test]
    fn a_function_call_frame_decodes_as_the_call() {
        let function = FnRef::new(|x: i64| x + 1).unwrap();
        let args = crate::encode_payload(&41i64).unwrap();
        let mut out = Vec::new();
        encode_fn_call_frame(
            3,
            &function,
            CallKind::Single,
            &mut out,
            DEFAULT_MAX_FRAME,
            encode_bytes(&args),
        )
        .unwrap()
        .unwrap();
        let envelope = hot::FnCallEnvelope::new(3, &function, CallKind::Single).unwrap();
        assert_eq!(
            out.capacity(),
            frame_room(envelope.len()),
            "a small call's frame is reserved once, never grown"
        );
        let call: Request<'_> = decode_body(&out[HEADER_LEN..]).unwrap();
        let expected = Request::CallFn(FnCall {
            id: 3,
            function,
            kind: CallKind::Single,
            args: args.as_slice().into(),
        });
        assert_eq!(call, expected);
    }

    #[test]
    fn a_value_reply_frame_decodes_as_the_reply() {
        let value = b"\x93\x01\x02\x03";
        let mut out = Vec::new();
        encode_value_reply_frame(4, &mut out, DEFAULT_MAX_FRAME, encode_bytes(value))
            .unwrap()
            .unwrap();
        let mut plain = Vec::new();
        let reply = Response::Reply(Reply {
            id: 4,
            outcome: Outcome::Value(value.as_slice().into()),
        });
        encode_frame(&reply, &mut plain, DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(
            decode_body::<Response<'_>>(&out[HEADER_LEN..]).unwrap(),
            reply
        );
        assert_eq!(out.len(), plain.len() + 3, "only the bin header is wider");
    }

    #[test]
    fn a_failing_payload_leaves_the_buffer_as_it_was() {
        let mut out = vec![5];
        let result = encode_value_reply_frame(1, &mut out, DEFAULT_MAX_FRAME, |o: &mut Vec<u8>| {
            o.extend_from_slice(b"partial");
            Err("no")
        });
        assert_eq!(result.unwrap(), Err("no"));
        assert_eq!(out, [5]);
    }

    #[test]
    fn an_oversized_frame_is_refused_and_leaves_the_buffer_as_it_was() {
        let mut out = vec![5];
        let err = encode_value_reply_frame(1, &mut out, 100, encode_bytes(&[0; 200])).unwrap_err();
        assert!(
            matches!(err, FrameError::TooLarge { max: 100, .. }),
            "{err:?}"
        );
        assert_eq!(out, [5]);
    }
}
