//! Everything the shared-memory transport asks of the operating system
//! (`memfd_create`, file seals, `mmap`, `SCM_RIGHTS`), and all of its
//! `unsafe`. Memory files are Linux only: elsewhere creating one fails
//! (frames then stay on the socket) and no received descriptor is accepted.

use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::ptr::NonNull;
use std::sync::{OnceLock, mpsc};

#[cfg(target_os = "linux")]
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::io::Errno;
#[cfg(target_os = "linux")]
use rustix::mm::MremapFlags;
use rustix::mm::{MapFlags, ProtFlags};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

#[cfg(target_os = "linux")]
/// The seals a file must carry before a peer maps it: nobody can write it,
/// shrink it (which would make reading a mapped page fault) or grow it, and
/// nobody can lift these seals.
const SEALS: SealFlags = SealFlags::SEAL
    .union(SealFlags::SHRINK)
    .union(SealFlags::GROW)
    .union(SealFlags::WRITE);

/// At most this many descriptors travel with one `sendmsg`.
pub(crate) const MAX_FDS_PER_MESSAGE: usize = 64;

/// A new memory file of `len` bytes (zero-filled), close-on-exec, that
/// accepts seals.
#[cfg(target_os = "linux")]
pub(crate) fn memfd(len: usize) -> io::Result<OwnedFd> {
    let fd =
        rustix::fs::memfd_create(c"loky-shm", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    rustix::fs::ftruncate(&fd, len as u64)?;
    Ok(fd)
}

/// Memory files are Linux only.
#[cfg(not(target_os = "linux"))]
pub(crate) fn memfd(_len: usize) -> io::Result<OwnedFd> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Seals `fd` (see [`SEALS`]) after truncating it to `len` bytes. No
/// writable mapping of it may exist any more.
#[cfg(target_os = "linux")]
pub(crate) fn seal(fd: &OwnedFd, len: usize) -> io::Result<()> {
    rustix::fs::ftruncate(fd, len as u64)?;
    rustix::fs::fcntl_add_seals(fd, SEALS)?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn seal(_fd: &OwnedFd, _len: usize) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// The size of `fd` if it is a sealed memory file (as [`seal`] leaves it);
/// an error naming what is wrong otherwise.
pub(crate) fn sealed_len(fd: BorrowedFd<'_>) -> io::Result<usize> {
    len_if_sealed(fd, Against::WritesAndSize)
}

/// What a memory file must be sealed against.
#[derive(Clone, Copy)]
enum Against {
    /// Its bytes and its size cannot change ([`seal`]).
    WritesAndSize,
    /// Its size cannot change ([`seal_size`]).
    Size,
}

/// The size of `fd` if it is a memory file sealed `against` what is given.
#[cfg(target_os = "linux")]
fn len_if_sealed(fd: BorrowedFd<'_>, against: Against) -> io::Result<usize> {
    let (seals, what) = match against {
        Against::WritesAndSize => (SEALS, "writes and resizing"),
        Against::Size => (SIZE_SEALS, "resizing"),
    };
    let carried = match rustix::fs::fcntl_get_seals(fd) {
        Ok(seals) => seals,
        Err(Errno::INVAL) => {
            return Err(io::Error::other("the descriptor is not a memory file"));
        }
        Err(err) => return Err(err.into()),
    };
    if !carried.contains(seals) {
        return Err(io::Error::other(format!(
            "the memory file is not sealed against {what}"
        )));
    }
    let size = rustix::fs::fstat(fd)?.st_size;
    usize::try_from(size).map_err(|_| io::Error::other("the memory file has an invalid size"))
}

#[cfg(not(target_os = "linux"))]
fn len_if_sealed(_fd: BorrowedFd<'_>, _against: Against) -> io::Result<usize> {
    Err(io::Error::other(
        "memory files are not supported on this platform",
    ))
}

/// The seals of a file whose size cannot change (but whose bytes can):
/// what a journal carries.
#[cfg(target_os = "linux")]
const SIZE_SEALS: SealFlags = SealFlags::SEAL
    .union(SealFlags::SHRINK)
    .union(SealFlags::GROW);

/// Seals `fd` against resizing (see [`SIZE_SEALS`]).
#[cfg(target_os = "linux")]
pub(crate) fn seal_size(fd: &OwnedFd) -> io::Result<()> {
    rustix::fs::fcntl_add_seals(fd, SIZE_SEALS)?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn seal_size(_fd: &OwnedFd) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// The size of `fd` if it is a memory file sealed against resizing (as
/// [`seal_size`] leaves it).
pub(crate) fn size_sealed_len(fd: BorrowedFd<'_>) -> io::Result<usize> {
    len_if_sealed(fd, Against::Size)
}

/// Maps the first `len` (> 0) bytes of `fd`, shared, read-only or
/// read-write. The caller must make sure the file cannot shrink while it
/// is mapped, and unmaps it with [`unmap`].
pub(crate) fn map_shared(
    fd: BorrowedFd<'_>,
    len: usize,
    writable: bool,
) -> io::Result<NonNull<u8>> {
    let prot = if writable {
        ProtFlags::READ | ProtFlags::WRITE
    } else {
        ProtFlags::READ
    };
    // SAFETY: a fresh mapping at an address the kernel chooses aliases no
    // Rust object.
    let ptr =
        unsafe { rustix::mm::mmap(std::ptr::null_mut(), len, prot, MapFlags::SHARED, fd, 0)? };
    NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap gave null"))
}

/// Unmaps a range [`map_shared`] mapped; nothing may point into it any more.
pub(crate) fn unmap(ptr: NonNull<u8>, len: usize) {
    // SAFETY: the caller gives a range `map_shared` returned, once, with no
    // reference into it left.
    let _ = unsafe { rustix::mm::munmap(ptr.as_ptr().cast(), len) };
}

/// A read-only shared mapping of a whole sealed memory file.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is read-only and its file is sealed against writes,
// so its bytes never change: sharing and sending it is as safe as for a
// `Box<[u8]>`.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of `fd`, which must be sealed (checked by
    /// [`sealed_len`] to hold at least `len` bytes). `populate` faults the
    /// pages in at once, for bytes about to be read whole.
    pub(crate) fn new(fd: BorrowedFd<'_>, len: usize, populate: bool) -> io::Result<Mapping> {
        if len == 0 {
            return Ok(Mapping {
                ptr: NonNull::dangling(),
                len: 0,
            });
        }
        #[cfg(target_os = "linux")]
        let flags = if populate {
            MapFlags::SHARED | MapFlags::POPULATE
        } else {
            MapFlags::SHARED
        };
        #[cfg(not(target_os = "linux"))]
        let flags = {
            let _ = populate;
            MapFlags::SHARED
        };
        // SAFETY: a fresh mapping at an address the kernel chooses aliases
        // no Rust object. The file is sealed against writes and shrinking,
        // so the bytes a slice of the mapping shows never change and no
        // page of it can disappear (no SIGBUS) while it is mapped.
        let ptr =
            unsafe { rustix::mm::mmap(std::ptr::null_mut(), len, ProtFlags::READ, flags, fd, 0)? };
        Ok(Mapping {
            ptr: NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap gave null"))?,
            len,
        })
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for reads of `len` bytes while the mapping
        // lives (dangling but never read when `len` is 0), and the bytes are
        // immutable (see `new`).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.len > 0 {
            // The range is the one `mmap` returned, unmapped once; no slice
            // of it outlives `self` (they borrow it).
            unmap_soon(Unmap {
                addr: self.ptr.as_ptr() as usize,
                len: self.len,
            });
        }
    }
}

/// Read-only mappings at least this large are unmapped by a background
/// thread: unmapping the last view of a memory file frees its pages, about
/// 0.3 ms per MiB, which would otherwise delay whoever drops a large
/// result or argument.
const UNMAP_LATER_FROM: usize = 1 << 20;

/// A range of a read-only shared mapping that nothing refers to any more.
struct Unmap {
    addr: usize,
    len: usize,
}

impl Unmap {
    fn now(self) {
        // SAFETY: an `Unmap` is made only from a `Mapping` being dropped:
        // the range is its whole mapping, unmapped once, and no reference
        // into it is alive.
        let _ = unsafe { rustix::mm::munmap(self.addr as *mut std::ffi::c_void, self.len) };
    }
}

/// What the unmapping thread is asked to do.
enum Unmapping {
    Range(Unmap),
    /// Answer once every range sent before is unmapped.
    #[cfg(test)]
    Flush(mpsc::Sender<()>),
}

/// The process's unmapping thread, started at the first large mapping
/// dropped; `None` if it could not start, or in a child forked after it
/// started (which has the channel but not the thread).
fn unmapper() -> Option<&'static mpsc::Sender<Unmapping>> {
    /// The channel to the thread, and the process that started it.
    static UNMAPPER: OnceLock<Option<(u32, mpsc::Sender<Unmapping>)>> = OnceLock::new();
    let (started_by, send) = UNMAPPER
        .get_or_init(|| {
            let (send, receive) = mpsc::channel();
            let unmap_all = move || {
                for job in receive {
                    match job {
                        Unmapping::Range(range) => range.now(),
                        #[cfg(test)]
                        Unmapping::Flush(done) => drop(done.send(())),
                    }
                }
            };
            std::thread::Builder::new()
                .name("loky-unmap".into())
                .stack_size(64 << 10)
                .spawn(unmap_all)
                .ok()
                .map(|_| (std::process::id(), send))
        })
        .as_ref()?;
    (*started_by == std::process::id()).then_some(send)
}

