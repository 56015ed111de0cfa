//! The end of a worker: what becomes of the calls it held, by the reason of
//! its death and the crash policy (the table in `supervisor.md`).

use std::sync::Arc;

use super::{Supervisor, fail_all, fail_futures};
use crate::call::{InFlight, WorkItem};
use crate::config::CrashPolicy;
use crate::error::{DeadlineExceeded, Error, RemoteWorker, TerminatedWorker};
use crate::events::{End, StartFailure, WorkerId};
use crate::exit::WorkerExit;
use crate::future::FutureState;
use crate::rerun::{self, AfterDeath};
use crate::worker::Whereabouts;
use loky_proto::CallKind;

use super::slot::{KillReason, Slot, SlotState};

/// Consecutive deaths before the hello after which the pool breaks.
pub(super) const MAX_START_CRASHES: usize = 3;

/// What the supervisor knows of a worker that died.
struct Death {
    pid: u32,
    exit: WorkerExit,
    end: End,
    calls: Vec<InFlight>,
    state: SlotState,
    whereabouts: Option<Whereabouts>,
}

impl Supervisor {
    fn remove(&mut self, id: WorkerId) -> Option<Slot> {
        // First: every call a caller sent it is then in its link.
        self.pool.direct.withdraw(id);
        let idx = self.slots.iter().position(|s| s.id == id)?;
        let slot = self.slots.swap_remove(idx);
        self.publish_pids();
        Some(slot)
    }

    /// A worker could not be started at all: the pool is broken with the
    /// cause (a program that cannot start would fail again and again).
    pub(super) fn on_launch_failed(&mut self, id: WorkerId, error: Error) {
        let Some(slot) = self.remove(id) else { return };
        slot.handle.release();
        self.break_pool(error);
    }

    pub(super) fn on_start_failed(
        &mut self,
        id: WorkerId,
        failure: StartFailure,
        exit: WorkerExit,
    ) {
        let Some(slot) = self.remove(id) else { return };
        let pid = slot.pid;
        let asked_to_leave = !slot.live();
        let whereabouts = slot.handle.whereabouts();
        slot.handle.release();
        if asked_to_leave {
            return; // Asked to leave before it even started.
        }
        if let StartFailure::Internal(reason) = failure {
            return self.break_pool(Error::broken(reason));
        }
        // Its `main` built an executor before `loky::init()`: every
        // replacement would do the same, whatever the crash policy.
        if let Some(err) = crate::program::missing_init(exit, &self.config.program, pid) {
            return self.break_pool(err);
        }
        // Killed by a signal before its hello (from outside, or the OOM
        // killer): a crash like any other, unless starts keep failing, which
        // a program that cannot start would do forever.
        let died = matches!(failure, StartFailure::Died);
        if died && exit.signal().is_some() && self.start_crashes < MAX_START_CRASHES {
            self.start_crashes += 1;
            let mut dead = TerminatedWorker::new(pid, exit);
            dead.remote = remote_worker(whereabouts);
            return self.crashed(Vec::new(), Error::TerminatedWorker(dead));
        }
        let program = self.config.program.display().to_string();
        let err = start_failure(&program, pid, exit, whereabouts, failure);
        self.break_pool(err);
    }

    pub(super) fn on_died(&mut self, id: WorkerId, exit: WorkerExit, end: End) {
        let Some(slot) = self.remove(id) else { return };
        let death = Death {
            pid: slot.pid,
            exit,
            end,
            calls: slot.link.take_all(),
            state: slot.state,
            whereabouts: slot.handle.whereabouts(),
        };
        self.settle_death(death);
        // Futures first, then what is left of the worker, once its reader
        // has reaped it.
        self.reaping.push((id, slot.handle));
    }

    pub(super) fn on_reaped(&mut self, id: WorkerId) {
        if let Some(at) = self.reaping.iter().position(|(dead, _)| *dead == id) {
            self.reaping.swap_remove(at).1.release();
        }
    }

    /// Settles the calls a dead worker held, as the reason of its death and
    /// the crash policy say.
    fn settle_death(&mut self, death: Death) {
        let Death {
            pid,
            exit,
            end,
            calls,
            state,
            whereabouts,
        } = death;
        if let Some(err) = &self.broken {
            return fail_all(calls, err);
        }
        if let End::Internal { reason, orphans } = end {
            let err = Error::broken(reason);
            self.break_pool(err.clone());
            fail_futures(orphans, &err);
            return fail_all(calls, &err);
        }
        let retiring = match state {
            SlotState::Killing { reason, .. } => return self.killed(pid, calls, reason),
            SlotState::Initializing { .. } | SlotState::Retiring { init: Some(_), .. } => {
                return self.initializer_killed_worker(pid, exit, calls);
            }
            SlotState::Retiring { .. } => true,
            SlotState::Starting | SlotState::Serving { .. } => false,
        };
        if let End::Protocol(reason) = end {
            let err = Error::broken_by(format!("worker {pid} broke the protocol"), reason);
            return self.crashed(calls, err);
        }
        if retiring && calls.is_empty() {
            return; // A clean exit it was asked for.
        }
        let mut dead = TerminatedWorker::new(pid, exit);
        dead.task = calls.first().map(|c| c.item.sig.name.to_owned());
        dead.memory_limit = self
            .config
            .memory_limit
            .filter(|_| exit == WorkerExit::Code(loky_proto::exit_code::MEMORY_LIMIT));
        dead.remote = remote_worker(whereabouts);
        self.crashed(calls, Error::TerminatedWorker(dead));
    }

