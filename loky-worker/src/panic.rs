//! Panic capture: a task's panic becomes a [`PanicInfo`] for its caller; a
//! panic of the runtime itself ends the worker with
//! [`exit_code::INTERNAL_ERROR`].
//!
//! Each thread has a [`Role`]. The panic hook, installed once, looks at the
//! role of the panicking thread:
//!
//! - [`Role::Task`] (the executing thread inside [`run_task`]): records the
//!   message, location and a backtrace for `run_task` to return, and prints
//!   nothing (the output belongs to the task, the report to the caller).
//! - [`Role::Runtime`] (the reader thread, the executing thread between
//!   tasks): hands the panic to the previous hook (which prints it), then
//!   exits with `INTERNAL_ERROR` rather than leave a limping worker.
//! - [`Role::Other`] (threads a task or the application spawned): only the
//!   previous hook, as if this runtime were not there; whoever joins that
//!   thread sees its panic.

use std::any::Any;
use std::backtrace::Backtrace;
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe, PanicHookInfo};
use std::sync::Once;

use loky_proto::{PanicInfo, exit_code};

use crate::os;

/// What a thread is to the panic hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Not a thread of the runtime.
    Other,
    /// A runtime thread outside any task.
    Runtime,
    /// The executing thread while it runs a task.
    Task,
}

thread_local! {
    static ROLE: Cell<Role> = const { Cell::new(Role::Other) };
    static CAUGHT: Cell<Option<PanicInfo>> = const { Cell::new(None) };
    /// The hook ran for a panic of the current task.
    static HOOK_RAN: Cell<bool> = const { Cell::new(false) };
}

/// The message of a task's panic whose own message could not be formatted.
pub(crate) const UNFORMATTABLE: &str =
    "<the panic message could not be formatted: its Display implementation panicked>";

/// What the caller of a task gets when the panic's message could not be
/// formatted (see [`lost_in_panic_hook`]): the message, location and
/// backtrace are lost with the thread.
pub(crate) fn unformattable() -> PanicInfo {
    PanicInfo {
        message: UNFORMATTABLE.to_owned(),
        location: None,
        backtrace: String::new(),
    }
}

/// Whether the calling thread, aborting, is the executing thread whose task
/// panicked and whose panic message could not be formatted: std formats
/// the message before it calls the hook, and a panic while it does aborts
/// the process. A panic while unwinding from another one (in a `Drop`)
/// aborts too, but after the hook ran: that is not this case.
///
/// Called from a signal handler: it only reads thread-locals that need no
/// initialisation.
pub(crate) fn lost_in_panic_hook() -> bool {
    ROLE.get() == Role::Task && std::thread::panicking() && !HOOK_RAN.get()
}

/// Marks the current thread as one of the runtime's.
pub(crate) fn set_runtime_thread() {
    ROLE.set(Role::Runtime);
}

/// Installs the panic hook (once per process), chaining to the hook in place
/// before it.
pub(crate) fn install_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| match ROLE.get() {
            Role::Task => {
                HOOK_RAN.set(true);
                CAUGHT.set(Some(capture(info)));
            }
            Role::Runtime => {
                previous(info);
                os::exit_with_code(exit_code::INTERNAL_ERROR);
            }
            Role::Other => previous(info),
        }));
    });
}

fn capture(info: &PanicHookInfo<'_>) -> PanicInfo {
    PanicInfo {
        message: payload_message(info.payload()).to_owned(),
        location: info
            .location()
            .map(|at| format!("{}:{}:{}", at.file(), at.line(), at.column())),
        backtrace: task_frames(&Backtrace::force_capture().to_string()),
    }
}

/// One frame of a rendered backtrace: its `N: symbol` line and the lines
/// after it (`at file:line:column`).
struct Frame<'a> {
    symbol: &'a str,
    lines: Vec<&'a str>,
}

