//! The chaos harness checked on itself: its checker passes a faithful
//! executor, and fails one with a deliberately injected bug (futures of a
//! dead worker that never resolve, lost calls, wrong values, wrong errors,
//! leaked resources). The executor here is the in-memory fake of
//! `loky_tests::chaos::fake`, or fabricated observations; the last test runs
//! the real chaos program briefly.

mod common;

use std::process::Command;
use std::time::Duration;

use loky_tests::chaos::expect::{Expect, Hazards};
use loky_tests::chaos::fake::{Bug, FakeBackend};
use loky_tests::chaos::ledger::{Hygiene, Ledger, RoundReport, Violation};
use loky_tests::chaos::model::{Call, Death, ErrorKind, Exit, Failure, Fault, Outcome, Policy};
use loky_tests::chaos::model::{Signal, Value};
use loky_tests::chaos::rng::Rng;
use loky_tests::chaos::scenario::Scenario;
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

/// Runs `scenario` for `seeds` rounds against a fake with `bug`.
fn fake_rounds(bug: Option<Bug>, scenario: Scenario, seeds: u64) -> Vec<RoundReport> {
    let backend = FakeBackend::new(bug);
    (0..seeds)
        .map(|seed| {
            let mut rng = Rng::for_round(seed, 0);
            let ledger = scenario.run(&backend, &mut rng, seed).expect("generic");
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

#[test]
fn a_faithful_executor_passes_every_scenario() {
    for scenario in Scenario::ALL.into_iter().filter(|s| s.is_generic()) {
        let reports = fake_rounds(None, scenario, 6);
        let calls: usize = reports.iter().map(|r| r.ledger.entries.len()).sum();
        assert!(calls > 0, "{} submitted nothing", scenario.name());
        let found = violations(&reports);
        assert!(found.is_empty(), "{}: {found:#?}", scenario.name());
        assert!(verdict(&reports).ok());
    }
}

#[test]
fn futures_of_a_dead_worker_that_never_resolve_fail_the_run() {
    let reports = fake_rounds(Some(Bug::DeadWorkerFuturesHang), Scenario::TaskFaults, 12);
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
            "chaos: {} passed, {} failed",
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
    let reports = fake_rounds(Some(Bug::RespawnFailsHeldCalls), Scenario::TaskFaults, 12);
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
    let reports = fake_rounds(Some(Bug::WrongEcho), Scenario::ExternalKills, 3);
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
    let reports = fake_rounds(Some(Bug::WrongErrorKind), Scenario::TaskFaults, 12);
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
    assert!(table.ends_with("chaos: 0 passed, 1 failed\n"), "{table}");
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

/// The value of the summary table's top-level row `label`, if it has one.
fn row<'a>(stdout: &'a str, label: &str) -> Option<&'a str> {
    stdout.lines().find_map(|line| {
        let rest = line.strip_prefix("  ")?.strip_prefix(label)?;
        // The label is padded with blanks; the value ends the line.
        rest.starts_with(' ').then(|| rest.trim())
    })
}

/// The counts of the closing line `chaos: N passed, M failed`.
fn passed_and_failed(stdout: &str) -> (u64, u64) {
    let closing = stdout.lines().last().unwrap_or_default();
    closing
        .strip_prefix("chaos: ")
        .and_then(|rest| rest.strip_suffix(" failed"))
        .and_then(|rest| rest.split_once(" passed, "))
        .and_then(|(passed, failed)| Some((passed.parse().ok()?, failed.parse().ok()?)))
        .unwrap_or_else(|| panic!("closing line {closing:?}"))
}

/// The bound on one run of the chaos program by these tests.
const PROGRAM_LIMIT: Duration = Duration::from_secs(300);

/// The summary rows that only leftover processes or descriptors fill.
const HYGIENE_ROWS: [&str; 3] = ["orphans", "zombies", "leaked fds"];

#[test]
fn the_chaos_program_prints_its_summary() {
    let output = common::output_within(
        Command::new(env!("CARGO_BIN_EXE_loky-chaos")).args(["--rounds", "2", "--seed", "1"]),
        PROGRAM_LIMIT,
        "the chaos program",
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
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
    assert_eq!(passed_and_failed(&stdout), (2, 0), "{stdout}");
    assert!(output.status.success(), "{:?}:\n{stdout}", output.status);
}

/// The self-test of the harness end to end: the real chaos program, run
/// with the hidden `--self-test-bug` against the in-memory fake executor
/// with an injected bug, reports the violation the bug causes, and only
/// that, and exits with a failure.
#[test]
fn the_chaos_program_fails_when_its_executor_breaks_an_invariant() {
    for (bug, class, example) in [
        (Bug::DeadWorkerFuturesHang, "hung", "hung: `"),
        (Bug::RespawnFailsHeldCalls, "wrong errors", "wrong error: `"),
        (Bug::WrongEcho, "wrong results", "wrong result: `echo_i64`"),
        (
            Bug::WrongErrorKind,
            "wrong errors",
            "failed with ShutdownExecutor",
        ),
    ] {
        // The fake is deterministic: these rounds of seed 3 meet each bug.
        let output = common::output_within(
            Command::new(env!("CARGO_BIN_EXE_loky-chaos")).args([
                "--self-test-bug",
                bug.name(),
                "--rounds",
                "20",
                "--seed",
                "3",
            ]),
            PROGRAM_LIMIT,
            "the chaos program",
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let context = format!("{bug:?}: {:?}\n{stdout}", output.status);
        assert!(
            stdout.contains(&format!("fake executor with the bug {}", bug.name())),
            "{context}"
        );
        assert_eq!(output.status.code(), Some(1), "{context}");
        assert!(stdout.lines().any(|l| l.contains(" FAILED ")), "{context}");
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().contains(" x ") && l.contains(example)),
            "{context}"
        );
        let found = row(&stdout, &format!("{class} (must be 0)"));
        assert!(found.is_some_and(|n| n != "0"), "{context}");
        for clean in HYGIENE_ROWS.into_iter().chain(["lost"]) {
            let label = format!("{clean} (must be 0)");
            assert_eq!(row(&stdout, &label), Some("0"), "{label}: {context}");
        }
        let (passed, failed) = passed_and_failed(&stdout);
        assert_eq!(passed + failed, 20, "{context}");
        assert!(failed > 0, "{context}");
    }
}
