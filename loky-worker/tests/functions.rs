//! Functions sent without registration, at the protocol level: this test
//! binary is its own worker program (`init_before_main!`), and runs the
//! functions it sends to itself; the stock worker, another program, refuses
//! them and serves on.

mod common;

use std::os::unix::net::UnixStream;
use std::process::Child;

use common::{DEADLINE, Worker, kill_group, value, worker_command};
use loky_proto::program::{IdKind, ProgramId};
use loky_proto::{
    CallError, CallKind, DEFAULT_MAX_FRAME, FnCall, FnRef, Hello, Outcome, Request, Response,
    decode_body, encode_frame, encode_payload, read_frame,
};
use serde::Serialize;

loky_worker::init_before_main!();

/// A worker running this test binary, and the parent's end of its channel.
struct SelfWorker {
    child: Child,
    channel: UnixStream,
    body: Vec<u8>,
}

impl SelfWorker {
    fn start() -> SelfWorker {
        let (parent, child_end) = UnixStream::pair().unwrap();
        let exe = std::env::current_exe().unwrap();
        let child = worker_command(exe.to_str().unwrap(), &child_end)
            .spawn()
            .expect("start this test binary as a worker");
        drop(child_end);
        parent.set_read_timeout(Some(DEADLINE)).unwrap();
        SelfWorker {
            child,
            channel: parent,
            body: Vec::new(),
        }
    }

    fn recv(&mut self) -> Response<'_> {
        read_frame(&mut self.channel, &mut self.body, DEFAULT_MAX_FRAME).expect("read a frame");
        decode_body(&self.body).expect("decode a response")
    }

    fn hello(&mut self) -> Hello {
        match self.recv() {
            Response::Hello(hello) => hello,
            other => panic!("expected the hello, got {other:?}"),
        }
    }

    fn call(
        &mut self,
        id: u64,
        function: FnRef,
        kind: CallKind,
        arg: &impl Serialize,
    ) -> Outcome<'static> {
        send_fn(&mut self.channel, id, function, kind, arg);
        match self.recv() {
            Response::Reply(reply) if reply.id == id => reply.outcome.into_owned(),
            other => panic!("expected the reply to call {id}, got {other:?}"),
        }
    }
}

impl Drop for SelfWorker {
    fn drop(&mut self) {
        kill_group(self.child.id());
        let _ = self.child.wait();
    }
}

fn send_fn(
    channel: &mut UnixStream,
    id: u64,
    function: FnRef,
    kind: CallKind,
    arg: &impl Serialize,
) {
    let call = Request::CallFn(FnCall {
        id,
        function,
        kind,
        args: encode_payload(arg).unwrap().into(),
    });
    let mut frame = Vec::new();
    encode_frame(&call, &mut frame, DEFAULT_MAX_FRAME).unwrap();
    std::io::Write::write_all(channel, &frame).unwrap();
}

/// The lowest address at which process `pid` maps this test binary.
fn load_address(pid: u32) -> usize {
    let exe = std::fs::canonicalize(std::env::current_exe().unwrap()).unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    maps.lines()
        .filter(|line| line.ends_with(exe.to_str().unwrap()))
        .filter_map(|line| usize::from_str_radix(line.split('-').next()?, 16).ok())
        .min()
        .expect("the binary is mapped")
}

fn repeat((s, n): (String, usize)) -> String {
    s.repeat(n)
}

#[test]
fn a_worker_of_the_same_program_runs_its_functions() {
    let mut worker = SelfWorker::start();
    let hello = worker.hello();
    assert_eq!(&hello.identity, ProgramId::current());
    assert_eq!(hello.identity.kind, IdKind::BuildId);
    assert!(hello.tasks.is_empty(), "init serves no named task");

    let f = FnRef::new(repeat).unwrap();
    let out: String = value(worker.call(1, f, CallKind::Single, &("ab", 3)));
    assert_eq!(out, "ababab");
    // The reference held across address-space layout randomization: the
    // worker has this binary at another address.
    let randomized = std::fs::read_to_string("/proc/sys/kernel/randomize_va_space")
        .is_ok_and(|v| v.trim() != "0");
    if randomized {
        assert_ne!(
            load_address(worker.child.id()),
            load_address(std::process::id())
        );
    }

    let k = 10;
    let g = FnRef::new(|(k, x): (i64, i64)| k * x).unwrap();
    let outs: Vec<i64> = value(worker.call(2, g, CallKind::Chunk, &[(k, 1), (k, 2), (k, 3)]));
    assert_eq!(outs, [10, 20, 30]);

    let p = FnRef::new(|x: u32| -> u32 { panic!("no {x} today") }).unwrap();
    match worker.call(3, p, CallKind::Single, &7u32) {
        Outcome::Panic(panic) => {
            assert_eq!(panic.message, "no 7 today");
            assert!(panic.location.unwrap().contains("functions.rs"));
        }
        other => panic!("expected a panic, got {other:?}"),
    }
    // The panic did not harm the worker.
    let out: String =
        value(worker.call(4, FnRef::new(repeat).unwrap(), CallKind::Single, &("x", 2)));
    assert_eq!(out, "xx");
}

#[test]
fn another_program_refuses_the_function_and_serves_on() {
    let mut worker = Worker::start();
    let hello = worker.hello();
    assert!(hello.identity.is_known());
    assert!(!hello.identity.same_program(ProgramId::current()));

    send_fn(
        worker.channel(),
        1,
        FnRef::new(repeat).unwrap(),
        CallKind::Single,
        &("ab", 3),
    );
    match worker.reply(1) {
        Outcome::Failed(CallError::Function { message }) => {
            assert!(message.contains("another program"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(worker.call(2, loky_worker::diagnostics::ECHO_I64, &5), 5);
}
