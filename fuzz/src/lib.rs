//! Shared by the fuzz targets: how an input becomes a stream read in
//! chunks, and which frame limit is in force.

use std::io::{self, Read};

/// Reads `data` in chunks whose sizes come from `sizes` (cycled), so that
/// frames arrive split at every possible point, as from a socket.
pub struct Chunked<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    next: usize,
}

impl<'a> Chunked<'a> {
    /// A reader of `data` in chunks of `sizes[i] + 1` bytes.
    pub fn new(data: &'a [u8], sizes: &'a [u8]) -> Self {
        Chunked {
            data,
            sizes,
            next: 0,
        }
    }
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = match self.sizes {
            [] => usize::MAX,
            sizes => usize::from(sizes[self.next % sizes.len()]) + 1,
        };
        self.next += 1;
        let n = size.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Splits a fuzz input into its control header and the stream: the first
/// byte picks the maximum frame size (low bit) and how many of the next
/// bytes are chunk sizes (the rest).
pub fn split(input: &[u8]) -> Option<(usize, &[u8], &[u8])> {
    let (&control, rest) = input.split_first()?;
    let max_frame = if control & 1 == 0 {
        64 << 10
    } else {
        loky_proto::DEFAULT_MAX_FRAME
    };
    let sizes = usize::from(control >> 1).min(rest.len()).min(8);
    let (sizes, stream) = rest.split_at(sizes);
    Some((max_frame, sizes, stream))
}
