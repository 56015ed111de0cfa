//! Where done callbacks run when one of a pool's own threads completes a
//! future.
//!
//! A reader settles the futures of its worker's replies; the supervisor
//! fails and cancels futures. Neither may run the application's callbacks
//! itself: a callback that waits (for another future of the same pool, for
//! a new submit, for a sibling failed in the same loop) would stop the
//! very thread that has to settle what it waits for. So those callbacks
//! are handed to runner threads of their own, and a runner is started
//! whenever a callback would otherwise wait behind running ones: a callback
//! that blocks holds up at most itself, never a result, and never another
//! callback it waits for.
//!
//! Runners are shared by every pool of the process, started on demand (at
//! most [`MAX_RUNNERS`] at once) and end after [`IDLE_EXIT`] without work.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::pool_thread;

/// A future's done callbacks, run in order.
pub(crate) type Callback = Box<dyn FnOnce() + Send>;

/// More runners than this at once means callbacks that never return; the
/// next ones wait for one to come back.
const MAX_RUNNERS: usize = 64;

/// A runner without work for this long ends.
const IDLE_EXIT: Duration = Duration::from_secs(2);

struct Queue {
    jobs: VecDeque<Vec<Callback>>,
    /// Runners waiting for a job.
    idle: usize,
    /// Runners alive.
    runners: usize,
}

static QUEUE: Mutex<Queue> = Mutex::new(Queue {
    jobs: VecDeque::new(),
    idle: 0,
    runners: 0,
});
static WORK: Condvar = Condvar::new();

fn lock() -> MutexGuard<'static, Queue> {
    // The queue is consistent between any two statements: a panic
    // elsewhere leaves nothing half done.
    QUEUE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `callbacks` in order: on this thread if it is the application's,
/// on a runner if it is one of a pool's own threads.
pub(crate) fn run(callbacks: Vec<Callback>) {
    if callbacks.is_empty() {
        return;
    }
    if pool_thread::is_pool_thread() {
        hand_off(callbacks);
    } else {
        run_now(callbacks);
    }
}

/// Runs `callbacks` on this thread; a panicking one is logged and the next
/// one still runs.
fn run_now(callbacks: Vec<Callback>) {
    for callback in callbacks {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(callback)) {
            log::error!(
                "a done callback of a future panicked: {}",
                pool_thread::panic_message(&*panic)
            );
        }
    }
}

fn hand_off(callbacks: Vec<Callback>) {
    let mut queue = lock();
    queue.jobs.push_back(callbacks);
    // Every queued job has a waiting runner of its own, or a new one.
    if queue.jobs.len() <= queue.idle {
        WORK.notify_one();
        return;
    }
    if queue.runners >= MAX_RUNNERS {
        log::warn!(
            "{MAX_RUNNERS} done callbacks are running at once; the next ones wait for one to \
             return"
        );
        return;
    }
    queue.runners += 1;
    drop(queue);
    let started = std::thread::Builder::new()
        .name("loky-callbacks".to_owned())
        .spawn(runner);
    if let Err(err) = started {
        // The job stays queued for a runner already alive, if any.
        lock().runners -= 1;
        log::error!("could not start a thread for done callbacks: {err}");
    }
}

fn runner() {
    let mut queue = lock();
    loop {
        if let Some(job) = queue.jobs.pop_front() {
            drop(queue);
            run_now(job);
            queue = lock();
            continue;
        }
        queue.idle += 1;
        let (guard, waited) = WORK
            .wait_timeout(queue, IDLE_EXIT)
            .unwrap_or_else(|e| e.into_inner());
        queue = guard;
        queue.idle -= 1;
        if waited.timed_out() && queue.jobs.is_empty() {
            queue.runners -= 1;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::mpsc;

    use super::*;
    use crate::pool_thread::Role;

    /// On a pool thread, two callbacks where the first waits for the second
    /// both run: the second gets a runner of its own.
    #[test]
    fn a_callback_waiting_for_another_does_not_stop_it() {
        let (tx, rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<&str>();
        let first_done = done_tx.clone();
        let rx = Arc::new(Mutex::new(rx));
        let thread = pool_thread::spawn(Role::Reader, "test-reader".into(), move || {
            run(vec![Box::new(move || {
                rx.lock()
                    .unwrap()
                    .recv_timeout(Duration::from_secs(10))
                    .expect("the second callback ran");
                first_done.send("first").unwrap();
            })]);
            run(vec![Box::new(move || {
                tx.send(()).unwrap();
                done_tx.send("second").unwrap();
            })]);
        })
        .unwrap();
        thread.join().unwrap();
        let mut order = [
            done_rx.recv_timeout(Duration::from_secs(10)).unwrap(),
            done_rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        ];
        order.sort_unstable();
        assert_eq!(order, ["first", "second"]);
    }

    #[test]
    fn on_the_application_s_threads_callbacks_run_at_once() {
        let me = std::thread::current().id();
        let (tx, rx) = mpsc::channel();
        run(vec![
            Box::new(|| panic!("a callback that panics")),
            Box::new(move || tx.send(std::thread::current().id()).unwrap()),
        ]);
        assert_eq!(rx.try_recv().unwrap(), me);
    }
}
