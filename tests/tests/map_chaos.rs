//! A short run of the map chaos scenario (the full one runs in
//! `cargo xtask test`): exactly the bad items fail.

mod common;

#[test]
fn a_short_map_chaos_run_fails_exactly_the_bad_items() {
    let builder = || common::builder(2);
    let summary = loky_tests::map_chaos::run(0x5eed, 12, &builder);
    assert!(summary.clean(), "{summary}");
    assert_eq!(summary.rounds, 12);
    assert!(summary.bad > 0, "{summary}");
}
