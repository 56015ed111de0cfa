//! The supervisor's view of one worker: where it is in its life
//! ([`SlotState`], with what each state needs), the calls it holds (its
//! [`Link`], the one record of them), and the checks a call passes before
//! it is sent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use loky_proto::program::ProgramId;
use loky_proto::{Hello, Signature, TaskInfo};
use rustc_hash::FxHashMap;

use crate::call::{InFlight, WorkItem};
use crate::error::{Error, TaskMismatch, UnknownTask};
use crate::events::WorkerId;
use crate::future::FutureState;
use crate::link::Link;
use crate::program::check_function_worker;
use crate::supervisor::Direct;
use crate::worker::{Port, Stop, WorkerHandle};

/// Where a worker is in its life. See `supervisor.md` for the transitions.
pub(super) enum SlotState {
    /// Started; its reader waits for its hello (and holds the deadline).
    Starting,
    /// Said hello; runs the pool's initializer before any call.
    Initializing {
        tasks: Arc<TaskTable>,
        init: Arc<FutureState>,
    },
    /// Takes calls.
    Serving { tasks: Arc<TaskTable> },
    /// Takes no more calls; its input is closed once it holds none, and it
    /// leaves when it reads that end.
    Retiring {
        why: Retire,
        /// The initializer, if it still runs: its failure still breaks the
        /// pool.
        init: Option<Arc<FutureState>>,
    },
    /// Being stopped.
    Killing {
        reason: KillReason,
        /// When a polite stop becomes a `SIGKILL`; `None` once sent (or for
        /// an unbounded grace period).
        escalate_at: Option<Instant>,
    },
}

/// Why a worker is leaving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retire {
    /// Idle for the idle timeout.
    Idle,
    /// Ran `max_tasks_per_child` calls.
    Recycled,
    /// It asked to (memory leak).
    Asked,
    /// The pool shrank.
    Shrunk,
    /// The pool shuts down.
    Shutdown,
}

/// Why the supervisor is killing a worker.
pub(super) enum KillReason {
    /// Its running call passed its deadline.
    Deadline(Arc<FutureState>, Duration),
    /// `Future::kill` on its running call.
    Killed(Arc<FutureState>),
    /// Shutdown with `kill_workers`.
    Shutdown,
    /// The pool broke.
    Broken,
}

/// A worker's task table and program identity, from its hello.
pub(super) struct TaskTable {
    program: String,
    identity: ProgramId,
    /// Looked up on every call the supervisor sends.
    tasks: FxHashMap<String, TaskInfo>,
}

impl TaskTable {
    pub(super) fn new(hello: Hello) -> TaskTable {
        TaskTable {
            program: hello.program,
            identity: hello.identity,
            tasks: hello
                .tasks
                .into_iter()
                .map(|t| (t.name.clone(), t))
                .collect(),
        }
    }

    /// Whether the worker runs `item`: a named task it registers with the
    /// same types, or a function of this very program build. A cheap test
    /// (a caller's submit asks it of each free worker);
    /// [`check_item`](Self::check_item) says why not.
    pub(super) fn runs(&self, item: &WorkItem) -> bool {
        if item.function.is_some() {
            return self.identity.same_program(ProgramId::current());
        }
        self.tasks
            .get(item.sig.name)
            .is_some_and(|info| info.matches(&item.sig))
    }

    /// Whether worker `pid` can run `item`, as [`runs`](Self::runs) says,
    /// and if not, the error that says why.
    pub(super) fn check_item(&self, item: &WorkItem, pid: u32) -> Result<(), Error> {
        if self.runs(item) {
            return Ok(());
        }
        if item.function.is_some() {
            return check_function_worker(item.sig.name, &self.identity, &self.program, pid);
        }
        self.check(&item.sig)
    }

    /// Whether the worker runs `sig` with the same types.
    pub(super) fn check(&self, sig: &Signature) -> Result<(), Error> {
        match self.tasks.get(sig.name) {
            Some(info) if info.matches(sig) => Ok(()),
            Some(info) => Err(Error::TaskMismatch(TaskMismatch {
                task: sig.name.to_owned(),
                handle: format!("{} -> {}", sig.input, sig.output),
                worker: format!("{} -> {}", info.input, info.output),
            })),
            None => {
                let mut known: Vec<String> = self.tasks.keys().cloned().collect();
                known.sort();
                Err(Error::UnknownTask(UnknownTask {
                    task: sig.name.to_owned(),
                    program: self.program.clone(),
                    known,
                }))
            }
        }
    }
}

