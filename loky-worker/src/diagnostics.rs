//! The built-in tasks of the stock `loky-worker` binary, for tests,
//! benchmarks and trying an executor out without writing a worker.
//!
//! Each constant is the [`Task`] handle to submit; [`registry`] binds them
//! all.
//!
//! ```
//! use loky::diagnostics;
//!
//! let registry = diagnostics::registry();
//! assert!(registry.tasks().iter().any(|t| t.name == diagnostics::SQUARE.name()));
//! ```

use std::io::{self, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use loky_proto::{SharedBytes, Task};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::{Registry, os};

/// Does nothing: the cost of a call.
pub const NOOP: Task<(), ()> = Task::new("noop");

/// Returns its argument, an [`AnyValue`]: any serde value, which comes back
/// decodable as the same type.
///
/// ```
/// use loky::diagnostics::AnyValue;
///
/// let value = AnyValue::new(&("seven", 7))?;
/// // ... the value of `ex.submit(ECHO, value)?.result()?` ...
/// assert_eq!(value.decode::<(String, u8)>()?, ("seven".to_owned(), 7));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub const ECHO: Task<AnyValue, AnyValue> = Task::new("echo");

/// Returns a byte string of the given length (every byte `0xa5`): a result
/// as large as asked for, from a small argument.
pub const BYTES: Task<u64, ByteBuf> = Task::new("bytes");

/// Returns its argument, a byte string.
pub const ECHO_BYTES: Task<ByteBuf, ByteBuf> = Task::new("echo_bytes");

/// Returns its argument, a buffer in shared memory: to and from a local
/// worker only its descriptor travels.
pub const ECHO_SHARED: Task<SharedBytes, SharedBytes> = Task::new("echo_shared");

/// Returns its argument, an `i64`.
pub const ECHO_I64: Task<i64, i64> = Task::new("echo_i64");

/// Returns the square of its argument; panics (with "the square of {x}
/// overflows i64") when that overflows, which makes a handy failing item in
/// a chunk.
pub const SQUARE: Task<i64, i64> = Task::new("square");

/// Sleeps for the given time.
pub const SLEEP: Task<Duration, ()> = Task::new("sleep");

/// Exits the worker process with the given code (`std::process::exit`).
pub const EXIT: Task<i32, ()> = Task::new("exit");

/// Aborts the worker process (`std::process::abort`: it dies of SIGABRT).
pub const ABORT: Task<(), ()> = Task::new("abort");

/// Writes to memory it may not touch: the worker dies of SIGSEGV, as with a
/// crash in native code.
pub const SEGFAULT: Task<(), ()> = Task::new("segfault");

/// Recurses without end: the stack overflows (a real fault, which Rust's
/// runtime reports on stderr before it aborts: the worker dies of SIGABRT).
pub const STACK_OVERFLOW: Task<(), ()> = Task::new("stack_overflow");

/// Panics with the given message.
pub const PANIC: Task<String, ()> = Task::new("panic");

/// Panics with a message whose `Display` panics in turn (std then aborts
/// from inside its panic machinery; the worker survives it and the caller
/// gets a placeholder message).
pub const PANIC_UNFORMATTABLE: Task<(), ()> = Task::new("panic_unformattable");

/// Allocates the given number of bytes, touches every page (so they count in
/// resident memory), frees them and returns the number. Under a memory
/// limit too small for it, the worker dies.
pub const ALLOCATE: Task<u64, u64> = Task::new("allocate");

/// Allocates and touches the given number of bytes and never frees them (a
/// memory leak); returns the number.
pub const LEAK: Task<u64, u64> = Task::new("leak");

/// Busy-loops for the given time; returns how many iterations it made.
pub const SPIN: Task<Duration, u64> = Task::new("spin");

/// Writes the given number of bytes to stdout (lines of `x`, each ending in
/// a newline), flushes, and returns the number.
pub const WRITE_STDOUT: Task<u64, u64> = Task::new("write_stdout");

/// Writes the given number of bytes to stderr (lines of `x`, each ending in
/// a newline), flushes, and returns the number.
pub const WRITE_STDERR: Task<u64, u64> = Task::new("write_stderr");

/// Prints the given string and a newline to stdout (`println!`).
pub const PRINT: Task<String, ()> = Task::new("print");

/// Returns the worker's process id.
pub const PID: Task<(), u32> = Task::new("pid");

/// Returns the value of the given environment variable in the worker, if
/// it is set and valid Unicode.
pub const GETENV: Task<String, Option<String>> = Task::new("getenv");

/// Makes the worker ignore SIGTERM (for good), then sleeps for the given
/// time: a worker that only SIGKILL stops.
pub const SLEEP_IGNORING_TERM: Task<Duration, ()> = Task::new("sleep_ignoring_term");

/// Starts `sleep` for the given time as a child of the worker, in its
/// process group, does not wait for it, and returns its pid.
pub const SPAWN_SLEEPER: Task<Duration, u32> = Task::new("spawn_sleeper");

/// Any value a serde type can encode, as the argument and result of
/// [`ECHO`]: made from a value with [`AnyValue::new`], read back as any
/// type with the same encoding with [`AnyValue::decode`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AnyValue(rmpv::Value);

/// Why a value could not become an [`AnyValue`] or be read back from one.
#[derive(Debug)]
pub struct AnyValueError(String);

impl std::fmt::Display for AnyValueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AnyValueError {}

impl AnyValue {
    /// `value`, as its encoding describes it.
    pub fn new<T: Serialize + ?Sized>(value: &T) -> Result<AnyValue, AnyValueError> {
        rmpv::ext::to_value(value)
            .map(AnyValue)
            .map_err(|e| AnyValueError(e.to_string()))
    }

    /// The value read as a `T`.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, AnyValueError> {
        rmpv::ext::from_value(self.0.clone()).map_err(|e| AnyValueError(e.to_string()))
    }
}

