//! The worker's side of its private channel: a reader thread that turns
//! frames into calls, and the writer of responses.
//!
//! The reader thread also ends the worker: at the channel's end of file
//! (the executor closed it or died) at once, even while a task runs, and on
//! a malformed frame or an I/O error with the documented exit code.

use std::error::Error;
use std::fmt::Write as _;
use std::io::{self, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::thread;

use crossbeam_channel::{Receiver, Sender};
use loky_proto::{
    CallError, CallKind, DEFAULT_MAX_FRAME, FrameError, Outcome, Reply, Request, Response,
    decode_body, encode_frame, exit_code, read_frame,
};

use crate::{os, panic};

/// Buffers of at most this size are kept for the next frame (reusing them
/// spares the page faults of fresh memory on every large call); after a
/// bigger frame, the memory goes back.
const KEEP_BUFFER: usize = 32 << 20;

/// A call, owned so it can cross to the executing thread.
#[derive(Debug)]
pub(crate) struct OwnedCall {
    pub(crate) id: u64,
    pub(crate) task: String,
    pub(crate) kind: CallKind,
    pub(crate) args: Vec<u8>,
}

/// Starts the reader thread on a clone of `stream`; calls arrive on the
/// returned receiver in order.
pub(crate) fn spawn_reader(stream: &UnixStream) -> io::Result<Receiver<OwnedCall>> {
    let stream = stream.try_clone()?;
    let (calls, receiver) = crossbeam_channel::unbounded();
    thread::Builder::new()
        .name("loky-worker-reader".into())
        .spawn(move || read_calls(stream, calls))?;
    Ok(receiver)
}

fn read_calls(stream: UnixStream, calls: Sender<OwnedCall>) {
    panic::set_runtime_thread();
    let mut reader = BufReader::with_capacity(64 << 10, stream);
    let mut body = Vec::new();
    loop {
        let call = read_frame(&mut reader, &mut body, DEFAULT_MAX_FRAME)
            .and_then(|()| decode_body::<Request<'_>>(&body));
        let call = match call {
            Ok(Request::Call(call)) => OwnedCall {
                id: call.id,
                task: call.task.into_owned(),
                kind: call.kind,
                args: call.args.into_owned(),
            },
            Err(err) => end_on(err),
        };
        if body.capacity() > KEEP_BUFFER {
            body = Vec::new();
        }
        if calls.send(call).is_err() {
            // The executing thread is gone: the worker is ending anyway.
            return;
        }
    }
}

/// Ends the worker on a frame error: quietly at the end of the channel,
/// with a documented code and one line on stderr otherwise.
fn end_on(err: FrameError) -> ! {
    match err {
        FrameError::Closed => os::terminate(0),
        // The executor went away with bytes in flight: its end, not a fault.
        FrameError::Io(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {
            os::terminate(0)
        }
        FrameError::Io(err) => fatal(
            exit_code::CHANNEL_ERROR,
            &format!("the channel to the executor failed: {err}"),
        ),
        err => fatal(
            exit_code::PROTOCOL_ERROR,
            &format!("malformed frame from the executor: {}", chain(&err)),
        ),
    }
}

/// `err` followed by each of its sources.
pub(crate) fn chain(err: &dyn Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        let _ = write!(text, ": {err}");
        source = err.source();
    }
    text
}

/// Prints `loky-worker: {message}` on stderr and ends the worker with
/// `code`.
pub(crate) fn fatal(code: i32, message: &str) -> ! {
    os::write_stderr(format!("loky-worker: {message}\n").as_bytes());
    os::exit_with_code(code)
}

/// Writes responses to the executor, one frame each.
#[derive(Debug)]
pub(crate) struct ResponseWriter {
    stream: UnixStream,
    /// Encoded frames not yet written; reused between writes.
    buf: Vec<u8>,
}

impl ResponseWriter {
    pub(crate) fn new(stream: UnixStream) -> Self {
        ResponseWriter {
            stream,
            buf: Vec::new(),
        }
    }

    /// Queues `response`. Only the worker's own messages go through here;
    /// failing to encode one is a bug of the runtime.
    pub(crate) fn push(&mut self, response: &Response<'_>) {
        if let Err(err) = encode_frame(response, &mut self.buf, DEFAULT_MAX_FRAME) {
            fatal(
                exit_code::INTERNAL_ERROR,
                &format!("cannot encode a response: {}", chain(&err)),
            );
        }
    }

    /// Queues the reply to call `id` of `task`. An outcome too large for a
    /// frame becomes a [`CallError::EncodeOutput`] naming its size.
    pub(crate) fn push_reply(&mut self, id: u64, task: &str, outcome: Outcome<'_>) {
        let reply = Response::Reply(Reply { id, outcome });
        if let Err(err) = encode_frame(&reply, &mut self.buf, DEFAULT_MAX_FRAME) {
            let outcome = Outcome::Failed(CallError::EncodeOutput {
                task: task.to_owned(),
                message: chain(&err),
            });
            self.push(&Response::Reply(Reply { id, outcome }));
        }
    }

    /// Writes everything queued. If the executor is gone, the worker ends
    /// as at the end of the channel.
    pub(crate) fn flush(&mut self) {
        if let Err(err) = self.stream.write_all(&self.buf) {
            match err.kind() {
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => os::terminate(0),
                _ => fatal(
                    exit_code::CHANNEL_ERROR,
                    &format!("the channel to the executor failed: {err}"),
                ),
            }
        }
        self.buf.clear();
        if self.buf.capacity() > KEEP_BUFFER {
            self.buf = Vec::new();
        }
    }
}
