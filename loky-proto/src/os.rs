//! Everything this crate asks of the operating system and the dynamic
//! loader, and all of its `unsafe`: which loaded object holds a given code
//! address (its executable segments and its notes), and turning a checked
//! code address back into a function pointer.

use std::ops::Range;
use std::path::PathBuf;

use crate::frame::FrameSink;
use crate::invoke::Runtime;
use crate::message::{CallKind, Outcome};

/// One object the loader mapped (the executable, or a shared library) as
/// this process sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Image {
    /// Its executable segments, as address ranges of this process.
    pub(crate) code: Vec<Range<usize>>,
    /// Its ELF notes (the raw contents of its `PT_NOTE` segments).
    pub(crate) notes: Vec<Vec<u8>>,
    /// Its file, when the loader knows it (`None` for the executable).
    pub(crate) path: Option<PathBuf>,
}

/// The loaded object one of whose segments holds `address`.
#[cfg(target_os = "linux")]
pub(crate) fn image_containing(address: usize) -> Option<Image> {
    use std::ffi::{CStr, c_int, c_void};

    struct Search {
        address: usize,
        found: Option<Image>,
    }

    /// Called by `dl_iterate_phdr` for each loaded object; 1 stops the
    /// walk. Must not unwind: nothing in it panics.
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: `data` is the `Search` that `image_containing` passed to
        // `dl_iterate_phdr`, borrowed by nothing else during the walk.
        let search = unsafe { &mut *data.cast::<Search>() };
        // SAFETY: the loader passes a valid `dl_phdr_info` that lives for
        // the duration of this call.
        let info = unsafe { &*info };
        let base = info.dlpi_addr as usize;
        let headers = if info.dlpi_phdr.is_null() {
            &[][..]
        } else {
            // SAFETY: `dlpi_phdr` points to `dlpi_phnum` program headers of
            // this object, mapped for as long as the object is.
            unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) }
        };
        let range = |vaddr: usize, size: usize| {
            let start = base.wrapping_add(vaddr);
            start..start.wrapping_add(size)
        };
        let holds = headers.iter().any(|h| {
            h.p_type == libc::PT_LOAD
                && range(h.p_vaddr as usize, h.p_memsz as usize).contains(&search.address)
        });
        if !holds {
            return 0;
        }
        let code = headers
            .iter()
            .filter(|h| h.p_type == libc::PT_LOAD && h.p_flags & libc::PF_X != 0)
            .map(|h| range(h.p_vaddr as usize, h.p_memsz as usize))
            .collect();
        let notes = headers
            .iter()
            .filter(|h| h.p_type == libc::PT_NOTE)
            .map(|h| {
                let at = range(h.p_vaddr as usize, h.p_memsz as usize);
                // SAFETY: a PT_NOTE segment lies within the object's loaded,
                // readable segments, mapped for as long as the object is.
                unsafe { std::slice::from_raw_parts(at.start as *const u8, at.len()) }.to_vec()
            })
            .collect();
        let path = if info.dlpi_name.is_null() {
            None
        } else {
            // SAFETY: a non-null `dlpi_name` is a NUL-terminated string that
            // lives as long as the object.
            let name = unsafe { CStr::from_ptr(info.dlpi_name) };
            use std::os::unix::ffi::OsStrExt;
            (!name.is_empty()).then(|| PathBuf::from(std::ffi::OsStr::from_bytes(name.to_bytes())))
        };
        search.found = Some(Image { code, notes, path });
        1
    }

    let mut search = Search {
        address,
        found: None,
    };
    // SAFETY: `visit` matches the callback type, does not unwind, and only
    // uses `data` as the `Search` passed here, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&raw mut search).cast::<c_void>()) };
    search.found
}

/// Where the loader cannot be asked, no object is known: functions cannot
/// be sent to workers.
#[cfg(not(target_os = "linux"))]
pub(crate) fn image_containing(_address: usize) -> Option<Image> {
    None
}

/// The address of the code of `f`.
pub(crate) fn code_address<I, O>(f: fn(I) -> O) -> usize {
    f as usize
}

/// The signature every trampoline has: it runs the `fn(I) -> O` at the
/// given address on a call's encoded argument(s).
pub(crate) type Trampoline = unsafe fn(
    function: usize,
    kind: CallKind,
    args: &[u8],
    out: &mut dyn FrameSink,
    unwind: &dyn Runtime,
) -> Result<(), Outcome<'static>>;

/// The address of the code of trampoline `t`.
pub(crate) fn trampoline_address(t: Trampoline) -> usize {
    t as usize
}

/// Runs the trampoline at address `trampoline` on the function at address
/// `function`.
///
/// # Safety
///
/// `trampoline` must be the address of a [`Trampoline`] of this program,
/// as [`trampoline_address`] gave it, and `function` the address of a
/// `fn(I) -> O` of this program whose `I` and `O` are that trampoline's.
pub(crate) unsafe fn call_trampoline(
    trampoline: usize,
    function: usize,
    kind: CallKind,
    args: &[u8],
    out: &mut dyn FrameSink,
    unwind: &dyn Runtime,
) -> Result<(), Outcome<'static>> {
    // SAFETY: the caller guarantees that `trampoline` is the address of a
    // function of type `Trampoline`; a function pointer has the size of a
    // `usize` and is made from an address by transmuting it.
    let t = unsafe { std::mem::transmute::<usize, Trampoline>(trampoline) };
    // SAFETY: the caller guarantees that `function` suits this trampoline.
    unsafe { t(function, kind, args, out, unwind) }
}

/// The function at address `function`.
///
/// # Safety
///
/// `function` must be the address of a `fn(I) -> O` of this program, as
/// [`code_address`] gave it.
pub(crate) unsafe fn function_at<I, O>(function: usize) -> fn(I) -> O {
    // SAFETY: the caller guarantees that `function` is the address of a
    // `fn(I) -> O`; a function pointer has the size of a `usize`.
    unsafe { std::mem::transmute::<usize, fn(I) -> O>(function) }
}
