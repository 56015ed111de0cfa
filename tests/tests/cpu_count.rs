//! `cpu_count` in a real process whose environment sets
//! `LOKY_MAX_CPU_COUNT`: each case runs this test binary again, with the
//! variable set, to report what `cpu_count` says there.

mod common;

use std::process::Command;

/// Set in the child run: it prints its counts instead of checking.
const REPORT: &str = "LOKY_TEST_CPU_COUNT_REPORT";

/// The child's side: prints `cpu_count` and `cpu_count_physical`.
#[test]
fn report_counts() {
    if std::env::var_os(REPORT).is_some() {
        println!(
            "counts: {} {}",
            loky::cpu_count(),
            loky::cpu_count_physical()
        );
    }
}

/// `(cpu_count, cpu_count_physical)` in a process whose
/// `LOKY_MAX_CPU_COUNT` is `value`.
fn counts_with(value: &str) -> (usize, usize) {
    let output = common::output_within(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "report_counts",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(REPORT, "1")
            .env("LOKY_MAX_CPU_COUNT", value),
        common::RESULT_TIMEOUT,
        "the test binary reporting the counts",
    );
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    // libtest prints the test's name on the same line, before its output.
    let line = stdout
        .split_once("counts: ")
        .and_then(|(_, rest)| rest.lines().next())
        .unwrap_or_else(|| panic!("no counts in {stdout:?}"));
    let (usable, physical) = line.split_once(' ').unwrap();
    (usable.parse().unwrap(), physical.parse().unwrap())
}

#[test]
fn zero_or_negative_max_cpu_count_gives_one_cpu_as_in_loky() {
    assert_eq!(counts_with("0"), (1, 1));
    assert_eq!(counts_with("-3"), (1, 1));
    assert_eq!(counts_with(" 1\n"), (1, 1));
}

#[test]
fn a_positive_max_cpu_count_caps_and_garbage_is_ignored() {
    let all = std::thread::available_parallelism().unwrap().get();
    assert_eq!(counts_with("100000").0, all);
    assert_eq!(counts_with("two").0, all);
    assert_eq!(counts_with("1.5").0, all);
}
