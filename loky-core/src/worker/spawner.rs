//! The thread that starts a pool's local workers and frees what is left of
//! dead ones, so that the supervisor never waits for either: a replacement
//! starts while the other workers go on taking calls.
//!
//! It lives as long as the pool (until the supervisor drops its launcher,
//! once every worker is reaped): a worker's parent-death signal is tied to
//! the thread that started it, so it must not be a thread that ends before
//! its workers do.
//!
//! [`LocalLauncher::launch`](super::local::LocalLauncher) returns at once a
//! [`Launching`] handle; the spawner starts the process, publishes its pid
//! (an [`Event::Spawned`]), starts its I/O threads, and hands the real
//! handle over. What the supervisor did to the worker meanwhile (close,
//! stop, frames, release) is applied then, in order. A spawn that fails is
//! an [`Event::LaunchFailed`].

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use loky_proto::shm::EncodedFrame;

use super::{Port, Stop, WorkerHandle};
use crate::error::Error;
use crate::events::{Event, WorkerId};
use crate::link::Link;
use crate::pool_thread::{self, Role};

/// Starts one worker on the spawner thread: its process (then its pid is
/// known), then its I/O threads.
pub(super) trait Start: Send + 'static {
    /// Starts the process of `worker`; its pid.
    fn spawn(&mut self, worker: WorkerId) -> Result<Spawned, Error>;
}

/// Starts a started process's I/O threads (its replies settle the calls
/// of the link, its news go to the events); a failure stops and reaps the
/// process.
pub(super) type Connect =
    Box<dyn FnOnce(Arc<Link>, Sender<Event>) -> Result<Box<dyn WorkerHandle>, Error> + Send>;

/// A started process whose I/O threads are still to start.
pub(super) struct Spawned {
    pub(super) pid: u32,
    pub(super) connect: Connect,
}

enum Request {
    Launch {
        worker: WorkerId,
        link: Arc<Link>,
        events: Sender<Event>,
        shared: Arc<Shared>,
    },
    Release(Box<dyn WorkerHandle>),
    /// Ends the thread once what came before is done. (Handles hold a
    /// sender too, so the channel alone would not end it while a handle
    /// is left, as after a panic of the supervisor.)
    Stop,
}