/// Unmaps `range` now if it is small, or hands it to the process's unmapping
/// thread and returns at once. The thread only ever unmaps: a mapping left
/// to it holds memory a little longer but no descriptor (a mapping's file
/// is closed by its owner as usual).
fn unmap_soon(range: Unmap) {
    if range.len < UNMAP_LATER_FROM {
        return range.now();
    }
    let Some(send) = unmapper() else {
        return range.now();
    };
    if let Err(mpsc::SendError(Unmapping::Range(range))) = send.send(Unmapping::Range(range)) {
        range.now();
    }
}

/// Returns once every mapping dropped before is unmapped.
#[cfg(test)]
pub(crate) fn wait_for_unmapping() {
    let (done, finished) = mpsc::channel();
    if let Some(send) = unmapper()
        && send.send(Unmapping::Flush(done)).is_ok()
    {
        let _ = finished.recv();
    }
}

/// A writable shared mapping of a memory file that grows as it is
/// written: where a large frame is encoded in place before it is sealed.
#[derive(Debug)]
pub(crate) struct MapMut {
    fd: OwnedFd,
    ptr: NonNull<u8>,
    capacity: usize,
}

// SAFETY: the mapping is owned exclusively (like a `Vec<u8>`); the memory
// file is not shared with anyone before it is sealed and unmapped.
unsafe impl Send for MapMut {}

