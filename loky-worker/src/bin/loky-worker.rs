//! The stock worker program: every task of [`loky_worker::diagnostics`].

/// Under a memory limit, a failed allocation ends the worker with one line
/// naming the limit, not std's message (none of its tasks recovers from a
/// failed allocation).
#[global_allocator]
static ALLOCATOR: loky_worker::ExitOnMemoryLimit = loky_worker::ExitOnMemoryLimit;

fn main() {
    loky_worker::serve(loky_worker::diagnostics::registry())
}
