//! The chaos harness checked on itself: its checker passes a faithful
//! executor, and fails one with a deliberately injected bug (futures of a
//! dead worker that never resolve, lost calls, wrong values, wrong errors,
//! a crash reported without its task, injections that silently deliver
//! nothing, and a real orphan, zombie and leaked descriptor). The executor
//! here is the in-memory fake of `loky_tests::chaos::fake`, or fabricated
//! observations; the last tests run the real chaos program briefly.

mod common;

use std::process::Command;
use std::time::Duration;

use loky_tests::chaos::expect::{Expect, Hazards};
use loky_tests::chaos::fake::{Bug, FakeBackend};
use loky_tests::chaos::ledger::{Hygiene, Ledger, RoundReport, Violation};
use loky_tests::chaos::model::{Call, Death, ErrorKind, Exit, Failure, Fault, Outcome, Policy};
use loky_tests::chaos::model::{Signal, Value};
use loky_tests::chaos::rng::Rng;
use loky_tests::chaos::scenario::{SCENARIOS, Scenario, kill_randomly};
use loky_tests::chaos::summary::Summary;

fn report(scenario: &'static str, ledger: Ledger, hygiene: Hygiene) -> RoundReport {
    RoundReport {
        round: 0,
        scenario,
        ledger,
        hygiene,
        elapsed: Duration::ZERO,
    }
}

/// The scenario named `name`.
fn scenario(name: &str) -> &'static Scenario {
    Scenario::named(name).unwrap_or_else(|| panic!("no scenario {name}"))
}

/// Runs the scenario `name` for `seeds` rounds against a fake with `bug`.
fn fake_rounds(bug: Option<Bug>, name: &str, seeds: u64) -> Vec<RoundReport> {
    let backend = FakeBackend::new(bug);
    let scenario = scenario(name);
    assert!(scenario.is_generic(), "{name} needs real processes");
    (0..seeds)
        .map(|seed| {
            let mut rng = Rng::for_round(seed, 0);
            let ledger = scenario.run(&backend, None, &mut rng, seed);
            report(scenario.name(), ledger, Hygiene::default())
        })
        .collect()
}

fn violations(reports: &[RoundReport]) -> Vec<Violation> {
    reports.iter().flat_map(RoundReport::check).collect()
}

fn verdict(reports: &[RoundReport]) -> Summary {
    let mut summary = Summary::default();
    for report in reports {
        summary.add(report, &report.check());
    }
    summary
}

/// Catches a checker or a scenario that fails a faithful executor (every
/// need met, every outcome allowed), and a scenario that submits nothing.
#[test]
fn a_faithful_executor_passes_every_scenario() {
    for scenario in SCENARIOS.iter().filter(|s| s.is_generic()) {
        let reports = fake_rounds(None, scenario.name(), 6);
        let calls: usize = reports.iter().map(|r| r.ledger.entries.len()).sum();
        assert!(calls > 0, "{} submitted nothing", scenario.name());
        let found = violations(&reports);
        assert!(found.is_empty(), "{}: {found:#?}", scenario.name());
        assert!(verdict(&reports).ok());
        for report in &reports {
            for need in scenario.needs() {
                let got = need.count_in(&report.ledger.faults);
                assert!(got >= need.count, "{}: {got} of {need}", scenario.name());
            }
        }
    }
}

#[test]
fn futures_of_a_dead_worker_that_never_resolve_fail_the_run() {
    let reports = fake_rounds(Some(Bug::DeadWorkerFuturesHang), "task-faults", 12);
    let found = violations(&reports);
    assert!(
        found.iter().any(|v| matches!(v, Violation::Hung { .. })),
        "{found:#?}"
    );
    let summary = verdict(&reports);
    assert!(!summary.ok());
    let table = summary.render(0, Duration::ZERO);
    let closing = table.lines().last().unwrap();
    assert_eq!(
        closing,
        format!(
            "chaos: {} passed, {} failed (seed 0)",
            summary.passed, summary.failed
        )
    );
    assert!(summary.failed > 0, "{table}");
    let hung = table
        .lines()
        .find(|l| l.contains("hung (must be 0)"))
        .unwrap();
    assert!(!hung.trim_end().ends_with(" 0"), "{table}");
}

