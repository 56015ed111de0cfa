//! `loky-test-worker`: the worker program of the end-to-end tests.

/// Under a memory limit, a failed allocation ends the worker with one line
/// naming the limit, as in the stock worker (no task here recovers from a
/// failed allocation).
#[global_allocator]
static ALLOCATOR: loky_worker::ExitOnMemoryLimit = loky_worker::ExitOnMemoryLimit;

fn main() {
    loky::serve(loky_tests::registry())
}
