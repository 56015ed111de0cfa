//! Faults injected from outside the pool: signals to its workers. Each
//! attempt either delivers a fault or says why it did not, so that a round
//! that injected nothing is seen (its scenario's [`Need`](super::Need)s
//! fail it) and explained.

use std::time::{Duration, Instant};

use crate::chaos::backend::Pool;
use crate::chaos::ledger::Ledger;
use crate::chaos::model::{Fault, Signal};
use crate::chaos::rng::Rng;

/// How long one kill keeps trying to find a live worker to signal (the
/// pool may not have started its workers yet, or be replacing one).
const PATIENCE: Duration = Duration::from_secs(5);

/// How long one kill keeps trying while every worker it picks refuses the
/// signal (a dead worker the pool still lists until it reaps it).
const REFUSALS: Duration = Duration::from_secs(1);

/// What an injection did: the faults it delivered and, for each attempt
/// that delivered nothing, why.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Injection {
    /// Faults delivered.
    pub faults: Vec<Fault>,
    /// Attempts that delivered nothing, and why.
    pub misses: Vec<String>,
}

impl Injection {
    /// Records the faults and the misses in `ledger`.
    pub fn record(self, ledger: &mut Ledger) {
        for fault in self.faults {
            ledger.fault(fault);
        }
        for miss in self.misses {
            ledger.miss(miss);
        }
    }
}

/// Kills `kills` random workers of `pool` with random signals, each after a
/// random delay in `delay_ms`. While the pool has no live worker a kill
/// waits for one (up to five seconds); a broken or shut down pool, which
/// will have none, ends the attempt. What was delivered and what was not,
/// and why.
pub fn kill_randomly(pool: &dyn Pool, mut rng: Rng, kills: u64, delay_ms: (u64, u64)) -> Injection {
    let mut injection = Injection::default();
    for _ in 0..kills {
        let which = rng.next_u64();
        let signal = *rng.pick(&Signal::ALL);
        // The delay is the fault's timing, not a wait for anything.
        std::thread::sleep(rng.millis(delay_ms.0, delay_ms.1));
        match kill_one(pool, which, signal) {
            Ok(fault) => injection.faults.push(fault),
            Err(why) => injection.misses.push(format!("{signal:?} not sent: {why}")),
        }
    }
    injection
}

/// Sends `signal` to the worker of `pool` that `which` picks among the live
/// ones, waiting for one to exist.
fn kill_one(pool: &dyn Pool, which: u64, signal: Signal) -> Result<Fault, String> {
    let start = Instant::now();
    let mut refused_since = None;
    let mut last = "the pool had no live worker".to_owned();
    loop {
        let pids = pool.worker_pids();
        if let Some(&pid) = pids.get((which % pids.len().max(1) as u64) as usize) {
            if pool.signal(pid, signal) {
                return Ok(Fault::Signal(signal));
            }
            last = format!("worker {pid} did not take the signal");
            let since = *refused_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= REFUSALS {
                return Err(format!("{last} for {REFUSALS:?}"));
            }
        }
        if pool.is_broken() {
            return Err(format!("the pool was broken ({last})"));
        }
        if pids.is_empty() && pool.is_shut_down() {
            return Err(format!("the pool was shut down ({last})"));
        }
        if start.elapsed() >= PATIENCE {
            return Err(format!("{last} within {PATIENCE:?}"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
