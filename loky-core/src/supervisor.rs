//! The supervisor: one thread per pool that owns the queue of calls and the
//! workers. `supervisor.md` beside this file explains its states, its
//! synchronisation points and the races it handles.
//!
//! Everything reaches it as an [`Event`] on one channel: submissions from
//! callers, and news from the workers' reader threads (ready, replies,
//! retiring, died). It reacts in small functions, then dispatches queued
//! calls to workers with room, and sleeps until the next event or timer
//! (idle timeout, task deadline, kill escalation).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use loky_proto::{Hello, RetireReason};

use crate::call::{InFlight, WorkItem};
use crate::config::{Config, CrashPolicy, Shutdown};
use crate::error::{DeadlineExceeded, Error, TerminatedWorker};
use crate::exit::WorkerExit;
use crate::future::Core;
use crate::os;
use crate::worker::{self, WorkerId};

mod shared;
mod slot;

use shared::PoolState;
pub(crate) use shared::{Shared, mark_pool_thread};
use slot::{KillReason, Slot};

/// What the supervisor reacts to.
pub(crate) enum Event {
    /// Calls to run, in order.
    Submit(Vec<WorkItem>),
    /// A worker sent its hello.
    Ready { worker: WorkerId, hello: Hello },
    /// A worker never became ready; it is reaped.
    StartFailed {
        worker: WorkerId,
        reason: String,
        exit: WorkerExit,
        /// It died before its hello (rather than refusing or timing out).
        died: bool,
    },
    /// A worker answered `replies` calls.
    Completed { worker: WorkerId, replies: usize },
    /// A worker asked to leave.
    Retiring {
        worker: WorkerId,
        reason: RetireReason,
    },
    /// A worker is dead and reaped.
    Died {
        worker: WorkerId,
        exit: WorkerExit,
        protocol_error: Option<String>,
    },
    /// `shutdown` was called.
    Shutdown(Shutdown),
    /// `max_workers` changed.
    Resize(usize),
    /// `Future::kill` on a running future.
    Kill(Arc<Core>),
}

/// Starts the supervisor thread of a new pool.
pub(crate) fn start(config: Config) -> Result<Arc<Shared>, Error> {
    let (events_tx, events) = crossbeam_channel::unbounded();
    let config = Arc::new(config);
    let shared = Arc::new(Shared {
        events: events_tx.clone(),
        config: config.clone(),
        state: Mutex::new(PoolState {
            max_workers: config.max_workers,
            ..PoolState::default()
        }),
        finished: Condvar::new(),
        next_call: std::sync::atomic::AtomicU64::new(0),
    });
    let supervisor = Supervisor {
        shared: shared.clone(),
        link_settings: config.link_settings(),
        max_workers: config.max_workers,
        config,
        events,
        events_tx,
        pending: VecDeque::new(),
        slots: Vec::new(),
        next_worker: 0,
        shutdown: None,
        broken: None,
        leak_warned: false,
        start_crashes: 0,
    };
    std::thread::Builder::new()
        .name("loky-supervisor".to_owned())
        .spawn(move || supervisor.run())
        .map_err(|e| Error::broken(format!("could not start the supervisor thread: {e}")))?;
    Ok(shared)
}

/// What the supervisor knows of a worker that died.
struct Death {
    pid: u32,
    exit: WorkerExit,
    protocol_error: Option<String>,
    calls: Vec<InFlight>,
    kill: Option<KillReason>,
    retiring: bool,
    initializing: bool,
}

struct Supervisor {
    shared: Arc<Shared>,
    config: Arc<Config>,
    link_settings: worker::LinkSettings,
    events: Receiver<Event>,
    events_tx: Sender<Event>,
    pending: VecDeque<WorkItem>,
    slots: Vec<Slot>,
    next_worker: WorkerId,
    max_workers: usize,
    shutdown: Option<Shutdown>,
    broken: Option<Error>,
    leak_warned: bool,
    /// Workers killed before their hello since the last hello.
    start_crashes: usize,
}

