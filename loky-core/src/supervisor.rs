//! The supervisor: one thread per pool that owns the queue of calls and the
//! workers. `supervisor.md` beside this file explains its states, its
//! synchronisation points and the races it handles.
//!
//! Everything reaches it as an [`Event`] on one channel: submissions from
//! callers, and news from the workers' threads (ready, replies, retiring,
//! died). It reacts in small functions, then runs its timers (idle timeout,
//! task deadline, kill escalation) and dispatches queued calls to workers
//! with room, and sleeps until the next event or timer. It reaches workers
//! only through the [`Launcher`] and [`WorkerHandle`](crate::worker::WorkerHandle)
//! traits, so that its unit tests drive it with a fake.
//!
//! One path goes around it: while nothing waits in its queue, a caller
//! sends a single call straight to an idle worker it has enrolled
//! (`direct.rs`), and neither the call nor its reply wakes it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use loky_proto::{Hello, RetireReason};

use crate::call::{self, InFlight, Target, WorkItem};
use crate::config::{Config, Shutdown};
use crate::deadline;
use crate::durations::Durations;
use crate::error::Error;
use crate::events::{Calls, Event, WorkerId};
use crate::future::FutureState;
use crate::link::Watch;
use crate::pool_thread::{self, Role};
use crate::worker::local::LocalLauncher;
use crate::worker::{Launcher, Stop, WorkerHandle};

mod death;
mod direct;
mod dispatch;
mod pool;
mod slot;
mod timers;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod program_tests;
#[cfg(test)]
mod tests;

pub(crate) use direct::Direct;
pub(crate) use pool::{Pool, PoolHandle};
use slot::{KillReason, Retire, Slot, SlotState, TaskTable};

/// Starts the supervisor thread of a new pool: of local workers, or of
/// workers started by the configured launcher command (whose listener is
/// bound here, so that an address in use fails the build).
pub(crate) fn start(config: Config) -> Result<Arc<Pool>, Error> {
    let config = Arc::new(config);
    let launcher = launcher(&config)?;
    let (supervisor, pool) = Supervisor::new(config, launcher);
    pool_thread::spawn(Role::Supervisor, "loky-supervisor".to_owned(), move || {
        supervisor.run()
    })
    .map_err(|e| Error::broken_by("could not start the supervisor thread", e))?;
    Ok(pool)
}

fn launcher(config: &Arc<Config>) -> Result<Box<dyn Launcher>, Error> {
    #[cfg(feature = "remote")]
    if let Some(remote) = &config.remote {
        let launcher = crate::remote::RemoteLauncher::new(config.clone(), remote)?;
        return Ok(Box::new(launcher));
    }
    Ok(Box::new(LocalLauncher::new(config.clone())))
}

pub(crate) struct Supervisor {
    pool: Arc<Pool>,
    config: Arc<Config>,
    launcher: Box<dyn Launcher>,
    events: Receiver<Event>,
    /// For the workers' threads.
    events_tx: Sender<Event>,
    /// Calls not sent yet, in order.
    pending: VecDeque<WorkItem>,
    slots: Vec<Slot>,
    next_worker: WorkerId,
    max_workers: usize,
    shutdown: Option<Shutdown>,
    broken: Option<Error>,
    leak_warned: bool,
    /// Workers killed before their hello since the last hello.
    start_crashes: usize,
    /// How long each task's calls take, as the workers' readers measure.
    durations: Arc<Durations>,
    /// Which calls their waiters may watch for, shared by the links.
    watch: Arc<Watch>,
    /// When to start the replacement of a dead worker, if it waits.
    replace_at: Option<Instant>,
    /// Handles of dead workers whose readers are reaping them, released as
    /// each is reaped (`Event::Reaped`), or at the pool's end: a worker
    /// that said what it dies of may take a while to be gone (the kernel
    /// freeing its memory), and the supervisor does not wait for that.
    reaping: Vec<(WorkerId, Box<dyn WorkerHandle>)>,
    /// Calls received, ever (for callers: see `direct.rs`).
    received: u64,
}

impl Supervisor {
    /// A supervisor (not running yet) starting workers with `launcher`, and
    /// the pool its callers share.
    pub(crate) fn new(config: Arc<Config>, launcher: Box<dyn Launcher>) -> (Supervisor, Arc<Pool>) {
        let (events_tx, events) = crossbeam_channel::unbounded();
        let pool = Arc::new(Pool::new(
            config.clone(),
            events_tx.clone(),
            launcher.encoding(),
        ));
        let watch = Arc::new(Watch::new(config.wait_spin));
        let supervisor = Supervisor {
            pool: pool.clone(),
            max_workers: config.max_workers,
            config,
            launcher,
            events,
            events_tx,
            pending: VecDeque::new(),
            slots: Vec::new(),
            next_worker: 0,
            shutdown: None,
            broken: None,
            leak_warned: false,
            start_crashes: 0,
            durations: Arc::default(),
            watch,
            replace_at: None,
            reaping: Vec::new(),
            received: 0,
        };
        (supervisor, pool)
    }

