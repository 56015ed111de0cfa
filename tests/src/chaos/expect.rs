//! What each call may rightly end as, given what else happens in its round.
//!
//! The rules follow loky's contract (`shared/LOKY-BEHAVIOUR.md`, `API.md`):
//! with `BreakPool` a worker's death fails every unfinished future with
//! `TerminatedWorker`; with `Respawn` only the call running on the dead
//! worker fails; `kill_workers` fails unfinished futures with
//! `ShutdownExecutor`; a deadline fails its call with `DeadlineExceeded`.

use std::fmt;
use std::time::Duration;

use super::model::{Call, Death, ErrorKind, Exit, Fault, Policy, Value, digest, payload};

/// A set of [`ErrorKind`]s.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Kinds(u16);

impl Kinds {
    /// No kind.
    pub const NONE: Kinds = Kinds(0);

    /// This set and `kind`.
    pub fn with(self, kind: ErrorKind) -> Kinds {
        Kinds(self.0 | (1 << kind as u16))
    }

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: ErrorKind) -> bool {
        self.0 & (1 << kind as u16) != 0
    }

    /// Every kind in either set.
    pub fn union(self, other: Kinds) -> Kinds {
        Kinds(self.0 | other.0)
    }

    /// This set without `kind`.
    pub fn without(self, kind: ErrorKind) -> Kinds {
        Kinds(self.0 & !(1 << kind as u16))
    }
}

impl fmt::Debug for Kinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = ErrorKind::ALL
            .iter()
            .filter(|k| self.contains(**k))
            .map(|k| k.name())
            .collect();
        write!(f, "{{{}}}", names.join(", "))
    }
}

/// What a successful outcome must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Success {
    /// Exactly this value.
    Exactly(Value),
    /// Any process id.
    AnyPid,
    /// The call cannot succeed.
    Never,
}

/// What else may happen in a round, which widens what a call may end as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hazards {
    /// The pool's crash policy.
    pub policy: Policy,
    /// Workers may be killed from outside.
    pub external_kills: bool,
    /// Other calls of the round may kill their worker.
    pub crashes: bool,
    /// A shutdown with `kill_workers` may drop unfinished calls.
    pub shutdown_kill: bool,
    /// Unstarted calls may be cancelled (`cancel_futures`).
    pub cancel: bool,
    /// The pool's memory limit.
    pub memory_limit: Option<u64>,
    /// What the pool's initializer stores in every worker, if it has one.
    pub initializer: Option<&'static str>,
    /// A worker may be killed from outside while it runs the initializer:
    /// the pool then breaks (`BrokenProcessPool` naming the initializer)
    /// whatever its crash policy, as it cannot tell that death from an
    /// initializer that kills every worker.
    pub initializer_kills: bool,
}

impl Hazards {
    /// A quiet round under `policy`: nothing but the call itself.
    pub fn quiet(policy: Policy) -> Self {
        Hazards {
            policy,
            external_kills: false,
            crashes: false,
            shutdown_kill: false,
            cancel: false,
            memory_limit: None,
            initializer: None,
            initializer_kills: false,
        }
    }

    /// Whether a worker may die in this round.
    pub fn deaths(&self) -> bool {
        self.external_kills || self.crashes
    }
}

/// What one call may end as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// The call.
    pub call: Call,
    /// Its successful outcome.
    pub success: Success,
    /// The errors its future may resolve to.
    pub errors: Kinds,
    /// The errors `submit` may refuse it with.
    pub reject: Kinds,
    /// When it dies of its own doing and nothing else can interfere: the
    /// exit its `TerminatedWorker` must report (and the task it names).
    pub death: Option<Exit>,
    /// The memory limit its `TerminatedWorker` must report as exceeded.
    pub memory_limit: Option<u64>,
    /// The fault the call itself injects, if any.
    pub fault: Option<Fault>,
    /// The death the call causes its worker, if it kills it: what a
    /// `TerminatedWorker` of this death reports (kept whatever the round's
    /// hazards, to check every reported death against).
    pub causes: Option<Death>,
}

impl Expect {
    /// What `call` may end as in a round with `hazards`.
    pub fn new(call: Call, hazards: &Hazards) -> Self {
        let mut expect = Expect::alone(call, hazards);
        expect.widen(hazards);
        expect
    }

    /// What `call` with a deadline of `timeout` may end as: a sleep longer
    /// than its deadline must fail with `DeadlineExceeded`.
    pub fn with_deadline(call: Call, timeout: Duration, hazards: &Hazards) -> Self {
        let mut expect = Expect::new(call, hazards);
        if let Call::Sleep(d) | Call::LeaveGroup(d) = expect.call
            && d > timeout
        {
            expect.success = Success::Never;
            expect.errors = expect.errors.with(ErrorKind::DeadlineExceeded);
        }
        expect
    }

