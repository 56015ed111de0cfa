//! [`SharedBytes`]: an immutable byte buffer in shared memory that crosses
//! to a local worker and back as a file descriptor, never copied.
//!
//! How a buffer inside any serde type travels: while a frame for a local
//! channel is encoded, the encoding thread has a side table of the frame's
//! attachments; `SharedBytes::serialize` puts its memory file there and
//! writes only the table index (a MessagePack extension value). The frame
//! goes out with the descriptors attached (`SCM_RIGHTS`). On the other
//! side the frame's received [`Attachments`] are installed on the decoding
//! thread while its payload is decoded, and `SharedBytes::deserialize`
//! maps the descriptor the index names. Anywhere else (JSON, a frame for a
//! remote channel, a payload encoded without a frame) a `SharedBytes` is
//! plain bytes.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::thread::LocalKey;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

#[cfg(unix)]
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

#[cfg(unix)]
use crate::shm::os::{self, Mapping};

/// Buffers smaller than this stay on the heap: copying them costs less
/// than a memory file, a mapping and a descriptor.
pub const SHARE_FROM: usize = 64 << 10;

/// The MessagePack extension type of an attached buffer: its data is the
/// big-endian `u32` index of the buffer in its frame's attachments.
pub(crate) const ATTACHED_EXT: i8 = 76;

/// At most this many buffers are attached to one frame; more travel as
/// bytes.
pub(crate) const MAX_ATTACHED: usize = 63;

/// An immutable byte buffer living in shared memory (a sealed memory
/// file, on Linux), with a cheap [`Clone`].
///
/// Sent to a local worker (inside any argument or output type) and back,
/// only its file descriptor travels: the bytes are never copied, whatever
/// their size. Use it for large arrays, images, model weights or any
/// payload of megabytes that a task reads but does not change. Creating one
/// from a `Vec<u8>` copies the bytes once into shared memory.
///
/// Buffers under [`SHARE_FROM`] bytes stay on the heap and travel as bytes.
/// Outside a frame for a local worker (serialized to JSON, or for a remote
/// worker), a `SharedBytes` is serialized as plain bytes. Each shared
/// buffer holds one file descriptor while it lives.
///
/// ```
/// use loky::SharedBytes;
///
/// let weights = SharedBytes::from(vec![7u8; 1 << 20]);
/// let copy = weights.clone(); // no copy of the bytes
/// assert_eq!(copy.len(), 1 << 20);
/// assert_eq!(&copy[..2], &[7, 7]);
/// assert_eq!(serde_json::to_string(&SharedBytes::from(vec![1, 2])).unwrap(), "[1,2]");
/// ```
#[derive(Clone)]
pub struct SharedBytes(Repr);

#[derive(Clone)]
enum Repr {
    Heap(Arc<[u8]>),
    #[cfg(unix)]
    Shared(Arc<Shm>),
}

/// A sealed memory file and its read-only mapping.
#[cfg(unix)]
#[derive(Debug)]
pub(crate) struct Shm {
    map: Mapping,
    fd: OwnedFd,
}

#[cfg(unix)]
impl Shm {
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Copies `bytes` into a new sealed memory file and maps it.
    fn copy_of(bytes: &[u8]) -> std::io::Result<Shm> {
        let mut file = os::MapMut::new(bytes.len())?;
        file.bytes_mut()[..bytes.len()].copy_from_slice(bytes);
        let fd = file.seal(bytes.len())?;
        Shm::map(fd, bytes.len())
    }

    /// Maps a sealed memory file of `len` bytes (checked by the caller).
    pub(crate) fn map(fd: OwnedFd, len: usize) -> std::io::Result<Shm> {
        let map = Mapping::new(fd.as_fd(), len, false)?;
        Ok(Shm { map, fd })
    }
}

impl SharedBytes {
    /// An empty buffer.
    pub fn new() -> SharedBytes {
        SharedBytes(Repr::Heap(Arc::from(Vec::new())))
    }

    /// Whether the bytes are in shared memory (and travel to local workers
    /// as a descriptor), rather than on the heap.
    pub fn is_shared(&self) -> bool {
        match &self.0 {
            Repr::Heap(_) => false,
            #[cfg(unix)]
            Repr::Shared(_) => true,
        }
    }

