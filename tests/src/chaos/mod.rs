//! The chaos suite of loky-rs: real worker processes under load, killed and
//! crashed at random moments, with every invariant checked after each
//! round.
//!
//! Run it with `cargo run --release -p loky-tests --bin loky-chaos --
//! [--seed N] [--rounds N] [--round K]` (`cargo xtask test` does). Every
//! round draws a scenario ([`scenario::SCENARIOS`]) and its random choices
//! from the run's seed, which is printed first, and again in the line of
//! every failed round and the closing line: `--seed` replays the same
//! choices (fault *timing* stays up to the machine), `--round K` replays
//! one round alone. Each scenario names the faults every round of it must
//! inject; a round that injected fewer fails ("too few faults"), with the
//! reasons its injections missed.
//!
//! # Layout
//!
//! - [`model`]: calls, outcomes and faults, independent of loky.
//! - [`expect`]: what a call may rightly end as, given its round's hazards.
//! - [`ledger`]: the record of a round and the invariant checker
//!   ([`ledger::RoundReport::check`]), testable on fabricated observations.
//! - [`backend`]: the executor seen through small traits; [`loky_backend`]
//!   is loky, [`fake`] an in-memory stand-in with injectable bugs
//!   ([`bugs`]) for the harness's own tests.
//! - [`scenario`]: the scenarios; [`parent`]: the parent-death scenario.
//! - [`probe`]: `/proc`, pidfds and signals; [`runner`] and [`summary`]:
//!   the run and its table.
//!
//! # Invariants
//!
//! Every future resolves, to a value or to an error its round allows; none
//! hangs past its deadline; no value is wrong; every `TerminatedWorker`
//! reports a death a fault of the round caused, and under `BreakPool` the
//! first call to fail names its own exit and task; under `Respawn` no more
//! calls fail with `TerminatedWorker` than workers died; no worker (or
//! process a task started) outlives its pool or its parent; no zombie; no
//! descriptor leaked; every round injected what its scenario needs.
//!
//! # Self-test
//!
//! The hidden option `--self-test-bug NAME` (left out of `--help`: it is
//! no chaos run) runs the rounds against the in-memory fake executor of
//! [`fake`] with the injected bug `NAME` ([`bugs::Bug::name`]) instead of
//! loky, by default on a scenario that meets it ([`bugs::Bug::scenario`]).
//! Such a run must report the violation in the bug's summary row and exit
//! with a failure: the end-to-end test of the harness
//! (`tests/tests/chaos_harness.rs`) checks that the program does, for every
//! bug, the leaks of a real orphan, zombie and descriptor among them.

pub mod backend;
pub mod bugs;
mod deaths;
pub mod expect;
pub mod fake;
pub mod ledger;
pub mod loky_backend;
pub mod model;
pub mod parent;
pub mod probe;
pub mod rng;
pub mod runner;
pub mod scenario;
pub mod summary;

use std::process::ExitCode;

/// Rounds of a run when `--rounds` is not given: about a minute in release
/// on two cores.
pub const DEFAULT_ROUNDS: u64 = 400;

/// The text of `--help`.
fn usage() -> String {
    let mut text = format!(
        "usage: loky-chaos [--seed N] [--rounds N] [--round K] [--scenario NAME] [-v]\n\n\
         --seed N           seed of the random choices (default: from the clock; printed)\n\
         --rounds N         number of rounds (default: {DEFAULT_ROUNDS})\n\
         --round K          run round K of the seed's run alone (to replay a failure)\n\
         --scenario NAME    run only this scenario (every round):\n"
    );
    for scenario in scenario::SCENARIOS {
        text.push_str(&format!(
            "                     {:<22} {}\n",
            scenario.name(),
            scenario.about()
        ));
    }
    text.push_str(
        "-v, --verbose      a line for every round (default: failed rounds and progress)",
    );
    text
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A chaos run.
    Run(runner::Options),
    /// Serve as the parent of a pool (for the parent-death scenario).
    Parent(usize),
    /// Print the usage.
    Help,
}

