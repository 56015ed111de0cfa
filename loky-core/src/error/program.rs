//! The errors of the program a pool's workers run: a function refused by a
//! worker of another program build, and a worker program whose `main`
//! builds an executor before `loky::init()`.

use std::fmt;
use std::path::{Path, PathBuf};

use loky_proto::program::ProgramId;

/// A function was not sent to a worker because the worker runs another
/// program (or another build of this one): a function is a place in this
/// program's code, and only a worker running the very same build may
/// receive it. The pool is not broken; named tasks still run there.
#[derive(Debug, Clone)]
pub struct ProgramMismatch {
    // Boxed: the error type stays small.
    details: Box<Mismatch>,
}

#[derive(Debug, Clone)]
struct Mismatch {
    function: String,
    program: String,
    identity: ProgramId,
    worker_program: String,
    worker_identity: ProgramId,
    pid: u32,
}

impl ProgramMismatch {
    /// `function` of `program` (build `identity`) was not sent to worker
    /// `pid`, which runs `worker_program` (build `worker_identity`).
    pub(crate) fn new(
        function: &str,
        (program, identity): (String, ProgramId),
        (worker_program, worker_identity): (String, ProgramId),
        pid: u32,
    ) -> ProgramMismatch {
        ProgramMismatch {
            details: Box::new(Mismatch {
                function: function.to_owned(),
                program,
                identity,
                worker_program,
                worker_identity,
                pid,
            }),
        }
    }

    /// The function that was not sent (its type, `fn(I) -> O`).
    pub fn function(&self) -> &str {
        &self.details.function
    }

    /// This program, which submitted the function.
    pub fn program(&self) -> &str {
        &self.details.program
    }

    /// The identity of this program's build.
    pub fn identity(&self) -> &ProgramId {
        &self.details.identity
    }

    /// The worker's program, as the worker named itself.
    pub fn worker_program(&self) -> &str {
        &self.details.worker_program
    }

    /// The identity of the worker program's build.
    pub fn worker_identity(&self) -> &ProgramId {
        &self.details.worker_identity
    }

    /// The pid of the worker.
    pub fn pid(&self) -> u32 {
        self.details.pid
    }
}

impl fmt::Display for ProgramMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.details;
        write!(
            f,
            "function `{}` cannot run in worker {}: it runs program `{}` ({}), not this program \
             `{}` ({}); functions run only in workers of the very same program build (call \
             `loky::init()` first in `main` and leave the worker program to its default, or use \
             `WorkerProgram::CurrentExe`)",
            m.function, m.pid, m.worker_program, m.worker_identity, m.program, m.identity
        )
    }
}

impl std::error::Error for ProgramMismatch {}

/// A worker ended at once because its program's `main` built an executor
/// before calling `loky::init()` (or `loky::serve_if_worker`): as a worker,
/// it would have started workers of its own, which would have done the same.
/// The pool is broken.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "worker program `{}` (pid {pid}) built an executor before calling `loky::init()`: its \
     `main` must call `loky::init()` (or `loky::serve_if_worker`) first",
    .program.display()
)]
pub struct MissingInit {
    pub(crate) program: PathBuf,
    pub(crate) pid: u32,
}

impl MissingInit {
    /// The worker program.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// The pid of the worker that ended.
    pub fn pid(&self) -> u32 {
        self.pid
    }
}
