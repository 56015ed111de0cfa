//! Where the worker's messages to its executor go out: every write to the
//! channel, and the replies held back.
//!
//! When the next call has already arrived, the reply of the call just run
//! may be held back, so that the replies of a burst of short calls go out
//! in one write (one system call, one wake-up of the executor's reader)
//! rather than one each. A reply is held back only in the worker's
//! journal (see [`JournalWriter`]), from which the
//! executor takes it should the worker die before sending it, and for at
//! most [`HOLD_AT_MOST`]: a timer, which the watcher thread polls, sends it
//! if the executing thread has not by then (the next task runs long).
//! Without a journal (a worker started without one, such as a remote
//! worker's), every reply goes out as soon as it is ready.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use loky_proto::exit_code;
use loky_proto::shm::{FrameBuf, JournalWriter};

use crate::channel::fatal;
use crate::os::{self, Timer};

/// The longest a reply is held back.
pub(crate) const HOLD_AT_MOST: Duration = Duration::from_micros(100);

/// Replies are held back only up to this many bytes in all: past that,
/// one write already carries many of them.
const HOLD_BYTES: usize = 16 << 10;

/// The channel to the executor, shared by the threads that write to it.
#[derive(Debug)]
pub(crate) struct Outbox {
    out: Mutex<Out>,
    /// Set while replies are held back; present only with a journal.
    timer: Option<Timer>,
}

#[derive(Debug)]
struct Out {
    stream: UnixStream,
    journal: Option<JournalWriter>,
    /// Whether the timer is set for the replies held back.
    armed: bool,
}

