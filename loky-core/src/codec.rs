//! The application's types, encoded and decoded in the parent. A
//! `Serialize` or `Deserialize` implementation that panics is the error of
//! the call it belongs to, as it is in the worker: the panic never unwinds
//! out of `submit`, `map`, `result` or a `Map`'s `next`, and the pool is
//! untouched.

use std::panic::{AssertUnwindSafe, catch_unwind};

use loky_proto::shm::FrameBuf;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::pool_thread;

/// A codec's error, or the panic of the type's own serde code.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CodecError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Codec(E),
    #[error("its serde implementation panicked: {0}")]
    Panicked(String),
}

/// Runs the application's serde code `f`, its panic caught.
fn guarded<R, E: std::error::Error>(f: impl FnOnce() -> Result<R, E>) -> Result<R, CodecError<E>> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result.map_err(CodecError::Codec),
        Err(panic) => Err(CodecError::Panicked(pool_thread::panic_message(&*panic))),
    }
}

/// Where values are encoded: a plain buffer, or a frame being encoded.
pub(crate) trait Out: std::io::Write {
    fn len(&self) -> usize;
    fn truncate(&mut self, len: usize);
}

impl Out for Vec<u8> {
    fn len(&self) -> usize {
        self.len()
    }
    fn truncate(&mut self, len: usize) {
        self.truncate(len);
    }
}

impl Out for FrameBuf {
    fn len(&self) -> usize {
        self.len()
    }
    fn truncate(&mut self, len: usize) {
        self.truncate(len);
    }
}

/// Appends the encoding of `value` to `out`; on error `out` is as it was.
pub(crate) fn encode_into<T: Serialize + ?Sized, O: Out>(
    value: &T,
    out: &mut O,
) -> Result<(), impl std::error::Error + Send + Sync + 'static + use<T, O>> {
    let start = out.len();
    let encoded = guarded(|| loky_proto::encode_payload_into(value, out));
    if encoded.is_err() {
        out.truncate(start);
    }
    encoded
}

/// Decodes a value that [`encode_into`] (or a worker) encoded.
pub(crate) fn decode<T: DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, impl std::error::Error + Send + Sync + 'static + use<T>> {
    guarded(|| loky_proto::decode_payload(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Explodes;

    impl Serialize for Explodes {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            panic!("Explodes explodes")
        }
    }

    #[test]
    fn a_panicking_serialize_is_an_error_and_leaves_the_buffer_as_it_was() {
        let mut out = FrameBuf::plain();
        out.extend_from_slice(&[1, 2, 3]);
        let err = encode_into(&(7u8, Explodes), &mut out).unwrap_err();
        assert_eq!(out.slice(0..out.len()), [1, 2, 3]);
        assert!(err.to_string().contains("Explodes explodes"), "{err}");
    }

    #[test]
    fn a_codec_error_is_passed_through() {
        let err = decode::<u64>(b"\xc1").unwrap_err();
        assert!(!err.to_string().contains("panicked"), "{err}");
        assert_eq!(
            decode::<u64>(&loky_proto::encode_payload(&9u64).unwrap()).unwrap(),
            9
        );
    }
}
