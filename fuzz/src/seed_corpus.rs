//! Writes the seed inputs of both fuzz targets into `corpus/<target>/`
//! (run by `cargo xtask fuzz --seed`): well-formed streams of every kind of
//! message, which the fuzzer then mutates.

use std::borrow::Cow;
use std::path::Path;

use loky_proto::program::ProgramId;
use loky_proto::{
    Call, CallError, CallKind, DEFAULT_MAX_FRAME, FnCall, FnRef, Hello, Outcome, PanicInfo, Reply,
    Request, Response, RetireReason, TaskInfo, encode_frame, encode_payload,
};
use serde_bytes::ByteBuf;

fn frame<T: serde::Serialize>(message: &T) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(message, &mut out, DEFAULT_MAX_FRAME).expect("a seed encodes");
    out
}

fn call(id: u64, task: &str, kind: CallKind, args: Vec<u8>) -> Vec<u8> {
    frame(&Request::Call(Call {
        id,
        task: task.into(),
        kind,
        args: args.into(),
    }))
}

fn payload<T: serde::Serialize + ?Sized>(value: &T) -> Vec<u8> {
    encode_payload(value).expect("a seed payload encodes")
}

fn requests() -> Vec<Vec<u8>> {
    let single = CallKind::Single;
    let chunk = CallKind::Chunk;
    vec![
        call(1, "i64", single, payload(&-7i64)),
        call(2, "string", single, payload("seven")),
        call(3, "bytes", single, payload(&ByteBuf::from(vec![1, 2, 3]))),
        call(4, "vec", single, payload(&vec![Some(1u32), None])),
        call(5, "tuple", single, payload(&("ab", 2u8, 1.5f64))),
        call(
            6,
            "map",
            single,
            payload(
                &[("a", 1), ("b", 2)]
                    .into_iter()
                    .collect::<std::collections::BTreeMap<_, _>>(),
            ),
        ),
        call(7, "any", single, payload(&(1, "x", [true, false]))),
        call(8, "i64", chunk, payload(&[1i64, 2, 3])),
        // A chunk with one item that does not decode: items one by one.
        call(9, "string", chunk, payload(&("a", 2, "c"))),
        call(10, "no_such_task", single, payload(&())),
        call(11, "i64", single, payload("not a number")),
        // A function: the worker decodes it and refuses it (another build).
        frame(&Request::CallFn(FnCall {
            id: 12,
            function: FnRef::new(|x: i64| x + 1).expect("a function of this program"),
            kind: single,
            args: payload(&1i64).into(),
        })),
    ]
}

fn responses() -> Vec<Vec<u8>> {
    let hello = Response::Hello(Hello {
        protocol: loky_proto::PROTOCOL_VERSION,
        pid: 42,
        program: "/bin/worker".into(),
        identity: ProgramId::current().clone(),
        tasks: vec![TaskInfo {
            name: "square".into(),
            input: "i64".into(),
            output: "i64".into(),
        }],
    });
    let reply = |id, outcome| frame(&Response::Reply(Reply { id, outcome }));
    let value = |bytes: Vec<u8>| Outcome::Value(Cow::Owned(bytes));
    vec![
        frame(&hello),
        reply(1, value(payload(&49i64))),
        reply(2, value(payload(&[1u64, 4, 9]))),
        reply(
            3,
            Outcome::Items(vec![
                value(payload(&1u64)),
                Outcome::Panic(PanicInfo {
                    message: "boom".into(),
                    location: Some("src/main.rs:1:1".into()),
                    backtrace: "0: main".into(),
                }),
                Outcome::Failed(CallError::DecodeArgs {
                    task: "t".into(),
                    expected: "i64".into(),
                    message: "m".into(),
                }),
            ]),
        ),
        reply(
            4,
            Outcome::Failed(CallError::UnknownTask { task: "t".into() }),
        ),
        reply(
            5,
            Outcome::Failed(CallError::EncodeOutput {
                task: "t".into(),
                message: "m".into(),
            }),
        ),
        reply(6, value(payload(&vec![Some((1u8, "a"))]))),
        frame(&Response::Retiring(RetireReason::MemoryLeak {
            baseline: 1,
            current: 2,
        })),
    ]
}

/// Writes each stream, whole and behind two control bytes (small maximum
/// frame, short chunks), and all of them in one stream.
fn write_seeds(dir: &Path, streams: &[Vec<u8>]) {
    std::fs::create_dir_all(dir).expect("cannot create the corpus directory");
    let all: Vec<u8> = streams.concat();
    for (i, stream) in streams.iter().chain(std::iter::once(&all)).enumerate() {
        for (j, control) in [vec![1u8], vec![6u8, 0, 6, 200]].iter().enumerate() {
            let mut input = control.clone();
            input.extend_from_slice(stream);
            std::fs::write(dir.join(format!("seed-{i:02}-{j}")), input)
                .expect("cannot write a seed");
        }
    }
}

fn main() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    write_seeds(&corpus.join("worker_reads_requests"), &requests());
    write_seeds(&corpus.join("parent_reads_responses"), &responses());
    println!("seeds written to {}", corpus.display());
}
