//! What the chaos suite submits, injects and observes, independent of the
//! executor under test.

use std::fmt;
use std::time::Duration;

/// One call the chaos suite can submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `ECHO_I64`: returns its argument.
    Echo(i64),
    /// `ECHO_BYTES` of `len` bytes drawn from `salt`: returns them.
    EchoBytes {
        /// Payload length.
        len: usize,
        /// Seed of the payload's content.
        salt: u64,
    },
    /// `SLEEP`: sleeps, returns `()`.
    Sleep(Duration),
    /// `PID`: returns the worker's pid.
    Pid,
    /// `FLAKY`: `Ok(2x)`, a returned `Err` when `x % 10 == 7`, a panic when
    /// `x % 10 == 3`.
    Flaky(i64),
    /// `PANIC`: panics.
    Panic,
    /// `SEGFAULT`: the worker dies of SIGSEGV.
    Segfault,
    /// `ABORT`: the worker dies of SIGABRT.
    Abort,
    /// `EXIT(code)`: the worker exits with `code`.
    Exit(i32),
    /// `ALLOCATE(bytes)`: returns `bytes`, or kills the worker when over its
    /// memory limit.
    Allocate(u64),
    /// `SPAWN_SLEEPER`: starts a `sleep` in the worker's process group and
    /// returns its pid.
    SpawnSleeper(Duration),
    /// `INIT_VALUE`: what the pool's initializer stored in the worker.
    InitValue,
    /// `ECHO_OR_EXIT`: returns the integer, or exits with the code.
    EchoOrExit(i64, Option<i32>),
    /// `ECHO_OR_ESCAPE` with a pid file: forks a process that leaves the
    /// session holding the worker's channel without reading it, then the
    /// worker exits with code 3.
    Escape,
    /// `LEAVE_GROUP_AND_SLEEP`: starts a `sleep` in the worker's process
    /// group, moves the worker to the executor's process group and sleeps.
    LeaveGroup(Duration),
    /// `PANIC_UNFORMATTABLE`: a panic whose message's `Display` panics.
    PanicUnformattable,
    /// `BYTES(n)`: a result of `n` bytes, more than the pool's frame limit.
    Oversized(u64),
}

impl Call {
    /// The task name the call runs.
    pub fn task(&self) -> &'static str {
        match self {
            Call::Echo(_) => "echo_i64",
            Call::EchoBytes { .. } => "echo_bytes",
            Call::Sleep(_) => "sleep",
            Call::Pid => "pid",
            Call::Flaky(_) => "flaky",
            Call::Panic => "panic",
            Call::Segfault => "segfault",
            Call::Abort => "abort",
            Call::Exit(_) => "exit",
            Call::Allocate(_) => "allocate",
            Call::SpawnSleeper(_) => "spawn_sleeper",
            Call::InitValue => "init_value",
            Call::EchoOrExit(..) => "echo_or_exit",
            Call::Escape => "echo_or_escape",
            Call::LeaveGroup(_) => "leave_group_and_sleep",
            Call::PanicUnformattable => "panic_unformattable",
            Call::Oversized(_) => "bytes",
        }
    }
}

/// The payload of `Call::EchoBytes { len, salt }`.
pub fn payload(len: usize, salt: u64) -> Vec<u8> {
    let mut rng = super::rng::Rng::new(salt);
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        bytes.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// FNV-1a of `bytes`: enough to tell a corrupted payload.
pub fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A successful result, reduced to what can be compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `()`.
    Unit,
    /// An integer.
    Int(i64),
    /// A byte string: its length and [`digest`].
    Bytes {
        /// Length.
        len: usize,
        /// [`digest`] of the content.
        digest: u64,
    },
    /// A process id.
    Pid(u32),
    /// An error the task returned as its value (`Ok(Err(text))`).
    Returned(String),
    /// What an initializer stored in the worker (`INIT_VALUE`).
    Init(Option<String>),
}

/// The class of an error, as the summary counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// `Error::TerminatedWorker`.
    TerminatedWorker,
    /// `Error::BrokenProcessPool` because a worker died before its hello.
    BrokenStart,
    /// `Error::BrokenProcessPool` because a worker "broke the protocol".
    BrokenProtocol,
    /// Any other `Error::BrokenProcessPool`.
    Broken,
    /// `Error::ShutdownExecutor` for a submit after shutdown.
    Shutdown,
    /// `Error::ShutdownExecutor` for a task dropped by `kill_workers`.
    ShutdownKilled,
    /// `Error::Cancelled`.
    Cancelled,
    /// `Error::Task`: the task panicked.
    Panicked,
    /// `Error::DeadlineExceeded`.
    DeadlineExceeded,
    /// `Error::Serialization`.
    Serialization,
    /// Any other error.
    Other,
}

impl ErrorKind {
    /// Every kind, in summary order.
    pub const ALL: [ErrorKind; 11] = [
        ErrorKind::TerminatedWorker,
        ErrorKind::BrokenStart,
        ErrorKind::BrokenProtocol,
        ErrorKind::Broken,
        ErrorKind::Shutdown,
        ErrorKind::ShutdownKilled,
        ErrorKind::Cancelled,
        ErrorKind::Panicked,
        ErrorKind::DeadlineExceeded,
        ErrorKind::Serialization,
        ErrorKind::Other,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::TerminatedWorker => "TerminatedWorker",
            ErrorKind::BrokenStart => "BrokenProcessPool (start)",
            ErrorKind::BrokenProtocol => "BrokenProcessPool (protocol)",
            ErrorKind::Broken => "BrokenProcessPool (other)",
            ErrorKind::Shutdown => "ShutdownExecutor (submit)",
            ErrorKind::ShutdownKilled => "ShutdownExecutor (killed)",
            ErrorKind::Cancelled => "Cancelled",
            ErrorKind::Panicked => "Task (panic)",
            ErrorKind::DeadlineExceeded => "DeadlineExceeded",
            ErrorKind::Serialization => "Serialization",
            ErrorKind::Other => "other",
        }
    }
}

