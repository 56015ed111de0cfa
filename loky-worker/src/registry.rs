//! The table of tasks a worker program can run.

use std::any::type_name;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;

use loky_proto::shm::FrameBuf;
use loky_proto::{CallError, CallKind, Outcome, Payload, Signature, Task, TaskInfo};

use crate::panic::run_task;
use crate::progress;

/// The tasks a worker program can run: each [`Task`] name bound to a
/// function.
///
/// ```
/// use loky_proto::Task;
/// use loky_worker::Registry;
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
    by_name: HashMap<&'static str, usize>,
}

struct Entry {
    signature: Signature,
    handler: Box<dyn Handler>,
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
            handler: Box::new(Typed {
                f,
                types: PhantomData,
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
        let handler = &self.entries[index].handler;
        match kind {
            CallKind::Single => handler.single(task, args, out),
            CallKind::Chunk => handler.chunk(task, args, out),
        }
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

/// A registered function with its types erased.
trait Handler: Send + Sync {
    /// Runs the function on one encoded argument, appending the encoded
    /// output to `out`.
    fn single(&self, task: &str, args: &[u8], out: &mut FrameBuf) -> Result<(), Outcome<'static>>;
    /// Runs the function on each of a sequence of encoded arguments,
    /// appending the encoded sequence of outputs to `out`, or giving one
    /// outcome per item if any item failed.
    fn chunk(&self, task: &str, args: &[u8], out: &mut FrameBuf) -> Result<(), Outcome<'static>>;
}

struct Typed<I, O, F> {
    f: F,
    // `fn(I) -> O` keeps `Typed` Send + Sync whatever I and O are.
    types: PhantomData<fn(I) -> O>,
}

impl<I, O, F> Typed<I, O, F>
where
    I: Payload,
    O: Payload,
    F: Fn(I) -> O,
{
    /// Runs the function on `input` and encodes its output into `out`,
    /// both under panic capture (a `Serialize` impl may panic too).
    fn apply(&self, task: &str, input: I, out: &mut FrameBuf) -> Result<(), Outcome<'static>> {
        // The task's own code runs outside the frames: what it sends to an
        // executor of its own attaches nothing to this reply.
        let run = || loky_proto::outside_frames(|| (self.f)(input));
        match run_task(|| loky_proto::encode_payload_into(&run(), out)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(Outcome::Failed(CallError::EncodeOutput {
                task: task.to_owned(),
                message: err.to_string(),
            })),
            Err(panic) => Err(Outcome::Panic(panic)),
        }
    }

    fn decode<T: Payload>(task: &str, args: &[u8]) -> Result<T, Outcome<'static>> {
        // A `Deserialize` impl may panic: that is the task's panic too.
        match run_task(|| loky_proto::decode_payload::<T>(args)) {
            Ok(Ok(input)) => Ok(input),
            Ok(Err(err)) => Err(Outcome::Failed(CallError::DecodeArgs {
                task: task.to_owned(),
                expected: type_name::<T>().to_owned(),
                message: err.to_string(),
            })),
            Err(panic) => Err(Outcome::Panic(panic)),
        }
    }
}

impl<I, O, F> Handler for Typed<I, O, F>
where
    I: Payload,
    O: Payload,
    F: Fn(I) -> O + Send + Sync,
{
    fn single(&self, task: &str, args: &[u8], out: &mut FrameBuf) -> Result<(), Outcome<'static>> {
        self.apply(task, Self::decode::<I>(task, args)?, out)
    }

    fn chunk(&self, task: &str, args: &[u8], out: &mut FrameBuf) -> Result<(), Outcome<'static>> {
        let inputs: Vec<Result<I, Outcome<'static>>> = match Self::decode::<Vec<I>>(task, args) {
            Ok(inputs) => inputs.into_iter().map(Ok).collect(),
            // Some argument does not decode: decode them one by one, so
            // that it fails alone.
            Err(outcome) => match loky_proto::split_array(args) {
                Some(items) => items
                    .into_iter()
                    .map(|item| Self::decode::<I>(task, item))
                    .collect(),
                None => return Err(outcome),
            },
        };
        // Outputs are encoded straight into `out`: a MessagePack array is
        // its length followed by its elements, so this is exactly
        // `encode_payload(&Vec<O>)`, with no allocation per item.
        let first = out.len();
        loky_proto::encode_array_header(inputs.len(), out);
        let mut ends = Vec::with_capacity(inputs.len());
        let mut failures = Vec::new();
        let header = out.len() - first;
        let mut next_check = progress::next_check();
        for (i, input) in inputs.into_iter().enumerate() {
            let start = out.len();
            if let Err(failure) = input.and_then(|input| self.apply(task, input, out)) {
                out.truncate(start);
                failures.push((i, failure));
            }
            ends.push(out.len() - first);
            if i + 1 < next_check {
                continue;
            }
            let joined = out.slice(first..out.len());
            next_check = progress::after_item(i + 1, |j| {
                match failures.binary_search_by_key(&j, |(at, _)| *at) {
                    Ok(at) => failures[at].1.clone(),
                    Err(_) => {
                        let from = if j == 0 { header } else { ends[j - 1] };
                        Outcome::Value(joined[from..ends[j]].into())
                    }
                }
            });
        }
        if failures.is_empty() {
            return Ok(());
        }
        Err(split_items(out.slice(first..out.len()), &ends, failures))
    }
}

/// One outcome per item of a chunk in which some item failed: the encoded
/// outputs of the others are cut out of `joined` at `ends`.
fn split_items(
    joined: &[u8],
    ends: &[usize],
    failures: Vec<(usize, Outcome<'static>)>,
) -> Outcome<'static> {
    let mut failures = failures.into_iter().peekable();
    let mut start = header_len(joined);
    let mut items = Vec::with_capacity(ends.len());
    for (i, &end) in ends.iter().enumerate() {
        match failures.next_if(|(at, _)| *at == i) {
            Some((_, failure)) => items.push(failure),
            None => items.push(Outcome::Value(joined[start..end].to_vec().into())),
        }
        start = end;
    }
    Outcome::Items(items)
}

/// Length of the array header at the start of `joined`.
fn header_len(joined: &[u8]) -> usize {
    match joined.first() {
        Some(0xdc) => 3,
        Some(0xdd) => 5,
        _ => 1,
    }
}

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
    fn a_chunk_of_successes_is_one_encoded_vector() {
        for len in [0usize, 3, 15, 16, 70_000] {
            let inputs: Vec<i64> = (0..len as i64).collect();
            let args = encode_payload(&inputs).unwrap();
            let out = run(&registry(), "square", CallKind::Chunk, &args);
            let expected: Vec<i64> = inputs.iter().map(|x| x * x).collect();
            assert_eq!(
                out,
                Outcome::Value(encode_payload(&expected).unwrap().into())
            );
        }
    }

    #[test]
    fn a_chunk_with_a_panic_gives_one_outcome_per_item() {
        let args = encode_payload(&[2i64, -1, 3]).unwrap();
        let Outcome::Items(items) = run(&registry(), "square", CallKind::Chunk, &args) else {
            panic!("expected items");
        };
        assert_eq!(items.len(), 3);
        assert_eq!(value::<i64>(items[0].clone()), 4);
        assert!(matches!(&items[1], Outcome::Panic(p) if p.message == "negative"));
        assert_eq!(value::<i64>(items[2].clone()), 9);
    }
}