    fn run(mut self) {
        if let Err(message) = pool_thread::guarded(|| self.serve()) {
            // A bug in the supervisor must not leave futures pending forever.
            log::error!("the loky supervisor failed: {message}");
            let reason = pool_thread::internal_error(Some(Role::Supervisor), None, &message);
            self.break_pool(Error::broken(reason));
            let err = self.broken.clone().expect("broken above");
            fail_futures(call::take_orphans(), &err);
            for slot in &mut self.slots {
                slot.handle.stop(Stop::Kill);
                fail_all(slot.link.take_all(), &err);
            }
            // Reaped before the pool reports finished, so that a shutdown
            // that returns leaves no zombie: each reader sees its worker's
            // end at once (killed, its channel disconnected) and reaps it.
            for slot in self.slots.drain(..) {
                slot.handle.release();
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
                    self.handle_queued();
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.after_events(Instant::now());
        }
    }

    /// Handles every event already queued, without waiting.
    fn handle_queued(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            self.handle(event);
        }
    }

    /// What follows each batch of events: timers at `now`, dispatch, then
    /// what callers may send themselves.
    fn after_events(&mut self, now: Instant) {
        self.on_timers(now);
        self.dispatch();
        self.publish_direct();
    }

    /// Tells callers how many calls it received and queues, and which
    /// workers they may send to: every serving one, unless the pool counts
    /// its workers' calls (`max_tasks_per_child`), shuts down or broke.
    fn publish_direct(&mut self) {
        let enrolls = self.config.max_tasks_per_child.is_none()
            && self.shutdown.is_none()
            && self.broken.is_none();
        let workers = enrolls.then(|| {
            self.slots
                .iter_mut()
                .filter_map(|slot| {
                    slot.serving()?;
                    // Once started (a worker may say hello before its
                    // handle is in place): from then on the supervisor's
                    // calls go through the port it shares with callers.
                    if slot.port.is_none() {
                        slot.port = slot.handle.port();
                    }
                    Some(direct::Enrollment {
                        id: slot.id,
                        link: slot.link.clone(),
                        port: slot.port.clone()?,
                        tasks: slot.serving()?.clone(),
                    })
                })
                .collect()
        });
        let direct = &self.pool.direct;
        direct.publish(self.received, self.pending.len(), workers);
    }

    fn finished(&self) -> bool {
        (self.shutdown.is_some() || self.broken.is_some())
            && self.pending.is_empty()
            && self.slots.is_empty()
    }

    /// Marks the pool finished and fails anything that slipped in. What
    /// the launcher holds (a listener) goes first: a shutdown that returns
    /// leaves nothing of the pool behind.
    fn finish(&mut self) {
        self.pool.direct.withdraw_all();
        // What is left of the dead workers is freed before anyone hears
        // that the pool is done: no descriptor of it outlives a `shutdown`.
        for (_, handle) in self.reaping.drain(..) {
            handle.release();
        }
        self.launcher.finish();
        self.pool.mark_finished();
        let err = self.broken.clone().unwrap_or_else(Error::shutdown);
        fail_all_items(self.pending.drain(..), &err);
        while let Ok(event) = self.events.try_recv() {
            if let Event::Submit(items) = event {
                fail_all_items(items.into_iter(), &err);
            }
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Submit(items) => self.on_submit(items),
            Event::Spawned { worker } => self.on_spawned(worker),
            Event::LaunchFailed { worker, error } => self.on_launch_failed(worker, error),
            Event::Ready { worker, hello } => self.on_ready(worker, hello),
            Event::StartFailed {
                worker,
                failure,
                exit,
            } => self.on_start_failed(worker, failure, exit),
            Event::Completed { worker, replies } => self.on_completed(worker, replies),
            Event::Retiring { worker, reason } => self.on_retiring(worker, reason),
            Event::Died { worker, exit, end } => self.on_died(worker, exit, end),
            Event::Reaped { worker } => self.on_reaped(worker),
            Event::ThreadPanicked {
                worker,
                role,
                message,
            } => self.on_thread_panicked(worker, role, &message),
            Event::Shutdown(how) => self.on_shutdown(how),
            Event::Resize(n) => self.on_resize(n),
            Event::Kill(future) => self.on_kill(future),
        }
    }

