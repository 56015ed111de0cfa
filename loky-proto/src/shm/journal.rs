//! The reply journal: replies a worker holds back, in memory its executor
//! reads once the worker is dead.
//!
//! A worker whose next call has already arrived may hold back the reply of
//! the call it just ran, to send the replies of a burst of short calls in
//! one write: one system call, and one wake-up of the executor's reader,
//! for many calls. A reply held back must not be lost if the next task
//! crashes the worker (or the worker is killed, `SIGKILL` included). So it
//! is also written to a *journal*: a memory file the executor made, mapped
//! read-only on its side and read-write in the worker. Once the worker is
//! dead, the executor takes from the journal the part of the worker's
//! output it did not receive ([`JournalReader::recover`]) and reads it as
//! if it had come on the channel.
//!
//! # Layout
//!
//! Positions count the bytes the worker wrote to its channel since it
//! started. The file holds [`JOURNAL_LEN`] bytes:
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | `u64` *sent*: every byte before this position is on the channel |
//! | 8..16 | `u64` *committed*: the end of the bytes written to the ring |
//! | 16..24 | `u64` *death*: the signal the worker is dying of, 0 while it lives |
//! | 64.. | the ring: the byte at position `p` is at `64 + p % RING` |
//!
//! At every moment (the worker may die between any two instructions), the
//! bytes of positions `sent..committed` are in the ring, and `committed -
//! sent` is at most the ring's size. A frame is written to the ring before
//! `committed` moves past it, so a frame cut short by the worker's death
//! is not in the journal. Frames with descriptors, and frames the worker
//! writes at once, never go through the ring: before writing one, the
//! worker sends everything held back, and after, it moves `sent`, then
//! `committed`, past it.
//!
//! # The death note
//!
//! A worker that is certain to die of a signal (a fault, an abort) says
//! so before it dies ([`DeathNote`]): it writes the signal to *death*,
//! then shuts the writing side of its channel. The executor then sees the
//! channel's end at once, not only once the kernel has stopped the
//! worker's other threads and freed its memory (a third of a millisecond
//! or more), and reads how the worker ended from the note
//! ([`JournalReader::death_note`]). From the shutdown on, no write of the
//! worker reaches the channel, so *sent* no longer moves and the part of
//! the ring not received stays as it is: the journal can be recovered at
//! once, as after the death.
//!
//! The executor creates the file, seals it against resizing (so the worker
//! cannot make the executor's mapping fault) and passes it to the worker
//! as it starts it. What the journal holds is checked like anything else
//! that comes from the worker: the positions must describe a part of the
//! ring the executor has not received yet, and the bytes are read as
//! frames, bounded and validated as on the channel.

