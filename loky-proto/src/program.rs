//! This program as both sides of a pool see it: its identity (which tells
//! two builds apart), its executable code (where a function sent by a
//! parent may point), and its role (whether it serves as a worker, and
//! whether it is its own worker program).
//!
//! The role lives here, in the crate both the executor and the worker
//! runtime use, so that `loky::init()` (worker side) can tell executors
//! built afterwards (executor side) that this program is its own worker.

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::{env, os};

/// What identifies a program build: two processes with equal, known
/// identities run the very same executable code.
///
/// ```
/// use loky::ProgramId;
///
/// let me = ProgramId::current();
/// assert!(me.is_known()); // the ELF build id, or the executable file's identity
/// assert!(me.same_program(me));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProgramId {
    /// Where the identity comes from.
    pub kind: IdKind,
    /// The build id, or the file's identity, as bytes.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// Where a [`ProgramId`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IdKind {
    /// The GNU build id the linker wrote into the executable.
    BuildId,
    /// For an executable without a build id: the identity of the file the
    /// process runs (device, inode, size and modification time). A running
    /// executable cannot be written to, so while one process runs it, that
    /// identity stands for its contents; a copy of the file is another
    /// program.
    FileId,
    /// Nothing could be found: equal to nothing, not even itself.
    Unknown,
}

impl ProgramId {
    /// The identity of the program running in this process (of the loaded
    /// object that holds this crate: the executable, unless loky is linked
    /// into a shared library, which must then have a build id). Computed
    /// once.
    pub fn current() -> &'static ProgramId {
        static CURRENT: OnceLock<ProgramId> = OnceLock::new();
        CURRENT.get_or_init(|| match image() {
            Some(image) => identify(image),
            None => ProgramId::unknown(),
        })
    }

    /// An identity that matches nothing.
    pub fn unknown() -> ProgramId {
        ProgramId {
            kind: IdKind::Unknown,
            bytes: Vec::new(),
        }
    }

    /// Whether this identity was found (an unknown one matches nothing).
    pub fn is_known(&self) -> bool {
        self.kind != IdKind::Unknown
    }

    /// Whether both identities are known and equal: the two programs are
    /// one build.
    pub fn same_program(&self, other: &ProgramId) -> bool {
        self.is_known() && self == other
    }
}

impl fmt::Display for ProgramId {
    /// `build id 4adfede4bade6008`: the kind and the first 8 bytes in hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            IdKind::BuildId => "build id",
            IdKind::FileId => "file id",
            IdKind::Unknown => return f.write_str("unknown build"),
        };
        f.write_str(kind)?;
        f.write_str(" ")?;
        for byte in self.bytes.iter().take(8) {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// The loaded object holding this crate's code, found once.
fn image() -> Option<&'static os::Image> {
    static IMAGE: OnceLock<Option<os::Image>> = OnceLock::new();
    IMAGE
        .get_or_init(|| os::image_containing(anchor_address()))
        .as_ref()
}

/// The reference point of function offsets: a function of this crate,
/// hence of the same loaded object as the program's own code. Offsets from
/// it stay valid when the object is loaded at another address (ASLR).
#[inline(never)]
fn anchor(x: usize) -> usize {
    x
}

pub(crate) fn anchor_address() -> usize {
    os::code_address(anchor as fn(usize) -> usize)
}

/// Whether `address` lies in the executable code of this program's object.
pub(crate) fn is_program_code(address: usize) -> bool {
    image().is_some_and(|image| {
        image
            .code
            .iter()
            .any(|r: &Range<usize>| r.contains(&address))
    })
}

fn identify(image: &os::Image) -> ProgramId {
    if let Some(id) = image.notes.iter().find_map(|notes| build_id(notes)) {
        return ProgramId {
            kind: IdKind::BuildId,
            bytes: id.to_vec(),
        };
    }
    // The file of a shared library may have been replaced since it was
    // loaded; that of the running executable is the one `/proc/self/exe`
    // names, even then.
    let file = image
        .path
        .is_none()
        .then(|| file_id(Path::new("/proc/self/exe")))
        .flatten();
    match file {
        Some(bytes) => ProgramId {
            kind: IdKind::FileId,
            bytes,
        },
        None => ProgramId::unknown(),
    }
}

/// Device, inode, size and modification time of the file at `path`.
fn file_id(path: &Path) -> Option<Vec<u8>> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let fields = [
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime() as u64,
        meta.mtime_nsec() as u64,
    ];
    Some(fields.iter().flat_map(|f| f.to_le_bytes()).collect())
}

/// The note type of a GNU build id.
const NT_GNU_BUILD_ID: u32 = 3;

