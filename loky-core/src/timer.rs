//! Alarms for the deadlines of streams (a `map`'s timeout), which no async
//! runtime provides to a library that depends on none: one thread per
//! process wakes each alarm's waker at its deadline. The thread starts
//! with the first alarm and ends when none is left.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Instant;

struct Alarms {
    set: BTreeMap<(Instant, u64), Waker>,
    next_key: u64,
    /// Whether the timer thread is alive.
    running: bool,
}

static ALARMS: Mutex<Alarms> = Mutex::new(Alarms {
    set: BTreeMap::new(),
    next_key: 0,
    running: false,
});
static CHANGED: Condvar = Condvar::new();

fn lock() -> MutexGuard<'static, Alarms> {
    // Consistent between any two statements.
    ALARMS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wakes a waker at a deadline, unless dropped first.
#[derive(Debug)]
pub(crate) struct Alarm {
    key: (Instant, u64),
}

impl Alarm {
    /// An alarm that wakes `waker` at `at`.
    pub(crate) fn new(at: Instant, waker: &Waker) -> Alarm {
        let mut alarms = lock();
        let key = (at, alarms.next_key);
        alarms.next_key += 1;
        alarms.set.insert(key, waker.clone());
        let first = alarms.set.keys().next() == Some(&key);
        if !alarms.running {
            alarms.running = true;
            if let Err(err) = std::thread::Builder::new()
                .name("loky-timer".to_owned())
                .spawn(run)
            {
                // The deadline is then only seen when something else wakes
                // the stream; nothing hangs that would not without it.
                alarms.running = false;
                log::error!("could not start the timer thread: {err}");
            }
        } else if first {
            CHANGED.notify_one();
        }
        Alarm { key }
    }

    /// Wakes `waker` instead of the one given before.
    pub(crate) fn update(&self, waker: &Waker) {
        if let Some(old) = lock().set.get_mut(&self.key)
            && !old.will_wake(waker)
        {
            old.clone_from(waker);
        }
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        lock().set.remove(&self.key);
    }
}

fn run() {
    let mut alarms = lock();
    loop {
        let now = Instant::now();
        let mut due = Vec::new();
        while let Some(entry) = alarms.set.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        if !due.is_empty() {
            drop(alarms);
            due.into_iter().for_each(Waker::wake);
            alarms = lock();
            continue;
        }
        let Some(&(next, _)) = alarms.set.keys().next() else {
            alarms.running = false;
            return;
        };
        alarms = CHANGED
            .wait_timeout(alarms, next - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::mpsc;
    use std::task::Wake;
    use std::time::Duration;

    use super::*;

    struct Sends(Mutex<mpsc::Sender<u32>>, u32);

    impl Wake for Sends {
        fn wake(self: Arc<Self>) {
            let _ = self.0.lock().unwrap().send(self.1);
        }
    }

    #[test]
    fn alarms_ring_in_deadline_order_and_a_dropped_one_never() {
        let (tx, rx) = mpsc::channel();
        let waker = |n| Waker::from(Arc::new(Sends(Mutex::new(tx.clone()), n)));
        let now = Instant::now();
        let _late = Alarm::new(now + Duration::from_millis(60), &waker(2));
        let dropped = Alarm::new(now + Duration::from_millis(30), &waker(9));
        let _early = Alarm::new(now + Duration::from_millis(20), &waker(1));
        drop(dropped);
        let first = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let second = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!((first, second), (1, 2));
        assert!(Instant::now() >= now + Duration::from_millis(60));
    }
}
