//! Under load every future resolves with the right value or error.

mod common;

use std::time::Duration;

use common::{FutureExt, MapExt};
use loky::Error;
use loky_tests::FLAKY;

/// Ten thousand calls on two workers: far more than any one result takes.
const ALL_WITHIN: Duration = Duration::from_secs(120);

#[test]
fn ten_thousand_tasks_with_panics_and_errors_all_resolve_correctly() {
    let ex = common::pool(2);
    let futures: Vec<_> = (0..10_000i64)
        .map(|x| (x, ex.submit(FLAKY, x).unwrap()))
        .collect();
    for (x, fut) in futures {
        let result = fut.result_within(ALL_WITHIN);
        match x % 10 {
            3 => match result {
                Err(Error::Task(e)) => {
                    assert_eq!(e.message(), format!("flaky task failed on {x}"));
                    assert_eq!(e.task(), "flaky");
                }
                other => panic!("{x}: expected a panic, got {other:?}"),
            },
            7 => assert_eq!(result.unwrap(), Err(format!("{x} ends in 7"))),
            _ => assert_eq!(result.unwrap(), Ok(x * 2)),
        }
    }
    assert!(!ex.is_broken());
}

#[test]
fn map_of_ten_thousand_items_with_failures_yields_each_in_order() {
    let ex = common::pool(2);
    let results = ex.map(FLAKY, 0..10_000i64).chunksize(100).collect_bounded();
    assert_eq!(results.len(), 10_000);
    for (x, result) in (0..).zip(results) {
        match x % 10 {
            3 => assert!(matches!(result, Err(Error::Task(_))), "{x}: {result:?}"),
            7 => assert_eq!(result.unwrap(), Err(format!("{x} ends in 7"))),
            _ => assert_eq!(result.unwrap(), Ok(x * 2)),
        }
    }
}
