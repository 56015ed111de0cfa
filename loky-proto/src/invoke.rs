//! Running one call of a typed function on encoded arguments: the code a
//! worker runs for named tasks and for functions alike.
//!
//! It lives in this crate, not in the worker runtime, because the
//! trampoline of a function sent without registration is instantiated by
//! the executor's generic `submit_fn` (which must not depend on the worker
//! runtime) and runs in the worker. The worker lends its panic capture and
//! its progress reports through [`Runtime`].

use std::any::type_name;

use crate::frame::FrameSink;
use crate::message::{CallError, CallKind, Outcome, PanicInfo};
use crate::task::Payload;

/// What the worker's runtime lends to the code that runs a call.
pub trait Runtime {
    /// Runs `f`, catching its panic: the panic is described for the caller
    /// and the worker lives on.
    fn catch(&self, f: &mut dyn FnMut()) -> Result<(), PanicInfo>;

    /// How many items of the running chunk must be done before
    /// [`after_item`](Runtime::after_item) is called next; never, by
    /// default.
    fn next_check(&self) -> usize {
        usize::MAX
    }

    /// `done` items of the running chunk are done; `outcome(i)` is item
    /// `i`'s outcome, for a progress report. Returns when to call again.
    fn after_item(&self, done: usize, outcome: &dyn Fn(usize) -> Outcome<'static>) -> usize {
        let _ = (done, outcome);
        usize::MAX
    }
}

/// Runs `f` under `unwind`, giving back its value or its panic.
fn caught<R>(unwind: &dyn Runtime, f: impl FnOnce() -> R) -> Result<R, PanicInfo> {
    let mut f = Some(f);
    let mut value = None;
    unwind.catch(&mut || {
        if let Some(f) = f.take() {
            value = Some(f());
        }
    })?;
    Ok(value.expect("`Runtime::catch` ran the function or gave its panic"))
}

/// Runs `f` on a call's encoded argument (`CallKind::Single`) or sequence
/// of arguments (`CallKind::Chunk`), appending the encoded output (or
/// sequence of outputs) to `out`. A call that fails gives its outcome
/// instead and may leave partial bytes in `out`: one outcome per item for a
/// chunk in which some item failed. Decoding, the function and encoding
/// all run under `unwind` (a `Deserialize` or `Serialize` impl may panic
/// too); the function itself runs outside the frames (see
/// [`outside_frames`](crate::outside_frames)). `task` names the function
/// in errors.
///
/// Only decoding, the call and encoding are compiled for each function:
/// the rest (failures, panics, progress) is shared by all of them, so that
/// a program registering many tasks does not carry a copy of it for each.
pub fn invoke<I, O, F, S>(
    f: &F,
    task: &str,
    kind: CallKind,
    args: &[u8],
    out: &mut S,
    unwind: &dyn Runtime,
) -> Result<(), Outcome<'static>>
where
    I: Payload,
    O: Payload,
    F: Fn(I) -> O,
    S: FrameSink + ?Sized,
{
    match kind {
        CallKind::Single => {
            let input = decode::<I>(task, args, unwind)?;
            caught(unwind, || apply(f, task, input, out)).unwrap_or_else(|p| Err(Outcome::Panic(p)))
        }
        CallKind::Chunk => {
            let (inputs, undecoded) = decode_chunk::<I>(task, args, unwind)?;
            let len = inputs.len() + undecoded.len();
            let mut inputs = inputs.into_iter();
            // The loop over the items is compiled for each function, so that
            // it calls the function and the encoder directly; the rest of a
            // chunk's bookkeeping is not.
            run_chunk(len, undecoded, out, unwind, &mut |out, at, until| {
                while at.done < until {
                    at.start = out.len();
                    let input = inputs.next().expect("an input for every item");
                    apply(f, task, input, out)?;
                    at.ends.push(out.len() - at.first);
                    at.done += 1;
                }
                Ok(())
            })
        }
    }
}

