//! The floor of row 5's transport: the raw 10 MiB echo, but each way
//! through a fresh sealed memory file whose descriptor crosses the socket,
//! as the executor sends a frame past its `shm_threshold` to a local
//! worker. Nothing else: no encoding, no executor, and one buffer reused on
//! each side.
//!
//! A sealed file cannot be written again, so every frame takes fresh pages
//! (allocated, zeroed, filled, freed); the raw echo's socket buffers do
//! not. Where that costs more than the socket's copies, row 5 cannot reach
//! its raw-limit target through sealed files, whatever the executor does.

use std::fs::File;
use std::io::{self, Read};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use super::{EchoChild, frame_len};
use crate::cases::PAYLOAD;
use crate::stats::{self, Samples};

/// The hidden subcommand that makes this binary the sealed echo child.
pub(crate) const SUBCOMMAND: &str = "raw-sealed-echo";

/// The seals the executor's receiver requires before it maps a file.
const SEALS: SealFlags = SealFlags::SEAL
    .union(SealFlags::SHRINK)
    .union(SealFlags::GROW)
    .union(SealFlags::WRITE);

/// 10 MiB round trips through sealed files, in MiB/s; one untimed first.
pub(crate) fn echo_payload(runs: usize) -> Samples {
    let child =
        EchoChild::spawn_as(SUBCOMMAND).map_err(|e| format!("cannot start the echo child: {e}"))?;
    let payload = vec![0xa5u8; PAYLOAD];
    let mut reply = Vec::new();
    let echo = || -> io::Result<f64> {
        let start = Instant::now();
        send(&child.stream, &payload)?;
        let Some(file) = receive(&child.stream, &mut reply)? else {
            return Err(io::Error::other("the echo child closed its channel"));
        };
        let took = start.elapsed();
        drop(file);
        if reply != payload {
            return Err(io::Error::other("the echo child answered other bytes"));
        }
        Ok(stats::mib_per_sec(PAYLOAD, took))
    };
    let samples = measure_echo(runs, echo);
    // Reaped whether or not the echoes went well.
    child.close().map_err(|e| e.to_string())?;
    samples
}

/// `runs` timed echoes after an untimed first.
fn measure_echo(runs: usize, mut echo: impl FnMut() -> io::Result<f64>) -> Samples {
    echo().map_err(|e| e.to_string())?;
    stats::repeat(runs, echo)
}

/// The child: answers every file on stdin (a socket) with a file of the
/// same bytes, until end of file.
pub(crate) fn serve() -> io::Result<()> {
    let stream = UnixStream::from(io::stdin().as_fd().try_clone_to_owned()?);
    let mut body = Vec::new();
    while let Some(call) = receive(&stream, &mut body)? {
        send(&stream, &body)?;
        drop(call);
    }
    Ok(())
}

/// Writes `body` into a fresh memory file, seals it, and sends its
/// descriptor with the frame's length; the file is gone once the peer
/// closes it.
fn send(stream: &UnixStream, body: &[u8]) -> io::Result<()> {
    let fd = rustix::fs::memfd_create(
        c"loky-bench",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    let file = File::from(fd);
    file.write_all_at(body, 0)?;
    rustix::fs::fcntl_add_seals(&file, SEALS)?;
    let header = frame_len(body.len())?;
    let fds = [file.as_fd()];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("no room to attach the file"));
    }
    let sent = loop {
        match rustix::net::sendmsg(
            stream,
            &[io::IoSlice::new(&header)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Err(Errno::INTR) => {}
            sent => break sent?,
        }
    };
    if sent != header.len() {
        // Four bytes always fit an empty socket buffer, as here.
        return Err(io::Error::other("the frame's length went in pieces"));
    }
    Ok(())
}

/// A received file, still mapped: dropping it unmaps and closes it, which
/// frees its pages. Both sides drop it off the timed path, as the executor
/// unmaps a call's body once its reply is out.
struct Received {
    /// Open as long as it is mapped.
    fd: OwnedFd,
    map: *mut std::ffi::c_void,
    len: usize,
}

impl Drop for Received {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: the mapping made in `receive`, unmapped only here.
            let _ = unsafe { rustix::mm::munmap(self.map, self.len) };
        }
    }
}

/// Receives one file and copies its bytes into `body`, as a receiver
/// decoding from the mapping does; `None` at end of file.
fn receive(stream: &UnixStream, body: &mut Vec<u8>) -> io::Result<Option<Received>> {
    let mut header = [0u8; 4];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = loop {
        let mut iov = [io::IoSliceMut::new(&mut header)];
        match rustix::net::recvmsg(stream, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
            Err(Errno::INTR) => {}
            got => break got?.bytes,
        }
    };
    let mut fds: Vec<OwnedFd> = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if got == 0 {
        return Ok(None);
    }
    let mut stream_ref = stream;
    stream_ref.read_exact(&mut header[got..])?;
    let fd = match (fds.pop(), fds.is_empty()) {
        (Some(fd), true) => fd,
        _ => return Err(io::Error::other("a frame came without exactly one file")),
    };
    if !rustix::fs::fcntl_get_seals(&fd)?.contains(SEALS) {
        return Err(io::Error::other("a frame's file is not sealed"));
    }
    let len = u32::from_le_bytes(header) as usize;
    if (rustix::fs::fstat(&fd)?.st_size as u64) < len as u64 {
        return Err(io::Error::other("a frame's file is shorter than the frame"));
    }
    body.clear();
    let mut received = Received {
        fd,
        map: std::ptr::null_mut(),
        len: 0,
    };
    if len > 0 {
        // SAFETY: a fresh read-only shared mapping of `len` bytes of a file
        // at least that long, sealed against writes and shrinking: it stays
        // valid and unchanged until `Received` unmaps it.
        unsafe {
            received.map = rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ,
                MapFlags::SHARED,
                &received.fd,
                0,
            )?;
            received.len = len;
            body.extend_from_slice(std::slice::from_raw_parts(received.map.cast::<u8>(), len));
        }
    }
    Ok(Some(received))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_crosses_in_a_sealed_file_and_nothing_else() {
        let (a, b) = UnixStream::pair().unwrap();
        let payload: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
        send(&a, &payload).unwrap();
        let mut got = Vec::new();
        assert!(receive(&b, &mut got).unwrap().is_some());
        assert_eq!(got, payload);
        // The bare length, without a file, is refused.
        let mut plain = &a;
        std::io::Write::write_all(&mut plain, &frame_len(5).unwrap()).unwrap();
        assert!(receive(&b, &mut got).is_err());
        drop(a);
        assert!(receive(&b, &mut got).unwrap().is_none());
    }
}