#[test]
fn failing_every_call_a_dead_worker_held_under_respawn_fails_the_run() {
    let reports = fake_rounds(Some(Bug::RespawnFailsHeldCalls), "task-faults", 12);
    let found = violations(&reports);
    assert!(
        found.iter().any(|v| matches!(
            v,
            Violation::WrongError { .. } | Violation::TooManyTerminated { .. }
        )),
        "{found:#?}"
    );
    assert!(!verdict(&reports).ok());
}

#[test]
fn a_wrong_value_fails_the_run() {
    let reports = fake_rounds(Some(Bug::WrongEcho), "external-kills", 3);
    let found = violations(&reports);
    assert!(
        found
            .iter()
            .any(|v| matches!(v, Violation::WrongResult { .. })),
        "{found:#?}"
    );
}

#[test]
fn a_wrong_error_kind_fails_the_run() {
    let reports = fake_rounds(Some(Bug::WrongErrorKind), "task-faults", 12);
    let found = violations(&reports);
    assert!(
        found.iter().any(|v| matches!(
            v,
            Violation::WrongError { got, .. } if got.kind == ErrorKind::ShutdownKilled
        )),
        "{found:#?}"
    );
}

#[test]
fn a_call_never_observed_is_lost_and_one_unresolved_is_hung() {
    let quiet = Hazards::quiet(Policy::BreakPool);
    let mut ledger = Ledger::default();
    ledger.expect(Expect::new(Call::Echo(1), &quiet));
    let hung = ledger.expect(Expect::new(Call::Echo(2), &quiet));
    ledger.observe(hung, Outcome::Hung);
    let found = report("fabricated", ledger, Hygiene::default()).check();
    assert_eq!(
        found,
        [
            Violation::Lost { task: "echo_i64" },
            Violation::Hung { task: "echo_i64" }
        ]
    );
}

#[test]
fn leftover_processes_and_descriptors_fail_the_round() {
    let hygiene = Hygiene {
        fds_before: 10,
        fds_after: 12,
        orphans: vec![4242],
        zombies: vec![4343],
    };
    let round = report("fabricated", Ledger::default(), hygiene);
    assert_eq!(
        round.check(),
        [
            Violation::Orphan(4242),
            Violation::Zombie(4343),
            Violation::LeakedFds {
                before: 10,
                after: 12
            }
        ]
    );
    let summary = verdict(&[round]);
    let table = summary.render(7, Duration::from_secs(1));
    assert!(
        table.ends_with("chaos: 0 passed, 1 failed (seed 7)\n"),
        "{table}"
    );
    let leaked = table.lines().find(|l| l.contains("leaked fds")).unwrap();
    assert!(leaked.trim_end().ends_with(" 2"), "{table}");
}

fn terminated(exit: Exit, task: &str) -> Failure {
    Failure {
        kind: ErrorKind::TerminatedWorker,
        death: Some(Death {
            exit,
            task: Some(task.to_owned()),
            memory_limit: None,
        }),
        message: "terminated".to_owned(),
    }
}

#[test]
fn under_respawn_a_crash_must_report_its_own_death_and_fail_alone() {
    let hazards = Hazards {
        crashes: true,
        ..Hazards::quiet(Policy::Respawn)
    };
    let mut ledger = Ledger {
        respawn_budget: true,
        ..Ledger::default()
    };
    let segfault = Expect::new(Call::Segfault, &hazards);
    ledger.fault(segfault.fault.unwrap());
    let crash = ledger.expect(segfault);
    ledger.observe(
        crash,
        Outcome::Failed(terminated(Exit::Signal(libc::SIGKILL), "segfault")),
    );
    let echo = ledger.expect(Expect::new(Call::Echo(3), &hazards));
    ledger.observe(
        echo,
        Outcome::Failed(terminated(Exit::Signal(libc::SIGSEGV), "segfault")),
    );
    let found = report("fabricated", ledger, Hygiene::default()).check();
    assert!(
        matches!(found[0], Violation::WrongDeath { .. }),
        "{found:#?}"
    );
    assert!(
        matches!(found[1], Violation::WrongError { .. }),
        "{found:#?}"
    );
    assert!(
        matches!(
            found[2],
            Violation::TooManyTerminated {
                failed: 2,
                deaths: 1
            }
        ),
        "{found:#?}"
    );
}

