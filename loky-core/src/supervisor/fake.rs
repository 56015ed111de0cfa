//! A fake [`Launcher`] for the supervisor's unit tests: no process, no
//! thread. It records what the supervisor does to each worker, and the test
//! plays the workers' part by sending the events their threads would send.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use loky_proto::program::ProgramId;
use loky_proto::shm::EncodedFrame;
use loky_proto::{CallKind, Hello, PROTOCOL_VERSION, RetireReason, Signature, Task, TaskInfo};

use super::{Direct, Pool, Supervisor};
use crate::call::{InFlight, Target};
use crate::config::Config;
use crate::error::Error;
use crate::events::{End, Event, StartFailure, WorkerId};
use crate::exit::WorkerExit;
use crate::future::{FutureState, RawOutput};
use crate::link::Link;
use crate::worker::{Launcher, Port, Stop, WorkerHandle};

/// What the supervisor did to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Action {
    /// Sent it the call with this id.
    Sent(u64),
    Closed,
    Stopped(Stop),
    Released,
}

/// A launch, or calls the supervisor sent together, in the order of all
/// the pool's workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    Launched(WorkerId),
    /// `calls` sent to `worker` while `worker_pids` would wait for
    /// `awaited` workers to start.
    Sent {
        worker: WorkerId,
        calls: usize,
        awaited: usize,
    },
}

#[derive(Default)]
struct World {
    /// The pool's record of the workers callers may take.
    direct: Option<Arc<Direct>>,
    /// The pool, as callers share it.
    pool: Option<Arc<Pool>>,
    /// Every launch and send, in order.
    steps: Vec<Step>,
    workers: HashMap<WorkerId, FakeWorker>,
    /// Launched workers, in order.
    launched: Vec<WorkerId>,
    /// Launches fail while set.
    refuse: Option<&'static str>,
    /// The workers start on this machine (`Launcher::starts_here`).
    here: bool,
}

struct FakeWorker {
    link: Arc<Link>,
    events: Sender<Event>,
    actions: Vec<Action>,
    /// The sizes of the batches the supervisor sent through the port.
    batches: Vec<usize>,
    closed: bool,
}

fn lock(world: &Mutex<World>) -> MutexGuard<'_, World> {
    world.lock().unwrap_or_else(|e| e.into_inner())
}

struct FakeLauncher(Arc<Mutex<World>>);

impl Launcher for FakeLauncher {
    fn starts_here(&self) -> bool {
        lock(&self.0).here
    }

    fn launch(
        &mut self,
        worker: WorkerId,
        link: Arc<Link>,
        events: Sender<Event>,
    ) -> Result<Box<dyn WorkerHandle>, Error> {
        let mut world = lock(&self.0);
        if let Some(reason) = world.refuse {
            return Err(Error::broken(reason));
        }
        world.launched.push(worker);
        world.steps.push(Step::Launched(worker));
        world.workers.insert(
            worker,
            FakeWorker {
                link,
                events,
                actions: Vec::new(),
                batches: Vec::new(),
                closed: false,
            },
        );
        Ok(Box::new(FakeHandle {
            id: worker,
            world: self.0.clone(),
        }))
    }
}

struct FakeHandle {
    id: WorkerId,
    world: Arc<Mutex<World>>,
}

impl FakeHandle {
    /// The supervisor must take a worker from callers before it closes or
    /// stops it: a caller's call could otherwise reach a closed input.
    fn check_withdrawn(&self, what: &str) {
        let direct = lock(&self.world).direct.clone();
        if let Some(direct) = direct {
            let enrolled = direct.enrolled().iter().any(|&(id, _)| id == self.id);
            assert!(
                !enrolled,
                "worker {} {what} while callers may take it",
                self.id
            );
        }
    }

    /// Records `calls` the supervisor sent together (never under the
    /// pool's lock, which this takes).
    fn step_sent(&self, calls: usize) {
        let mut world = lock(&self.world);
        let awaited = world.pool.as_ref().map_or(0, |pool| pool.spawning());
        world.steps.push(Step::Sent {
            worker: self.id,
            calls,
            awaited,
        });
    }

    fn record(&self, action: Action) {
        let mut world = lock(&self.world);
        let worker = world.workers.get_mut(&self.id).expect("a launched worker");
        if action == Action::Closed {
            worker.closed = true;
        }
        worker.actions.push(action);
    }
}

impl WorkerHandle for FakeHandle {
    fn pid(&self) -> u32 {
        1000 + self.id as u32
    }

    fn send(&mut self, frame: Arc<EncodedFrame>) {
        let closed = lock(&self.world).workers[&self.id].closed;
        if !closed {
            // The call id is what the supervisor sent; the frame itself is
            // the codec's business, tested elsewhere.
            let id = lock(&self.world).workers[&self.id]
                .link
                .id_of_frame(&frame)
                .expect("a frame is sent for a call recorded in the link");
            self.record(Action::Sent(id));
            self.step_sent(1);
        }
    }

