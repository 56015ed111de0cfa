//! The executor's side: a worker's byte stream, read as the executor's
//! reader does (the incremental frame buffer, fed in chunks), each frame
//! decoded as a response, each reply's outcome walked and its values
//! decoded as callers do (`result()` decodes a payload as the task's output
//! type; a chunk's items are split when the whole does not decode). Any
//! input must give frames or an error, never a panic or a hang. A response
//! that decodes must encode and decode back to itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use loky_fuzz::{Chunked, split};
use loky_proto::{
    FrameBuffer, Outcome, Response, decode_body, decode_payload, encode_frame, split_array,
};
use serde_bytes::ByteBuf;

fn walk(outcome: &Outcome<'_>) {
    match outcome {
        Outcome::Value(bytes) => {
            let _ = decode_payload::<i64>(bytes);
            let _ = decode_payload::<String>(bytes);
            let _ = decode_payload::<ByteBuf>(bytes);
            let _ = decode_payload::<Vec<Option<(u8, String)>>>(bytes);
            let _ = decode_payload::<std::collections::BTreeMap<String, f64>>(bytes);
            if let Some(items) = split_array(bytes) {
                for item in items {
                    let _ = decode_payload::<u64>(item);
                }
            }
        }
        Outcome::Items(items) => items.iter().for_each(walk),
        Outcome::Panic(_) | Outcome::Failed(_) => {}
    }
}

fn check(body: &[u8]) {
    let Ok(response) = decode_body::<Response<'_>>(body) else {
        return;
    };
    if let Response::Reply(reply) = &response {
        walk(&reply.outcome);
    }
    let mut again = Vec::new();
    encode_frame(&response, &mut again, usize::MAX).expect("a decoded response encodes");
    let back: Response<'_> = decode_body(&again[loky_proto::HEADER_LEN..]).expect("and decodes");
    assert_eq!(back, response);
}

fuzz_target!(|input: &[u8]| {
    let Some((max_frame, sizes, stream)) = split(input) else {
        return;
    };
    let mut reader = Chunked::new(stream, sizes);
    let mut frames = FrameBuffer::new(max_frame);
    loop {
        match frames.fill_from(&mut reader) {
            Ok(0) => {
                let _ = frames.end_of_stream();
                return;
            }
            Ok(_) => {}
            Err(_) => return,
        }
        loop {
            match frames.next_frame() {
                Ok(Some(body)) => check(body),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