    fn slot(&mut self, id: WorkerId) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.id == id)
    }

    fn on_submit(&mut self, items: Calls) {
        self.received += items.len() as u64;
        pool_thread::injected_panic_point(Role::Supervisor);
        if let Some(err) = &self.broken {
            return fail_all_items(items.into_iter(), err);
        }
        if matches!(self.shutdown, Some(how) if how.kill_workers) {
            return fail_all_items(items.into_iter(), &Error::killed_by_shutdown());
        }
        self.pending.extend(items);
    }

    fn on_ready(&mut self, id: WorkerId, hello: Hello) {
        let first = !self.greeted();
        self.greet(id, hello);
        // The first worker of a pool started here starts alone (see
        // `top_up`); the others start once it said hello: after the calls
        // that wait are sent to it (`dispatch`), or now if none waits. A
        // replacement that waits (`replace_soon`) still waits.
        if first
            && self.greeted()
            && self.launcher.starts_here()
            && self.replace_at.is_none()
            && self.pending.is_empty()
        {
            self.top_up();
        }
    }

    fn greet(&mut self, id: WorkerId, hello: Hello) {
        self.start_crashes = 0;
        let init = self.config.initializer.clone();
        let frames = self.pool.frames();
        let call_id = self.pool.next_call_id();
        let Some(slot) = self.slot(id) else { return };
        if !slot.starting() {
            return; // Asked to leave, or being killed, before its hello.
        }
        // A worker reached through an agent on its machine is known by its
        // own pid from its hello on.
        let pid = slot.handle.pid();
        if slot.pid != pid {
            slot.pid = pid;
            self.publish_pids();
        }
        let Some(slot) = self.slot(id) else { return };
        let tasks = Arc::new(TaskTable::new(hello));
        let Some(init) = init else {
            slot.state = SlotState::Serving { tasks };
            return;
        };
        let future = FutureState::new(init.sig.name, None);
        let item = tasks.check(&init.sig).and_then(|()| {
            WorkItem::new(
                future.clone(),
                &Target::Task(init.sig),
                loky_proto::CallKind::Single,
                call_id,
                frames,
                |frame| {
                    frame.extend_from_slice(&init.args);
                    Ok::<_, std::convert::Infallible>(())
                },
            )
        });
        match item {
            Ok(mut item) => {
                item.initializer = true;
                future.set_running();
                slot.state = SlotState::Initializing {
                    tasks,
                    init: future,
                };
                slot.send(vec![(item, 1)]);
            }
            Err(err) => self.break_pool(Error::broken_by("the initializer cannot run", err)),
        }
    }

    fn on_completed(&mut self, id: WorkerId, _replies: usize) {
        let max_calls = self.config.max_tasks_per_child;
        let Some(slot) = self.slot(id) else { return };
        let init = slot.initializer().filter(|init| init.is_done()).cloned();
        if let Some(init) = init {
            slot.state = match std::mem::replace(&mut slot.state, SlotState::Starting) {
                SlotState::Initializing { tasks, .. } => SlotState::Serving { tasks },
                SlotState::Retiring { why, .. } => SlotState::Retiring { why, init: None },
                other => other,
            };
            let pid = slot.pid;
            if let Err(err) = init.wait(None) {
                let name = self.config.initializer.as_ref().map_or("?", |i| i.sig.name);
                let reason = format!("the initializer `{name}` failed in worker {pid}");
                return self.break_pool(Error::broken_by(reason, err));
            }
            let Some(slot) = self.slot(id) else { return };
            return slot.close_if_idle();
        }
        if max_calls.is_some_and(|max| slot.calls >= max) {
            slot.retire(Retire::Recycled);
        }
        // A retiring worker leaves once it holds no call.
        slot.close_if_idle();
    }

    fn on_retiring(&mut self, id: WorkerId, reason: RetireReason) {
        let warn = !self.leak_warned;
        let Some(slot) = self.slot(id) else { return };
        slot.retire(Retire::Asked);
        let pid = slot.pid;
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

    fn on_thread_panicked(&mut self, id: WorkerId, role: Role, message: &str) {
        let pid = self.slot(id).map(|s| s.pid);
        let reason = pool_thread::internal_error(Some(role), pid, message);
        self.break_pool(Error::broken(reason));
    }

    fn on_shutdown(&mut self, how: Shutdown) {
        // Callers are refused from now on; the workers leave as the
        // supervisor says.
        self.pool.direct.withdraw_all();
        let previous = self.shutdown.unwrap_or(how);
        self.shutdown = Some(Shutdown {
            wait: how.wait,
            kill_workers: how.kill_workers || previous.kill_workers,
            cancel_futures: how.cancel_futures || previous.cancel_futures,
        });
        if how.cancel_futures {
            self.pending.retain(|item| !item.future.cancel());
        }
        if how.kill_workers {
            fail_all_items(self.pending.drain(..), &Error::killed_by_shutdown());
            for slot in &mut self.slots {
                slot.kill(KillReason::Shutdown, Stop::Kill, None);
            }
        }
    }

    fn on_resize(&mut self, max_workers: usize) {
        self.max_workers = max_workers;
        let mut live: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].live())
            .collect();
        // Retire the idlest workers first.
        live.sort_by_key(|&i| self.slots[i].link.held());
        let extra = live.len().saturating_sub(max_workers);
        for &i in &live[..extra] {
            self.slots[i].retire(Retire::Shrunk);
        }
        if !self.slots.is_empty() {
            self.top_up();
        }
        self.pool.resized();
    }

    fn on_kill(&mut self, future: Arc<FutureState>) {
        if future.is_done() {
            return;
        }
        let escalate_at = deadline::from_now(self.config.kill_grace);
        for slot in &mut self.slots {
            match slot.link.position(&future) {
                Some(0) if !slot.killing() => {
                    return slot.kill(KillReason::Killed(future), Stop::Term, escalate_at);
                }
                Some(_) => {
                    // Sent but not started: drop its result when it comes.
                    future.settle(Err(Error::Cancelled));
                    return;
                }
                None => {}
            }
        }
        // Queued again after a worker was replaced: not sent anywhere now.
        if let Some(pos) = self
            .pending
            .iter()
            .position(|i| Arc::ptr_eq(&i.future, &future))
        {
            future.settle(Err(Error::Cancelled));
            self.pending.remove(pos);
        }
    }

    /// Fails everything queued, kills every worker; later submits fail with
    /// `err`.
    fn break_pool(&mut self, err: Error) {
        if self.mark_broken(err) {
            self.stop_broken_pool();
        }
    }

    /// Records that the pool is broken with `err` (later submits fail with
    /// it); `false` if it already was. [`stop_broken_pool`](Self::stop_broken_pool)
    /// must follow: a caller may settle the futures it holds in between,
    /// so that their callers hear of the failure before the other workers
    /// are stopped.
    fn mark_broken(&mut self, err: Error) -> bool {
        if self.broken.is_some() {
            return false;
        }
        self.pool.lock().broken = Some(err.clone());
        self.broken = Some(err);
        self.pool.direct.withdraw_all();
        true
    }

    /// Fails everything queued and kills every worker of a broken pool.
    fn stop_broken_pool(&mut self) {
        let err = self.broken.clone().expect("marked broken first");
        fail_all_items(self.pending.drain(..), &err);
        for slot in &mut self.slots {
            match &mut slot.state {
                SlotState::Killing { escalate_at, .. } => {
                    *escalate_at = None;
                    slot.handle.close();
                    slot.handle.stop(Stop::Kill);
                }
                _ => slot.kill(KillReason::Broken, Stop::Kill, None),
            }
        }
    }

    /// Its pid is known now: the pool's list of pids shows it.
    fn on_spawned(&mut self, id: WorkerId) {
        if let Some(slot) = self.slot(id) {
            slot.pid = slot.handle.pid();
            self.publish_pids();
        }
    }

    /// Publishes the pids known: a local worker whose process is still
    /// being started has none yet, nor has a worker started by a launcher
    /// before its hello.
    fn publish_pids(&self) {
        self.publish_pids_launching(0);
    }

    /// Publishes the workers' pids, `launching` more workers about to
    /// start here (`worker_pids` waits for their pids).
    fn publish_pids_launching(&self, launching: usize) {
        let pids: Vec<u32> = self
            .slots
            .iter()
            .map(|s| s.pid)
            .filter(|&pid| pid != 0)
            .collect();
        // `worker_pids` waits for local spawns only (a fraction of a
        // millisecond); a launched worker may wait in a queue for hours.
        let spawning = self
            .slots
            .iter()
            .filter(|s| s.pid == 0 && s.handle.whereabouts().is_none())
            .count();
        let launching = if self.launcher.starts_here() {
            launching
        } else {
            0
        };
        self.pool.publish_pids(pids, spawning + launching);
    }
}

fn fail_futures(futures: Vec<Arc<FutureState>>, err: &Error) {
    for future in futures {
        future.settle(Err(err.clone()));
    }
}

fn fail_all(calls: Vec<InFlight>, err: &Error) {
    fail_all_items(calls.into_iter().map(|c| c.item), err);
}

fn fail_all_items(items: impl Iterator<Item = WorkItem>, err: &Error) {
    for item in items {
        item.future.settle(Err(err.clone()));
    }
}