/// The GNU build id among the ELF notes `notes`, if there is one.
///
/// A note is a header of three native-endian `u32`s (name size,
/// descriptor size, type), the name and the descriptor, each padded to 4
/// bytes.
pub(crate) fn build_id(notes: &[u8]) -> Option<&[u8]> {
    let pad = |n: usize| n.checked_add(3).map(|n| n & !3);
    let mut rest = notes;
    while rest.len() >= 12 {
        let word = |i: usize| u32::from_ne_bytes(rest[i..i + 4].try_into().expect("4 bytes"));
        let (name_size, desc_size, kind) = (word(0) as usize, word(4) as usize, word(8));
        let desc_at = 12usize.checked_add(pad(name_size)?)?;
        let end = desc_at.checked_add(pad(desc_size)?)?;
        let name = rest.get(12..12usize.checked_add(name_size)?)?;
        let desc = rest.get(desc_at..desc_at.checked_add(desc_size)?)?;
        if kind == NT_GNU_BUILD_ID && name == b"GNU\0" && !desc.is_empty() {
            return Some(desc);
        }
        rest = rest.get(end..)?;
    }
    None
}

static OWN_WORKER: AtomicBool = AtomicBool::new(false);
static SERVING: AtomicBool = AtomicBool::new(false);

/// Records that this program is its own worker program (`loky::init()` or
/// `serve_if_worker` ran): executors built afterwards without an explicit
/// worker program start this executable.
pub fn set_own_worker() {
    OWN_WORKER.store(true, Ordering::Release);
}

/// Whether [`set_own_worker`] was called in this process.
pub fn is_own_worker() -> bool {
    OWN_WORKER.load(Ordering::Acquire)
}

/// Records that this process serves as a worker (the worker runtime calls
/// it before serving): its tasks may build executors of their own.
pub fn set_serving() {
    SERVING.store(true, Ordering::Release);
}

/// Whether this process serves as a worker.
pub fn is_serving() -> bool {
    SERVING.load(Ordering::Acquire)
}

/// Whether an executor started this process as a worker that does not
/// serve (yet): its program's `main` builds an executor before calling
/// `loky::init()`. Such a process must not start workers of its own (they
/// would do the same, without end); the executor side ends it with
/// [`exit_code::NOT_INITIALIZED`](crate::exit_code::NOT_INITIALIZED).
pub fn is_worker_without_init() -> bool {
    !is_serving() && env::executor_channel().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(name.len() as u32).to_ne_bytes());
        out.extend_from_slice(&(desc.len() as u32).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(name);
        out.resize(out.len().next_multiple_of(4), 0);
        out.extend_from_slice(desc);
        out.resize(out.len().next_multiple_of(4), 0);
        out
    }

    #[test]
    fn the_build_id_is_found_among_other_notes() {
        let mut notes = note(b"GNU\0", 1, &[0, 0, 0, 0, 3, 0, 0, 0]);
        notes.extend(note(b"GNU\0", NT_GNU_BUILD_ID, &[0xab; 20]));
        assert_eq!(build_id(&notes), Some(&[0xab; 20][..]));
        assert_eq!(build_id(&note(b"Go\0\0", NT_GNU_BUILD_ID, b"x")), None);
    }

    #[test]
    fn malformed_notes_give_nothing() {
        assert_eq!(build_id(&[]), None);
        assert_eq!(build_id(&[1, 2, 3]), None);
        let mut huge = note(b"GNU\0", NT_GNU_BUILD_ID, &[1; 20]);
        huge[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(build_id(&huge), None);
    }

    #[test]
    fn this_program_has_an_identity_and_its_code_is_known() {
        let me = ProgramId::current();
        assert!(me.is_known(), "{me:?}");
        assert!(me.same_program(&me.clone()));
        assert!(!ProgramId::unknown().same_program(&ProgramId::unknown()));
        assert!(is_program_code(anchor_address()));
        let on_stack = 0u8;
        assert!(!is_program_code(&raw const on_stack as usize));
    }

    #[test]
    fn a_file_id_tells_files_apart() {
        let dir = std::env::temp_dir();
        let a = dir.join(format!("loky-file-id-a-{}", std::process::id()));
        let b = dir.join(format!("loky-file-id-b-{}", std::process::id()));
        std::fs::write(&a, b"same").unwrap();
        std::fs::write(&b, b"same").unwrap();
        assert_eq!(file_id(&a), file_id(&a));
        assert_ne!(file_id(&a), file_id(&b), "a copy is another file");
        assert_eq!(file_id(&dir.join("loky-no-such-file")), None);
        std::fs::remove_file(a).unwrap();
        std::fs::remove_file(b).unwrap();
    }
}
