//! `loky-test-worker`: the worker program of the end-to-end tests.

fn main() {
    loky::serve(loky_tests::registry())
}