    /// The memory file of a shared buffer.
    #[cfg(unix)]
    pub(crate) fn shm_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.0 {
            Repr::Shared(shm) => Some(shm.fd()),
            Repr::Heap(_) => None,
        }
    }

    #[cfg(unix)]
    pub(crate) fn from_shm(shm: Shm) -> SharedBytes {
        SharedBytes(Repr::Shared(Arc::new(shm)))
    }
}

impl Default for SharedBytes {
    fn default() -> Self {
        SharedBytes::new()
    }
}

impl From<&[u8]> for SharedBytes {
    /// Copies `bytes` into shared memory (onto the heap when small, or when
    /// the system refuses a memory file).
    fn from(bytes: &[u8]) -> Self {
        #[cfg(unix)]
        if bytes.len() >= SHARE_FROM
            && let Ok(shm) = Shm::copy_of(bytes)
        {
            return SharedBytes::from_shm(shm);
        }
        SharedBytes(Repr::Heap(Arc::from(bytes)))
    }
}

impl From<Vec<u8>> for SharedBytes {
    /// Copies the bytes into shared memory (a small vector is kept on the
    /// heap as it is).
    fn from(bytes: Vec<u8>) -> Self {
        if bytes.len() < SHARE_FROM {
            return SharedBytes(Repr::Heap(Arc::from(bytes)));
        }
        SharedBytes::from(bytes.as_slice())
    }
}

impl Deref for SharedBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Heap(bytes) => bytes,
            #[cfg(unix)]
            Repr::Shared(shm) => shm.map.bytes(),
        }
    }
}

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl PartialEq for SharedBytes {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for SharedBytes {}

impl fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBytes")
            .field("len", &self.len())
            .field("shared", &self.is_shared())
            .finish()
    }
}

impl Serialize for SharedBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[cfg(unix)]
        if let Repr::Shared(shm) = &self.0
            && !serializer.is_human_readable()
            && let Some(index) = attach(shm)
        {
            let index = index.to_be_bytes();
            let ext = (ATTACHED_EXT, serde_bytes::Bytes::new(&index));
            return serializer.serialize_newtype_struct(rmp_serde::MSGPACK_EXT_STRUCT_NAME, &ext);
        }
        serializer.serialize_bytes(self)
    }
}

impl<'de> Deserialize<'de> for SharedBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Only a frame's own decoding may meet an attachment, and frames
        // are MessagePack, which describes itself.
        if decoding_frame() {
            deserializer.deserialize_any(BytesVisitor)
        } else {
            deserializer.deserialize_byte_buf(BytesVisitor)
        }
    }
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = SharedBytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bytes or an attached shared buffer")
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<SharedBytes, E> {
        Ok(SharedBytes::from(bytes))
    }

    fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<SharedBytes, E> {
        Ok(SharedBytes::from(bytes))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SharedBytes, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
        while let Some(byte) = seq.next_element::<u8>()? {
            bytes.push(byte);
        }
        Ok(SharedBytes::from(bytes))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, ext: D) -> Result<SharedBytes, D::Error> {
        let (tag, data): (i8, serde_bytes::ByteBuf) = Deserialize::deserialize(ext)?;
        let index = match (tag, <[u8; 4]>::try_from(data.as_slice())) {
            (ATTACHED_EXT, Ok(index)) => u32::from_be_bytes(index),
            _ => {
                return Err(de::Error::custom(format!(
                    "unexpected MessagePack extension {tag} where shared bytes were expected"
                )));
            }
        };
        attached(index).map_err(de::Error::custom)
    }
}

thread_local! {
    /// The buffers attached to the frames this thread is encoding that
    /// attached some, innermost last: see [`Encoding::Attaching`].
    static ENCODING: RefCell<Vec<Vec<SharedBytes>>> = const { RefCell::new(Vec::new()) };
    /// The attachments of the frame whose payload this thread is decoding,
    /// while [`DECODING_FRAME`] is [`Decoding::Attached`].
    static DECODING: RefCell<Option<Attachments>> = const { RefCell::new(None) };
    /// What the frame this thread encodes, if any, does with shared
    /// buffers.
    static ENCODING_FRAME: Cell<Encoding> = const { Cell::new(Encoding::Bytes) };
    /// Which frame's payload this thread is decoding, if any.
    static DECODING_FRAME: Cell<Decoding> = const { Cell::new(Decoding::Outside) };
}

