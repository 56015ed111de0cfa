//! One request of the executor, run on the executing thread: a named task
//! of the registry, or a function of this program (see
//! [`loky_proto::FnRef`]), both through [`loky_proto::invoke()`] with the
//! worker's panic capture and progress reports.

use loky_proto::shm::FrameBuf;
use loky_proto::{Outcome, PanicInfo, Request, Runtime};

use crate::{Registry, panic, progress};

/// What the worker lends to the code that runs calls: its panic capture
/// (a panic becomes the caller's [`PanicInfo`]: message, location,
/// backtrace) and its progress reports of long chunks.
pub(crate) struct WorkerRuntime;

impl Runtime for WorkerRuntime {
    fn catch(&self, f: &mut dyn FnMut()) -> Result<(), PanicInfo> {
        panic::run_task(f)
    }

    fn next_check(&self) -> usize {
        progress::next_check()
    }

    fn after_item(&self, done: usize, outcome: &dyn Fn(usize) -> Outcome<'static>) -> usize {
        progress::after_item(done, outcome)
    }
}

/// The id of `request` and a name for it in the worker's own messages.
pub(crate) fn describe<'a>(request: &'a Request<'_>) -> (u64, &'a str) {
    match request {
        Request::Call(call) => (call.id, &call.task),
        Request::CallFn(call) => (call.id, "function"),
    }
}

/// Runs `request`, appending its encoded value to `out`, or gives its
/// failure.
pub(crate) fn run(
    registry: &Registry,
    request: &Request<'_>,
    out: &mut FrameBuf,
) -> Result<(), Outcome<'static>> {
    match request {
        Request::Call(call) => registry.run(&call.task, call.kind, &call.args, out),
        Request::CallFn(call) => call
            .function
            .run(call.kind, &call.args, out, &WorkerRuntime),
    }
}
