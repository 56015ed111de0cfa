//! The table of tasks a worker program can run.

use std::fmt;

use loky_proto::shm::FrameBuf;
use loky_proto::{CallError, CallKind, Outcome, Payload, Signature, Task, TaskInfo};
use rustc_hash::FxHashMap;

use crate::call::WorkerRuntime;

/// The tasks a worker program can run: each [`Task`] name bound to a
/// function.
///
/// ```
/// use loky::Task;
/// use loky::Registry;
///
/// const SQUARE: Task<i64, i64> = Task::new("square");
/// const CONCAT: Task<(String, u32), String> = Task::new("concat");
///
/// let registry = Registry::new()
///     .register(SQUARE, |x: i64| x * x)
///     .register(CONCAT, |(s, n): (String, u32)| s.repeat(n as usize));
/// assert_eq!(registry.tasks().len(), 2);
/// ```
#[derive(Default)]
pub struct Registry {
    /// In registration order, which is the order of the task table.
    entries: Vec<Entry>,
    /// Looked up on every call.
    by_name: FxHashMap<&'static str, usize>,
}

struct Entry {
    signature: Signature,
    handler: Handler,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Binds `task` to `f`.
    ///
    /// # Panics
    ///
    /// If a task of the same name is already registered: a worker program
    /// with an ambiguous task table is a bug to fix before it starts.
    #[must_use]
    pub fn register<I, O, F>(mut self, task: Task<I, O>, f: F) -> Self
    where
        I: Payload,
        O: Payload,
        F: Fn(I) -> O + Send + Sync + 'static,
    {
        let name = task.name();
        if self.by_name.insert(name, self.entries.len()).is_some() {
            panic!("task `{name}` is registered twice in this worker's Registry");
        }
        self.entries.push(Entry {
            signature: task.signature(),
            handler: Box::new(move |task, kind, args, out| {
                loky_proto::invoke::<I, O, F, FrameBuf>(&f, task, kind, args, out, &WorkerRuntime)
            }),
        });
        self
    }

    /// The task table sent to executors: each task's name, argument type and
    /// output type, in registration order.
    pub fn tasks(&self) -> Vec<TaskInfo> {
        self.entries.iter().map(|e| e.signature.into()).collect()
    }

    pub(crate) fn signatures(&self) -> impl Iterator<Item = Signature> + '_ {
        self.entries.iter().map(|e| e.signature)
    }

    /// Runs one call on the current thread and appends its encoded value
    /// to `out`. A call that fails (the task's panic is caught) gives its
    /// outcome instead and may leave partial bytes in `out`.
    pub(crate) fn run(
        &self,
        task: &str,
        kind: CallKind,
        args: &[u8],
        out: &mut FrameBuf,
    ) -> Result<(), Outcome<'static>> {
        let Some(&index) = self.by_name.get(task) else {
            return Err(Outcome::Failed(CallError::UnknownTask {
                task: task.to_owned(),
            }));
        };
        (self.entries[index].handler)(task, kind, args, out)
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field(
                "tasks",
                &self.signatures().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A registered function with its types erased: runs it on a call's
/// encoded argument(s), as the protocol crate's `invoke()` does.
type Handler =
    Box<dyn Fn(&str, CallKind, &[u8], &mut FrameBuf) -> Result<(), Outcome<'static>> + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;
    use loky_proto::{decode_payload, encode_payload};

    const SQUARE: Task<i64, i64> = Task::new("square");
    const NAME: Task<(String, u8), String> = Task::new("name");

    fn registry() -> Registry {
        crate::panic::install_hook();
        Registry::new()
            .register(SQUARE, |x: i64| {
                assert!(x >= 0, "negative");
                x * x
            })
            .register(NAME, |(s, n): (String, u8)| format!("{s}{n}"))
    }

    /// The outcome of a call, a value as the reply would carry it.
    fn run(r: &Registry, task: &str, kind: CallKind, args: &[u8]) -> Outcome<'static> {
        let mut out = FrameBuf::plain();
        out.extend_from_slice(&[0xff]);
        match r.run(task, kind, args, &mut out) {
            Ok(()) => Outcome::Value(out.slice(1..out.len()).to_vec().into()),
            Err(failure) => failure,
        }
    }

    fn value<T: Payload>(outcome: Outcome<'_>) -> T {
        match outcome {
            Outcome::Value(bytes) => decode_payload(&bytes).unwrap(),
            other => panic!("not a value: {other:?}"),
        }
    }

    #[test]
    #[should_panic(expected = "task `square` is registered twice in this worker's Registry")]
    fn registering_a_name_twice_panics() {
        let _ = Registry::new()
            .register(SQUARE, |x| x)
            .register(Task::<String, ()>::new("square"), |_| ());
    }

    #[test]
    fn the_task_table_keeps_registration_order() {
        let names: Vec<_> = registry().tasks().into_iter().map(|t| t.name).collect();
        assert_eq!(names, ["square", "name"]);
        assert!(format!("{:?}", registry()).contains("square: i64 -> i64"));
    }

    #[test]
    fn a_single_call_runs_the_function() {
        let args = encode_payload(&("x".to_owned(), 7u8)).unwrap();
        let out = run(&registry(), "name", CallKind::Single, &args);
        assert_eq!(value::<String>(out), "x7");
    }

    #[test]
    fn unknown_tasks_and_bad_arguments_fail() {
        let r = registry();
        assert_eq!(
            run(&r, "nope", CallKind::Single, &[]),
            Outcome::Failed(CallError::UnknownTask {
                task: "nope".into()
            })
        );
        let args = encode_payload("seven").unwrap();
        match run(&r, "square", CallKind::Single, &args) {
            Outcome::Failed(CallError::DecodeArgs { task, expected, .. }) => {
                assert_eq!((task.as_str(), expected.as_str()), ("square", "i64"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_panic_of_a_registered_task_is_caught_with_its_location() {
        let args = encode_payload(&-1i64).unwrap();
        match run(&registry(), "square", CallKind::Single, &args) {
            Outcome::Panic(panic) => {
                assert_eq!(panic.message, "negative");
                assert!(panic.location.unwrap().contains("registry.rs"));
            }
            other => panic!("{other:?}"),
        }
    }
}