#[test]
fn refusals_follow_the_crash_policy() {
    for (policy, refused_ok) in [(Policy::BreakPool, true), (Policy::Respawn, false)] {
        let hazards = Hazards {
            external_kills: true,
            ..Hazards::quiet(policy)
        };
        let mut ledger = Ledger::default();
        ledger.fault(Fault::Signal(Signal::Kill));
        let id = ledger.expect(Expect::new(Call::Echo(5), &hazards));
        ledger.observe(
            id,
            Outcome::Rejected(terminated(Exit::Signal(libc::SIGKILL), "echo_i64")),
        );
        let passed = report("fabricated", ledger, Hygiene::default()).passed();
        assert_eq!(passed, refused_ok, "{policy:?}");
    }
}

#[test]
fn a_correct_round_passes() {
    let hazards = Hazards {
        external_kills: true,
        ..Hazards::quiet(Policy::BreakPool)
    };
    let mut ledger = Ledger::default();
    ledger.fault(Fault::Signal(Signal::Term));
    let ok = ledger.expect(Expect::new(Call::Echo(5), &hazards));
    ledger.observe(ok, Outcome::Value(Value::Int(5)));
    let failed = ledger.expect(Expect::new(Call::Echo(6), &hazards));
    ledger.observe(
        failed,
        Outcome::Failed(terminated(Exit::Signal(libc::SIGTERM), "echo_i64")),
    );
    let hygiene = Hygiene {
        fds_before: 9,
        fds_after: 9,
        ..Hygiene::default()
    };
    assert_eq!(report("fabricated", ledger, hygiene).check(), []);
}

/// Catches an injection that fails silently: a pool whose workers never
/// take a signal makes `kill_randomly` deliver nothing, say why, and the
/// round fail for too few faults, naming the misses.
#[test]
fn an_injection_that_delivers_nothing_is_reported_and_fails_the_round() {
    use loky_tests::chaos::backend::{Backend, PoolSettings};
    let backend = FakeBackend::new(Some(Bug::SignalsLost));
    let pool = backend
        .build(&PoolSettings::new(2, Policy::Respawn))
        .unwrap();
    let injection = kill_randomly(&*pool, Rng::new(1), 2, (0, 0));
    assert!(injection.faults.is_empty(), "{injection:?}");
    assert_eq!(injection.misses.len(), 2, "{injection:?}");
    assert!(
        injection.misses[0].contains("did not take the signal"),
        "{injection:?}"
    );

    let reports = fake_rounds(Some(Bug::SignalsLost), "external-kills", 2);
    for found in reports.iter().map(RoundReport::check) {
        let too_few = found.iter().find_map(|v| match v {
            Violation::TooFewFaults { got, misses, .. } => Some((*got, misses.len())),
            _ => None,
        });
        assert!(matches!(too_few, Some((0, 1..))), "{found:#?}");
    }
}

/// Catches a crash whose `TerminatedWorker` does not name the task its
/// worker was running: under `BreakPool` no call then reports its own
/// death, and the deaths reported match no call of the round.
#[test]
fn a_crash_reported_without_its_task_fails_the_run() {
    let reports = fake_rounds(Some(Bug::UnnamedTask), "task-faults", 12);
    let found = violations(&reports);
    assert!(
        found
            .iter()
            .any(|v| matches!(v, Violation::NoOwnDeath { .. })),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|v| matches!(v, Violation::UnexplainedDeath { .. })),
        "{found:#?}"
    );
}