impl MapMut {
    /// A new memory file of `capacity` bytes (> 0), mapped writable.
    pub(crate) fn new(capacity: usize) -> io::Result<MapMut> {
        let fd = memfd(capacity)?;
        // SAFETY: a fresh mapping at an address the kernel chooses aliases
        // no Rust object; the file is ours alone and `capacity` bytes long.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                capacity,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )?
        };
        Ok(MapMut {
            fd,
            ptr: NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap gave null"))?,
            capacity,
        })
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Grows the file and its mapping to `capacity` bytes; the mapping may
    /// move, its bytes stay.
    #[cfg(target_os = "linux")]
    pub(crate) fn grow(&mut self, capacity: usize) -> io::Result<()> {
        rustix::fs::ftruncate(&self.fd, capacity as u64)?;
        // SAFETY: the old range is our mapping; `MAYMOVE` lets the kernel
        // move it, and no reference into it is alive (`&mut self`).
        let ptr = unsafe {
            rustix::mm::mremap(
                self.ptr.as_ptr().cast(),
                self.capacity,
                capacity,
                MremapFlags::MAYMOVE,
            )?
        };
        self.ptr = NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mremap gave null"))?;
        self.capacity = capacity;
        Ok(())
    }

    /// Never called: no `MapMut` exists where memory files do not.
    #[cfg(not(target_os = "linux"))]
    pub(crate) fn grow(&mut self, _capacity: usize) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Writes `data` at `offset` through the file rather than the mapping
    /// (the same bytes either way): the kernel fills fresh pages straight
    /// from `data` instead of zeroing them first and faulting them into
    /// the mapping. False if it could not (the caller copies then).
    pub(crate) fn write_at(&mut self, offset: usize, data: &[u8]) -> bool {
        let mut done = 0;
        while done < data.len() {
            match rustix::io::pwrite(&self.fd, &data[done..], (offset + done) as u64) {
                Ok(0) => return false,
                Ok(n) => done += n,
                Err(Errno::INTR) => {}
                Err(_) => return false,
            }
        }
        true
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `capacity` bytes while `self` lives,
        // the file is not shared, and `&self` excludes writers.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.capacity) }
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.capacity) }
    }

    /// Unmaps the file, cuts it to `len` bytes and seals it: from now on
    /// it is immutable and can be handed to a peer.
    pub(crate) fn seal(self, len: usize) -> io::Result<OwnedFd> {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: the range is our mapping, unmapped once (`Drop` will not
        // run); no reference into it is alive since `self` was moved here.
        let unmapped = unsafe { rustix::mm::munmap(this.ptr.as_ptr().cast(), this.capacity) };
        // SAFETY: `this` is never used again; its fd is moved out once.
        let fd = unsafe { std::ptr::read(&this.fd) };
        unmapped?;
        seal(&fd, len)?;
        Ok(fd)
    }
}