/// The outcomes of the items of a chunk that failed, by position.
type Failures = Vec<(usize, Outcome<'static>)>;

/// Runs the function on `input` and encodes its output into `out`,
/// without catching a panic: the caller does.
fn apply<I, O, F, S>(f: &F, task: &str, input: I, out: &mut S) -> Result<(), Outcome<'static>>
where
    O: Payload,
    F: Fn(I) -> O,
    S: FrameSink + ?Sized,
{
    // The function's own code runs outside the frames: what it sends to
    // an executor of its own attaches nothing to this reply.
    let output = crate::outside_frames(|| f(input));
    crate::encode_payload_into(&output, out).map_err(|err| encode_failed(task, &err))
}

fn decode<T: Payload>(
    task: &str,
    args: &[u8],
    unwind: &dyn Runtime,
) -> Result<T, Outcome<'static>> {
    match caught(unwind, || crate::decode_payload::<T>(args)) {
        Ok(Ok(input)) => Ok(input),
        Ok(Err(err)) => Err(decode_failed(task, type_name::<T>(), &err)),
        Err(panic) => Err(Outcome::Panic(panic)),
    }
}

#[cold]
#[inline(never)]
fn encode_failed(task: &str, err: &rmp_serde::encode::Error) -> Outcome<'static> {
    Outcome::Failed(CallError::EncodeOutput {
        task: task.to_owned(),
        message: err.to_string(),
    })
}

#[cold]
#[inline(never)]
fn decode_failed(task: &str, expected: &str, err: &rmp_serde::decode::Error) -> Outcome<'static> {
    Outcome::Failed(CallError::DecodeArgs {
        task: task.to_owned(),
        expected: expected.to_owned(),
        message: err.to_string(),
    })
}

/// The inputs of a chunk that decode, and the outcomes of those that do
/// not, by position; the chunk's outcome if it is not an array at all.
fn decode_chunk<I: Payload>(
    task: &str,
    args: &[u8],
    unwind: &dyn Runtime,
) -> Result<(Vec<I>, Failures), Outcome<'static>> {
    match decode::<Vec<I>>(task, args, unwind) {
        Ok(inputs) => Ok((inputs, Vec::new())),
        Err(outcome) => {
            let mut inputs = Vec::new();
            let undecoded = decode_each(args, outcome, &mut |item| {
                decode::<I>(task, item, unwind).map(|input| inputs.push(input))
            })?;
            Ok((inputs, undecoded))
        }
    }
}

/// Some argument of a chunk does not decode: decodes them one by one with
/// `decode`, so that it fails alone. Gives the outcomes of those that do
/// not decode, by position, or `outcome` if `args` is not an array.
#[cold]
#[inline(never)]
fn decode_each(
    args: &[u8],
    outcome: Outcome<'static>,
    decode: &mut dyn FnMut(&[u8]) -> Result<(), Outcome<'static>>,
) -> Result<Failures, Outcome<'static>> {
    let items = crate::split_array(args).ok_or(outcome)?;
    let mut undecoded = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        if let Err(outcome) = decode(item) {
            undecoded.push((i, outcome));
        }
    }
    Ok(undecoded)
}

/// How far a chunk has run: what the loop over its items updates.
struct At {
    /// Items done.
    done: usize,
    /// Where the running item's output starts in `out`.
    start: usize,
    /// Where the chunk's output starts in `out`.
    first: usize,
    /// Where each item's output ends, from `first`.
    ends: Vec<usize>,
}

/// Runs the items of a chunk in order from `at.done` up to `until`,
/// encoding their outputs into `out`; gives the running item's failure.
type Items<'a, S> = dyn FnMut(&mut S, &mut At, usize) -> Result<(), Outcome<'static>> + 'a;

