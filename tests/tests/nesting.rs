//! Nesting: a task may build its own executor, down to `LOKY_MAX_DEPTH`
//! levels of workers (this process is depth 0, its workers depth 1).

mod common;

use loky_tests::NESTED;

/// What `NESTED(levels)` gives on a pool whose workers see `max_depth`.
fn nested(max_depth: &str, levels: u32) -> Result<u32, String> {
    let ex = common::builder(1)
        .env("LOKY_MAX_DEPTH", max_depth)
        .build()
        .unwrap();
    ex.submit(NESTED, levels).unwrap().result().unwrap()
}

#[test]
fn nesting_down_to_max_depth_works() {
    // Workers at depths 1, 2 and 3 = LOKY_MAX_DEPTH.
    assert_eq!(nested("3", 2), Ok(3));
    assert_eq!(nested("3", 0), Ok(1));
}

#[test]
fn one_level_deeper_is_the_tasks_clear_error() {
    let err = nested("3", 3).expect_err("a worker at depth 4");
    assert!(err.contains("MAX_DEPTH=3"), "{err}");
    assert!(err.contains("LOKY_MAX_DEPTH"), "{err}");
}

#[test]
fn the_default_max_depth_is_ten() {
    let ex = common::pool(1);
    assert_eq!(
        ex.submit(NESTED, 9).unwrap().result().unwrap(),
        Ok(loky::DEFAULT_MAX_DEPTH)
    );
    let err = ex
        .submit(NESTED, 10)
        .unwrap()
        .result()
        .unwrap()
        .expect_err("a worker at depth 11");
    assert!(err.contains("MAX_DEPTH=10"), "{err}");
}

#[test]
fn a_max_depth_of_zero_means_no_limit_as_in_loky() {
    assert_eq!(nested("0", 2), Ok(3));
    assert_eq!(nested("-1", 11), Ok(12));
}