/// What the frame a thread encodes does with the shared buffers it meets.
///
/// A mark, not a table: a frame's table is made only when it attaches a
/// buffer, which few frames do, so that the others cost two writes of the
/// mark (a worker runs each item of a chunk outside the frames, and even
/// swapping tables out and back cost more than squaring an integer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// They are written as bytes: no frame is encoded, or one that carries
    /// bytes only, or code runs [`outside_frames`].
    Bytes,
    /// They are attached to the frame, as descriptors; `table` once it has
    /// attached one: its table is then the last of [`ENCODING`].
    Attaching { table: bool },
}

/// What the payload a thread decodes may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decoding {
    /// No frame's payload, or code run [`outside_frames`]: an attachment
    /// is an error, and shared buffers are read as bytes.
    Outside,
    /// The payload of a frame that came without attachments, as nearly
    /// every frame does: nothing to install, and an attachment it names is
    /// not attached. A mark, not a table, since a table in a thread-local
    /// slot (put, taken back, the previous one restored, each through the
    /// slot's lazily registered destructor) cost seven times the decoding of
    /// a small payload.
    Bare,
    /// The payload of a frame whose attachments are in [`DECODING`].
    Attached,
}

/// Sets a thread-local cell until dropped (also when the code in between
/// panicked), then restores what it held.
struct SetCell<T: Copy + 'static> {
    key: &'static LocalKey<Cell<T>>,
    previous: T,
}

impl<T: Copy + 'static> SetCell<T> {
    // Inline (here and in `drop`): a worker hides the frames around every
    // item of a chunk, and a call across crates costs more than the cells.
    #[inline]
    fn set(key: &'static LocalKey<Cell<T>>, now: T) -> SetCell<T> {
        SetCell {
            key,
            previous: key.replace(now),
        }
    }
}

impl<T: Copy + 'static> Drop for SetCell<T> {
    #[inline]
    fn drop(&mut self) {
        self.key.set(self.previous);
    }
}

/// Registers `shm` with the frame being encoded; its index there, or
/// `None` when no frame that carries descriptors is being encoded (or it
/// is full).
#[cfg(unix)]
fn attach(shm: &Arc<Shm>) -> Option<u32> {
    let Encoding::Attaching { table } = ENCODING_FRAME.get() else {
        return None;
    };
    ENCODING.with(|tables| {
        let mut tables = tables.borrow_mut();
        if !table {
            tables.push(Vec::new());
            ENCODING_FRAME.set(Encoding::Attaching { table: true });
        }
        let table = tables.last_mut().expect("the frame's table, pushed above");
        let same = |b: &SharedBytes| matches!(&b.0, Repr::Shared(s) if Arc::ptr_eq(s, shm));
        if let Some(index) = table.iter().position(same) {
            return u32::try_from(index).ok();
        }
        if table.len() >= MAX_ATTACHED {
            return None;
        }
        table.push(SharedBytes(Repr::Shared(shm.clone())));
        u32::try_from(table.len() - 1).ok()
    })
}

fn decoding_frame() -> bool {
    DECODING_FRAME.get() != Decoding::Outside
}

/// The shared buffer at `index` of the frame being decoded.
fn attached(index: u32) -> Result<SharedBytes, String> {
    let outside = || "an attached shared buffer outside the decoding of its frame".to_owned();
    match DECODING_FRAME.get() {
        Decoding::Outside => Err(outside()),
        Decoding::Bare => Err(not_attached(index as usize)),
        Decoding::Attached => DECODING.with(|d| match d.borrow_mut().as_mut() {
            Some(attachments) => attachments.get(index as usize),
            None => Err(outside()),
        }),
    }
}

/// Why the shared buffer at `index` cannot be had from a frame's
/// attachments.
fn not_attached(index: usize) -> String {
    format!("shared buffer {index} is not attached to its frame")
}

/// Restores a thread-local table's previous value when dropped (also when
/// the code that ran in between panicked).
struct Restore<T: 'static> {
    key: &'static LocalKey<RefCell<Option<T>>>,
    previous: Option<Option<T>>,
}