    /// A submit after shutdown: refused with `ShutdownExecutor`, or with
    /// the pool's broken error if a death broke it first (loky checks
    /// "broken" before "shut down").
    pub fn after_shutdown(call: Call, hazards: &Hazards) -> Self {
        let mut reject = Kinds::NONE.with(ErrorKind::Shutdown);
        if hazards.policy == Policy::BreakPool && hazards.deaths() {
            reject = reject.with(ErrorKind::TerminatedWorker);
        }
        Expect {
            call,
            success: Success::Never,
            errors: Kinds::NONE,
            reject,
            death: None,
            memory_limit: None,
            fault: None,
            causes: None,
        }
    }

    /// After `Future::kill` returned `killed`: a killed future fails with
    /// `Cancelled`. A kill racing with the reply may still let a correct
    /// value through (`finished_first`), which is harmless.
    pub fn killed(mut self, killed: bool, finished_first: bool) -> Self {
        if killed {
            self.errors = self.errors.with(ErrorKind::Cancelled);
            if !finished_first {
                self.success = Success::Never;
            }
        }
        self
    }

    /// After `Future::cancel` returned `cancelled`: a cancelled call fails
    /// with `Cancelled` and nothing else; one that was not cancelled cannot
    /// end as cancelled.
    pub fn cancelled(mut self, cancelled: bool) -> Self {
        if cancelled {
            self.success = Success::Never;
            self.errors = Kinds::NONE.with(ErrorKind::Cancelled);
        } else {
            self.errors = self.errors.without(ErrorKind::Cancelled);
        }
        self
    }

    /// The outcome of `call` with nothing else going on.
    fn alone(call: Call, hazards: &Hazards) -> Self {
        let memory_limit = hazards.memory_limit;
        let (success, errors, death) = match &call {
            Call::Echo(x) => (Success::Exactly(Value::Int(*x)), Kinds::NONE, None),
            Call::EchoBytes { len, salt } => {
                let bytes = payload(*len, *salt);
                let value = Value::Bytes {
                    len: *len,
                    digest: digest(&bytes),
                };
                (Success::Exactly(value), Kinds::NONE, None)
            }
            Call::Sleep(_) => (Success::Exactly(Value::Unit), Kinds::NONE, None),
            Call::Pid | Call::SpawnSleeper(_) => (Success::AnyPid, Kinds::NONE, None),
            Call::Flaky(x) => flaky(*x),
            Call::Panic => (Success::Never, Kinds::NONE.with(ErrorKind::Panicked), None),
            Call::Segfault => crash(Exit::Signal(libc::SIGSEGV)),
            Call::Abort => crash(Exit::Signal(libc::SIGABRT)),
            Call::Exit(code) | Call::EchoOrExit(_, Some(code)) => crash(Exit::Code(*code)),
            Call::EchoOrExit(x, None) => (Success::Exactly(Value::Int(*x)), Kinds::NONE, None),
            Call::Allocate(n) if memory_limit.is_some_and(|limit| *n > limit) => {
                crash(Exit::Code(loky::exit_code::MEMORY_LIMIT))
            }
            Call::Allocate(n) => (Success::Exactly(Value::Int(*n as i64)), Kinds::NONE, None),
            Call::Escape => crash(Exit::Code(3)),
            Call::LeaveGroup(_) => (Success::Exactly(Value::Unit), Kinds::NONE, None),
            Call::PanicUnformattable => {
                (Success::Never, Kinds::NONE.with(ErrorKind::Panicked), None)
            }
            Call::Oversized(_) => (
                Success::Never,
                Kinds::NONE.with(ErrorKind::Serialization),
                None,
            ),
            Call::InitValue => {
                let stored = hazards.initializer.map(str::to_owned);
                (Success::Exactly(Value::Init(stored)), Kinds::NONE, None)
            }
        };
        let over_limit = death == Some(Exit::Code(loky::exit_code::MEMORY_LIMIT));
        let memory_limit = memory_limit.filter(|_| over_limit);
        Expect {
            fault: fault_of(&call, over_limit),
            causes: death.map(|exit| Death {
                exit,
                task: Some(call.task().to_owned()),
                memory_limit,
            }),
            call,
            success,
            errors,
            reject: Kinds::NONE,
            death,
            memory_limit,
        }
    }