    fn close(&mut self) {
        self.check_withdrawn("closed");
        if !self.is_closed() {
            self.record(Action::Closed);
        }
    }

    fn is_closed(&self) -> bool {
        lock(&self.world).workers[&self.id].closed
    }

    fn stop(&self, how: Stop) {
        self.check_withdrawn("stopped");
        self.record(Action::Stopped(how));
    }

    fn release(self: Box<Self>) {
        self.check_withdrawn("released");
        self.record(Action::Released);
    }

    fn port(&self) -> Option<Arc<dyn Port>> {
        Some(Arc::new(FakeHandle {
            id: self.id,
            world: self.world.clone(),
        }))
    }
}

/// The fake worker's input as callers share it: the same record.
impl Port for FakeHandle {
    fn send(&self, link: &Link, call: InFlight, recorded: &mut dyn FnMut()) {
        let id = call.item.id;
        link.push(call);
        recorded();
        if !lock(&self.world).workers[&self.id].closed {
            self.record(Action::Sent(id));
        }
    }

    fn send_all(&self, link: &Link, calls: Vec<InFlight>) {
        let size = calls.len();
        for call in calls {
            self.send(link, call, &mut || {});
        }
        self.step_sent(size);
        let mut world = lock(&self.world);
        let worker = world.workers.get_mut(&self.id).expect("a launched worker");
        worker.batches.push(size);
    }
}

/// The task the tests submit.
pub(super) const TASK: Task<u32, u32> = Task::new("t");
/// Another task, for tests that need two.
pub(super) const OTHER: Task<u32, u32> = Task::new("other");

/// A supervisor driven by hand, with its fake workers.
pub(super) struct Harness {
    pub(super) sup: Supervisor,
    pub(super) pool: Arc<Pool>,
    world: Arc<Mutex<World>>,
}

impl Harness {
    pub(super) fn new(config: Config) -> Harness {
        let world = Arc::new(Mutex::new(World::default()));
        let launcher = Box::new(FakeLauncher(world.clone()));
        let (sup, pool) = Supervisor::new(Arc::new(config), launcher);
        lock(&world).direct = Some(pool.direct.clone());
        lock(&world).pool = Some(pool.clone());
        Harness { sup, pool, world }
    }

    /// Makes the fake workers start on this machine, as local workers do
    /// (`Launcher::starts_here`).
    pub(super) fn start_here(&self) {
        lock(&self.world).here = true;
    }

    /// Makes `TASK`'s calls typically take `typical`, whatever the calls
    /// made so far measured.
    pub(super) fn task_takes(&self, typical: Duration) {
        let probe = self
            .pool
            .prepare(
                &Target::Task(TASK.signature()),
                CallKind::Single,
                None,
                |frame| loky_proto::encode_payload_into(&0u32, frame),
            )
            .expect("encodes");
        self.sup
            .durations
            .set(crate::durations::TaskKey::of(&probe), typical);
    }

    /// Submits `TASK(x)`.
    pub(super) fn submit(&mut self, x: u32) -> Arc<FutureState> {
        self.submit_sig(TASK.signature(), x)
    }

    pub(super) fn submit_sig(&mut self, sig: Signature, x: u32) -> Arc<FutureState> {
        self.submit_target(&Target::Task(sig), x)
    }

    /// Submits `TASK(x)` as a caller does: straight to a free worker if
    /// the pool lets it, else to the queue.
    pub(super) fn submit_direct(&mut self, x: u32) -> Arc<FutureState> {
        self.submit_with_timeout(x, None).expect("the pool is open")
    }

    /// Submits `TASK(x)` as a caller does, with a deadline.
    pub(super) fn submit_with_timeout(
        &mut self,
        x: u32,
        timeout: Option<Duration>,
    ) -> Result<Arc<FutureState>, Error> {
        self.pool
            .submit_call(&Target::Task(TASK.signature()), timeout, |frame| {
                loky_proto::encode_payload_into(&x, frame)
            })
    }

    /// How many events wait for the supervisor.
    pub(super) fn events_waiting(&self) -> usize {
        self.sup.events.len()
    }

    /// Submits a call of `target` on `x`.
    pub(super) fn submit_target(&mut self, target: &Target, x: u32) -> Arc<FutureState> {
        let item = self
            .pool
            .prepare(target, CallKind::Single, None, |frame| {
                loky_proto::encode_payload_into(&x, frame)
            })
            .expect("encodes");
        let future = item.future.clone();
        self.pool.submit(vec![item]).expect("the pool is open");
        future
    }