/// The frames of `backtrace` (as `Backtrace`'s `Display` renders it) that
/// belong to the task: without the panic machinery above the task's code
/// (std's, and this hook's) and without the runtime below it (the worker's
/// registry and loop, std's `catch_unwind` and start-up), renumbered from
/// 0, so the first frame is the task's own code. A backtrace in which no
/// such frame is found is returned whole.
pub(crate) fn task_frames(backtrace: &str) -> String {
    let frames = parse_frames(backtrace);
    let mut start = frames
        .iter()
        .position(|f| f.symbol.contains("__rust_end_short_backtrace"))
        .map_or(0, |marker| marker + 1);
    while start < frames.len() && is_machinery(frames[start].symbol) {
        start += 1;
    }
    let mut end = frames[start..]
        .iter()
        .position(|f| is_runtime_boundary(f.symbol))
        .map_or(frames.len(), |at| start + at);
    while end > start && is_glue(frames[end - 1].symbol) {
        end -= 1;
    }
    if start >= end {
        return backtrace.to_owned();
    }
    let mut out = String::new();
    for (n, frame) in frames[start..end].iter().enumerate() {
        out.push_str(&format!("{n:>4}: {}\n", frame.symbol));
        for line in &frame.lines {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn parse_frames(backtrace: &str) -> Vec<Frame<'_>> {
    let mut frames: Vec<Frame<'_>> = Vec::new();
    for line in backtrace.lines() {
        let head = line
            .trim_start()
            .split_once(": ")
            .filter(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        match (head, frames.last_mut()) {
            (Some((_, symbol)), _) => frames.push(Frame {
                symbol,
                lines: Vec::new(),
            }),
            (None, Some(frame)) => frame.lines.push(line),
            (None, None) => {}
        }
    }
    frames
}

/// `symbol` without the `<`, `&` and `dyn ` of a trait-impl frame.
fn bare(symbol: &str) -> &str {
    symbol
        .trim_start_matches(['<', '&'])
        .trim_start_matches("dyn ")
}

/// std's own frames (and the C runtime's): how a panic is raised and a
/// program started, never the task's code.
fn is_std(symbol: &str) -> bool {
    let bare = bare(symbol);
    ["std::", "core::", "alloc::", "__rust", "rust_begin_unwind"]
        .iter()
        .any(|prefix| bare.starts_with(prefix))
}

/// Frames above the task's code: std's panic machinery and this hook.
fn is_machinery(symbol: &str) -> bool {
    let bare = bare(symbol);
    is_std(symbol)
        || bare.starts_with("loky_worker::panic::install_hook")
        || bare.starts_with("loky_worker::panic::capture")
}

/// The first frame of the worker's runtime below the task.
fn is_runtime_boundary(symbol: &str) -> bool {
    symbol.contains("loky_worker::registry::")
        || symbol.contains("loky_worker::panic::run_task")
        || symbol.contains("__rust_begin_short_backtrace")
}

/// Frames between the task's code and the runtime: closure calls and
/// std's `catch_unwind`, the payload codec.
fn is_glue(symbol: &str) -> bool {
    is_std(symbol) || bare(symbol).starts_with("loky_proto::")
}

/// Runs `f` as a task: a panic is caught and returned as a [`PanicInfo`].
///
/// The hook records the details; should it have been replaced (a task may
/// call `std::panic::set_hook`), the message is taken from the payload.
pub(crate) fn run_task<R>(f: impl FnOnce() -> R) -> Result<R, PanicInfo> {
    let role = ROLE.replace(Role::Task);
    HOOK_RAN.set(false);
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    ROLE.set(role);
    // What the hook recorded, if it ran (a panic the task caught itself
    // leaves a record too, which must not outlive this task).
    let caught = if HOOK_RAN.get() { CAUGHT.take() } else { None };
    result.map_err(|payload| caught.unwrap_or_else(|| from_payload(payload)))
}

/// The message of a panic, as std's hook prints it.
fn payload_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "Box<dyn Any>"
    }
}

fn from_payload(payload: Box<dyn Any + Send>) -> PanicInfo {
    PanicInfo {
        message: payload_message(&*payload).to_owned(),
        location: None,
        backtrace: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_panic_is_captured_with_its_location_and_backtrace() {
        install_hook();
        let err = run_task(|| panic!("boom {}", 7)).unwrap_err();
        assert_eq!(err.message, "boom 7");
        assert!(err.location.unwrap().contains("panic.rs"));
        assert!(!err.backtrace.is_empty());
        assert_eq!(ROLE.get(), Role::Other);
    }

    #[test]
    fn the_backtrace_starts_at_the_task_and_ends_before_the_runtime() {
        install_hook();
        let err = run_task(|| {
            let _ = std::hint::black_box(0);
            panic!("boom")
        })
        .unwrap_err();
        let first = err.backtrace.lines().next().unwrap();
        assert!(
            first.starts_with("   0: loky_worker::panic::tests::"),
            "{}",
            err.backtrace
        );
        assert!(!err.backtrace.contains("run_task"), "{}", err.backtrace);
        assert!(!err.backtrace.contains("catch_unwind"), "{}", err.backtrace);
    }

    #[test]
    fn backtraces_are_cut_at_the_machinery_and_the_runtime() {
        let raw = "   0: loky_worker::panic::install_hook::{{closure}}
             at src/panic.rs:1:1
   1: <alloc::boxed::Box<F,A> as core::ops::function::Fn<Args>>::call
   2: std::panicking::panic_with_hook
   3: std::sys::backtrace::__rust_end_short_backtrace
   4: core::panicking::panic_fmt
   5: core::option::unwrap_failed
   6: my_app::parse
             at src/main.rs:3:9
   7: my_app::main::{{closure}}
             at src/main.rs:9:5
   8: core::ops::function::Fn::call
   9: loky_worker::registry::Typed<I,O,F>::apply::{{closure}}
  10: std::panicking::catch_unwind
  11: loky_worker::panic::run_task
  12: main
";
        assert_eq!(
            task_frames(raw),
            "   0: my_app::parse
             at src/main.rs:3:9
   1: my_app::main::{{closure}}
             at src/main.rs:9:5
"
        );
        // Nothing of the task's own: kept whole.
        let only_std = "   0: std::panicking::begin_panic\n   1: loky_worker::panic::run_task\n";
        assert_eq!(task_frames(only_std), only_std);
        assert_eq!(task_frames(""), "");
    }

    #[test]
    fn a_task_that_returns_gives_its_value() {
        install_hook();
        assert_eq!(run_task(|| 6 * 7).unwrap(), 42);
    }

    #[test]
    fn a_non_string_payload_is_named() {
        install_hook();
        let err = run_task(|| panic::panic_any(42u8)).unwrap_err();
        assert_eq!(err.message, "Box<dyn Any>");
    }

    #[test]
    fn without_the_hook_the_payload_still_gives_the_message() {
        assert_eq!(from_payload(Box::new("plain")).message, "plain".to_owned());
        assert_eq!(
            from_payload(Box::new(String::from("owned"))).message,
            "owned"
        );
    }
}
