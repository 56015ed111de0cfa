//! Bugs to inject into the fake executor ([`super::fake`]) for the
//! harness's self-tests: each must make a chaos run fail, in the summary
//! row it names. Some break the executor's contract in memory; the leak
//! bugs leave a real process or descriptor behind, which only the real
//! measurements of the process table and descriptor table can see.

use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::probe;

/// A bug the fake executor can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// When a worker dies, the futures of its other calls never resolve.
    DeadWorkerFuturesHang,
    /// Under `Respawn`, every call the dead worker held fails, not only the
    /// one it was running.
    RespawnFailsHeldCalls,
    /// `ECHO_I64` returns its argument plus one.
    WrongEcho,
    /// Under `BreakPool`, a crash fails the other calls with
    /// `ShutdownExecutor` instead of `TerminatedWorker`.
    WrongErrorKind,
    /// A worker's `TerminatedWorker` does not name the task it was running:
    /// under `BreakPool` no call then reports its own death.
    UnnamedTask,
    /// Signals sent to workers never arrive (the pool refuses them):
    /// injection fails silently unless the harness counts faults.
    SignalsLost,
    /// Each shutdown leaves a child process running.
    LeakOrphan,
    /// Each shutdown leaves a child process exited and unreaped.
    LeakZombie,
    /// Each shutdown leaves a descriptor open.
    LeakFd,
}

impl Bug {
    /// Every bug.
    pub const ALL: [Bug; 9] = [
        Bug::DeadWorkerFuturesHang,
        Bug::RespawnFailsHeldCalls,
        Bug::WrongEcho,
        Bug::WrongErrorKind,
        Bug::UnnamedTask,
        Bug::SignalsLost,
        Bug::LeakOrphan,
        Bug::LeakZombie,
        Bug::LeakFd,
    ];

    /// Its name on the chaos program's command line (`--self-test-bug`).
    pub fn name(self) -> &'static str {
        match self {
            Bug::DeadWorkerFuturesHang => "dead-worker-futures-hang",
            Bug::RespawnFailsHeldCalls => "respawn-fails-held-calls",
            Bug::WrongEcho => "wrong-echo",
            Bug::WrongErrorKind => "wrong-error-kind",
            Bug::UnnamedTask => "unnamed-task",
            Bug::SignalsLost => "signals-lost",
            Bug::LeakOrphan => "leak-orphan",
            Bug::LeakZombie => "leak-zombie",
            Bug::LeakFd => "leak-fd",
        }
    }

    /// The bug named `name`.
    pub fn named(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|bug| bug.name() == name)
    }

    /// The scenario a self-test of this bug runs by default: one whose
    /// rounds meet it.
    pub fn scenario(self) -> &'static str {
        match self {
            Bug::SignalsLost | Bug::WrongEcho => "external-kills",
            _ => "task-faults",
        }
    }

    /// The summary row the bug must make non-zero.
    pub fn row(self) -> &'static str {
        match self {
            Bug::DeadWorkerFuturesHang => "hung",
            Bug::WrongEcho => "wrong results",
            Bug::RespawnFailsHeldCalls | Bug::WrongErrorKind | Bug::UnnamedTask => "wrong errors",
            Bug::SignalsLost => "too few faults",
            Bug::LeakOrphan => "orphans",
            Bug::LeakZombie => "zombies",
            Bug::LeakFd => "leaked fds",
        }
    }

    /// Leaves behind what a leak bug leaks, for real; nothing for the
    /// other bugs.
    pub(crate) fn leak(self) {
        match self {
            Bug::LeakOrphan => {
                let child = spawn("sleep", &["60"]);
                std::mem::forget(child);
            }
            Bug::LeakZombie => {
                let child = spawn("true", &[]);
                let pid = child.id();
                std::mem::forget(child);
                // The hygiene check must find it exited: wait until it is.
                let deadline = Instant::now() + Duration::from_secs(10);
                while probe::stat(pid).is_some_and(|(state, _)| state != 'Z')
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Bug::LeakFd => {
                if let Ok(file) = File::open("/dev/null") {
                    std::mem::forget(file);
                }
            }
            _ => {}
        }
    }
}

fn spawn(program: &str, args: &[&str]) -> Child {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{program}`: {e}"))
}
