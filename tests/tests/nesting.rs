//! Nesting: a task may build its own executor, down to `LOKY_MAX_DEPTH`
//! levels of workers (this process is depth 0, its workers depth 1).

mod common;

use common::FutureExt;
use loky_tests::{NESTED, NestedError};

/// What `NESTED(levels)` gives on a pool whose workers see `max_depth`.
fn nested(max_depth: &str, levels: u32) -> Result<u32, NestedError> {
    let ex = common::builder(1)
        .env("LOKY_MAX_DEPTH", max_depth)
        .build()
        .unwrap();
    ex.submit(NESTED, levels).unwrap().result_bounded().unwrap()
}

/// The documented error past the limit: `InvalidArgument` with loky's
/// message naming the limit and the variable.
fn expect_too_deep(result: Result<u32, NestedError>, max_depth: u32) {
    let err = result.expect_err("a worker past the limit");
    assert_eq!(err.kind, "InvalidArgument", "{err:?}");
    assert!(
        err.message.contains(&format!("MAX_DEPTH={max_depth}")),
        "{err:?}"
    );
    assert!(err.message.contains("LOKY_MAX_DEPTH"), "{err:?}");
}

#[test]
fn nesting_down_to_max_depth_works() {
    // Workers at depths 1, 2 and 3 = LOKY_MAX_DEPTH.
    assert_eq!(nested("3", 2), Ok(3));
    assert_eq!(nested("3", 0), Ok(1));
}

/// Catches the limit reported as another error (a worker that fails to
/// start, a broken pool) or only as text.
#[test]
fn one_level_deeper_is_an_invalid_argument_naming_the_limit() {
    expect_too_deep(nested("3", 3), 3);
}

#[test]
fn the_default_max_depth_is_ten() {
    let ex = common::pool(1);
    assert_eq!(
        ex.submit(NESTED, 9).unwrap().result_bounded().unwrap(),
        Ok(loky::DEFAULT_MAX_DEPTH)
    );
    expect_too_deep(ex.submit(NESTED, 10).unwrap().result_bounded().unwrap(), 10);
}

#[test]
fn a_max_depth_of_zero_means_no_limit_as_in_loky() {
    assert_eq!(nested("0", 2), Ok(3));
    assert_eq!(nested("-1", 11), Ok(12));
}