/// Runs the `len` items of a chunk with `items`; `undecoded` are the
/// outcomes of those that did not decode, by position.
fn run_chunk<S: FrameSink + ?Sized>(
    len: usize,
    undecoded: Failures,
    out: &mut S,
    unwind: &dyn Runtime,
    items: &mut Items<'_, S>,
) -> Result<(), Outcome<'static>> {
    let mut undecoded = undecoded.into_iter().peekable();
    // Outputs are encoded straight into `out`: a MessagePack array is its
    // length followed by its elements, so this is exactly
    // `encode_payload(&Vec<O>)`, with no allocation per item.
    let first = out.len();
    crate::encode_array_header(len, out);
    let header = out.len() - first;
    let mut at = At {
        done: 0,
        start: out.len(),
        first,
        ends: Vec::with_capacity(len),
    };
    let mut failures: Failures = Vec::new();
    // The runtime reports the items done while a chunk runs long; the items
    // run in stretches up to its next check, and nothing is called in
    // between.
    let mut next_check = unwind.next_check();
    while at.done < len {
        at.start = out.len();
        let failed = match undecoded.next_if(|(i, _)| *i == at.done) {
            Some((_, failure)) => Some(failure),
            None => {
                // At least one item: a runtime that asks for its next check
                // too early still sees the chunk go on.
                let until = undecoded
                    .peek()
                    .map_or(len, |(i, _)| *i)
                    .min(next_check)
                    .max(at.done + 1);
                // The items run under one catch, not one each: a panic
                // fails the item it came from, and the loop goes on with
                // the next one under a new catch.
                match caught(unwind, || items(out, &mut at, until)) {
                    Ok(Ok(())) => None,
                    Ok(Err(failure)) => Some(failure),
                    Err(panic) => Some(Outcome::Panic(panic)),
                }
            }
        };
        if let Some(failure) = failed {
            out.truncate(at.start);
            failures.push((at.done, failure));
            at.ends.push(out.len() - first);
            at.done += 1;
        }
        if at.done < next_check {
            continue;
        }
        let joined = out.bytes_at(first..out.len());
        let ends = &at.ends;
        next_check = unwind.after_item(at.done, &|j| match failures
            .binary_search_by_key(&j, |(i, _)| *i)
        {
            Ok(i) => failures[i].1.clone(),
            Err(_) => {
                let from = if j == 0 { header } else { ends[j - 1] };
                Outcome::Value(joined[from..ends[j]].to_vec().into())
            }
        });
    }
    if failures.is_empty() {
        return Ok(());
    }
    Err(split_items(
        out.bytes_at(first..out.len()),
        &at.ends,
        failures,
    ))
}

/// One outcome per item of a chunk in which some item failed: the encoded
/// outputs of the others are cut out of `joined` at `ends`.
fn split_items(joined: &[u8], ends: &[usize], failures: Failures) -> Outcome<'static> {
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
pub(crate) mod tests {
    use std::panic::{AssertUnwindSafe, catch_unwind};

    use super::*;
    use crate::{decode_payload, encode_payload};

    /// Panic capture without the worker's hook: the payload's message.
    pub(crate) struct CatchUnwind;

    impl Runtime for CatchUnwind {
        fn catch(&self, f: &mut dyn FnMut()) -> Result<(), PanicInfo> {
            catch_unwind(AssertUnwindSafe(f)).map_err(|payload| PanicInfo {
                message: payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_default(),
                location: None,
                backtrace: String::new(),
            })
        }
    }

    fn square(x: i64) -> i64 {
        assert!(x >= 0, "negative");
        x * x
    }

