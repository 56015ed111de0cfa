//! The worker's side of its private channel: the reader of calls and the
//! writer of responses.
//!
//! The executing thread reads its calls itself (no hand-off between
//! threads on the way in); a malformed frame or an I/O error ends the
//! worker with the documented exit code.

use std::error::Error;
use std::fmt::Write as _;
use std::io;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use loky_proto::shm::{FrameBuf, LocalFrames};
use loky_proto::{
    Attachments, CallError, FrameError, Outcome, Reply, Request, Response, encode_frame,
    encode_value_reply_frame, exit_code,
};

use crate::os;
use crate::outbox::Outbox;

/// Buffers of at most this size are kept for the next frame (reusing them
/// spares the page faults of fresh memory on every large call); after a
/// bigger frame, the memory goes back.
const KEEP_BUFFER: usize = 32 << 20;

/// Reads calls from the channel, one frame each; a frame's body or shared
/// buffers may come as descriptors (see [`loky_proto::shm`]).
#[derive(Debug)]
pub(crate) struct CallReader {
    stream: UnixStream,
    frames: LocalFrames,
}

impl CallReader {
    /// Reads from a clone of `stream` frames of at most `max_frame` bytes.
    pub(crate) fn new(stream: &UnixStream, max_frame: usize) -> io::Result<Self> {
        Ok(CallReader {
            stream: stream.try_clone()?,
            frames: LocalFrames::new(max_frame),
        })
    }

    /// Blocks until the next request, borrowed from the frame, with the
    /// shared buffers that came with it. Ends the worker at the end of the
    /// channel or on a bad frame.
    pub(crate) fn next_request(&mut self) -> (Request<'_>, Attachments) {
        while !self.frames.has_frame() {
            match self.frames.fill_from(&self.stream) {
                Ok(0) => end_on(self.frames.end_of_stream()),
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => end_on(FrameError::Io(err)),
            }
        }
        let frame = match self.frames.next_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => unreachable!("a whole frame has arrived"),
            Err(err) => end_on(err),
        };
        match Request::decode(frame.body) {
            Ok(request) => (request, frame.attachments),
            Err(err) => end_on(err),
        }
    }

    /// Whether the next call has already arrived (whole).
    pub(crate) fn has_next(&self) -> bool {
        self.frames.has_frame()
    }

    /// Unmaps the last call's body if it came in a memory file: once its
    /// reply is out, the pages go back while the executor reads the reply,
    /// not after the next call has arrived.
    pub(crate) fn release(&mut self) {
        self.frames.release();
    }
}

/// Ends the worker on a frame error: quietly at the end of the channel,
/// with a documented code and one line on stderr otherwise.
fn end_on(err: FrameError) -> ! {
    match err {
        // The end of the channel, between frames or inside one (the
        // executor died while writing): the worker's end either way.
        FrameError::Closed | FrameError::Truncated { .. } => os::terminate(0),
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
    outbox: Arc<Outbox>,
    /// Encoded frames not yet written; reused between writes.
    buf: FrameBuf,
    /// The executor's maximum frame size: a larger reply is never sent.
    max_frame: usize,
}

impl ResponseWriter {
    /// A writer through `outbox` that sends replies over `threshold` bytes
    /// in shared memory and attaches shared buffers, if the executor takes
    /// descriptor frames (it gave a threshold), else one that sends bytes
    /// only; no frame over `max_frame` bytes.
    pub(crate) fn new(outbox: Arc<Outbox>, threshold: Option<usize>, max_frame: usize) -> Self {
        ResponseWriter {
            outbox,
            buf: threshold.map_or_else(FrameBuf::plain, FrameBuf::local),
            max_frame,
        }
    }

    /// Queues `response`. Only the worker's own messages go through here;
    /// failing to encode one is a bug of the runtime.
    pub(crate) fn push(&mut self, response: &Response<'_>) {
        if let Err(err) = encode_frame(response, &mut self.buf, self.max_frame) {
            fatal(
                exit_code::INTERNAL_ERROR,
                &format!("cannot encode a response: {}", chain(&err)),
            );
        }
    }

    /// Queues the reply to call `id` of `task`, whose value `run` encodes
    /// straight into the frame (a large output is never copied, and goes
    /// into shared memory as it is encoded), or whose failure it returns.
    pub(crate) fn push_call(
        &mut self,
        id: u64,
        task: &str,
        run: impl FnOnce(&mut FrameBuf) -> Result<(), Outcome<'static>>,
    ) {
        match encode_value_reply_frame(id, &mut self.buf, self.max_frame, run) {
            Ok(Ok(())) => {}
            Ok(Err(failure)) => self.push_reply(id, task, failure),
            Err(err) => self.push_encode_failure(id, task, &err),
        }
    }

    /// Queues the reply to call `id` of `task`. An outcome too large for a
    /// frame becomes a [`CallError::EncodeOutput`] naming its size.
    fn push_reply(&mut self, id: u64, task: &str, outcome: Outcome<'_>) {
        let reply = Response::Reply(Reply { id, outcome });
        if let Err(err) = encode_frame(&reply, &mut self.buf, self.max_frame) {
            self.push_encode_failure(id, task, &err);
        }
    }

    fn push_encode_failure(&mut self, id: u64, task: &str, err: &FrameError) {
        let outcome = Outcome::Failed(CallError::EncodeOutput {
            task: task.to_owned(),
            message: chain(err),
        });
        self.push(&Response::Reply(Reply { id, outcome }));
    }

    /// The frames queued and not yet written (fuzz targets check them).
    #[cfg(fuzzing)]
    pub(crate) fn queued(&self) -> &[u8] {
        self.buf.slice(0..self.buf.len())
    }

    /// Writes everything queued. If the executor is gone, the worker ends
    /// as at the end of the channel.
    pub(crate) fn flush(&mut self) {
        self.outbox.send(&mut self.buf);
        self.buf.shrink_to(KEEP_BUFFER);
    }

    /// Holds everything queued back, if the outbox can (see
    /// [`Outbox::hold`]); else writes it as [`flush`](Self::flush) does.
    pub(crate) fn hold_or_flush(&mut self) {
        if !self.outbox.hold(&mut self.buf) {
            self.flush();
        }
    }
}