/// A registry with every task of this module.
pub fn registry() -> Registry {
    Registry::new()
        .register(NOOP, |()| ())
        .register(ECHO, |value| value)
        .register(ECHO_BYTES, |bytes| bytes)
        .register(ECHO_SHARED, |bytes| bytes)
        .register(BYTES, |len| ByteBuf::from(touched_with(len, 0xa5)))
        .register(ECHO_I64, |x| x)
        .register(SQUARE, square)
        .register(SLEEP, std::thread::sleep)
        .register(EXIT, |code| std::process::exit(code))
        .register(ABORT, |()| std::process::abort())
        .register(SEGFAULT, |()| os::raise_segfault())
        .register(STACK_OVERFLOW, |()| {
            recurse(0);
        })
        .register(PANIC, |message| panic!("{message}"))
        .register(PANIC_UNFORMATTABLE, |()| panic!("{}", Unformattable))
        .register(ALLOCATE, |len| {
            drop(touched(len));
            len
        })
        .register(LEAK, |len| {
            touched(len).leak();
            len
        })
        .register(SPIN, spin)
        .register(WRITE_STDOUT, |len| write_lines(io::stdout().lock(), len))
        .register(WRITE_STDERR, |len| write_lines(io::stderr().lock(), len))
        .register(PRINT, |line| println!("{line}"))
        .register(PID, |()| std::process::id())
        .register(GETENV, |name| std::env::var(name).ok())
        .register(SLEEP_IGNORING_TERM, |duration| {
            os::ignore_sigterm();
            std::thread::sleep(duration);
        })
        .register(SPAWN_SLEEPER, spawn_sleeper)
}

/// A value whose `Display` panics.
struct Unformattable;

impl std::fmt::Display for Unformattable {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        panic!("Unformattable refuses to be formatted")
    }
}

/// Recursion the optimiser cannot turn into a loop.
#[expect(unconditional_recursion, reason = "the point is to overflow the stack")]
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 64]);
    recurse(depth + 1) + frame[0]
}

fn square(x: i64) -> i64 {
    x.checked_mul(x)
        .unwrap_or_else(|| panic!("the square of {x} overflows i64"))
}

/// `len` bytes, every one written, so every page is resident.
fn touched(len: u64) -> Vec<u8> {
    touched_with(len, 1)
}

/// `len` bytes, every one `byte`.
fn touched_with(len: u64, byte: u8) -> Vec<u8> {
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    std::hint::black_box(vec![byte; len])
}

fn spin(duration: Duration) -> u64 {
    let start = Instant::now();
    let mut iterations = 0u64;
    while start.elapsed() < duration {
        iterations = std::hint::black_box(iterations + 1);
    }
    iterations
}

/// Writes `len` bytes of 64-byte lines (the last one possibly shorter),
/// each ending in a newline.
fn write_lines(mut out: impl Write, len: u64) -> u64 {
    const LINE: &[u8; 64] = b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n";
    let mut left = usize::try_from(len).unwrap_or(usize::MAX);
    let mut lines = Vec::with_capacity(LINE.len() * 1024);
    while left > 0 {
        lines.clear();
        while left > 0 && lines.len() < lines.capacity() {
            let n = left.min(LINE.len());
            lines.extend_from_slice(&LINE[LINE.len() - n..]);
            left -= n;
        }
        out.write_all(&lines).expect("cannot write");
    }
    out.flush().expect("cannot flush");
    len
}

#[expect(
    clippy::zombie_processes,
    reason = "the sleeper is left running on purpose; once the worker exits, init reaps it"
)]
fn spawn_sleeper(duration: Duration) -> u32 {
    let child = Command::new("sleep")
        .arg(duration.as_secs_f64().to_string())
        .spawn()
        .expect("cannot start `sleep`");
    child.id()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_of_x_and_end_in_newlines() {
        for len in [0u64, 1, 63, 64, 65, 70_000] {
            let mut out = Vec::new();
            assert_eq!(write_lines(&mut out, len), len);
            assert_eq!(out.len() as u64, len);
            if len > 0 {
                assert_eq!(out.last(), Some(&b'\n'));
            }
            assert!(out.iter().all(|b| *b == b'x' || *b == b'\n'));
            assert!(out.split(|b| *b == b'\n').all(|line| line.len() < 64));
        }
    }

    #[test]
    fn every_task_is_registered() {
        let names: Vec<_> = registry().tasks().into_iter().map(|t| t.name).collect();
        assert_eq!(names.len(), 24);
        assert!(names.contains(&SPAWN_SLEEPER.name().to_owned()));
    }

    #[test]
    fn square_panics_on_overflow() {
        assert_eq!(square(-3), 9);
        assert!(std::panic::catch_unwind(|| square(i64::MAX)).is_err());
    }
}