    /// The outcome of a call, a value as the reply would carry it.
    fn run(kind: CallKind, args: &[u8]) -> Outcome<'static> {
        let mut out = vec![0xff];
        match invoke(&square, "square", kind, args, &mut out, &CatchUnwind) {
            Ok(()) => Outcome::Value(out[1..].to_vec().into()),
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
    fn a_single_call_runs_the_function() {
        let args = encode_payload(&7i64).unwrap();
        assert_eq!(value::<i64>(run(CallKind::Single, &args)), 49);
    }

    #[test]
    fn bad_arguments_fail_with_the_expected_type() {
        let args = encode_payload("seven").unwrap();
        match run(CallKind::Single, &args) {
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
            let expected: Vec<i64> = inputs.iter().map(|x| x * x).collect();
            assert_eq!(
                run(CallKind::Chunk, &args),
                Outcome::Value(encode_payload(&expected).unwrap().into())
            );
        }
    }

    #[test]
    fn a_chunk_with_a_panic_gives_one_outcome_per_item() {
        let args = encode_payload(&[2i64, -1, 3]).unwrap();
        let Outcome::Items(items) = run(CallKind::Chunk, &args) else {
            panic!("expected items");
        };
        assert_eq!(items.len(), 3);
        assert_eq!(value::<i64>(items[0].clone()), 4);
        assert!(matches!(&items[1], Outcome::Panic(p) if p.message == "negative"));
        assert_eq!(value::<i64>(items[2].clone()), 9);
    }

    #[test]
    fn panics_at_the_ends_and_in_a_row_each_fail_their_item_alone() {
        let args = encode_payload(&[-1i64, -2, 5, 6, -3]).unwrap();
        let Outcome::Items(items) = run(CallKind::Chunk, &args) else {
            panic!("expected items");
        };
        assert_eq!(items.len(), 5);
        for at in [0, 1, 4] {
            assert!(
                matches!(&items[at], Outcome::Panic(p) if p.message == "negative"),
                "item {at}: {:?}",
                items[at]
            );
        }
        assert_eq!(value::<i64>(items[2].clone()), 25);
        assert_eq!(value::<i64>(items[3].clone()), 36);
    }

    /// A runtime asking for a progress check every `every` items, which
    /// records the outcomes it is shown.
    struct Checks {
        every: usize,
        seen: std::sync::Mutex<Vec<(usize, Vec<Outcome<'static>>)>>,
    }

    impl Runtime for Checks {
        fn catch(&self, f: &mut dyn FnMut()) -> Result<(), PanicInfo> {
            CatchUnwind.catch(f)
        }

        fn next_check(&self) -> usize {
            self.every
        }

        fn after_item(&self, done: usize, outcome: &dyn Fn(usize) -> Outcome<'static>) -> usize {
            let outcomes = (0..done).map(outcome).collect();
            self.seen.lock().unwrap().push((done, outcomes));
            done + self.every
        }
    }

    /// Runs `square` on a chunk of `inputs` under `runtime`: its result and
    /// what it wrote.
    fn chunk_with(
        runtime: &dyn Runtime,
        inputs: &[i64],
    ) -> (Result<(), Outcome<'static>>, Vec<u8>) {
        let args = encode_payload(inputs).unwrap();
        let mut out = Vec::new();
        let result = invoke(&square, "square", CallKind::Chunk, &args, &mut out, runtime);
        (result, out)
    }

    #[test]
    fn progress_checks_come_after_the_items_asked_for_panics_included() {
        let runtime = Checks {
            every: 2,
            seen: Default::default(),
        };
        let (result, _) = chunk_with(&runtime, &[1, -1, -2, 3, 4]);
        assert!(matches!(result, Err(Outcome::Items(items)) if items.len() == 5));
        let seen = runtime.seen.into_inner().unwrap();
        let counts: Vec<usize> = seen.iter().map(|(done, _)| *done).collect();
        assert_eq!(counts, [2, 4]);
        let (_, at_four) = &seen[1];
        assert_eq!(value::<i64>(at_four[0].clone()), 1);
        assert!(matches!(&at_four[1], Outcome::Panic(_)));
        assert!(matches!(&at_four[2], Outcome::Panic(_)));
        assert_eq!(value::<i64>(at_four[3].clone()), 9);
    }

    #[test]
    fn a_runtime_asking_for_checks_too_early_sees_one_per_item() {
        let runtime = Checks {
            every: 0,
            seen: Default::default(),
        };
        let (result, out) = chunk_with(&runtime, &[1, 2, 3]);
        assert_eq!(result, Ok(()));
        assert_eq!(decode_payload::<Vec<i64>>(&out).unwrap(), [1, 4, 9]);
        let seen = runtime.seen.into_inner().unwrap();
        let counts: Vec<usize> = seen.iter().map(|(done, _)| *done).collect();
        assert_eq!(counts, [1, 2, 3]);
    }

    #[test]
    fn a_chunk_with_an_undecodable_item_fails_that_item_alone() {
        let mut args = Vec::new();
        crate::encode_array_header(3, &mut args);
        for item in [
            encode_payload(&2i64),
            encode_payload("x"),
            encode_payload(&4i64),
        ] {
            args.extend(item.unwrap());
        }
        let Outcome::Items(items) = run(CallKind::Chunk, &args) else {
            panic!("expected items");
        };
        assert_eq!(value::<i64>(items[0].clone()), 4);
        assert!(matches!(
            &items[1],
            Outcome::Failed(CallError::DecodeArgs { .. })
        ));
        assert_eq!(value::<i64>(items[2].clone()), 16);
    }
}
