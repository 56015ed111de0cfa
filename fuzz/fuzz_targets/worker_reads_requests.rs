//! The worker's side: frames from the executor, decoded and run as a worker
//! does (its reader through a socket, which splits the stream as a socket
//! does; the message decoder; the registry's argument decoding; its writer
//! encoding the reply). Any input must give replies or an error, never a
//! panic, a hang or an allocation beyond what arrived.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use loky_fuzz::split;
use loky_proto::{HEADER_LEN, Response, decode_body};
use loky_worker::Registry;

static REGISTRY: LazyLock<Registry> = LazyLock::new(loky_worker::fuzzing::registry);

fuzz_target!(|input: &[u8]| {
    let Some((max_frame, _, stream)) = split(input) else {
        return;
    };
    let Ok(replies) = loky_worker::fuzzing::read_requests(&REGISTRY, stream, max_frame) else {
        return;
    };
    // Every reply the worker wrote is a well-formed frame the executor reads.
    let mut rest = replies.as_slice();
    while !rest.is_empty() {
        let len = u32::from_le_bytes(rest[..HEADER_LEN].try_into().unwrap()) as usize;
        let body = &rest[HEADER_LEN..HEADER_LEN + len];
        assert!(matches!(
            decode_body::<Response<'_>>(body),
            Ok(Response::Reply(_))
        ));
        rest = &rest[HEADER_LEN + len..];
    }
});
