//! The worker's decoding of what its executor sends, as a pure function for
//! the fuzz targets (built only with `--cfg fuzzing`).
//!
//! [`read_requests`] runs the same steps as a worker on a byte stream: the
//! worker's frame reader (through a socket) under the executor's maximum
//! frame size, the message decoder, then the registry's decoding of each
//! call's arguments (one value, or a chunk, item by item when the whole
//! does not decode) and the worker's encoding of its reply; but it returns
//! an error where a worker ends itself. Calls of functions are decoded and
//! refused without being run: a worker trusts a reference that carries its
//! own program identity (only its executor writes to its channel), and a
//! fuzzer can learn that identity from the comparison.

use std::io::Write;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use loky_proto::shm::LocalFrames;
use loky_proto::{CallError, FrameError, Outcome, Request, Task};
use serde_bytes::ByteBuf;

use crate::Registry;
use crate::channel::ResponseWriter;
use crate::diagnostics::AnyValue;
use crate::outbox::Outbox;

/// Tasks over the argument types that exercise the decoder most: integers,
/// strings, bytes, sequences, options, tuples, maps and any value.
pub fn registry() -> Registry {
    Registry::new()
        .register(Task::<i64, i64>::new("i64"), |x| x)
        .register(Task::<String, String>::new("string"), |s| s)
        .register(Task::<ByteBuf, ByteBuf>::new("bytes"), |b| b)
        .register(Task::<Vec<Option<u32>>, usize>::new("vec"), |v| v.len())
        .register(
            Task::<(String, u8, f64), bool>::new("tuple"),
            |(s, n, f)| s.len() == usize::from(n) && f.is_finite(),
        )
        .register(
            Task::<std::collections::BTreeMap<String, i32>, u64>::new("map"),
            |m| m.len() as u64,
        )
        .register(Task::<AnyValue, AnyValue>::new("any"), |v| v)
}

/// Reads the frames of `stream` (at most `max_frame` bytes each) through a
/// socket, with the worker's reader, and runs each call on `registry`,
/// encoding its reply with the worker's writer, as a worker does; returns
/// the bytes of the replies, or the error that would have ended the
/// worker. `stream` must fit in a socket's buffer (a few hundred KiB).
pub fn read_requests(
    registry: &Registry,
    stream: &[u8],
    max_frame: usize,
) -> Result<Vec<u8>, FrameError> {
    let (mut executor, worker) = UnixStream::pair().map_err(FrameError::Io)?;
    executor.write_all(stream).map_err(FrameError::Io)?;
    executor.shutdown(Shutdown::Write).map_err(FrameError::Io)?;
    let mut frames = LocalFrames::new(max_frame);
    let outbox = Arc::new(Outbox::new(executor, None));
    let mut out = ResponseWriter::new(outbox, None, max_frame);
    loop {
        while !frames.has_frame() {
            match frames.fill_from(&worker) {
                Ok(0) => match frames.end_of_stream() {
                    FrameError::Closed => return Ok(out.queued().to_vec()),
                    err => return Err(err),
                },
                Ok(_) => {}
                Err(err) => return Err(FrameError::Io(err)),
            }
        }
        let Some(frame) = frames.next_frame()? else {
            unreachable!("a whole frame has arrived");
        };
        let request = Request::decode(frame.body)?;
        let (id, name) = crate::call::describe(&request);
        let mut attachments = frame.attachments;
        attachments.decode(|| {
            out.push_call(id, name, |buf| match &request {
                Request::Call(_) => crate::call::run(registry, &request, buf),
                Request::CallFn(_) => Err(Outcome::Failed(CallError::Function {
                    message: "functions are not run while fuzzing".to_owned(),
                })),
            })
        });
    }
}