/// How a worker process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exit code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

/// What a `TerminatedWorker` error says of the death.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Death {
    /// How the worker ended.
    pub exit: Exit,
    /// The task it was running.
    pub task: Option<String>,
    /// The memory limit it exceeded, if that is what killed it.
    pub memory_limit: Option<u64>,
}

/// A failed call: the class of its error and, for `TerminatedWorker`, the
/// death it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The class of the error.
    pub kind: ErrorKind,
    /// The death, for `TerminatedWorker`.
    pub death: Option<Death>,
    /// The error's message, for reports.
    pub message: String,
}

impl Failure {
    /// A failure of `kind` with no death.
    pub fn of(kind: ErrorKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            death: None,
            message: message.into(),
        }
    }
}

/// What became of one submitted call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its future resolved to a value.
    Value(Value),
    /// Its future resolved to an error.
    Failed(Failure),
    /// `submit` refused it.
    Rejected(Failure),
    /// Its future did not resolve by its deadline.
    Hung,
}

/// A fault the suite injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// A signal sent to a worker from outside.
    Signal(Signal),
    /// A signal sent to a worker from outside while a call with a payload
    /// of several MiB was still unresolved (counted instead of its
    /// [`Fault::Signal`]).
    TransferKill(Signal),
    /// A task that kills its worker with SIGSEGV.
    SegfaultTask,
    /// A task that aborts.
    AbortTask,
    /// A task that exits.
    ExitTask,
    /// A task that panics.
    PanicTask,
    /// A task that returns an error value.
    ErrorTask,
    /// A task that allocates past the memory limit.
    MemoryTask,
    /// A call with a deadline it will pass.
    Deadline,
    /// `Future::kill`.
    FutureKill,
    /// A shutdown while tasks are in flight.
    Shutdown,
    /// A shutdown with `kill_workers` while tasks are in flight.
    ShutdownKill,
    /// The parent of a pool SIGKILLed.
    ParentKill,
    /// `Future::cancel` of a call that had not started (it returned true).
    Cancel,
    /// A pause longer than the pool's idle timeout: its workers leave.
    IdleGap,
    /// A task that leaves a process holding its worker's channel (outside
    /// the worker's session) and ends its worker while calls are sent to it.
    ChannelHolder,
    /// A task that moves its worker to the executor's process group, then
    /// passes its deadline.
    GroupEscape,
    /// A task's panic whose message cannot be formatted.
    UnformattablePanic,
    /// A result larger than the pool's frame limit.
    OversizedResult,
}

impl Fault {
    /// The signal sent from outside, for the faults that are one.
    pub fn signal(self) -> Option<Signal> {
        match self {
            Fault::Signal(signal) | Fault::TransferKill(signal) => Some(signal),
            _ => None,
        }
    }

    /// Whether the fault kills a worker (from outside or by its task).
    pub fn kills_worker(self) -> bool {
        self.signal().is_some()
            || matches!(
                self,
                Fault::SegfaultTask
                    | Fault::AbortTask
                    | Fault::ExitTask
                    | Fault::MemoryTask
                    | Fault::ChannelHolder
            )
    }
}

/// A signal the suite sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    /// SIGKILL.
    Kill,
    /// SIGTERM.
    Term,
    /// SIGSEGV.
    Segv,
}

impl Signal {
    /// Every signal the suite sends.
    pub const ALL: [Signal; 3] = [Signal::Kill, Signal::Term, Signal::Segv];

    /// The signal number.
    pub fn number(self) -> i32 {
        match self {
            Signal::Kill => libc::SIGKILL,
            Signal::Term => libc::SIGTERM,
            Signal::Segv => libc::SIGSEGV,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Fault::Signal(Signal::Kill) => "SIGKILL from outside",
            Fault::Signal(Signal::Term) => "SIGTERM from outside",
            Fault::Signal(Signal::Segv) => "SIGSEGV from outside",
            Fault::TransferKill(Signal::Kill) => "SIGKILL during a large transfer",
            Fault::TransferKill(Signal::Term) => "SIGTERM during a large transfer",
            Fault::TransferKill(Signal::Segv) => "SIGSEGV during a large transfer",
            Fault::SegfaultTask => "segfaulting task",
            Fault::AbortTask => "aborting task",
            Fault::ExitTask => "exiting task",
            Fault::PanicTask => "panicking task",
            Fault::ErrorTask => "task returning Err",
            Fault::MemoryTask => "allocation past memory cap",
            Fault::Deadline => "task past its deadline",
            Fault::FutureKill => "Future::kill",
            Fault::Shutdown => "shutdown in flight",
            Fault::ShutdownKill => "shutdown(kill_workers) in flight",
            Fault::ParentKill => "parent SIGKILLed",
            Fault::Cancel => "Future::cancel of a pending call",
            Fault::IdleGap => "pause past the idle timeout",
            Fault::ChannelHolder => "channel held by an escaped grandchild",
            Fault::GroupEscape => "worker moved out of its process group",
            Fault::UnformattablePanic => "panic whose message cannot be formatted",
            Fault::OversizedResult => "result past the frame limit",
        };
        f.write_str(name)
    }
}

/// The crash policy of a pool, as the suite sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    /// `CrashPolicy::BreakPool`.
    BreakPool,
    /// `CrashPolicy::Respawn`.
    Respawn,
}