    /// A worker the supervisor killed on purpose.
    fn killed(&mut self, pid: u32, calls: Vec<InFlight>, reason: KillReason) {
        match reason {
            KillReason::Shutdown => fail_all(calls, &Error::killed_by_shutdown()),
            // Settled above: the pool is broken.
            KillReason::Broken => fail_all(calls, &Error::broken("the pool broke")),
            KillReason::Deadline(future, timeout) => {
                let err = Error::DeadlineExceeded(DeadlineExceeded {
                    task: future.task.to_owned(),
                    timeout,
                    pid,
                });
                self.fail_one_requeue_rest(calls, &future, err);
            }
            KillReason::Killed(future) => {
                self.fail_one_requeue_rest(calls, &future, Error::Cancelled);
            }
        }
    }

    /// Dying in its initializer, a worker would die again in every
    /// replacement: the pool is broken whatever the crash policy.
    fn initializer_killed_worker(&mut self, pid: u32, exit: WorkerExit, calls: Vec<InFlight>) {
        let name = self.config.initializer.as_ref().map_or("?", |i| i.sig.name);
        let err = Error::broken(format!(
            "the initializer `{name}` killed its worker (pid {pid}, {exit})"
        ));
        self.break_pool(err.clone());
        fail_all(calls, &err);
    }

    /// A worker died unexpectedly holding `calls`.
    pub(super) fn crashed(&mut self, calls: Vec<InFlight>, err: Error) {
        match self.config.crash_policy {
            CrashPolicy::BreakPool => {
                // Broken first, so that whoever sees a failed future and
                // submits again gets the broken error; the other workers
                // are stopped after the futures are settled, so that the
                // callers do not wait for it (on a small machine, their
                // deaths take the cores the callers need).
                let newly = self.mark_broken(err.clone());
                let mut calls = calls.into_iter();
                if let Some(first) = calls.next() {
                    let named = rerun::name_running_item(&first.item, err.clone());
                    first.item.future.settle(Err(named));
                }
                fail_all(calls.collect(), &err);
                if newly {
                    // A caller woken on this core runs before the kills
                    // below, and before the deaths they bring (each a
                    // fraction of a millisecond of the kernel's time).
                    std::thread::yield_now();
                    self.stop_broken_pool();
                }
            }
            CrashPolicy::Respawn => {
                let mut calls = calls.into_iter();
                let running = calls.next();
                self.requeue(calls);
                if let Some(running) = running {
                    self.after_running_call_died(running.item, err);
                }
                self.replace_soon();
            }
        }
    }

    fn fail_one_requeue_rest(
        &mut self,
        calls: Vec<InFlight>,
        target: &Arc<FutureState>,
        err: Error,
    ) {
        let (hit, rest): (Vec<_>, Vec<_>) = calls
            .into_iter()
            .partition(|c| Arc::ptr_eq(&c.item.future, target));
        self.requeue(rest.into_iter());
        for call in hit {
            self.after_running_call_died(call.item, err.clone());
        }
        self.replace_soon();
    }

    /// The call `item` was running when its worker died of `err`: it
    /// fails, or, for a `map` chunk, its items without a result run again
    /// one call each, queued first (see `rerun.rs`).
    fn after_running_call_died(&mut self, item: WorkItem, err: Error) {
        let pool = &self.pool;
        let single = |chunk: &WorkItem, input: &[u8]| {
            pool.prepare(&chunk.target(), CallKind::Single, chunk.timeout, |frame| {
                frame.extend_from_slice(input);
                Ok::<_, std::convert::Infallible>(())
            })
        };
        if let AfterDeath::Rerun(items) = rerun::after_death(item, err, single) {
            for item in items.into_iter().rev() {
                self.pending.push_front(item);
            }
        }
    }

    /// Puts calls that a dead worker held but never ran back at the front of
    /// the queue, in order.
    fn requeue(&mut self, calls: impl DoubleEndedIterator<Item = InFlight>) {
        for call in calls.rev() {
            let item = call.item;
            if item.initializer || item.future.is_done() {
                continue;
            }
            item.future.requeue();
            self.pending.push_front(item);
        }
    }
}

/// What a [`TerminatedWorker`] says of a worker started by a launcher.
fn remote_worker(whereabouts: Option<Whereabouts>) -> Option<Box<RemoteWorker>> {
    let whereabouts = whereabouts?;
    Some(Box::new(RemoteWorker {
        host: whereabouts.host?,
        launcher_exit: whereabouts.launcher_exit,
    }))
}

/// Why the pool broke when worker `pid` of `program` did not start.
fn start_failure(
    program: &str,
    pid: u32,
    exit: WorkerExit,
    whereabouts: Option<Whereabouts>,
    failure: StartFailure,
) -> Error {
    let Some(whereabouts) = whereabouts else {
        let reason =
            format!("worker program `{program}` (pid {pid}) did not start, it ended with {exit}");
        return Error::broken_by(reason, failure);
    };
    match whereabouts.host {
        Some(host) => {
            let reason = format!(
                "worker program `{program}` on host {host} did not start, it ended with {exit}"
            );
            Error::broken_by(reason, failure)
        }
        None => Error::broken(not_connected(program, &whereabouts, &failure)),
    }
}

/// Why the pool broke when a launcher's worker never connected back.
fn not_connected(program: &str, whereabouts: &Whereabouts, failure: &StartFailure) -> String {
    let start = format!(
        "worker program `{program}` never connected back through the launcher `{}` (pid {})",
        whereabouts.launcher, whereabouts.launcher_pid
    );
    match (failure, whereabouts.launcher_exit) {
        (StartFailure::NoHello(timeout), _) => format!(
            "{start} within the start timeout of {timeout:?}; the launcher was stopped (a \
             worker that waits in a scheduler's queue needs a longer `start_timeout`)"
        ),
        (_, Some(exit)) => format!("{start}, which ended with {exit} first"),
        (failure, None) => format!("{start}: {failure}"),
    }
}