/// The spawner thread of one pool.
pub(super) struct Spawner {
    requests: Option<Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

impl Spawner {
    /// Starts the thread, which starts workers with `start`.
    pub(super) fn start(mut start: impl Start) -> std::io::Result<Spawner> {
        let (requests, incoming) = crossbeam_channel::unbounded();
        let thread = pool_thread::spawn(Role::Spawner, "loky-spawner".to_owned(), move || {
            serve(&mut start, &incoming);
        })?;
        Ok(Spawner {
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    /// Asks for worker `worker` to be started; its handle at once.
    pub(super) fn launch(
        &self,
        worker: WorkerId,
        link: Arc<Link>,
        events: Sender<Event>,
    ) -> Result<Box<dyn WorkerHandle>, Error> {
        let shared = Arc::new(Shared {
            pid: AtomicU32::new(0),
            phase: Mutex::new(Phase::Starting(Pending::default())),
        });
        let requests = self.requests.clone().expect("the spawner runs");
        requests
            .send(Request::Launch {
                worker,
                link,
                events,
                shared: shared.clone(),
            })
            .map_err(|_| Error::broken("the thread that starts workers is gone"))?;
        Ok(Box::new(Launching { shared, requests }))
    }
}

impl Drop for Spawner {
    /// Ends the thread once it has done what was asked (every worker is
    /// reaped by then: the supervisor drops its launcher last).
    fn drop(&mut self) {
        if let Some(requests) = self.requests.take() {
            let _ = requests.send(Request::Stop);
        }
        if let Some(thread) = self.thread.take() {
            // It ends as soon as its queue is empty; a panic there (a bug)
            // was reported already.
            let _ = thread.join();
        }
    }
}

fn serve(start: &mut impl Start, incoming: &Receiver<Request>) {
    while let Ok(request) = incoming.recv() {
        match request {
            Request::Launch {
                worker,
                link,
                events,
                shared,
            } => {
                let launched =
                    pool_thread::guarded(|| launch(start, worker, link, &events, &shared))
                        .unwrap_or_else(|message| {
                            let reason =
                                pool_thread::internal_error(Some(Role::Spawner), None, &message);
                            Err(Error::broken(reason))
                        });
                if let Err(error) = launched {
                    shared.lock().finish(None);
                    let _ = events.send(Event::LaunchFailed { worker, error });
                }
            }
            // Its threads end at once: its channel is shut down first.
            Request::Release(handle) => handle.release(),
            // A handle released later frees its worker itself.
            Request::Stop => return,
        }
    }
}

fn launch(
    start: &mut impl Start,
    worker: WorkerId,
    link: Arc<Link>,
    events: &Sender<Event>,
    shared: &Shared,
) -> Result<(), Error> {
    let spawned = start.spawn(worker)?;
    shared.pid.store(spawned.pid, Ordering::Release);
    // Before any news from its reader, which starts next.
    let _ = events.send(Event::Spawned { worker });
    let handle = (spawned.connect)(link, events.clone())?;
    shared.lock().finish(Some(handle));
    Ok(())
}

/// What the supervisor's handle and the spawner share.
struct Shared {
    /// 0 until the process is started.
    pid: AtomicU32,
    phase: Mutex<Phase>,
}

enum Phase {
    /// Being started; what the supervisor did meanwhile.
    Starting(Pending),
    Started(Box<dyn WorkerHandle>),
    /// Released, or never started.
    Gone,
}

#[derive(Default)]
struct Pending {
    frames: Vec<Arc<EncodedFrame>>,
    closed: bool,
    stop: Option<Stop>,
    released: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Phase> {
        // Consistent between any two statements: a poisoned lock only
        // means a panic elsewhere.
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Phase {
    /// The worker's real handle is here (or none: it never started): what
    /// was done to the worker meanwhile is done to it now, in order.
    fn finish(&mut self, handle: Option<Box<dyn WorkerHandle>>) {
        let pending = match std::mem::replace(self, Phase::Gone) {
            Phase::Starting(pending) => pending,
            other => {
                *self = other;
                return;
            }
        };
        let Some(mut handle) = handle else { return };
        for frame in pending.frames {
            handle.send(frame);
        }
        if let Some(how) = pending.stop {
            handle.stop(how);
        }
        if pending.closed {
            handle.close();
        }
        if pending.released {
            handle.release();
        } else {
            *self = Phase::Started(handle);
        }
    }
}

/// The supervisor's handle on a worker the spawner starts.
struct Launching {
    shared: Arc<Shared>,
    requests: Sender<Request>,
}

impl WorkerHandle for Launching {
    fn pid(&self) -> u32 {
        self.shared.pid.load(Ordering::Acquire)
    }

    fn send(&mut self, frame: Arc<EncodedFrame>) {
        match &mut *self.shared.lock() {
            // As on a started worker, a frame sent after `close` is dropped.
            Phase::Starting(pending) if pending.closed => {}
            Phase::Starting(pending) => pending.frames.push(frame),
            Phase::Started(handle) => handle.send(frame),
            Phase::Gone => {}
        }
    }

    fn close(&mut self) {
        match &mut *self.shared.lock() {
            Phase::Starting(pending) => pending.closed = true,
            Phase::Started(handle) => handle.close(),
            Phase::Gone => {}
        }
    }

    fn is_closed(&self) -> bool {
        match &*self.shared.lock() {
            Phase::Starting(pending) => pending.closed,
            Phase::Started(handle) => handle.is_closed(),
            Phase::Gone => true,
        }
    }

    fn stop(&self, how: Stop) {
        match &mut *self.shared.lock() {
            Phase::Starting(pending) => {
                pending.stop = Some(match (pending.stop, how) {
                    (Some(Stop::Kill), _) | (_, Stop::Kill) => Stop::Kill,
                    _ => Stop::Term,
                });
            }
            Phase::Started(handle) => handle.stop(how),
            Phase::Gone => {}
        }
    }

    fn port(&self) -> Option<Arc<dyn Port>> {
        match &*self.shared.lock() {
            Phase::Started(handle) => handle.port(),
            Phase::Starting(_) | Phase::Gone => None,
        }
    }

    /// Hands the joining of the worker's threads to the spawner.
    fn release(self: Box<Self>) {
        let handle = match &mut *self.shared.lock() {
            Phase::Starting(pending) => {
                pending.released = true;
                return;
            }
            phase @ Phase::Started(_) => match std::mem::replace(phase, Phase::Gone) {
                Phase::Started(handle) => handle,
                _ => unreachable!("matched above"),
            },
            Phase::Gone => return,
        };
        if let Err(unsent) = self.requests.send(Request::Release(handle)) {
            let Request::Release(handle) = unsent.0 else {
                unreachable!("sent above")
            };
            handle.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// What was done to a started worker, in order.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Done {
        Sent(usize),
        Stopped(Stop),
        Closed,
        Released,
    }

    #[derive(Clone, Default)]
    struct Record(Arc<Mutex<Vec<Done>>>);

    impl Record {
        fn push(&self, done: Done) {
            self.0.lock().unwrap().push(done);
        }

        fn taken(&self) -> Vec<Done> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    /// A started worker's handle, keeping the contract of
    /// [`WorkerHandle`]: a frame sent after `close` is dropped.
    struct Handle(Record, bool);

    impl WorkerHandle for Handle {
        fn pid(&self) -> u32 {
            7
        }
        fn send(&mut self, frame: Arc<EncodedFrame>) {
            if !self.1 {
                self.0.push(Done::Sent(frame.len()));
            }
        }
        fn close(&mut self) {
            self.1 = true;
            self.0.push(Done::Closed);
        }
        fn is_closed(&self) -> bool {
            self.1
        }
        fn stop(&self, how: Stop) {
            self.0.push(Done::Stopped(how));
        }
        fn release(self: Box<Self>) {
            self.0.push(Done::Released);
        }
    }

    /// Starts fake workers, each once `gate` lets it (so that the test
    /// acts on the handle while the start is under way); fails spawns
    /// while `refuse` is set.
    struct FakeStart {
        record: Record,
        gate: crossbeam_channel::Receiver<()>,
        refuse: bool,
    }

    impl Start for FakeStart {
        fn spawn(&mut self, _worker: WorkerId) -> Result<Spawned, Error> {
            self.gate
                .recv_timeout(Duration::from_secs(10))
                .expect("the test opens the gate");
            if self.refuse {
                return Err(Error::broken("no processes left"));
            }
            let record = self.record.clone();
            Ok(Spawned {
                pid: 7,
                connect: Box::new(move |_link, _events| Ok(Box::new(Handle(record, false)))),
            })
        }
    }

    fn spawner(refuse: bool) -> (Spawner, Record, Sender<()>) {
        let record = Record::default();
        let (gate_tx, gate) = crossbeam_channel::unbounded();
        let start = FakeStart {
            record: record.clone(),
            gate,
            refuse,
        };
        (Spawner::start(start).unwrap(), record, gate_tx)
    }

    fn next(events: &Receiver<Event>) -> Event {
        events
            .recv_timeout(Duration::from_secs(10))
            .expect("an event within 10 s")
    }

    #[test]
    fn what_the_supervisor_does_while_a_worker_starts_reaches_it_in_order() {
        let (spawner, record, gate) = spawner(false);
        let (events_tx, events) = crossbeam_channel::unbounded();
        let link = Arc::new(Link::new(Arc::default()));
        let mut handle = spawner.launch(1, link, events_tx).unwrap();
        assert_eq!(handle.pid(), 0, "no pid before the process starts");
        handle.send(Arc::new(EncodedFrame::Bytes(vec![0; 3].into())));
        handle.stop(Stop::Term);
        handle.close();
        assert!(handle.is_closed());
        handle.send(Arc::new(EncodedFrame::Bytes(vec![0; 9].into()))); // Dropped.
        gate.send(()).unwrap();
        assert!(matches!(next(&events), Event::Spawned { worker: 1 }));
        assert_eq!(handle.pid(), 7);
        // After the close, whether the start is finished or not (the
        // spawned event comes before the real handle is in place): dropped.
        handle.send(Arc::new(EncodedFrame::Bytes(vec![0; 5].into())));
        handle.release();
        drop(spawner); // Waits until the spawner has done all it was asked.
        assert_eq!(
            record.taken(),
            [
                Done::Sent(3),
                Done::Stopped(Stop::Term),
                Done::Closed,
                Done::Released
            ]
        );
    }

    #[test]
    fn a_worker_released_before_it_started_is_released_once_it_has() {
        let (spawner, record, gate) = spawner(false);
        let (events_tx, _events) = crossbeam_channel::unbounded();
        let handle = spawner.launch(1, Arc::new(Link::new(Arc::default())), events_tx);
        handle.unwrap().release();
        gate.send(()).unwrap();
        drop(spawner);
        assert_eq!(record.taken(), [Done::Released]);
    }

    #[test]
    fn the_spawner_ends_while_a_handle_is_left_which_then_frees_its_worker_itself() {
        let (spawner, record, gate) = spawner(false);
        let (events_tx, _events) = crossbeam_channel::unbounded();
        let handle = spawner
            .launch(1, Arc::new(Link::new(Arc::default())), events_tx)
            .unwrap();
        gate.send(()).unwrap();
        drop(spawner); // Returns although `handle` holds a sender.
        handle.release();
        assert_eq!(record.taken(), [Done::Released]);
    }

    #[test]
    fn a_spawn_that_fails_is_reported_and_leaves_nothing_to_release() {
        let (spawner, record, gate) = spawner(true);
        let (events_tx, events) = crossbeam_channel::unbounded();
        let handle = spawner
            .launch(4, Arc::new(Link::new(Arc::default())), events_tx)
            .unwrap();
        gate.send(()).unwrap();
        match next(&events) {
            Event::LaunchFailed { worker: 4, error } => {
                assert!(error.to_string().contains("no processes left"), "{error}");
            }
            _ => panic!("expected LaunchFailed"),
        }
        assert!(handle.is_closed(), "nothing left to send to");
        handle.release();
        drop(spawner);
        assert!(record.taken().is_empty());
    }
}
