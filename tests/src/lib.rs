//! Tasks shared by the end-to-end tests and their worker program
//! `loky-test-worker`, and helpers to inspect processes.

#![deny(missing_docs)]

pub mod chaos;
mod escape;
mod schedule;

pub use escape::{ECHO_OR_ESCAPE, LEAVE_GROUP_AND_SLEEP};
pub use schedule::{Ran, SLEEP_AND_REPORT, monotonic_ns};
pub mod map_chaos;
pub mod map_tasks;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use loky::{Registry, Task};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `x * 2`; panics when `x % 10 == 3`; returns `Err` when `x % 10 == 7`.
pub const FLAKY: Task<i64, Result<i64, String>> = Task::new("flaky");

/// Stores its argument for [`INIT_VALUE`]; used as an initializer.
pub const INIT: Task<String, ()> = Task::new("init");

/// What [`INIT`] stored in this worker.
pub const INIT_VALUE: Task<(), Option<String>> = Task::new("init_value");

/// The pid of the worker that runs it and what [`INIT`] stored there.
pub const INIT_REPORT: Task<(), (u32, Option<String>)> = Task::new("init_report");

/// An initializer that panics.
pub const INIT_PANIC: Task<String, ()> = Task::new("init_panic");

/// Returns a [`Picky`] that the parent cannot decode when odd.
pub const PICKY: Task<u64, Picky> = Task::new("picky");

/// Returns its argument; the worker cannot decode the argument when odd.
pub const PICKY_ARG: Task<PickyArg, u64> = Task::new("picky_arg");

/// Returns a value whose encoding fails in the worker.
pub const UNENCODABLE_OUTPUT: Task<(), Unencodable> = Task::new("unencodable_output");

/// Builds an executor in the worker and runs itself `levels` more times
/// below; returns the depth of the innermost worker or the first error as
/// a [`NestedError`].
pub const NESTED: Task<u32, Result<u32, NestedError>> = Task::new("nested");

/// An error met by [`NESTED`] at some level: its variant's name (see
/// [`error_kind`]) and its message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NestedError {
    /// The name of the `loky::Error` variant.
    pub kind: String,
    /// Its message.
    pub message: String,
}

impl From<loky::Error> for NestedError {
    fn from(error: loky::Error) -> Self {
        NestedError {
            kind: error_kind(&error).to_owned(),
            message: error.to_string(),
        }
    }
}

/// The name of `error`'s variant, to tell errors apart once they crossed a
/// process boundary as data.
pub fn error_kind(error: &loky::Error) -> &'static str {
    use loky::Error as E;
    match error {
        E::BrokenProcessPool(_) => "BrokenProcessPool",
        E::TerminatedWorker(_) => "TerminatedWorker",
        E::ShutdownExecutor(_) => "ShutdownExecutor",
        E::Cancelled => "Cancelled",
        E::Timeout => "Timeout",
        E::Task(_) => "Task",
        E::Serialization(_) => "Serialization",
        E::UnknownTask(_) => "UnknownTask",
        E::TaskMismatch(_) => "TaskMismatch",
        E::WorkerNotFound(_) => "WorkerNotFound",
        E::Spawn(_) => "Spawn",
        E::DeadlineExceeded(_) => "DeadlineExceeded",
        E::InvalidArgument(_) => "InvalidArgument",
        _ => "other",
    }
}

/// How long a test task waits for a result of its own nested pool.
const NESTED_WAIT: Duration = Duration::from_secs(60);

/// A name no worker registers.
pub const UNKNOWN: Task<(), ()> = Task::new("no_such_task");

/// The stock `square` task's name with the wrong types.
pub const SQUARE_AS_STRING: Task<String, String> = Task::new("square");

/// Starts `sleep` for the given time in the worker's process group, writes
/// its pid to the given file (whole, by a rename), then sleeps for that time
/// itself: a running task with a child process, whose file says it started.
pub const SPAWN_AND_SLEEP: Task<(String, Duration), ()> = Task::new("spawn_and_sleep");

/// Connects to the Unix socket of a [`Gate`] at the given path, sends its
/// worker's pid and waits there until the gate releases it: a running task
/// that the test holds and releases at will.
pub const GATE: Task<String, ()> = Task::new("gate");

/// Returns the first of its arguments; with a code as the second, the
/// worker exits with that code instead: a `map` item that kills its worker.
pub const ECHO_OR_EXIT: Task<(i64, Option<i32>), i64> = Task::new("echo_or_exit");

/// Builds a pool of one worker running this same program and runs [`GATE`]
/// there with the given path: a task whose own pool's worker the test holds
/// (and learns the pid of) at its gate.
pub const NESTED_GATE: Task<String, ()> = Task::new("nested_gate");

/// A `u64` that refuses to be decoded when odd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Picky(pub u64);

impl<'de> Deserialize<'de> for Picky {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u64::deserialize(d)?;
        if n % 2 == 1 {
            return Err(serde::de::Error::custom(format!("{n} is odd")));
        }
        Ok(Picky(n))
    }
}

/// A `u64` argument that encodes always but refuses to be decoded when odd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PickyArg(pub u64);

impl<'de> Deserialize<'de> for PickyArg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u64::deserialize(d)?;
        if n % 2 == 1 {
            return Err(serde::de::Error::custom(format!("argument {n} is odd")));
        }
        Ok(PickyArg(n))
    }
}