impl<T: 'static> Restore<T> {
    /// Restores the previous value now; the value it replaces.
    fn put_back(mut self) -> Option<T> {
        let previous = self.previous.take().flatten();
        self.key.with(|slot| slot.replace(previous))
    }
}

impl<T: 'static> Drop for Restore<T> {
    fn drop(&mut self) {
        if let Some(previous) = self.previous.take() {
            self.key.with(|slot| *slot.borrow_mut() = previous);
        }
    }
}

/// Puts `value` in the table `key` until the guard drops.
fn install<T: 'static>(key: &'static LocalKey<RefCell<Option<T>>>, value: Option<T>) -> Restore<T> {
    Restore {
        key,
        previous: Some(key.with(|slot| slot.replace(value))),
    }
}

/// Hides the frames being encoded and decoded until dropped (also when the
/// code in between panicked), then shows them as they were.
struct Hide {
    _encoding: SetCell<Encoding>,
    _decoding: SetCell<Decoding>,
}

impl Hide {
    #[inline]
    fn both() -> Hide {
        Hide {
            _encoding: SetCell::set(&ENCODING_FRAME, Encoding::Bytes),
            _decoding: SetCell::set(&DECODING_FRAME, Decoding::Outside),
        }
    }
}

/// Runs `encode` with a side table for the shared buffers it serializes;
/// returns them, in index order, to be attached to the frame.
pub(crate) fn encoding_attached<R>(encode: impl FnOnce() -> R) -> (R, Vec<SharedBytes>) {
    let frame = AttachingFrame::begin();
    let result = encode();
    (result, frame.end())
}

/// The encoding of a frame that attaches shared buffers, from
/// [`begin`](Self::begin) to [`end`](Self::end), or to the drop after a
/// panic: then the frame's table, if it made one, leaves [`ENCODING`], and
/// the mark of the frame around it (whose table is last again) is back.
struct AttachingFrame {
    around: Encoding,
    ended: bool,
}

impl AttachingFrame {
    fn begin() -> AttachingFrame {
        AttachingFrame {
            around: ENCODING_FRAME.replace(Encoding::Attaching { table: false }),
            ended: false,
        }
    }

    /// The buffers the frame attached, in index order.
    fn end(mut self) -> Vec<SharedBytes> {
        self.ended = true;
        self.take_table().unwrap_or_default()
    }

    fn take_table(&self) -> Option<Vec<SharedBytes>> {
        let made = ENCODING_FRAME.replace(self.around) == (Encoding::Attaching { table: true });
        made.then(|| ENCODING.with(|tables| tables.borrow_mut().pop()))?
    }
}

impl Drop for AttachingFrame {
    fn drop(&mut self) {
        if !self.ended {
            self.take_table();
        }
    }
}

/// Runs `encode` where shared buffers serialize as bytes.
pub(crate) fn encoding_plain<R>(encode: impl FnOnce() -> R) -> R {
    let _frame = SetCell::set(&ENCODING_FRAME, Encoding::Bytes);
    encode()
}

/// Runs `f` outside any frame's encoding or decoding: shared buffers it
/// serializes are plain bytes and it cannot reach another frame's
/// attachments. A worker runs each task's own code so: a task that submits
/// to an executor of its own encodes other frames.
pub fn outside_frames<R>(f: impl FnOnce() -> R) -> R {
    let _hidden = Hide::both();
    f()
}

/// The shared buffers that arrived with one frame, as descriptors mapped
/// when first decoded; what is never decoded is closed when this drops.
#[derive(Debug, Default)]
pub struct Attachments {
    #[cfg(unix)]
    slots: Vec<Slot>,
}

#[cfg(unix)]
#[derive(Debug)]
enum Slot {
    /// A sealed memory file of this many bytes, not mapped yet.
    Fd(OwnedFd, usize),
    Mapped(SharedBytes),
    /// Mapping it failed: the error, for every value that names it.
    Failed(String),
}

impl Attachments {
    /// How many buffers came with the frame.
    pub fn len(&self) -> usize {
        #[cfg(unix)]
        return self.slots.len();
        #[cfg(not(unix))]
        0
    }