impl Drop for MapMut {
    fn drop(&mut self) {
        // SAFETY: the range is our mapping, unmapped once; no reference into
        // it outlives `self`.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.capacity) };
    }
}

/// Sends the start of `bytes` with `fds` attached to its first byte; returns
/// how many bytes went (at least one, or an error: the descriptors travel
/// with the first byte, so a send that moves no byte moves no descriptor).
pub(crate) fn send_with_fds(
    stream: &UnixStream,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
    nonblocking: bool,
) -> io::Result<usize> {
    debug_assert!(!bytes.is_empty() && fds.len() <= MAX_FDS_PER_MESSAGE);
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("too many descriptors for one message"));
    }
    let mut flags = SendFlags::NOSIGNAL;
    if nonblocking {
        flags |= SendFlags::DONTWAIT;
    }
    loop {
        match rustix::net::sendmsg(stream, &[io::IoSlice::new(bytes)], &mut control, flags) {
            Err(Errno::INTR) => {}
            result => return Ok(result?),
        }
    }
}

/// Sends the start of `bytes` on `stream` with `fds` (at most 64) attached
/// to its first byte, blocking until the socket takes at least that byte;
/// returns how many bytes went. The low-level step of a descriptor frame
/// (see [`shm`](crate::shm)); [`FrameBuf`](crate::shm::FrameBuf) sends
/// whole frames.
pub fn send_with_fds_blocking(
    stream: &UnixStream,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    if bytes.is_empty() || fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "descriptors travel with at least one byte, at most 64 at a time",
        ));
    }
    send_with_fds(stream, bytes, fds, false)
}

/// Sends the start of `bytes`; returns how many bytes went.
pub(crate) fn send_bytes(
    stream: &UnixStream,
    bytes: &[u8],
    nonblocking: bool,
) -> io::Result<usize> {
    let mut flags = SendFlags::NOSIGNAL;
    if nonblocking {
        flags |= SendFlags::DONTWAIT;
    }
    Ok(rustix::net::send(stream, bytes, flags)?)
}

/// Receives into `buf`, appending the descriptors that came with the bytes
/// to `fds`; without blocking if `nonblocking` (nothing there: an error of
/// kind [`io::ErrorKind::WouldBlock`]). Descriptors the control buffer
/// could not hold are closed by the kernel; that is an error here (the
/// frame that needed them is lost).
pub(crate) fn recv_with_fds(
    stream: &UnixStream,
    buf: &mut [u8],
    fds: &mut VecDeque<OwnedFd>,
    nonblocking: bool,
) -> io::Result<usize> {
    let mut flags = RecvFlags::CMSG_CLOEXEC;
    if nonblocking {
        flags |= RecvFlags::DONTWAIT;
    }
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = loop {
        let mut iov = [io::IoSliceMut::new(buf)];
        match rustix::net::recvmsg(stream, &mut iov, &mut control, flags) {
            Err(Errno::INTR) => {}
            result => break result?,
        }
    };
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if received.flags.contains(ReturnFlags::CTRUNC) {
        return Err(io::Error::other(format!(
            "the peer attached more than {MAX_FDS_PER_MESSAGE} descriptors to one message"
        )));
    }
    Ok(received.bytes)
}
