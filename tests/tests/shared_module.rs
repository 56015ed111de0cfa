//! A task module shared by path between two binaries: the type names of
//! each side start with its own crate name, and still the signatures match.
//! A worker rebuilt after a field changed type under the same names is
//! refused with an error naming it as another, possibly out-of-date build;
//! a really different type is still a `TaskMismatch`.

mod common;

#[path = "../src/shapes/tasks.rs"]
#[allow(dead_code, reason = "the registry is the worker's")]
mod tasks;

use std::any::type_name;
use std::path::PathBuf;
use std::process::Command;

use loky::{Error, ProcessPoolExecutor, Task, WorkerProgram};
use serde::{Deserialize, Serialize};

use common::RESULT_TIMEOUT;
use tasks::{MIRROR, ORIGIN, Point};

const WORKER: &str = env!("CARGO_BIN_EXE_loky-shapes-worker");
const CHANGED_WORKER: &str = env!("CARGO_BIN_EXE_loky-shapes-worker-changed");

fn pool(program: &str) -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .max_workers(1)
        .worker_program(WorkerProgram::Path(PathBuf::from(program)))
        .build()
        .unwrap()
}

/// The task table a worker program prints when run by hand.
fn task_table(program: &str) -> String {
    let output = Command::new(program)
        .env_remove("LOKY_WORKER_CHANNEL")
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn a_module_shared_by_path_passes_the_signature_check() {
    // The two sides name the type differently...
    assert_eq!(type_name::<Point>(), "shared_module::tasks::Point");
    let table = task_table(WORKER);
    assert!(
        table.contains(
            "mirror: loky_shapes_worker::tasks::Point -> loky_shapes_worker::tasks::Point"
        ),
        "{table}"
    );
    // ...and the calls go through.
    let ex = pool(WORKER);
    let mirrored = ex.submit(MIRROR, Point { x: 3, y: -4 }).unwrap();
    assert_eq!(
        mirrored.result_timeout(RESULT_TIMEOUT).unwrap(),
        Point { x: -3, y: 4 }
    );
    assert_eq!(common::run(&ex, ORIGIN, ()).unwrap(), Point { x: 0, y: 0 });
}

#[test]
fn a_worker_rebuilt_with_a_changed_field_type_is_refused_as_out_of_date() {
    let ex = pool(CHANGED_WORKER);
    // The argument does not decode in the worker...
    let err = common::run(&ex, MIRROR, Point { x: 3, y: -4 }).unwrap_err();
    let Error::Serialization(bad) = &err else {
        panic!("expected a serialization error, got {err:?}");
    };
    let text = bad.to_string();
    assert!(
        text.contains("could not run the call of task `mirror`"),
        "{text}"
    );
    assert!(text.contains(CHANGED_WORKER), "{text}");
    assert!(
        text.contains("is another build than this program"),
        "{text}"
    );
    assert!(text.contains("it may be out of date"), "{text}");
    // ...nor the result here.
    let err = common::run(&ex, ORIGIN, ()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("could not decode the result of task `origin`"),
        "{text}"
    );
    assert!(text.contains("it may be out of date"), "{text}");
    assert!(text.contains(CHANGED_WORKER), "{text}");
    assert!(!ex.is_broken(), "the pool goes on");
}

/// Another type than the worker's `Point`, under another name.
#[derive(Debug, Serialize, Deserialize)]
struct Segment {
    from: (i64, i64),
    to: (i64, i64),
}

#[test]
fn a_really_different_type_is_still_a_task_mismatch() {
    const MIRROR_SEGMENT: Task<Segment, Segment> = Task::new("mirror");
    let ex = pool(WORKER);
    let segment = Segment {
        from: (0, 0),
        to: (1, 1),
    };
    match common::run(&ex, MIRROR_SEGMENT, segment) {
        Err(Error::TaskMismatch(mismatch)) => {
            assert!(
                mismatch.handle_signature().contains("Segment"),
                "{mismatch}"
            );
            assert!(
                mismatch.worker_signature().contains("tasks::Point"),
                "{mismatch}"
            );
        }
        other => panic!("expected TaskMismatch, got {other:?}"),
    }
}