    /// Whether none came.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `decode` (the decoding of the frame's payload) where
    /// `SharedBytes` values find these attachments.
    pub fn decode<R>(&mut self, decode: impl FnOnce() -> R) -> R {
        if self.is_empty() {
            let _frame = SetCell::set(&DECODING_FRAME, Decoding::Bare);
            return decode();
        }
        let table = install(&DECODING, Some(std::mem::take(self)));
        let frame = SetCell::set(&DECODING_FRAME, Decoding::Attached);
        let result = decode();
        drop(frame);
        *self = table.put_back().unwrap_or_default();
        result
    }

    /// Maps every buffer now, for payloads decoded later, any number of
    /// times and on any thread (see [`SharedAttachments`]).
    pub fn share(self) -> SharedAttachments {
        #[cfg(unix)]
        if !self.slots.is_empty() {
            let mut this = self;
            let slots = (0..this.slots.len()).map(|i| this.get(i)).collect();
            return SharedAttachments { slots: Some(slots) };
        }
        SharedAttachments::default()
    }

    /// Received sealed memory files with their checked sizes.
    #[cfg(unix)]
    pub(crate) fn from_fds(fds: Vec<(OwnedFd, usize)>) -> Attachments {
        Attachments {
            slots: fds.into_iter().map(|(fd, len)| Slot::Fd(fd, len)).collect(),
        }
    }

    #[cfg(unix)]
    fn get(&mut self, index: usize) -> Result<SharedBytes, String> {
        let slot = self
            .slots
            .get_mut(index)
            .ok_or_else(|| not_attached(index))?;
        if let Slot::Fd(..) = slot {
            let Slot::Fd(fd, len) = std::mem::replace(slot, Slot::Failed(String::new())) else {
                unreachable!("matched above")
            };
            *slot = match Shm::map(fd, len) {
                Ok(shm) => Slot::Mapped(SharedBytes::from_shm(shm)),
                Err(err) => Slot::Failed(format!("cannot map shared buffer {index}: {err}")),
            };
        }
        match slot {
            Slot::Mapped(bytes) => Ok(bytes.clone()),
            Slot::Failed(err) => Err(err.clone()),
            Slot::Fd(..) => unreachable!("mapped above"),
        }
    }

    #[cfg(not(unix))]
    fn get(&mut self, index: usize) -> Result<SharedBytes, String> {
        Err(not_attached(index))
    }
}

/// The shared buffers that came with one frame, all mapped: a cheap
/// [`Clone`] that decodes the frame's payloads as often as needed, from
/// any thread. Made by [`Attachments::share`]. Each buffer holds its
/// descriptor while a clone of this, or a value decoded from it, lives.
#[derive(Debug, Clone, Default)]
pub struct SharedAttachments {
    /// Each buffer, or why it could not be mapped; `None` when none came.
    #[cfg(unix)]
    slots: Option<Arc<[Result<SharedBytes, String>]>>,
}

impl SharedAttachments {
    /// Whether no buffer came with the frame.
    pub fn is_empty(&self) -> bool {
        #[cfg(unix)]
        return self.slots.is_none();
        #[cfg(not(unix))]
        true
    }

