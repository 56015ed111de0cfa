//! The backtrace of a task's panic shows the task's own frames: it starts
//! at the task's code, without std's panic machinery above it nor the
//! worker's runtime below it.

mod common;

use loky::Error;
use loky::diagnostics::PANIC;
use loky_tests::FLAKY;

fn backtrace_of(result: loky::Result<impl std::fmt::Debug>) -> String {
    match result {
        Err(Error::Task(err)) => err.backtrace().to_owned(),
        other => panic!("expected Error::Task, got {other:?}"),
    }
}

#[test]
fn a_task_panic_backtrace_starts_at_the_task_code() {
    let ex = common::pool(1);
    let flaky = backtrace_of(common::run(&ex, FLAKY, 13));
    let first = flaky.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("   0: loky_tests::registry::{{closure}}"),
        "{flaky}"
    );
    let stock = backtrace_of(common::run(&ex, PANIC, "boom".to_owned()));
    let first = stock.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("   0: loky_worker::diagnostics::registry::{{closure}}"),
        "{stock}"
    );
    for backtrace in [&flaky, &stock] {
        for runtime in [
            "run_task",
            "catch_unwind",
            "lang_start",
            "loky_worker::executing",
        ] {
            assert!(!backtrace.contains(runtime), "{runtime} in {backtrace}");
        }
        assert!(backtrace.lines().count() < 20, "{backtrace}");
    }
    assert!(common::shutdown_within(&ex, common::RESULT_TIMEOUT));
}
