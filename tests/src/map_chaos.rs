//! A chaos scenario for `map`: rounds of maps whose items randomly crash
//! their worker, hang past their deadline or panic, among good ones, under
//! `CrashPolicy::Respawn`, with random chunk and buffer sizes, ordered or
//! not. Invariant: exactly the bad items fail, each with its own error;
//! every item yields one result; no map hangs.
//!
//! Run by `loky-map-chaos` (`--rounds N`, `--seed S`).

use std::fmt;
use std::sync::mpsc;
use std::time::Duration;

use loky::{CallOptions, CrashPolicy, Error, ExecutorBuilder, ProcessPoolExecutor};

use crate::chaos::rng::Rng;
use crate::map_tasks::{BEHAVE, Behave};

/// An item's deadline in the rounds with hanging items: what a hanging
/// item takes to fail (twice: in its chunk, then alone). Those rounds have
/// no panicking item (capturing a panic's backtrace can take that long in
/// a debug build).
const ITEM_TIMEOUT: Duration = Duration::from_millis(250);

/// A map that has not ended by then counts as hung.
const MAP_GRACE: Duration = Duration::from_secs(60);

/// Rounds between two fresh pools.
const ROUNDS_PER_POOL: u64 = 25;

/// What the rounds found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Rounds run.
    pub rounds: u64,
    /// Items mapped.
    pub items: u64,
    /// Bad items (all expected to fail).
    pub bad: u64,
    /// Good items that failed.
    pub innocent_failures: u64,
    /// Bad items that succeeded, or failed with another error than theirs.
    pub wrong_errors: u64,
    /// Items without exactly one result.
    pub lost: u64,
    /// Maps that did not end in time.
    pub hangs: u64,
    /// The first problems, for the report.
    pub problems: Vec<String>,
}

impl Summary {
    /// Whether the invariant held in every round.
    pub fn clean(&self) -> bool {
        self.innocent_failures == 0 && self.wrong_errors == 0 && self.lost == 0 && self.hangs == 0
    }

    fn problem(&mut self, text: String) {
        if self.problems.len() < 20 {
            self.problems.push(text);
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "rounds:            {}", self.rounds)?;
        writeln!(f, "items:             {} ({} bad)", self.items, self.bad)?;
        writeln!(
            f,
            "innocent failures: {} (must be 0)",
            self.innocent_failures
        )?;
        writeln!(f, "wrong errors:      {} (must be 0)", self.wrong_errors)?;
        writeln!(f, "lost:              {} (must be 0)", self.lost)?;
        write!(f, "hangs:             {} (must be 0)", self.hangs)?;
        for problem in &self.problems {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

/// One round's map.
struct Round {
    items: Vec<Behave>,
    /// With hanging items, and a deadline per item.
    hangs: bool,
    chunksize: usize,
    buffersize: Option<usize>,
    unordered: bool,
}

impl Round {
    fn draw(rng: &mut Rng) -> Round {
        let n = rng.range(1, 40) as usize;
        let hangs = rng.chance(40);
        let weights = if hangs { [85, 6, 5, 0] } else { [85, 6, 0, 8] };
        let items = (0..n as u64)
            .map(|i| match rng.weighted(&weights) {
                0 if rng.chance(20) => Behave::SleepThen(rng.millis(0, 3), i),
                0 => Behave::Return(i),
                1 => Behave::Exit(rng.range(1, 100) as i32),
                2 => Behave::Hang,
                _ => Behave::Panic(format!("item {i} panics")),
            })
            .collect();
        Round {
            items,
            hangs,
            chunksize: rng.range(1, 9) as usize,
            buffersize: rng.chance(30).then(|| rng.range(1, 4) as usize),
            unordered: rng.chance(50),
        }
    }

    /// Every item's result by index, run on its own thread; `None` if the
    /// map did not end in time.
    fn run(&self, ex: &ProcessPoolExecutor) -> Option<Vec<Vec<loky::Result<u64>>>> {
        let (tx, rx) = mpsc::channel();
        let (ex, items, n) = (ex.clone(), self.items.clone(), self.items.len());
        let (chunksize, buffersize, unordered) = (self.chunksize, self.buffersize, self.unordered);
        let options = if self.hangs {
            CallOptions::new().timeout(ITEM_TIMEOUT)
        } else {
            CallOptions::new()
        };
        std::thread::spawn(move || {
            let mut results: Vec<Vec<loky::Result<u64>>> = (0..n).map(|_| Vec::new()).collect();
            if unordered {
                let mut map = ex
                    .map_unordered(BEHAVE, items)
                    .chunksize(chunksize)
                    .options(options);
                if let Some(b) = buffersize {
                    map = map.buffersize(b);
                }
                for (i, result) in map {
                    results[i].push(result);
                }
            } else {
                let mut map = ex.map(BEHAVE, items).chunksize(chunksize).options(options);
                if let Some(b) = buffersize {
                    map = map.buffersize(b);
                }
                for (i, result) in map.enumerate() {
                    if let Some(slot) = results.get_mut(i) {
                        slot.push(result);
                    }
                }
            }
            let _ = tx.send(results);
        });
        rx.recv_timeout(MAP_GRACE).ok()
    }
}

/// Whether `result` is what `item` must give.
fn as_expected(item: &Behave, result: &loky::Result<u64>) -> bool {
    match (item, result) {
        (Behave::Return(v) | Behave::SleepThen(_, v), Ok(got)) => v == got,
        (Behave::Exit(code), Err(Error::TerminatedWorker(dead))) => dead.exit_code() == Some(*code),
        (Behave::Hang, Err(Error::DeadlineExceeded(_))) => true,
        (Behave::Panic(message), Err(Error::Task(panic))) => panic.message() == message,
        _ => false,
    }
}

fn is_bad(item: &Behave) -> bool {
    !matches!(item, Behave::Return(_) | Behave::SleepThen(..))
}

fn pool(builder: &dyn Fn() -> ExecutorBuilder) -> ProcessPoolExecutor {
    builder()
        .on_worker_crash(CrashPolicy::Respawn)
        .build()
        .expect("the map chaos pool")
}

/// Runs `rounds` rounds from `seed` on pools made by `builder`.
pub fn run(seed: u64, rounds: u64, builder: &dyn Fn() -> ExecutorBuilder) -> Summary {
    let mut summary = Summary::default();
    let mut ex = pool(builder);
    for number in 0..rounds {
        if number > 0 && number % ROUNDS_PER_POOL == 0 {
            ex.shutdown(true);
            ex = pool(builder);
        }
        let mut rng = Rng::for_round(seed, number);
        let round = Round::draw(&mut rng);
        summary.rounds += 1;
        summary.items += round.items.len() as u64;
        summary.bad += round.items.iter().filter(|i| is_bad(i)).count() as u64;
        let Some(results) = round.run(&ex) else {
            summary.hangs += 1;
            summary.problem(format!("round {number}: the map did not end"));
            ex.shutdown(false);
            ex = pool(builder);
            continue;
        };
        for (i, (item, got)) in round.items.iter().zip(&results).enumerate() {
            let [result] = got.as_slice() else {
                summary.lost += 1;
                summary.problem(format!("round {number} item {i}: {} results", got.len()));
                continue;
            };
            if as_expected(item, result) {
                continue;
            }
            if is_bad(item) {
                summary.wrong_errors += 1;
            } else {
                summary.innocent_failures += 1;
            }
            summary.problem(format!("round {number} item {i} ({item:?}): {result:?}"));
        }
    }
    ex.shutdown(true);
    summary
}
