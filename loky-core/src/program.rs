//! The worker program as the executor checks it: which workers may receive
//! functions (only those running this very program build), what a decode
//! failure says of a worker of another build, and the guard that stops a
//! worker that never called `loky::init()` from starting workers of its
//! own.

use std::path::Path;

use loky_proto::exit_code;
use loky_proto::program::{self, ProgramId};

use crate::error::{Error, MissingInit, ProgramMismatch};
use crate::exit::WorkerExit;

/// Ends this process at once, with [`exit_code::NOT_INITIALIZED`], if an
/// executor started it as a worker and it does not serve: its `main` is
/// building an executor before calling `loky::init()`. Starting workers
/// here would start the same program again, which would do the same.
pub(crate) fn exit_if_worker_without_init() {
    if program::is_worker_without_init() {
        std::process::exit(exit_code::NOT_INITIALIZED);
    }
}

/// The error for a worker of `program` that ended before its hello with
/// `exit`, if that exit is the guard's.
pub(crate) fn missing_init(exit: WorkerExit, program: &Path, pid: u32) -> Option<Error> {
    (exit == WorkerExit::Code(exit_code::NOT_INITIALIZED)).then(|| {
        Error::MissingInit(MissingInit {
            program: program.to_owned(),
            pid,
        })
    })
}

/// Checks, before `function` is sent to worker `pid` (of `program`, whose
/// build is `identity`), that the worker runs this very program build.
pub(crate) fn check_function_worker(
    function: &str,
    identity: &ProgramId,
    program: &str,
    pid: u32,
) -> Result<(), Error> {
    let this = ProgramId::current();
    if identity.same_program(this) {
        return Ok(());
    }
    Err(Error::ProgramMismatch(ProgramMismatch::new(
        function,
        (this_program(), this.clone()),
        (program.to_owned(), identity.clone()),
        pid,
    )))
}

/// What to add to an error about a value that failed to decode between this
/// program and a worker of `program` (build `identity`): if the worker runs
/// another build, it may be out of date.
pub(crate) fn stale_note(identity: &ProgramId, program: &str) -> Option<String> {
    let this = ProgramId::current();
    let other_build = identity.is_known() && this.is_known() && identity != this;
    other_build.then(|| {
        format!(
            "the worker program `{program}` ({identity}) is another build than this program \
             `{}` ({this}): it may be out of date",
            this_program(),
        )
    })
}

/// This program's path, for messages.
fn this_program() -> String {
    std::env::current_exe().map_or_else(
        |_| "<this program>".to_owned(),
        |path| path.display().to_string(),
    )
}

#[cfg(test)]
mod tests {
    use loky_proto::program::IdKind;

    use super::*;

    fn other_build() -> ProgramId {
        let mut other = ProgramId::current().clone();
        other.bytes[0] ^= 1;
        other
    }

    #[test]
    fn only_a_worker_of_this_very_build_may_receive_a_function() {
        let me = ProgramId::current();
        assert!(check_function_worker("fn(i64) -> i64", me, "me", 1).is_ok());
        for identity in [other_build(), ProgramId::unknown()] {
            match check_function_worker("fn(i64) -> i64", &identity, "/bin/other", 7) {
                Err(Error::ProgramMismatch(m)) => {
                    assert_eq!(
                        (m.function(), m.worker_program(), m.pid()),
                        ("fn(i64) -> i64", "/bin/other", 7)
                    );
                    assert_eq!(m.identity(), me);
                    assert!(m.to_string().contains("/bin/other"), "{m}");
                }
                other => panic!("expected ProgramMismatch, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_worker_of_another_known_build_may_be_out_of_date() {
        let note = stale_note(&other_build(), "/bin/worker").unwrap();
        assert!(
            note.contains("/bin/worker") && note.contains("may be out of date"),
            "{note}"
        );
        assert_eq!(stale_note(ProgramId::current(), "me"), None);
        let unknown = ProgramId {
            kind: IdKind::Unknown,
            bytes: Vec::new(),
        };
        assert_eq!(stale_note(&unknown, "/bin/worker"), None, "nothing to tell");
    }

    #[test]
    fn only_the_guard_s_exit_code_is_missing_init() {
        let program = Path::new("/bin/app");
        let err = missing_init(WorkerExit::Code(exit_code::NOT_INITIALIZED), program, 9).unwrap();
        assert!(err.is_broken_pool());
        assert!(
            err.to_string().contains("must call `loky::init()`"),
            "{err}"
        );
        assert!(!err.to_string().contains('\n'));
        assert!(missing_init(WorkerExit::Code(1), program, 9).is_none());
        assert!(missing_init(WorkerExit::Signal(9), program, 9).is_none());
    }
}