    fn widen(&mut self, hazards: &Hazards) {
        let pool_level = Kinds::NONE.with(ErrorKind::TerminatedWorker);
        match hazards.policy {
            Policy::BreakPool if hazards.deaths() => {
                // Any death breaks the pool: this call may fail with the
                // error of another worker's death, or be refused.
                self.errors = self.errors.union(pool_level);
                self.reject = self.reject.union(pool_level);
                self.death = None;
                self.memory_limit = None;
            }
            Policy::Respawn if hazards.external_kills => {
                // A kill may hit the worker running this call (the round's
                // budget bounds how many calls that fails).
                self.errors = self.errors.union(pool_level);
                self.death = None;
                self.memory_limit = None;
            }
            _ => {}
        }
        if hazards.shutdown_kill {
            self.errors = self.errors.with(ErrorKind::ShutdownKilled);
            self.death = None;
            self.memory_limit = None;
        }
        if hazards.cancel {
            self.errors = self.errors.with(ErrorKind::Cancelled);
        }
        if hazards.initializer_kills {
            self.errors = self.errors.with(ErrorKind::Broken);
            self.reject = self.reject.with(ErrorKind::Broken);
        }
    }
}

/// The fault `call` injects, if it is one.
fn fault_of(call: &Call, over_limit: bool) -> Option<Fault> {
    match call {
        Call::Segfault => Some(Fault::SegfaultTask),
        Call::Abort => Some(Fault::AbortTask),
        Call::Exit(_) | Call::EchoOrExit(_, Some(_)) => Some(Fault::ExitTask),
        Call::Panic => Some(Fault::PanicTask),
        Call::Flaky(x) if x.rem_euclid(10) == 3 => Some(Fault::PanicTask),
        Call::Flaky(x) if x.rem_euclid(10) == 7 => Some(Fault::ErrorTask),
        Call::Allocate(_) if over_limit => Some(Fault::MemoryTask),
        Call::Escape => Some(Fault::ChannelHolder),
        Call::LeaveGroup(_) => Some(Fault::GroupEscape),
        Call::PanicUnformattable => Some(Fault::UnformattablePanic),
        Call::Oversized(_) => Some(Fault::OversizedResult),
        _ => None,
    }
}

fn crash(exit: Exit) -> (Success, Kinds, Option<Exit>) {
    (
        Success::Never,
        Kinds::NONE.with(ErrorKind::TerminatedWorker),
        Some(exit),
    )
}

fn flaky(x: i64) -> (Success, Kinds, Option<Exit>) {
    match x.rem_euclid(10) {
        3 => (Success::Never, Kinds::NONE.with(ErrorKind::Panicked), None),
        7 => (
            Success::Exactly(Value::Returned(format!("{x} ends in 7"))),
            Kinds::NONE,
            None,
        ),
        _ => (Success::Exactly(Value::Int(x * 2)), Kinds::NONE, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_echo_must_succeed_exactly() {
        let e = Expect::new(Call::Echo(5), &Hazards::quiet(Policy::BreakPool));
        assert_eq!(e.success, Success::Exactly(Value::Int(5)));
        assert_eq!(e.errors, Kinds::NONE);
        assert_eq!(e.reject, Kinds::NONE);
    }

    #[test]
    fn under_break_pool_a_death_lets_every_call_fail_with_terminated_worker() {
        let hazards = Hazards {
            crashes: true,
            ..Hazards::quiet(Policy::BreakPool)
        };
        let e = Expect::new(Call::Echo(5), &hazards);
        assert!(e.errors.contains(ErrorKind::TerminatedWorker));
        assert!(e.reject.contains(ErrorKind::TerminatedWorker));
        assert!(!e.errors.contains(ErrorKind::BrokenProtocol));
    }

    #[test]
    fn under_respawn_crashes_of_others_do_not_excuse_a_call() {
        let hazards = Hazards {
            crashes: true,
            ..Hazards::quiet(Policy::Respawn)
        };
        assert_eq!(Expect::new(Call::Echo(5), &hazards).errors, Kinds::NONE);
        let segfault = Expect::new(Call::Segfault, &hazards);
        assert_eq!(segfault.death, Some(Exit::Signal(libc::SIGSEGV)));
    }

    #[test]
    fn a_sleep_past_its_deadline_must_fail() {
        let e = Expect::with_deadline(
            Call::Sleep(Duration::from_secs(2)),
            Duration::from_millis(50),
            &Hazards::quiet(Policy::BreakPool),
        );
        assert_eq!(e.success, Success::Never);
        assert!(e.errors.contains(ErrorKind::DeadlineExceeded));
    }
}