/// Under `BreakPool` every call may fail with any death of the round, but
/// the death must be one the round caused, and the crashing call must
/// report its own.
#[test]
fn under_break_pool_deaths_must_be_the_rounds_and_the_first_its_own() {
    let hazards = Hazards {
        crashes: true,
        ..Hazards::quiet(Policy::BreakPool)
    };
    let with = |crash_reports: Exit, echo_reports: Exit| {
        let mut ledger = Ledger {
            policy: Some(Policy::BreakPool),
            ..Ledger::default()
        };
        let crash = ledger.expect(Expect::new(Call::Exit(3), &hazards));
        ledger.observe(crash, Outcome::Failed(terminated(crash_reports, "exit")));
        let echo = ledger.expect(Expect::new(Call::Echo(1), &hazards));
        ledger.observe(echo, Outcome::Failed(terminated(echo_reports, "exit")));
        report("fabricated", ledger, Hygiene::default()).check()
    };
    assert_eq!(with(Exit::Code(3), Exit::Code(3)), []);
    let found = with(Exit::Code(3), Exit::Signal(libc::SIGKILL));
    assert!(
        matches!(
            found[..],
            [Violation::UnexplainedDeath {
                task: "echo_i64",
                ..
            }]
        ),
        "{found:#?}"
    );
    let found = with(Exit::Code(4), Exit::Code(4));
    assert!(
        found
            .iter()
            .any(|v| matches!(v, Violation::NoOwnDeath { .. })),
        "{found:#?}"
    );
}

/// A scenario's needs are checked: a round short of them fails with the
/// misses that explain it.
#[test]
fn a_round_short_of_its_scenarios_needs_fails_with_its_misses() {
    let needs = scenario("external-kills").needs().to_vec();
    let mut ledger = Ledger {
        needs: needs.clone(),
        ..Ledger::default()
    };
    ledger.miss("SIGKILL not sent: the pool had no live worker");
    let found = report("fabricated", ledger.clone(), Hygiene::default()).check();
    let text = found[0].to_string();
    assert!(
        text.contains("0 injected") && text.contains("no live worker"),
        "{text}"
    );
    ledger.fault(Fault::Signal(Signal::Kill));
    assert_eq!(report("fabricated", ledger, Hygiene::default()).check(), []);
}

/// The items of one `map` chunk fail together when its worker dies: under
/// `Respawn` they count once against the deaths.
#[test]
fn a_chunk_counts_once_against_the_respawn_budget() {
    let hazards = Hazards {
        external_kills: true,
        ..Hazards::quiet(Policy::Respawn)
    };
    let mut ledger = Ledger {
        respawn_budget: true,
        ..Ledger::default()
    };
    ledger.fault(Fault::Signal(Signal::Kill));
    for (x, group) in [(1, 0), (2, 0), (4, 1)] {
        let id = ledger.expect_in(Expect::new(Call::Flaky(x), &hazards), Some(group));
        let death = Exit::Signal(libc::SIGKILL);
        ledger.observe(id, Outcome::Failed(terminated(death, "flaky")));
    }
    let found = report("fabricated", ledger, Hygiene::default()).check();
    assert!(
        matches!(
            found[..],
            [Violation::TooManyTerminated {
                failed: 2,
                deaths: 1
            }]
        ),
        "{found:#?}"
    );
}

/// The value of the summary table's top-level row `label`, if it has one.
fn row<'a>(stdout: &'a str, label: &str) -> Option<&'a str> {
    stdout.lines().find_map(|line| {
        let rest = line.strip_prefix("  ")?.strip_prefix(label)?;
        // The label is padded with blanks; the value ends the line.
        rest.starts_with(' ').then(|| rest.trim())
    })
}