    /// One turn of the supervisor's loop at `now`: every queued event, the
    /// timers, dispatch.
    pub(super) fn turn_at(&mut self, now: Instant) {
        self.sup.handle_queued();
        self.sup.after_events(now);
    }

    pub(super) fn turn(&mut self) {
        self.turn_at(Instant::now());
    }

    /// What the supervisor does as its loop ends.
    pub(super) fn end(&mut self) {
        self.sup.finish();
    }

    /// Every launch and send so far, in order.
    pub(super) fn steps(&self) -> Vec<Step> {
        lock(&self.world).steps.clone()
    }

    pub(super) fn launched(&self) -> Vec<WorkerId> {
        lock(&self.world).launched.clone()
    }

    /// The sizes of the batches of calls sent to `worker` through its port.
    pub(super) fn batches(&self, worker: WorkerId) -> Vec<usize> {
        lock(&self.world).workers[&worker].batches.clone()
    }

    pub(super) fn actions(&self, worker: WorkerId) -> Vec<Action> {
        lock(&self.world).workers[&worker].actions.clone()
    }

    /// What the supervisor did to `worker` so far, as seen at any moment:
    /// from a future's callback, say, while the supervisor is at work.
    pub(super) fn actions_probe(
        &self,
        worker: WorkerId,
    ) -> impl Fn() -> Vec<Action> + Send + use<> {
        let world = self.world.clone();
        move || lock(&world).workers[&worker].actions.clone()
    }

    pub(super) fn sent(&self, worker: WorkerId) -> usize {
        self.actions(worker)
            .iter()
            .filter(|a| matches!(a, Action::Sent(_)))
            .count()
    }

    pub(super) fn held(&self, worker: WorkerId) -> usize {
        self.link(worker).held()
    }

    /// Of a pool of two that was handed one call: the worker holding it.
    pub(super) fn holder_of_one_call(&self) -> WorkerId {
        if self.held(1) == 1 { 1 } else { 2 }
    }

    pub(super) fn link(&self, worker: WorkerId) -> Arc<Link> {
        lock(&self.world).workers[&worker].link.clone()
    }

    pub(super) fn refuse_launches(&self, reason: Option<&'static str>) {
        lock(&self.world).refuse = reason;
    }

    /// What worker `worker`'s threads would report.
    pub(super) fn event(&self, worker: WorkerId, event: Event) {
        let events = lock(&self.world).workers[&worker].events.clone();
        events.send(event).expect("the supervisor listens");
    }

    /// Worker `worker` says hello; it runs `TASK` and `OTHER`, and this
    /// very program.
    pub(super) fn hello(&self, worker: WorkerId) {
        self.hello_as(worker, ProgramId::current().clone());
    }

    /// Worker `worker` says hello as a program of build `identity`.
    pub(super) fn hello_as(&self, worker: WorkerId, identity: ProgramId) {
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            pid: 1000 + worker as u32,
            program: "fake-worker".to_owned(),
            identity,
            tasks: vec![
                TaskInfo::from(TASK.signature()),
                TaskInfo::from(OTHER.signature()),
            ],
        };
        self.event(worker, Event::Ready { worker, hello });
    }

    /// Worker `worker` answers the call it runs with `value`, as its reader
    /// would: the call off the link, the worker free for callers again,
    /// its future settled, then the news if the supervisor must hear it.
    /// Whether it was told.
    pub(super) fn reply(&self, worker: WorkerId, value: u32) -> bool {
        let link = self.link(worker);
        let front = *link.ids().first().expect("the worker holds a call");
        let call = link
            .pop(front, Instant::now())
            .expect("the reply is for the front call");
        let tell = !link.replied();
        let bytes = loky_proto::encode_payload(&value).expect("encodes");
        call.item
            .future
            .settle(Ok(Arc::new(RawOutput::Value(bytes.into()))));
        if tell {
            self.event(worker, Event::Completed { worker, replies: 1 });
        }
        tell
    }

    /// Worker `worker` dies (its reader saw it and reaped it).
    /// Worker `worker` dies; its reader reaps it, as a real reader does.
    pub(super) fn die(&self, worker: WorkerId, exit: WorkerExit, end: End) {
        self.event(worker, Event::Died { worker, exit, end });
        self.event(worker, Event::Reaped { worker });
    }

    pub(super) fn fail_start(&self, worker: WorkerId, failure: StartFailure, exit: WorkerExit) {
        self.event(
            worker,
            Event::StartFailed {
                worker,
                failure,
                exit,
            },
        );
    }

    pub(super) fn retire(&self, worker: WorkerId) {
        let reason = RetireReason::MemoryLeak {
            baseline: 1,
            current: 2,
        };
        self.event(worker, Event::Retiring { worker, reason });
    }

    pub(super) fn is_finished(&self) -> bool {
        self.sup.finished()
    }
}