/// A value whose `Serialize` always fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Unencodable;

impl Serialize for Unencodable {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "Unencodable refuses to be encoded",
        ))
    }
}

static INIT_STATE: Mutex<Option<String>> = Mutex::new(None);

fn nested(levels: u32) -> Result<u32, NestedError> {
    let depth = std::env::var("LOKY_DEPTH")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0);
    if levels == 0 {
        return Ok(depth);
    }
    let ex = loky::ProcessPoolExecutor::new(1)?;
    ex.submit(NESTED, levels - 1)?.result_timeout(NESTED_WAIT)?
}

#[expect(
    clippy::zombie_processes,
    reason = "the sleeper is left running on purpose: it must die with the worker's group"
)]
fn spawn_and_sleep((pid_file, duration): (String, Duration)) {
    let sleeper = std::process::Command::new("sleep")
        .arg(duration.as_secs_f64().to_string())
        .spawn()
        .expect("cannot start `sleep`");
    let partial = format!("{pid_file}.partial");
    std::fs::write(&partial, sleeper.id().to_string()).expect("cannot write the pid file");
    std::fs::rename(&partial, &pid_file).expect("cannot rename the pid file");
    std::thread::sleep(duration);
}

fn nested_gate(path: String) {
    let ex = loky::ProcessPoolExecutor::builder()
        .max_workers(1)
        .worker_program(loky::WorkerProgram::CurrentExe)
        .build()
        .expect("a nested pool");
    ex.submit(GATE, path)
        .expect("submit to the nested pool")
        .result_timeout(NESTED_WAIT)
        .expect("the nested gate");
}

fn gate(path: String) {
    let mut stream = UnixStream::connect(&path).expect("cannot reach the gate");
    let pid = std::process::id();
    stream
        .write_all(&pid.to_le_bytes())
        .expect("cannot enter the gate");
    // A byte, or the test hanging up, opens the gate.
    let _ = stream.read(&mut [0u8]);
}

/// The test's side of [`GATE`]: a listening socket where `GATE` tasks
/// report that they run and then wait until released.
pub struct Gate {
    listener: UnixListener,
    path: PathBuf,
}

/// A `GATE` task that entered its gate and waits there.
pub struct Held {
    stream: UnixStream,
    /// The pid of the worker running it.
    pub pid: u32,
}

impl Held {
    /// Lets the task finish (dropping does too).
    pub fn release(mut self) {
        let _ = self.stream.write_all(&[1]);
    }
}

impl Gate {
    /// A gate on a fresh socket.
    pub fn new() -> Gate {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "loky-gate-{}-{}.sock",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("cannot bind the gate");
        Gate { listener, path }
    }

    /// The argument of a [`GATE`] task that waits at this gate.
    pub fn arg(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }

    /// Waits up to `timeout` for the next task to enter.
    ///
    /// # Panics
    ///
    /// If none does in time.
    pub fn entered(&self, timeout: Duration) -> Held {
        let deadline = Instant::now() + timeout;
        loop {
            let mut fd = libc::pollfd {
                fd: self.listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let millis = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
            // SAFETY: `fd` is one valid pollfd for the duration of the call.
            let ready = unsafe { libc::poll(&mut fd, 1, millis) };
            if ready > 0 {
                break;
            }
            let interrupted = ready < 0
                && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted;
            assert!(interrupted, "no task entered the gate within {timeout:?}");
        }
        let (mut stream, _) = self.listener.accept().expect("cannot accept at the gate");
        stream
            .set_read_timeout(Some(timeout))
            .expect("read timeout");
        let mut pid = [0u8; 4];
        stream.read_exact(&mut pid).expect("the task sends its pid");
        Held {
            stream,
            pid: u32::from_le_bytes(pid),
        }
    }
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new()
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The registry of `loky-test-worker`: the stock diagnostic tasks and the
/// tasks above.
pub fn registry() -> Registry {
    map_tasks::register(loky::diagnostics::registry())
        .register(FLAKY, |x: i64| match x % 10 {
            3 => panic!("flaky task failed on {x}"),
            7 => Err(format!("{x} ends in 7")),
            _ => Ok(x * 2),
        })
        .register(INIT, |value: String| {
            *INIT_STATE.lock().unwrap() = Some(value);
        })
        .register(INIT_VALUE, |()| INIT_STATE.lock().unwrap().clone())
        .register(INIT_REPORT, |()| {
            (std::process::id(), INIT_STATE.lock().unwrap().clone())
        })
        .register(INIT_PANIC, |message: String| panic!("{message}"))
        .register(PICKY, Picky)
        .register(PICKY_ARG, |PickyArg(n)| n)
        .register(UNENCODABLE_OUTPUT, |()| Unencodable)
        .register(NESTED, nested)
        .register(SPAWN_AND_SLEEP, spawn_and_sleep)
        .register(GATE, gate)
        .register(ECHO_OR_ESCAPE, escape::echo_or_escape)
        .register(LEAVE_GROUP_AND_SLEEP, escape::leave_group_and_sleep)
        .register(SLEEP_AND_REPORT, schedule::sleep_and_report)
        .register(NESTED_GATE, nested_gate)
        .register(ECHO_OR_EXIT, |(x, code): (i64, Option<i32>)| match code {
            Some(code) => std::process::exit(code),
            None => x,
        })
}