/// The counts of the closing line `chaos: N passed, M failed (seed S)`,
/// which must name `seed`.
fn passed_and_failed(stdout: &str, seed: u64) -> (u64, u64) {
    let closing = stdout.lines().last().unwrap_or_default();
    closing
        .strip_prefix("chaos: ")
        .and_then(|rest| rest.strip_suffix(&format!(" failed (seed {seed})")))
        .and_then(|rest| rest.split_once(" passed, "))
        .and_then(|(passed, failed)| Some((passed.parse().ok()?, failed.parse().ok()?)))
        .unwrap_or_else(|| panic!("closing line {closing:?}"))
}

/// The bound on one run of the chaos program by these tests.
const PROGRAM_LIMIT: Duration = Duration::from_secs(300);

/// Runs the chaos program with `args`; its stdout and exit code.
fn chaos(args: &[&str]) -> (String, Option<i32>) {
    let output = common::output_within(
        Command::new(env!("CARGO_BIN_EXE_loky-chaos")).args(args),
        PROGRAM_LIMIT,
        "the chaos program",
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (stdout, output.status.code())
}

#[test]
fn the_chaos_program_prints_its_seed_first_and_its_summary() {
    let (stdout, code) = chaos(&["--rounds", "2", "--seed", "1"]);
    assert_eq!(
        stdout.lines().next(),
        Some("chaos: seed 1 (2 rounds; replay with --seed 1)"),
        "{stdout}"
    );
    assert_eq!(row(&stdout, "seed"), Some("1"), "{stdout}");
    assert_eq!(row(&stdout, "rounds"), Some("2"), "{stdout}");
    for label in ["tasks submitted", "faults injected", "wall time"] {
        assert!(row(&stdout, label).is_some(), "no {label:?} in:\n{stdout}");
    }
    for class in Violation::CLASSES {
        let label = format!("{class} (must be 0)");
        assert_eq!(row(&stdout, &label), Some("0"), "{label}:\n{stdout}");
    }
    // Each scenario that ran says how many faults it injected and what each
    // of its rounds needs.
    assert!(
        stdout.lines().any(|l| l.contains(" >= 1 ")),
        "no scenario needs in:\n{stdout}"
    );
    assert_eq!(passed_and_failed(&stdout, 1), (2, 0), "{stdout}");
    assert_eq!(code, Some(0), "{stdout}");
}

/// The self-test of the harness end to end: the real chaos program, run
/// with the hidden `--self-test-bug` against the in-memory fake executor
/// with an injected bug, reports the violation the bug causes in the bug's
/// summary row (and no other kind), names the seed in its failed rounds'
/// replay lines and its closing line, and exits with a failure. The leak
/// bugs leave a real orphan, zombie and descriptor, which the real process
/// and descriptor tables show.
#[test]
fn the_chaos_program_fails_when_its_executor_breaks_an_invariant() {
    for bug in Bug::ALL {
        // The fake is deterministic: these rounds of seed 3 meet each bug.
        let (stdout, code) = chaos(&[
            "--self-test-bug",
            bug.name(),
            "--rounds",
            "6",
            "--seed",
            "3",
        ]);
        let context = format!("{bug:?}: {code:?}\n{stdout}");
        assert!(
            stdout.contains(&format!("fake executor with the bug {}", bug.name())),
            "{context}"
        );
        assert_eq!(code, Some(1), "{context}");
        assert!(stdout.lines().any(|l| l.contains(" FAILED ")), "{context}");
        assert!(
            stdout
                .lines()
                .any(|l| l.contains("replay: loky-chaos --seed 3 --round")),
            "{context}"
        );
        let found = row(&stdout, &format!("{} (must be 0)", bug.row()));
        assert!(found.is_some_and(|n| n != "0"), "{context}");
        for clean in Violation::CLASSES.into_iter().filter(|&c| c != bug.row()) {
            let label = format!("{clean} (must be 0)");
            assert_eq!(row(&stdout, &label), Some("0"), "{label}: {context}");
        }
        let (passed, failed) = passed_and_failed(&stdout, 3);
        assert_eq!(passed + failed, 6, "{context}");
        assert!(failed > 0, "{context}");
    }
}