/// The supervisor's view of one worker.
pub(super) struct Slot {
    pub(super) id: WorkerId,
    pub(super) pid: u32,
    /// The calls it holds.
    pub(super) link: Arc<Link>,
    pub(super) handle: Box<dyn WorkerHandle>,
    /// Its input as callers may share it, once it said hello.
    pub(super) port: Option<Arc<dyn Port>>,
    pub(super) state: SlotState,
    /// Calls sent to it (the initializer not counted), for
    /// `max_tasks_per_child`.
    pub(super) calls: usize,
    /// The pool's record of the workers callers may take.
    direct: Arc<Direct>,
}

impl Slot {
    pub(super) fn new(
        id: WorkerId,
        link: Arc<Link>,
        handle: Box<dyn WorkerHandle>,
        direct: Arc<Direct>,
    ) -> Slot {
        Slot {
            id,
            pid: handle.pid(),
            link,
            handle,
            port: None,
            state: SlotState::Starting,
            calls: 0,
            direct,
        }
    }

    /// Counts towards `max_workers`: not leaving.
    pub(super) fn live(&self) -> bool {
        matches!(
            self.state,
            SlotState::Starting | SlotState::Initializing { .. } | SlotState::Serving { .. }
        )
    }

    pub(super) fn starting(&self) -> bool {
        matches!(self.state, SlotState::Starting)
    }

    pub(super) fn killing(&self) -> bool {
        matches!(self.state, SlotState::Killing { .. })
    }

    /// Its task table, while it takes calls.
    pub(super) fn serving(&self) -> Option<&Arc<TaskTable>> {
        match &self.state {
            SlotState::Serving { tasks } => Some(tasks),
            _ => None,
        }
    }

    /// The initializer call, while it runs.
    pub(super) fn initializer(&self) -> Option<&Arc<FutureState>> {
        match &self.state {
            SlotState::Initializing { init, .. } => Some(init),
            SlotState::Retiring { init, .. } => init.as_ref(),
            _ => None,
        }
    }

    /// Hands `items` to the worker, in order, each with the room for
    /// calls it was given (its depth).
    pub(super) fn send(&mut self, items: Vec<(WorkItem, usize)>) {
        let sent = Instant::now();
        let calls = items
            .into_iter()
            .map(|(item, depth)| InFlight { item, sent, depth });
        if let Some(port) = &self.port {
            // As callers send: the link's order is the channel's.
            self.direct.take(self.id);
            return port.send_all(&self.link, calls.collect());
        }
        for call in calls {
            let frame = call.item.frame.clone();
            // Recorded first: its reply may come before `send` returns.
            self.link.push(call);
            self.handle.send(frame);
        }
    }

    /// Stops taking calls: it leaves once it holds none. Does nothing to a
    /// worker already leaving or being killed.
    pub(super) fn retire(&mut self, why: Retire) {
        // First: a call a caller sends it now would find its input closed.
        self.direct.withdraw(self.id);
        let init = match &self.state {
            SlotState::Starting | SlotState::Serving { .. } => None,
            SlotState::Initializing { init, .. } => Some(init.clone()),
            SlotState::Retiring { .. } | SlotState::Killing { .. } => return,
        };
        self.state = SlotState::Retiring { why, init };
        self.close_if_idle();
    }

    /// Closes a retiring worker's input once it holds no call.
    pub(super) fn close_if_idle(&mut self) {
        if matches!(self.state, SlotState::Retiring { .. })
            && !self.handle.is_closed()
            && self.link.held() == 0
        {
            self.handle.close();
        }
    }

    /// Stops the worker for `reason`: at once (`SIGKILL`, its input closed),
    /// or politely with an escalation at `escalate_at`.
    pub(super) fn kill(&mut self, reason: KillReason, how: Stop, escalate_at: Option<Instant>) {
        self.direct.withdraw(self.id);
        if how == Stop::Kill {
            self.handle.close();
        }
        self.handle.stop(how);
        self.state = SlotState::Killing {
            reason,
            escalate_at: if how == Stop::Kill { None } else { escalate_at },
        };
    }
}
