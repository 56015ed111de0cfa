//! Errors built from real failures say what happened and why in one line,
//! and keep their causes: `source()` walks down to the operating system's
//! or the codec's own error.

mod common;

use std::error::Error as _;

use loky::{Error, Task};

/// The messages of `err` and of each of its sources.
fn chain(err: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out = vec![err.to_string()];
    let mut source = err.source();
    while let Some(cause) = source {
        out.push(cause.to_string());
        source = cause.source();
    }
    out
}

#[test]
fn a_missing_worker_program_names_the_os_error_and_keeps_it() {
    let err = common::builder(1)
        .worker_program(loky::WorkerProgram::Path("/no/such/worker".into()))
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Spawn(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "could not start worker program `/no/such/worker`: No such file or directory (os error 2)"
    );
    let io = err
        .source()
        .unwrap()
        .downcast_ref::<std::io::Error>()
        .unwrap();
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    assert_eq!(chain(&err).len(), 2);
}

#[test]
fn a_worker_program_gone_when_workers_start_breaks_the_pool_with_the_spawn_error_as_cause() {
    let dir = std::env::temp_dir().join(format!("loky-error-causes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let program = dir.join("worker");
    std::fs::copy(common::worker_program(), &program).unwrap();
    let ex = common::builder(1)
        .worker_program(loky::WorkerProgram::Path(program.clone()))
        .build()
        .unwrap();
    std::fs::remove_file(&program).unwrap();
    let err = common::run(&ex, loky::diagnostics::SQUARE, 2).unwrap_err();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(err.is_broken_pool(), "{err}");
    let text = err.to_string();
    assert!(!text.contains('\n'), "{text}");
    assert!(text.contains("could not start worker program"), "{text}");
    assert!(text.contains("No such file or directory"), "{text}");
    let spawn = err.source().unwrap().downcast_ref::<loky::SpawnError>();
    assert!(spawn.is_some(), "{:?}", chain(&err));
    let links = chain(&err);
    assert_eq!(links.len(), 3, "{links:?}");
    assert_eq!(links[2], "No such file or directory (os error 2)");
}

struct Refuses;

impl serde::Serialize for Refuses {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("Refuses will not be encoded"))
    }
}

#[test]
fn an_argument_that_cannot_be_encoded_keeps_the_codec_error_as_source() {
    let ex = common::pool(1);
    let task: Task<Refuses, ()> = Task::new("noop");
    let err = ex.submit(task, Refuses).unwrap_err();
    let Error::Serialization(e) = &err else {
        panic!("{err:?}");
    };
    assert!(e.message().contains("Refuses will not be encoded"), "{e}");
    let links = chain(&err);
    assert!(links.len() >= 2, "{links:?}");
    assert!(
        links[1].contains("Refuses will not be encoded"),
        "{links:?}"
    );
    assert!(!links[0].contains('\n'));
}