use std::io::{self, IoSlice, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of a journal file.
pub const JOURNAL_LEN: usize = 20 << 10;

/// Bytes before the ring.
const HEADER: usize = 64;

/// Bytes of the ring.
const RING: usize = JOURNAL_LEN - HEADER;

/// Where the header's fields are.
const SENT: usize = 0;
const COMMITTED: usize = 8;
const DEATH: usize = 16;

/// The largest signal number a death note may hold: a wait status keeps a
/// signal in 7 bits.
const MAX_SIGNAL: u64 = 0x7f;

/// A shared mapping of a whole journal file.
#[derive(Debug)]
struct Map {
    ptr: NonNull<u8>,
}

// SAFETY: the mapping is plain memory; every access to it goes through raw
// pointers or atomics (see `JournalWriter` and `JournalReader` for who
// writes and reads what, and when).
unsafe impl Send for Map {}
// SAFETY: as above.
unsafe impl Sync for Map {}

impl Map {
    fn new(fd: &OwnedFd, writable: bool) -> io::Result<Map> {
        let len = super::os::size_sealed_len(fd.as_fd())?;
        if len != JOURNAL_LEN {
            return Err(io::Error::other(format!(
                "the journal holds {len} bytes, not {JOURNAL_LEN}"
            )));
        }
        let ptr = super::os::map_shared(fd.as_fd(), JOURNAL_LEN, writable)?;
        Ok(Map { ptr })
    }

    fn field(&self, at: usize) -> &AtomicU64 {
        // SAFETY: `at` is 0, 8 or 16: an 8-aligned offset (the mapping is
        // page-aligned) inside the mapping, which lives as long as `self`.
        // Both processes access the header's fields only atomically.
        unsafe { AtomicU64::from_ptr(self.ptr.as_ptr().add(at).cast()) }
    }

    /// The ring's bytes at offsets `at..at + len` (within the ring).
    fn ring(&self, at: usize, len: usize) -> *mut u8 {
        debug_assert!(at + len <= RING);
        // SAFETY: within the mapping (checked above).
        unsafe { self.ptr.as_ptr().add(HEADER + at) }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        super::os::unmap(self.ptr, JOURNAL_LEN);
    }
}

/// The executor's side of a worker's journal: made before the worker
/// starts, read once it is dead.
#[derive(Debug)]
pub struct JournalReader {
    map: Map,
}

impl JournalReader {
    /// A new journal file: the descriptor to pass to the worker (not
    /// inherited by any other process: close-on-exec) and the executor's
    /// read-only view of it.
    pub fn create() -> io::Result<(OwnedFd, JournalReader)> {
        let fd = super::os::memfd(JOURNAL_LEN)?;
        super::os::seal_size(&fd)?;
        let map = Map::new(&fd, false)?;
        Ok((fd, JournalReader { map }))
    }

    /// The worker's output from position `received` on that the journal
    /// holds: empty if it holds none, or if its positions do not describe
    /// bytes past `received` (a worker that broke the journal's rules
    /// loses what it held back; nothing else).
    ///
    /// Call it only once the worker is dead or dying (its channel at its
    /// end, or its exit seen), with `received` the number of bytes read
    /// from the channel: while the worker runs, the journal may change as
    /// it is read.
    pub fn recover(&self, received: u64) -> Vec<u8> {
        let sent = self.map.field(SENT).load(Ordering::Acquire);
        let committed = self.map.field(COMMITTED).load(Ordering::Acquire);
        // Bytes sent but not received: the channel still holds them, and
        // they may not be in the ring.
        if received < sent || committed <= received || committed - sent > RING as u64 {
            return Vec::new();
        }
        let len = (committed - received) as usize;
        let mut bytes: Vec<u8> = Vec::with_capacity(len);
        let start = (received % RING as u64) as usize;
        let first = len.min(RING - start);
        for (at, len) in [(start, first), (0, len - first)] {
            let from = self.map.ring(at, len);
            // SAFETY: `from` is valid for `len` bytes (inside the ring), and
            // `bytes` has the room; the worker is dead or can no longer
            // send (see "The death note"), so nothing writes this part of
            // the ring any more (a live worker would only make the bytes
            // wrong, and they are validated as frames).
            unsafe {
                std::ptr::copy_nonoverlapping(from, bytes.as_mut_ptr().add(bytes.len()), len);
                bytes.set_len(bytes.len() + len);
            }
        }
        bytes
    }

    /// The signal the worker said it is dying of ([`DeathNote`]), if it
    /// said so: once its channel is at its end, the worker is dead or
    /// about to be, of this signal (or of one sent to it meanwhile). `None`
    /// while the note holds nothing, or nothing a signal number can be.
    pub fn death_note(&self) -> Option<i32> {
        let signal = self.map.field(DEATH).load(Ordering::Acquire);
        if (1..=MAX_SIGNAL).contains(&signal) {
            i32::try_from(signal).ok()
        } else {
            None
        }
    }
}

/// Where a worker writes the signal it is certain to die of, from inside
/// the signal handler, before it shuts the writing side of its channel
/// (see the module's "The death note"). It keeps the journal's mapping
/// alive, so a worker may keep it for as long as it runs.
#[derive(Debug, Clone)]
pub struct DeathNote {
    map: Arc<Map>,
}

impl DeathNote {
    /// Writes `signal` to the note. Async-signal-safe: one atomic store.
    pub fn write(&self, signal: i32) {
        let signal = u64::try_from(signal).unwrap_or(0);
        self.map.field(DEATH).store(signal, Ordering::Release);
    }
}

/// The worker's side of its journal: holds frames back, sends them, and
/// accounts for every byte written to the channel.
///
/// Every write to the channel must go through it ([`send_held`],
/// [`sent_directly`]): the positions are counted in bytes written.
///
/// [`send_held`]: JournalWriter::send_held
/// [`sent_directly`]: JournalWriter::sent_directly
#[derive(Debug)]
pub struct JournalWriter {
    map: Arc<Map>,
    /// This side's copies of the header's fields (it is their only writer).
    sent: u64,
    committed: u64,
}

impl JournalWriter {
    /// Maps the journal file the executor passed: a memory file of
    /// [`JOURNAL_LEN`] bytes sealed against resizing. The descriptor is
    /// closed once mapped.
    pub fn open(fd: OwnedFd) -> io::Result<JournalWriter> {
        let map = Arc::new(Map::new(&fd, true)?);
        let writer = JournalWriter {
            map,
            sent: 0,
            committed: 0,
        };
        writer.publish();
        Ok(writer)
    }

    /// Where the worker says what it dies of (see [`DeathNote`]).
    pub fn death_note(&self) -> DeathNote {
        DeathNote {
            map: self.map.clone(),
        }
    }

    /// Bytes held back, not yet sent.
    pub fn held(&self) -> usize {
        (self.committed - self.sent) as usize
    }

    /// Bytes that can be held back on top of those already held.
    pub fn room(&self) -> usize {
        RING - self.held()
    }

    /// Holds `frames` back (whole frames, no descriptor frame); false, and
    /// nothing held, if they do not fit in [`room`](Self::room).
    pub fn hold(&mut self, frames: &[u8]) -> bool {
        if frames.len() > self.room() {
            return false;
        }
        let start = (self.committed % RING as u64) as usize;
        let first = frames.len().min(RING - start);
        let (head, tail) = frames.split_at(first);
        // SAFETY: both ranges are inside the ring; this process writes the
        // ring only here, on the thread that has `&mut self`, and the bytes
        // written are past `committed`, which nobody reads before the store
        // below publishes them.
        unsafe {
            std::ptr::copy_nonoverlapping(head.as_ptr(), self.map.ring(start, first), first);
            std::ptr::copy_nonoverlapping(tail.as_ptr(), self.map.ring(0, tail.len()), tail.len());
        }
        self.committed += frames.len() as u64;
        self.map
            .field(COMMITTED)
            .store(self.committed, Ordering::Release);
        true
    }

    /// Sends everything held back on `stream`, blocking until it is sent.
    pub fn send_held(&mut self, stream: &UnixStream) -> io::Result<()> {
        while self.sent < self.committed {
            let start = (self.sent % RING as u64) as usize;
            let len = self.held();
            let first = len.min(RING - start);
            // SAFETY: both ranges are inside the ring, and hold bytes this
            // side wrote (`sent..committed`), which nothing writes before
            // they are sent.
            let (head, tail) = unsafe {
                (
                    std::slice::from_raw_parts(self.map.ring(start, first), first),
                    std::slice::from_raw_parts(self.map.ring(0, len - first), len - first),
                )
            };
            let slices = [IoSlice::new(head), IoSlice::new(tail)];
            match (&*stream).write_vectored(&slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.sent += n as u64;
                    self.map.field(SENT).store(self.sent, Ordering::Release);
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Accounts for `len` bytes written to the channel without the ring,
    /// once they are written, with nothing held back.
    pub fn sent_directly(&mut self, len: usize) {
        debug_assert_eq!(self.held(), 0, "held-back bytes go first");
        self.sent += len as u64;
        self.committed = self.sent;
        // `sent` first: in between, the journal holds nothing.
        self.publish();
    }

    fn publish(&self) {
        self.map.field(SENT).store(self.sent, Ordering::Release);
        self.map
            .field(COMMITTED)
            .store(self.committed, Ordering::Release);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn pair() -> (JournalWriter, JournalReader) {
        let (fd, reader) = JournalReader::create().unwrap();
        (JournalWriter::open(fd).unwrap(), reader)
    }

    /// Reads everything `stream` holds now.
    fn drain(stream: &UnixStream) -> Vec<u8> {
        use std::io::Read;
        stream.set_nonblocking(true).unwrap();
        let mut out = Vec::new();
        let _ = (&*stream).read_to_end(&mut out);
        out
    }

    #[test]
    fn held_bytes_are_recovered_after_those_received() {
        let (mut writer, reader) = pair();
        let (ours, theirs) = UnixStream::pair().unwrap();
        assert!(writer.hold(b"hello "));
        writer.send_held(&ours).unwrap();
        assert!(writer.hold(b"world"));
        let received = drain(&theirs);
        assert_eq!(received, b"hello ");
        assert_eq!(reader.recover(received.len() as u64), b"world");
        // Less received than sent: the channel still holds the rest.
        assert_eq!(reader.recover(2), b"");
        // Everything received.
        assert_eq!(reader.recover(11), b"");
    }

    #[test]
    fn a_direct_write_leaves_nothing_to_recover() {
        let (mut writer, reader) = pair();
        let (ours, theirs) = UnixStream::pair().unwrap();
        (&ours).write_all(b"direct").unwrap();
        writer.sent_directly(6);
        assert_eq!(reader.recover(0), b"");
        assert_eq!(drain(&theirs).len(), 6);
        assert_eq!(reader.recover(6), b"");
        assert!(writer.hold(b"later"));
        assert_eq!(reader.recover(6), b"later");
    }

    #[test]
    fn the_ring_wraps_and_refuses_what_does_not_fit() {
        let (mut writer, reader) = pair();
        let (ours, theirs) = UnixStream::pair().unwrap();
        theirs.set_nonblocking(true).unwrap();
        let mut received = 0u64;
        // 40 rounds of about 5 KB go round the ring ten times.
        for round in 0..40u8 {
            let chunk = vec![round; 5000 + usize::from(round)];
            assert!(writer.hold(&chunk));
            if round % 3 == 2 {
                assert_eq!(reader.recover(received), chunk, "round {round}");
            }
            writer.send_held(&ours).unwrap();
            received += drain(&theirs).len() as u64;
        }
        assert_eq!(writer.held(), 0);
        assert!(!writer.hold(&vec![0; RING + 1]));
        assert!(writer.hold(&vec![7; RING]));
        assert!(!writer.hold(b"x"));
        assert_eq!(reader.recover(received), vec![7; RING]);
    }

    #[test]
    fn positions_that_break_the_rules_recover_nothing() {
        let (writer, reader) = pair();
        for (sent, committed, received) in [
            (0, RING as u64 + 1, 0),
            (10, 5, 0),
            (u64::MAX - 1, u64::MAX, u64::MAX - 1),
            (100, 200, 50),
        ] {
            writer.map.field(SENT).store(sent, Ordering::Relaxed);
            writer
                .map
                .field(COMMITTED)
                .store(committed, Ordering::Relaxed);
            let got = reader.recover(received);
            assert!(
                got.len() as u64 <= committed.saturating_sub(received),
                "{sent} {committed} {received}"
            );
            if received < sent || committed - sent.min(committed) > RING as u64 {
                assert!(got.is_empty(), "{sent} {committed} {received}");
            }
        }
    }

    #[test]
    fn a_death_note_says_the_signal_and_nothing_else() {
        let (writer, reader) = pair();
        assert_eq!(reader.death_note(), None, "a live worker");
        let note = writer.death_note();
        drop(writer);
        // The note keeps the mapping: written after the writer is gone.
        note.write(libc::SIGSEGV);
        assert_eq!(reader.death_note(), Some(libc::SIGSEGV));
        note.write(libc::SIGABRT);
        assert_eq!(reader.death_note(), Some(libc::SIGABRT));
        // What cannot be a signal in a wait status says nothing.
        for bad in [0, 128, -1, i32::MAX] {
            note.write(bad);
            assert_eq!(reader.death_note(), None, "{bad}");
        }
        let map = &note.map;
        map.field(DEATH).store(u64::MAX, Ordering::Relaxed);
        assert_eq!(reader.death_note(), None);
        map.field(DEATH).store(1 << 32 | 11, Ordering::Relaxed);
        assert_eq!(reader.death_note(), None);
    }

    #[test]
    fn a_journal_of_another_size_or_unsealed_is_refused() {
        let fd = super::super::os::memfd(JOURNAL_LEN).unwrap();
        assert!(JournalWriter::open(fd).is_err(), "not sealed");
        let fd = super::super::os::memfd(4096).unwrap();
        super::super::os::seal_size(&fd).unwrap();
        assert!(JournalWriter::open(fd).is_err(), "too small");
    }
}
