//! A task's output as it arrived from its worker, still encoded: on the
//! heap, or left in the shared memory its reply came in (a large output is
//! decoded from there, never copied first), together with the shared
//! buffers that came with the reply, which decoding it may name.

use std::borrow::Cow;
use std::fmt;
use std::ops::{Deref, Range};

use loky_proto::SharedAttachments;
use loky_proto::shm::MappedBody;

/// The encoded bytes of one output, and what decoding them needs.
#[derive(Clone)]
pub(crate) struct OutputBytes {
    bytes: Held,
    attached: SharedAttachments,
}

#[derive(Clone)]
enum Held {
    /// A small output, kept in place: most outputs of small calls fit.
    Inline(Inline),
    Heap(Vec<u8>),
    /// A part of a reply's body, in the memory file it came in.
    Mapped(MappedBody, Range<usize>),
}

/// Up to [`Inline::MAX`] bytes, without an allocation of their own: as
/// large as a `Held` is anyway.
#[derive(Clone, Copy)]
struct Inline {
    len: u8,
    bytes: [u8; Inline::MAX],
}

impl Inline {
    const MAX: usize = 23;

    fn new(part: &[u8]) -> Option<Inline> {
        let mut bytes = [0; Inline::MAX];
        bytes.get_mut(..part.len())?.copy_from_slice(part);
        Some(Inline {
            len: part.len() as u8,
            bytes,
        })
    }
}

impl OutputBytes {
    /// Runs `decode` on the bytes where `SharedBytes` values find the
    /// buffers that came with the reply.
    pub(crate) fn decode_with<R>(&self, decode: impl FnOnce(&[u8]) -> R) -> R {
        self.attached.decode(|| decode(self))
    }
}

impl Deref for OutputBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.bytes {
            Held::Inline(inline) => &inline.bytes[..usize::from(inline.len)],
            Held::Heap(bytes) => bytes,
            Held::Mapped(body, range) => &body[range.clone()],
        }
    }
}

impl From<Vec<u8>> for OutputBytes {
    /// Bytes that name no shared buffer.
    fn from(bytes: Vec<u8>) -> Self {
        OutputBytes {
            bytes: Held::Heap(bytes),
            attached: SharedAttachments::default(),
        }
    }
}

impl fmt::Debug for OutputBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutputBytes")
            .field("len", &self.len())
            .field("mapped", &matches!(self.bytes, Held::Mapped(..)))
            .field("attached", &!self.attached.is_empty())
            .finish()
    }
}

/// What came with one reply frame, to keep its outputs from.
pub(crate) struct ReplyFrame {
    /// The body's mapping, when it came in a memory file.
    mapped: Option<MappedBody>,
    attached: SharedAttachments,
}

impl ReplyFrame {
    pub(crate) fn new(mapped: Option<MappedBody>, attached: SharedAttachments) -> ReplyFrame {
        ReplyFrame { mapped, attached }
    }

    /// An output of this reply: a part of a mapped body stays where it is;
    /// anything else is copied out of the reader's buffer, in place if it
    /// is small.
    pub(crate) fn output(&self, bytes: Cow<'_, [u8]>) -> OutputBytes {
        let copied =
            |part: &[u8]| Inline::new(part).map_or_else(|| Held::Heap(part.to_vec()), Held::Inline);
        let held = match (&self.mapped, bytes) {
            (Some(body), Cow::Borrowed(part)) => match range_within(body, part) {
                Some(range) => Held::Mapped(body.clone(), range),
                None => copied(part),
            },
            (_, Cow::Borrowed(part)) => copied(part),
            (_, Cow::Owned(bytes)) => Held::Heap(bytes),
        };
        OutputBytes {
            bytes: held,
            attached: self.attached.clone(),
        }
    }
}

/// Where `part` lies within `whole`, if it is a slice of it.
fn range_within(whole: &[u8], part: &[u8]) -> Option<Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= whole.len()).then_some(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_is_found_within_its_whole_and_nothing_else_is() {
        let whole = vec![1u8, 2, 3, 4, 5];
        assert_eq!(range_within(&whole, &whole[1..4]), Some(1..4));
        assert_eq!(range_within(&whole, &whole[5..]), Some(5..5));
        let other = vec![1u8, 2];
        assert_eq!(range_within(&whole, &other), None);
    }

    #[test]
    fn small_outputs_are_kept_in_place_and_make_it_no_larger() {
        let frame = ReplyFrame::new(None, SharedAttachments::default());
        for len in [0, 1, Inline::MAX, Inline::MAX + 1, 1000] {
            let bytes: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let out = frame.output(Cow::Borrowed(&bytes));
            assert_eq!(&*out, &bytes[..]);
            assert_eq!(matches!(out.bytes, Held::Inline(_)), len <= Inline::MAX);
        }
        assert_eq!(size_of::<Held>(), size_of::<(Vec<u8>, usize)>());
    }

    #[test]
    fn bytes_not_in_a_mapping_are_copied() {
        let frame = ReplyFrame::new(None, SharedAttachments::default());
        let out = frame.output(Cow::Borrowed(&[9, 8]));
        assert_eq!(&*out, &[9, 8]);
        let value: u8 = out.decode_with(loky_proto::decode_payload).unwrap_or(0);
        assert_eq!(value, 9);
    }
}