    /// Runs `decode` (the decoding of a payload of the frame) where
    /// `SharedBytes` values find these buffers, as [`Attachments::decode`].
    pub fn decode<R>(&self, decode: impl FnOnce() -> R) -> R {
        #[cfg(unix)]
        if let Some(slots) = &self.slots {
            let slots = slots
                .iter()
                .map(|slot| match slot {
                    Ok(bytes) => Slot::Mapped(bytes.clone()),
                    Err(err) => Slot::Failed(err.clone()),
                })
                .collect();
            return Attachments { slots }.decode(decode);
        }
        // No attachment, but a frame's payload all the same: an attached
        // buffer it names is an error, not bytes.
        let _frame = SetCell::set(&DECODING_FRAME, Decoding::Bare);
        decode()
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn shared() -> (SharedBytes, Arc<Shm>) {
        let bytes = SharedBytes::from(vec![7u8; SHARE_FROM]);
        let Repr::Shared(shm) = &bytes.0 else {
            panic!("a buffer of SHARE_FROM bytes is shared")
        };
        let shm = shm.clone();
        (bytes, shm)
    }

    /// A task's own code runs outside the frames: what it serializes is
    /// not attached to the reply being encoded around it (an
    /// implementation that leaves the table visible attaches it), a frame
    /// it encodes itself gets its own table (a flag that hid every table
    /// would attach nothing there), and the reply's table is back once the
    /// task returned or panicked (a flag not restored on unwinding would
    /// hide it).
    #[test]
    fn code_outside_frames_sees_no_table_but_the_frames_it_encodes_itself() {
        let (_a, a) = shared();
        let (_b, b) = shared();
        let ((), reply) = encoding_attached(|| {
            assert_eq!(attach(&a), Some(0));
            outside_frames(|| {
                assert_eq!(attach(&b), None, "the task's own encoding");
                let ((), own) = encoding_attached(|| assert_eq!(attach(&b), Some(0)));
                assert_eq!(own.len(), 1, "the task's own frame");
                assert_eq!(attach(&b), None, "after the task's own frame");
            });
            let panicked = std::panic::catch_unwind(|| outside_frames(|| panic!("a task")));
            assert!(panicked.is_err());
            assert_eq!(attach(&b), Some(1), "the reply again, after a panic");
        });
        assert_eq!(reply.len(), 2);
        assert_eq!(attach(&a), None, "no frame is being encoded");
    }

    /// A frame's table is made when it first attaches a buffer: a frame
    /// encoded inside another that has attached nothing yet gets its own
    /// (an implementation that made the outer one's at its first attach
    /// would mix them), and a frame whose encoding panicked leaves no
    /// table behind (the frame around it attaches to its own again).
    #[test]
    fn each_frame_attaches_to_its_own_table_even_after_a_panic() {
        let (_a, a) = shared();
        let (_b, b) = shared();
        let ((), outer) = encoding_attached(|| {
            let ((), inner) = encoding_attached(|| assert_eq!(attach(&b), Some(0)));
            assert_eq!(inner.len(), 1);
            assert_eq!(attach(&a), Some(0), "the outer frame's first");
            let panicked = std::panic::catch_unwind(|| {
                encoding_attached(|| {
                    assert_eq!(attach(&a), Some(0), "a table of its own");
                    panic!("a serializer")
                })
            });
            assert!(panicked.is_err());
            assert_eq!(attach(&b), Some(1), "the outer frame's again");
            assert_eq!(encoding_plain(|| attach(&b)), None);
        });
        assert_eq!(outer.len(), 2);
        assert!(ENCODING.with(|tables| tables.borrow().is_empty()));
        assert_eq!(attach(&a), None, "no frame is being encoded");
    }

    /// A frame that came without attachments, decoded while those of
    /// another are installed, cannot reach them (an implementation that
    /// marks the frame but leaves the table visible would hand them out);
    /// they are back once it is decoded, also after a panic.
    #[test]
    fn a_frame_without_attachments_cannot_reach_those_of_the_frame_around_it() {
        let (bytes, _) = shared();
        let mut outer = Attachments {
            slots: vec![Slot::Mapped(bytes)],
        };
        outer.decode(|| {
            assert!(attached(0).is_ok());
            Attachments::default().decode(|| {
                assert!(decoding_frame());
                assert_eq!(attached(0).unwrap_err(), not_attached(0));
            });
            let panicked = std::panic::catch_unwind(|| {
                SharedAttachments::default().decode(|| panic!("a decoder"))
            });
            assert!(panicked.is_err());
            assert!(attached(0).is_ok(), "the outer frame's again");
        });
        assert!(!decoding_frame());
        assert_eq!(outer.len(), 1, "the attachments are given back");
    }

    /// The same for the attachments of the frame being decoded.
    #[test]
    fn code_outside_frames_cannot_reach_the_attachments_being_decoded() {
        let mut attachments = Attachments::default();
        assert!(!decoding_frame());
        attachments.decode(|| {
            assert!(decoding_frame());
            outside_frames(|| {
                assert!(!decoding_frame());
                assert!(attached(0).is_err());
                Attachments::default().decode(|| assert!(decoding_frame()));
                assert!(!decoding_frame());
            });
            assert!(decoding_frame());
        });
        assert!(!decoding_frame());
    }
}