impl Outbox {
    /// Writes to `stream`; holds replies back in `journal`, if given (and
    /// a timer can be made).
    pub(crate) fn new(stream: UnixStream, journal: Option<JournalWriter>) -> Outbox {
        let timer = journal.as_ref().and_then(|_| Timer::new().ok());
        let journal = journal.filter(|_| timer.is_some());
        Outbox {
            out: Mutex::new(Out {
                stream,
                journal,
                armed: false,
            }),
            timer,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Out> {
        self.out.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends the frames of `frames` now, after any held back; on failure
    /// (the executor is gone, or the channel broke) the worker ends.
    pub(crate) fn send(&self, frames: &mut FrameBuf) {
        let mut out = self.lock();
        let len = frames.len();
        let sent = out
            .send_held()
            .and_then(|()| frames.send_to(&out.stream))
            .map(|()| out.sent_directly(len));
        self.disarm(&mut out);
        if let Err(err) = sent {
            channel_failed(&err);
        }
    }

    /// Sends `bytes` (whole frames) now, after any held back; false if the
    /// channel failed (the caller's next reply finds out again).
    pub(crate) fn send_bytes(&self, bytes: &[u8]) -> bool {
        let mut out = self.lock();
        let sent = out
            .send_held()
            .and_then(|()| (&out.stream).write_all(bytes))
            .map(|()| out.sent_directly(bytes.len()));
        self.disarm(&mut out);
        sent.is_ok()
    }

    /// Holds the frames of `frames` back if it can: plain frames (no
    /// descriptor), room left. True if it did (`frames` is then empty).
    pub(crate) fn hold(&self, frames: &mut FrameBuf) -> bool {
        let (Some(timer), Some(bytes)) = (&self.timer, frames.plain_bytes()) else {
            return false;
        };
        let mut out = self.lock();
        let Some(journal) = &mut out.journal else {
            return false;
        };
        if journal.held() + bytes.len() > HOLD_BYTES || !journal.hold(bytes) {
            return false;
        }
        frames.clear();
        if !out.armed {
            timer.set(HOLD_AT_MOST);
            out.armed = true;
        }
        true
    }

    /// The timer, for the watcher to poll.
    pub(crate) fn timer(&self) -> Option<&Timer> {
        self.timer.as_ref()
    }

    /// The watcher: the timer fired, so the executing thread has been
    /// running a task since it held replies back; they go out now.
    pub(crate) fn send_held(&self) {
        let mut out = self.lock();
        out.armed = false;
        if let Err(err) = out.send_held() {
            channel_failed(&err);
        }
    }

    /// Nothing is held back any more: the timer stops.
    fn disarm(&self, out: &mut Out) {
        if out.armed
            && let Some(timer) = &self.timer
        {
            timer.set(Duration::ZERO);
            out.armed = false;
        }
    }
}

impl Out {
    fn send_held(&mut self) -> io::Result<()> {
        match &mut self.journal {
            Some(journal) => journal.send_held(&self.stream),
            None => Ok(()),
        }
    }

    fn sent_directly(&mut self, len: usize) {
        if let Some(journal) = &mut self.journal {
            journal.sent_directly(len);
        }
    }
}

/// Ends the worker on a failed write: quietly if the executor is gone (as
/// at the end of the channel), with a documented code otherwise.
fn channel_failed(err: &io::Error) -> ! {
    match err.kind() {
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => os::terminate(0),
        _ => fatal(
            exit_code::CHANNEL_ERROR,
            &format!("the channel to the executor failed: {err}"),
        ),
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::io::Read;

    use loky_proto::shm::JournalReader;
    use loky_proto::{DEFAULT_MAX_FRAME, Outcome, Reply, Response, encode_frame};

    use super::*;

    /// An outbox with a journal, the executor's end of its channel and its
    /// view of the journal.
    fn outbox() -> (Outbox, UnixStream, JournalReader) {
        let (fd, reader) = JournalReader::create().unwrap();
        let (ours, theirs) = UnixStream::pair().unwrap();
        let outbox = Outbox::new(ours, Some(JournalWriter::open(fd).unwrap()));
        assert!(outbox.timer().is_some());
        theirs.set_nonblocking(true).unwrap();
        (outbox, theirs, reader)
    }

    fn frames(n: u64) -> FrameBuf {
        let mut buf = FrameBuf::plain();
        let value = n.to_le_bytes();
        let reply = Response::Reply(Reply {
            id: n,
            outcome: Outcome::Value(value[..].into()),
        });
        encode_frame(&reply, &mut buf, DEFAULT_MAX_FRAME).unwrap();
        buf
    }

    fn bytes_of(n: u64) -> Vec<u8> {
        frames(n).plain_bytes().unwrap().to_vec()
    }

    fn received(channel: &UnixStream) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = (&*channel).read_to_end(&mut out);
        out
    }

    #[test]
    fn a_held_reply_is_in_the_journal_only_then_goes_before_the_next() {
        let (outbox, channel, journal) = outbox();
        let mut first = frames(1);
        assert!(outbox.hold(&mut first));
        assert!(first.is_empty());
        assert_eq!(received(&channel), b"");
        // Should the worker die now, the executor finds it in the journal.
        assert_eq!(journal.recover(0), bytes_of(1));
        outbox.send(&mut frames(2));
        assert_eq!(received(&channel), [bytes_of(1), bytes_of(2)].concat());
        let all = (bytes_of(1).len() + bytes_of(2).len()) as u64;
        assert_eq!(journal.recover(all), b"");
        // Reports too go after what is held.
        assert!(outbox.hold(&mut frames(3)));
        assert!(outbox.send_bytes(&bytes_of(4)));
        assert_eq!(received(&channel), [bytes_of(3), bytes_of(4)].concat());
    }

    #[test]
    fn the_timer_fires_for_a_held_reply_and_the_watcher_sends_it() {
        let (outbox, channel, _journal) = outbox();
        assert!(outbox.hold(&mut frames(1)));
        let timer = outbox.timer().unwrap();
        let mut poll = libc::pollfd {
            fd: timer.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the call.
        let ready = unsafe { libc::poll(&mut poll, 1, 10_000) };
        assert_eq!(ready, 1, "the timer fired");
        outbox.send_held();
        assert_eq!(received(&channel), bytes_of(1));
    }

    #[test]
    fn sending_stops_the_timer_and_nothing_else_is_held() {
        let (outbox, channel, journal) = outbox();
        assert!(outbox.hold(&mut frames(1)));
        outbox.send(&mut FrameBuf::plain());
        assert!(!outbox.lock().armed);
        assert_eq!(received(&channel), bytes_of(1));
        assert_eq!(journal.recover(bytes_of(1).len() as u64), b"");
    }

    #[test]
    fn at_most_hold_bytes_are_held() {
        let (outbox, channel, _journal) = outbox();
        let one = bytes_of(1).len();
        let fits = HOLD_BYTES / one;
        for _ in 0..fits {
            assert!(outbox.hold(&mut frames(1)));
        }
        let mut over = frames(1);
        assert!(!outbox.hold(&mut over), "past {HOLD_BYTES} bytes");
        assert!(!over.is_empty(), "nothing taken");
        outbox.send(&mut over);
        assert_eq!(received(&channel).len(), (fits + 1) * one);
    }

    #[test]
    fn without_a_journal_nothing_is_held() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let outbox = Outbox::new(ours, None);
        assert!(outbox.timer().is_none());
        assert!(!outbox.hold(&mut frames(1)));
        outbox.send(&mut frames(1));
        theirs.set_nonblocking(true).unwrap();
        assert_eq!(received(&theirs), bytes_of(1));
    }
}