impl Command {
    /// Parses the arguments after the program name.
    pub fn parse(args: &[String]) -> Result<Command, String> {
        if args.first().map(String::as_str) == Some("parent") {
            let n = args.get(1).and_then(|n| n.parse().ok()).ok_or("parent N")?;
            return Ok(Command::Parent(n));
        }
        let mut options = runner::Options {
            seed: clock_seed(),
            rounds: DEFAULT_ROUNDS,
            only: None,
            scenario: None,
            verbose: false,
            fake_bug: None,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut number = |name: &str| -> Result<u64, String> {
                let value = args.next().ok_or(format!("{name} needs a number"))?;
                value
                    .parse()
                    .map_err(|_| format!("{name} needs a number, not {value:?}"))
            };
            match arg.as_str() {
                "--seed" => options.seed = number("--seed")?,
                "--rounds" => options.rounds = number("--rounds")?,
                "--round" => options.only = Some(number("--round")?),
                "--scenario" => {
                    let name = args.next().ok_or("--scenario needs a name")?;
                    let scenario = scenario::Scenario::named(name)
                        .ok_or(format!("no scenario is named {name:?}"))?;
                    options.scenario = Some(scenario);
                }
                "-v" | "--verbose" => options.verbose = true,
                "-h" | "--help" => return Ok(Command::Help),
                "--self-test-bug" => {
                    let name = args.next().ok_or("--self-test-bug needs a bug's name")?;
                    let bug = fake::Bug::named(name).ok_or(format!("no bug is named {name:?}"))?;
                    options.fake_bug = Some(bug);
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if let Some(bug) = options.fake_bug {
            // The fake has no processes: only generic scenarios run on it.
            match options.scenario {
                None => options.scenario = scenario::Scenario::named(bug.scenario()),
                Some(s) if !s.is_generic() => {
                    return Err(format!("the fake executor cannot run {}", s.name()));
                }
                Some(_) => {}
            }
        }
        Ok(Command::Run(options))
    }
}

/// The chaos program's `main` after `serve_if_worker`.
pub fn main(args: &[String]) -> ExitCode {
    match Command::parse(args) {
        Ok(Command::Run(options)) => runner::run(options),
        Ok(Command::Parent(workers)) => parent::serve_as_parent(workers),
        Ok(Command::Help) => {
            println!("{}", usage());
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("loky-chaos: {message}\n{}", usage());
            ExitCode::from(2)
        }
    }
}

fn clock_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // Small enough to type back.
    rng::Rng::new(nanos ^ u64::from(std::process::id())).next_u64() % 1_000_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        Command::parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn arguments_parse() {
        let Ok(Command::Run(options)) = parse(&["--seed", "7", "--rounds", "3"]) else {
            panic!("a run");
        };
        assert_eq!((options.seed, options.rounds, options.only), (7, 3, None));
        let Ok(Command::Run(options)) = parse(&["--seed", "7", "--round", "2"]) else {
            panic!("a run");
        };
        assert_eq!(options.only, Some(2));
        assert_eq!(parse(&["parent", "2"]), Ok(Command::Parent(2)));
        assert!(parse(&["--seed"]).is_err());
        assert!(parse(&["--fast"]).is_err());
        assert!(usage().contains(&format!("(default: {DEFAULT_ROUNDS})")));
        for scenario in scenario::SCENARIOS {
            assert!(usage().contains(scenario.name()), "{scenario:?}");
        }
    }

    #[test]
    fn the_self_test_option_selects_a_fake_with_a_bug_and_a_generic_scenario() {
        let Ok(Command::Run(options)) = parse(&["--self-test-bug", "wrong-echo"]) else {
            panic!("a run");
        };
        assert_eq!(options.fake_bug, Some(fake::Bug::WrongEcho));
        assert_eq!(
            options.scenario,
            scenario::Scenario::named("external-kills")
        );
        let Ok(Command::Run(options)) = parse(&[
            "--scenario",
            "kill-idle",
            "--self-test-bug",
            "dead-worker-futures-hang",
        ]) else {
            panic!("a run");
        };
        assert_eq!(options.scenario, scenario::Scenario::named("kill-idle"));
        assert!(parse(&["--self-test-bug", "no-such-bug"]).is_err());
        assert!(
            parse(&[
                "--self-test-bug",
                "wrong-echo",
                "--scenario",
                "parent-killed"
            ])
            .is_err()
        );
        for bug in fake::Bug::ALL {
            assert_eq!(fake::Bug::named(bug.name()), Some(bug));
        }
        assert!(!usage().contains("self-test"), "the option is hidden");
    }
}
