//! Runs the rounds of a chaos run against loky, measures each round's
//! hygiene, checks it, and prints the summary.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use loky::{Shutdown, WorkerProgram};

use super::backend::{Backend, PoolSettings};
use super::fake::{Bug, FakeBackend};
use super::ledger::{Hygiene, RoundReport, Violation};
use super::loky_backend::LokyBackend;
use super::model::{Call, Policy};
use super::probe::{self, PidFd};
use super::rng::Rng;
use super::scenario::Scenario;
use super::summary::Summary;

/// A round that runs longer than this is stuck somewhere no future's
/// deadline covers (a shutdown that never returns, say): the run stops.
const ROUND_LIMIT: Duration = Duration::from_secs(120);

/// How long a process a task started may outlive its pool's shutdown.
const SLEEPER_TIMEOUT: Duration = Duration::from_secs(5);

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// The run's seed.
    pub seed: u64,
    /// How many rounds.
    pub rounds: u64,
    /// Run only this round (to replay it).
    pub only: Option<u64>,
    /// Run only this scenario (every round).
    pub scenario: Option<&'static Scenario>,
    /// Print a line for every round, not only for failed ones.
    pub verbose: bool,
    /// The harness's self-test: run against the in-memory fake executor
    /// with this bug instead of loky; the run must fail.
    pub fake_bug: Option<Bug>,
}

/// The executor a run puts to the test.
#[derive(Debug, Clone)]
enum Target {
    /// loky: the chaos run proper.
    Loky(LokyBackend),
    /// The in-memory fake with an injected bug: the harness's self-test.
    Fake(Arc<FakeBackend>),
}

impl Target {
    /// The pools its rounds run on.
    fn backend(&self) -> &dyn Backend {
        match self {
            Target::Loky(backend) => backend,
            Target::Fake(backend) => &**backend,
        }
    }

    /// The processes tasks started since the last call (none in a fake).
    fn take_sleepers(&self) -> Vec<PidFd> {
        match self {
            Target::Loky(backend) => backend.take_sleepers(),
            Target::Fake(_) => Vec::new(),
        }
    }

    /// The processes tasks started outside any pool's reach.
    fn take_escapees(&self) -> Vec<PidFd> {
        match self {
            Target::Loky(backend) => backend.take_escapees(),
            Target::Fake(_) => Vec::new(),
        }
    }
}

/// Without `--verbose`, a progress line every this many rounds.
const PROGRESS_EVERY: u64 = 50;

/// How a round ended.
enum RoundEnd {
    /// It finished: here is its report.
    Done(Box<RoundReport>),
    /// It did not finish within [`ROUND_LIMIT`].
    Stuck,
    /// The scenario itself panicked (a bug of the suite).
    Panicked,
}