/// Consecutive deaths before the hello after which the pool breaks.
const MAX_START_CRASHES: usize = 3;

impl Supervisor {
    fn run(mut self) {
        mark_pool_thread();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.serve()));
        if let Err(panic) = result {
            // A bug in the supervisor must not leave futures pending forever.
            let message = crate::panic_message(&*panic);
            log::error!("the loky supervisor failed: {message}");
            self.break_pool(Error::broken(format!(
                "internal error in the supervisor: {message}"
            )));
            for slot in &mut self.slots {
                slot.worker.link.signal(os::SIGKILL);
                for call in slot.worker.link.take_all() {
                    call.item
                        .core
                        .settle(Err(self.broken.clone().expect("broken above")));
                }
            }
        }
        self.finish();
    }

    fn serve(&mut self) {
        while !self.finished() {
            let event = match self.next_timer() {
                Some(at) => self.events.recv_deadline(at),
                None => self
                    .events
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
            };
            match event {
                Ok(event) => {
                    self.handle(event);
                    // Take whatever else is queued before dispatching once.
                    while let Ok(event) = self.events.try_recv() {
                        self.handle(event);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.on_timers(Instant::now());
            self.dispatch();
        }
    }

    fn finished(&self) -> bool {
        (self.shutdown.is_some() || self.broken.is_some())
            && self.pending.is_empty()
            && self.slots.is_empty()
    }

    /// Marks the pool finished and fails anything that slipped in.
    fn finish(&mut self) {
        {
            let mut state = self.shared.lock();
            state.finished = true;
            state.pids.clear();
            self.shared.finished.notify_all();
        }
        let err = self.broken.clone().unwrap_or_else(Error::shutdown);
        for item in self.pending.drain(..) {
            item.core.settle(Err(err.clone()));
        }
        while let Ok(event) = self.events.try_recv() {
            if let Event::Submit(items) = event {
                for item in items {
                    item.core.settle(Err(err.clone()));
                }
            }
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Submit(items) => self.on_submit(items),
            Event::Ready { worker, hello } => self.on_ready(worker, hello),
            Event::StartFailed {
                worker,
                reason,
                exit,
                died,
            } => self.on_start_failed(worker, reason, exit, died),
            Event::Completed { worker, replies } => self.on_completed(worker, replies),
            Event::Retiring { worker, reason } => self.on_retiring(worker, reason),
            Event::Died {
                worker,
                exit,
                protocol_error,
            } => self.on_died(worker, exit, protocol_error),
            Event::Shutdown(how) => self.on_shutdown(how),
            Event::Resize(n) => self.on_resize(n),
            Event::Kill(core) => self.on_kill(core),
        }
    }

    fn slot(&mut self, id: WorkerId) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.id() == id)
    }

    fn on_submit(&mut self, items: Vec<WorkItem>) {
        if let Some(err) = &self.broken {
            for item in items {
                item.core.settle(Err(err.clone()));
            }
            return;
        }
        if matches!(self.shutdown, Some(how) if how.kill_workers) {
            for item in items {
                item.core.settle(Err(Error::killed_by_shutdown()));
            }
            return;
        }
        self.pending.extend(items);
    }

    fn on_ready(&mut self, id: WorkerId, hello: Hello) {
        self.start_crashes = 0;
        let init = self.config.initializer.clone();
        let max_frame = self.config.max_frame;
        let call_id = self.shared.next_call_id();
        let Some(slot) = self.slot(id) else { return };
        slot.program = hello.program.clone();
        slot.tasks = Some(Arc::new(
            hello
                .tasks
                .into_iter()
                .map(|t| (t.name.clone(), t))
                .collect(),
        ));
        slot.idle_since = Instant::now();
        let Some(init) = init else { return };
        let core = Core::new(init.sig.name, None);
        if let Err(err) = slot.check(&init.sig) {
            self.break_pool(Error::broken(format!("the initializer cannot run: {err}")));
            return;
        }
        match WorkItem::new(
            core.clone(),
            init.sig,
            loky_proto::CallKind::Single,
            call_id,
            max_frame,
            |frame| {
                frame.extend_from_slice(&init.args);
                Ok::<_, std::convert::Infallible>(())
            },
        ) {
            Ok(mut item) => {
                item.initializer = true;
                core.set_running();
                slot.init = Some(core);
                send(slot, item);
            }
            Err(err) => {
                self.break_pool(Error::broken(format!("the initializer cannot run: {err}")))
            }
        }
    }

    fn on_start_failed(&mut self, id: WorkerId, reason: String, exit: WorkerExit, died: bool) {
        let Some(idx) = self.slots.iter().position(|s| s.id() == id) else {
            return;
        };
        let slot = self.slots.swap_remove(idx);
        self.publish_pids();
        let pid = slot.pid();
        let asked_to_leave = slot.retiring || slot.kill.is_some();
        slot.worker.join();
        if asked_to_leave {
            return; // Asked to leave before it even started.
        }
        // Killed by a signal before its hello (from outside, or the OOM
        // killer): a crash like any other, unless starts keep failing, which
        // a program that cannot start would do forever.
        if died && exit.signal().is_some() && self.start_crashes < MAX_START_CRASHES {
            self.start_crashes += 1;
            let err = Error::TerminatedWorker(TerminatedWorker {
                pid,
                exit,
                task: None,
                exit_codes: vec![exit],
                memory_limit: None,
            });
            return self.crashed(Vec::new(), err);
        }
        self.break_pool(Error::broken(format!(
            "worker program `{}` (pid {pid}) did not start: {reason} (it ended with {exit})",
            self.config.program.display(),
        )));
    }

    fn on_completed(&mut self, id: WorkerId, replies: usize) {
        let max_calls = self.config.max_tasks_per_child;
        let Some(slot) = self.slot(id) else { return };
        slot.in_flight = slot.in_flight.saturating_sub(replies);
        if slot.in_flight == 0 {
            slot.idle_since = Instant::now();
        }
        if max_calls.is_some_and(|max| slot.calls >= max) {
            slot.retiring = true;
        }
        // A retiring worker leaves once it holds no call.
        if slot.retiring && slot.in_flight == 0 && !slot.closed() {
            slot.close();
        }
        let Some(init) = slot.init.clone() else {
            return;
        };
        if !init.is_done() {
            return;
        }
        slot.init = None;
        let failed = init.wait(None).err();
        let pid = slot.pid();
        if let Some(err) = failed {
            let name = self.config.initializer.as_ref().map_or("?", |i| i.sig.name);
            self.break_pool(Error::broken(format!(
                "the initializer `{name}` failed in worker {pid}: {err}"
            )));
        }
    }

    fn on_retiring(&mut self, id: WorkerId, reason: RetireReason) {
        let warn = !self.leak_warned;
        let Some(slot) = self.slot(id) else { return };
        slot.retiring = true;
        let pid = slot.pid();
        if slot.in_flight == 0 {
            slot.close();
        }
        match reason {
            RetireReason::MemoryLeak { baseline, current } if warn => {
                self.leak_warned = true;
                log::warn!(
                    "worker {pid} is being replaced: its memory grew from {baseline} to \
                     {current} bytes, a likely memory leak in a task (threshold: \
                     LOKY_MAX_MEMORY_LEAK_SIZE)"
                );
            }
            RetireReason::MemoryLeak { .. } => {}
        }
    }

    fn on_died(&mut self, id: WorkerId, exit: WorkerExit, protocol_error: Option<String>) {
        let Some(idx) = self.slots.iter().position(|s| s.id() == id) else {
            return;
        };
        let slot = self.slots.swap_remove(idx);
        self.publish_pids();
        let death = Death {
            pid: slot.pid(),
            exit,
            protocol_error,
            calls: slot.worker.link.take_all(),
            kill: slot.kill,
            retiring: slot.retiring,
            initializing: slot.init.is_some(),
        };
        self.settle_death(death);
        // Futures first, then the (short) wait for the worker's threads.
        slot.worker.join();
    }

    /// Settles the calls a dead worker held, as the reason of its death and
    /// the crash policy say.
    fn settle_death(&mut self, death: Death) {
        let Death {
            pid,
            exit,
            protocol_error,
            calls,
            kill,
            retiring,
            initializing,
        } = death;
        if let Some(err) = &self.broken {
            return fail_all(calls, err);
        }
        match kill {
            Some(KillReason::Shutdown) => return fail_all(calls, &Error::killed_by_shutdown()),
            Some(KillReason::Broken) => unreachable!("the pool is broken"),
            Some(KillReason::Deadline(core, timeout)) => {
                let err = Error::DeadlineExceeded(DeadlineExceeded {
                    task: core.task.to_owned(),
                    timeout,
                    pid,
                });
                return self.fail_one_requeue_rest(calls, &core, err);
            }
            Some(KillReason::Killed(core)) => {
                return self.fail_one_requeue_rest(calls, &core, Error::Cancelled);
            }
            None => {}
        }
        if initializing {
            // Dying in its initializer, a worker would die again in every
            // replacement: the pool is broken whatever the crash policy.
            let name = self.config.initializer.as_ref().map_or("?", |i| i.sig.name);
            let err = Error::broken(format!(
                "the initializer `{name}` killed its worker (pid {pid}, {exit})"
            ));
            self.break_pool(err.clone());
            return fail_all(calls, &err);
        }
        if let Some(reason) = protocol_error {
            let err = Error::broken(format!("worker {pid} broke the protocol: {reason}"));
            return self.crashed(calls, err);
        }
        if retiring && calls.is_empty() {
            return; // A clean exit it was asked for.
        }
        let err = Error::TerminatedWorker(TerminatedWorker {
            pid,
            exit,
            task: calls.first().map(|c| c.item.sig.name.to_owned()),
            exit_codes: vec![exit],
            memory_limit: self
                .config
                .memory_limit
                .filter(|_| exit == WorkerExit::Code(loky_proto::exit_code::MEMORY_LIMIT)),
        });
        self.crashed(calls, err);
    }

    /// A worker died unexpectedly holding `calls`.
    fn crashed(&mut self, calls: Vec<InFlight>, err: Error) {
        match self.config.crash_policy {
            CrashPolicy::BreakPool => {
                // Broken first, so that whoever sees a failed future and
                // submits again gets the broken error.
                self.break_pool(err.clone());
                fail_all(calls, &err);
            }
            CrashPolicy::Respawn => {
                let mut calls = calls.into_iter();
                if let Some(first) = calls.next() {
                    first.item.core.settle(Err(err));
                }
                self.requeue(calls);
                self.top_up();
            }
        }
    }

    fn fail_one_requeue_rest(&mut self, calls: Vec<InFlight>, target: &Arc<Core>, err: Error) {
        let (hit, rest): (Vec<_>, Vec<_>) = calls
            .into_iter()
            .partition(|c| Arc::ptr_eq(&c.item.core, target));
        fail_all(hit, &err);
        self.requeue(rest.into_iter());
        self.top_up();
    }

    /// Puts calls that a dead worker held but never ran back at the front of
    /// the queue, in order.
    fn requeue(&mut self, calls: impl DoubleEndedIterator<Item = InFlight>) {
        for call in calls.rev() {
            let mut item = call.item;
            if item.initializer || item.core.is_done() {
                continue;
            }
            item.resent = true;
            self.pending.push_front(item);
        }
    }

    fn on_shutdown(&mut self, how: Shutdown) {
        let previous = self.shutdown.unwrap_or(how);
        self.shutdown = Some(Shutdown {
            wait: how.wait,
            kill_workers: how.kill_workers || previous.kill_workers,
            cancel_futures: how.cancel_futures || previous.cancel_futures,
        });
        if how.cancel_futures {
            self.pending.retain(|item| !item.core.cancel());
        }
        if how.kill_workers {
            fail_all_items(self.pending.drain(..), &Error::killed_by_shutdown());
            for slot in &mut self.slots {
                slot.kill = Some(KillReason::Shutdown);
                slot.worker.frames = None;
                slot.worker.link.signal(os::SIGKILL);
            }
        }
    }

    fn on_resize(&mut self, max_workers: usize) {
        self.max_workers = max_workers;
        let mut live: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].live())
            .collect();
        // Retire the idlest workers first.
        live.sort_by_key(|&i| self.slots[i].in_flight);
        let extra = live.len().saturating_sub(max_workers);
        for &i in &live[..extra] {
            let slot = &mut self.slots[i];
            slot.retiring = true;
            if slot.in_flight == 0 {
                slot.close();
            }
        }
        if !self.slots.is_empty() {
            self.top_up();
        }
    }

    fn on_kill(&mut self, core: Arc<Core>) {
        if core.is_done() {
            return;
        }
        let grace = self.config.kill_grace;
        for slot in &mut self.slots {
            match slot.worker.link.position(&core) {
                Some(0) if slot.kill.is_none() => {
                    slot.kill = Some(KillReason::Killed(core));
                    slot.worker.link.signal(os::SIGTERM);
                    slot.escalate_at = Some(Instant::now() + grace);
                    return;
                }
                Some(_) => {
                    // Sent but not started: drop its result when it comes.
                    core.settle(Err(Error::Cancelled));
                    return;
                }
                None => {}
            }
        }
        // Queued again after a worker was replaced: not sent anywhere now.
        if let Some(pos) = self
            .pending
            .iter()
            .position(|i| Arc::ptr_eq(&i.core, &core))
        {
            self.pending.remove(pos);
            core.settle(Err(Error::Cancelled));
        }
    }

    /// Fails everything queued, kills every worker; later submits fail with
    /// `err`.
    fn break_pool(&mut self, err: Error) {
        if self.broken.is_some() {
            return;
        }
        self.shared.lock().broken = Some(err.clone());
        self.broken = Some(err.clone());
        fail_all_items(self.pending.drain(..), &err);
        for slot in &mut self.slots {
            if slot.kill.is_none() {
                slot.kill = Some(KillReason::Broken);
            }
            slot.worker.frames = None;
            slot.worker.link.signal(os::SIGKILL);
        }
    }

    fn next_timer(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |at: Instant| next = Some(next.map_or(at, |n| n.min(at)));
        for slot in &self.slots {
            if let Some(at) = slot.escalate_at {
                consider(at);
            }
            if slot.kill.is_some() {
                continue;
            }
            if let Some(timeout) = self.config.idle_timeout
                && slot.in_flight == 0
                && slot.live()
                && slot.tasks.is_some()
            {
                consider(slot.idle_since + timeout);
            }
            if slot.in_flight > 0
                && let Some((_, Some(timeout), since)) = slot.worker.link.front()
            {
                consider(since + timeout);
            }
        }
        next
    }

    fn on_timers(&mut self, now: Instant) {
        let idle_timeout = self.config.idle_timeout;
        let grace = self.config.kill_grace;
        for slot in &mut self.slots {
            if let Some(at) = slot.escalate_at
                && at <= now
            {
                slot.escalate_at = None;
                slot.worker.link.signal(os::SIGKILL);
            }
            if slot.kill.is_some() {
                continue;
            }
            if let Some(timeout) = idle_timeout
                && slot.in_flight == 0
                && slot.live()
                && slot.tasks.is_some()
                && slot.idle_since + timeout <= now
            {
                slot.close();
            }
            if slot.in_flight > 0
                && let Some((core, Some(timeout), since)) = slot.worker.link.front()
                && since + timeout <= now
            {
                slot.kill = Some(KillReason::Deadline(core, timeout));
                slot.worker.link.signal(os::SIGTERM);
                slot.escalate_at = Some(now + grace);
            }
        }
    }

    fn dispatch(&mut self) {
        if self.broken.is_some() {
            return;
        }
        if !self.pending.is_empty() {
            self.top_up();
        }
        let max_calls = self.config.max_tasks_per_child;
        while !self.pending.is_empty() {
            let Some(idx) = self.pick(max_calls) else {
                break;
            };
            let item = self.pending.pop_front().expect("checked non-empty");
            if !item.resent && !item.core.set_running() {
                continue; // Cancelled while queued.
            }
            let slot = &mut self.slots[idx];
            if let Err(err) = slot.check(&item.sig) {
                item.core.settle(Err(err));
                continue;
            }
            slot.calls += 1;
            send(slot, item);
        }
        if self.shutdown.is_some() && self.pending.is_empty() {
            for slot in &mut self.slots {
                if slot.in_flight == 0 && slot.tasks.is_some() && !slot.closed() {
                    slot.close();
                }
            }
        }
    }

    /// The ready worker with the fewest calls that has room for one more.
    /// Fewest as the workers' links count them now: the supervisor's own
    /// counts lag behind replies that are on their way to it, and a call
    /// queued behind a busy worker while another one is idle could wait
    /// for as long as the busy one's call runs.
    fn pick(&self, max_calls: Option<usize>) -> Option<usize> {
        let starting = self.slots.iter().any(Slot::starting);
        (0..self.slots.len())
            .filter(|&i| self.slots[i].accepts(max_calls, starting))
            .min_by_key(|&i| self.slots[i].worker.link.held())
    }

    /// Starts workers until `max_workers` are live.
    fn top_up(&mut self) {
        if self.broken.is_some() || matches!(self.shutdown, Some(how) if how.kill_workers) {
            return;
        }
        let live = self.slots.iter().filter(|s| s.live()).count();
        for _ in live..self.max_workers {
            if let Err(err) = self.spawn() {
                self.break_pool(err);
                return;
            }
        }
    }

    fn spawn(&mut self) -> Result<(), Error> {
        let command = self.config.command();
        let spawned = os::spawn_worker(&command).map_err(|e| {
            Error::broken(format!(
                "could not start worker program `{}`: {e}",
                self.config.program.display()
            ))
        })?;
        self.next_worker += 1;
        let worker = worker::start(
            self.next_worker,
            spawned,
            &self.link_settings,
            self.events_tx.clone(),
        )
        .map_err(|e| Error::broken(format!("could not start a worker's threads: {e}")))?;
        self.slots.push(Slot {
            worker,
            tasks: None,
            program: String::new(),
            init: None,
            retiring: false,
            in_flight: 0,
            calls: 0,
            idle_since: Instant::now(),
            kill: None,
            escalate_at: None,
        });
        self.publish_pids();
        Ok(())
    }

    fn publish_pids(&self) {
        let pids = self.slots.iter().map(Slot::pid).collect();
        self.shared.lock().pids = pids;
    }
}

/// Hands `item` to the worker of `slot`.
fn send(slot: &mut Slot, item: WorkItem) {
    let frame = item.frame.clone();
    slot.in_flight += 1;
    slot.worker.link.push(InFlight {
        item,
        sent: Instant::now(),
    });
    slot.worker.send_frame(frame);
}

fn fail_all(calls: Vec<InFlight>, err: &Error) {
    fail_all_items(calls.into_iter().map(|c| c.item), err);
}

fn fail_all_items(items: impl Iterator<Item = WorkItem>, err: &Error) {
    for item in items {
        item.core.settle(Err(err.clone()));
    }
}