/// Runs the chaos suite as configured; the exit code says whether every
/// round passed.
pub fn run(options: Options) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("chaos: cannot find this program: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The seed comes first: whatever happens next, the run can be replayed.
    println!(
        "chaos: seed {} ({} rounds; replay with --seed {})",
        options.seed, options.rounds, options.seed
    );
    let target = match options.fake_bug {
        None => {
            let backend = LokyBackend::new(WorkerProgram::CurrentExe);
            warm_up(&backend);
            Target::Loky(backend)
        }
        Some(bug) => {
            println!(
                "chaos: self-test of the harness against the in-memory fake executor with \
                 the bug {}: this run must fail",
                bug.name()
            );
            Target::Fake(Arc::new(FakeBackend::new(Some(bug))))
        }
    };
    let started = Instant::now();
    let mut runner = Runner {
        options,
        target,
        exe,
        summary: Summary::default(),
        known_bad: HashSet::new(),
    };
    runner.run_rounds();
    print!("{}", runner.summary.render(options.seed, started.elapsed()));
    if runner.summary.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Opens whatever a process opens once, for good, on first use of a pool,
/// so that the first round's descriptor count is not blamed for it.
fn warm_up(backend: &LokyBackend) {
    let settings = PoolSettings {
        generation: u64::MAX,
        ..PoolSettings::new(1, Policy::BreakPool)
    };
    for pool in [backend.build(&settings), backend.reusable(&settings)]
        .into_iter()
        .flatten()
    {
        if let Ok(pending) = pool.submit(&Call::Echo(1), None) {
            pending.wait(super::scenario::RESOLVE_GRACE);
        }
        pool.shutdown(Shutdown::default());
    }
}

struct Runner {
    options: Options,
    target: Target,
    exe: PathBuf,
    summary: Summary,
    /// Processes already reported, so a leftover is blamed on one round.
    known_bad: HashSet<u32>,
}

impl Runner {
    fn run_rounds(&mut self) {
        let seed = self.options.seed;
        let order = Scenario::shuffled(&mut Rng::new(seed));
        let rounds: Vec<u64> = match self.options.only {
            Some(round) => vec![round],
            None => (0..self.options.rounds).collect(),
        };
        for round in rounds {
            let mut rng = Rng::for_round(seed, round);
            let drawn = Scenario::for_round(round, &order, &mut rng);
            let scenario = self.options.scenario.unwrap_or(drawn);
            if !self.round(round, scenario, rng) {
                println!("chaos: stopping: round {round} left the process in an unknown state");
                break;
            }
        }
    }

    /// Runs, checks and reports one round; false if the run must stop.
    fn round(&mut self, round: u64, scenario: &'static Scenario, rng: Rng) -> bool {
        let fds_before = probe::open_fds();
        let started = Instant::now();
        let report = match self.execute(round, scenario, rng) {
            RoundEnd::Done(report) => report,
            RoundEnd::Stuck => {
                println!(
                    "round {round:>4} {:<22} FAILED: did not finish within {ROUND_LIMIT:?} \
                     (a hang); replay: loky-chaos --seed {} --round {round} --scenario {}",
                    scenario.name(),
                    self.options.seed,
                    scenario.name()
                );
                self.summary.add_hung_round(scenario.name());
                return false;
            }
            RoundEnd::Panicked => {
                println!(
                    "round {round:>4} {:<22} FAILED: the scenario panicked; replay: loky-chaos \
                     --seed {} --round {round} --scenario {}",
                    scenario.name(),
                    self.options.seed,
                    scenario.name()
                );
                self.summary.add_hung_round(scenario.name());
                return false;
            }
        };
        let mut report = *report;
        let orphans = std::mem::take(&mut report.ledger.orphans);
        report.hygiene = self.hygiene(fds_before, orphans);
        report.elapsed = started.elapsed();
        let violations = report.check();
        self.print_round(&report, &violations);
        self.summary.add(&report, &violations);
        true
    }

    /// Runs the scenario on a thread of its own, so that a hang is seen.
    fn execute(&self, round: u64, scenario: &'static Scenario, mut rng: Rng) -> RoundEnd {
        let (tx, rx) = mpsc::channel();
        let target = self.target.clone();
        let exe = self.exe.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("chaos-round-{round}"))
            .spawn(move || {
                let backend = target.backend();
                let _ = tx.send(scenario.run(backend, Some(&exe), &mut rng, round));
            });
        let Ok(thread) = spawned else {
            return RoundEnd::Panicked;
        };
        match rx.recv_timeout(ROUND_LIMIT) {
            Ok(ledger) => {
                let _ = thread.join();
                RoundEnd::Done(Box::new(RoundReport {
                    round,
                    scenario: scenario.name(),
                    ledger,
                    hygiene: Hygiene::default(),
                    elapsed: Duration::ZERO,
                }))
            }
            Err(RecvTimeoutError::Timeout) => RoundEnd::Stuck,
            Err(RecvTimeoutError::Disconnected) => RoundEnd::Panicked,
        }
    }

    /// What is left after the round: processes tasks started that outlive
    /// their pool, children still running or unreaped, descriptors.
    fn hygiene(&mut self, fds_before: usize, mut orphans: Vec<u32>) -> Hygiene {
        // Left the worker's session on purpose: not the pool's to stop.
        for escapee in self.target.take_escapees() {
            escapee.send(libc::SIGKILL);
            escapee.wait_exit(SLEEPER_TIMEOUT);
        }
        for sleeper in self.target.take_sleepers() {
            if !sleeper.wait_exit(SLEEPER_TIMEOUT) {
                sleeper.send(libc::SIGKILL);
                orphans.push(sleeper.pid());
            }
        }
        let mut zombies = Vec::new();
        for (pid, state) in probe::children() {
            if !self.known_bad.insert(pid) {
                continue;
            }
            if state == 'Z' {
                zombies.push(pid);
            } else {
                // A worker that outlived its pool; stop it so that later
                // rounds are not blamed.
                probe::signal_child(pid, libc::SIGKILL);
                orphans.push(pid);
            }
        }
        Hygiene {
            fds_before,
            fds_after: probe::open_fds(),
            orphans,
            zombies,
        }
    }

    fn print_round(&self, report: &RoundReport, violations: &[Violation]) {
        let done = self.summary.passed + self.summary.failed + 1;
        if violations.is_empty() && !self.options.verbose {
            if done.is_multiple_of(PROGRESS_EVERY) {
                println!(
                    "chaos: {done} rounds, {} failed so far",
                    self.summary.failed
                );
            }
            return;
        }
        let status = if violations.is_empty() {
            "ok"
        } else {
            "FAILED"
        };
        let policy = report
            .ledger
            .policy
            .map_or(String::new(), |p| format!("{p:?}"));
        println!(
            "round {:>4} {:<22} {status:<6} {:>6.2}s {:>4} tasks {:>3} faults {policy}",
            report.round,
            report.scenario,
            report.elapsed.as_secs_f64(),
            report.ledger.entries.len(),
            report.ledger.faults.len(),
        );
        for (count, example) in group(violations).into_iter().take(12) {
            println!("    {count:>4} x {example}");
        }
        if !violations.is_empty() {
            println!(
                "    replay: loky-chaos --seed {} --round {} --scenario {}",
                self.options.seed, report.round, report.scenario
            );
        }
    }
}

/// Violations grouped by [`Violation::signature`], in order of first
/// appearance: how many, and the first one.
fn group(violations: &[Violation]) -> Vec<(usize, &Violation)> {
    let mut groups: Vec<(String, usize, &Violation)> = Vec::new();
    for violation in violations {
        let signature = violation.signature();
        match groups.iter_mut().find(|(s, _, _)| *s == signature) {
            Some((_, count, _)) => *count += 1,
            None => groups.push((signature, 1, violation)),
        }
    }
    groups.into_iter().map(|(_, n, v)| (n, v)).collect()
}
