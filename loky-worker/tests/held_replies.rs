//! Replies held back: a worker whose next call has already arrived holds
//! the reply of the call it just ran in its journal, and sends it with the
//! next ones, or once the next call has run for a moment; should the
//! worker die first, the executor finds it in the journal.

mod common;

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::{DEADLINE, Worker, value};
use loky_proto::{
    CallKind, DEFAULT_MAX_FRAME, FrameBuffer, Request, Response, Task, decode_body, encode_frame,
    encode_payload,
};
use loky_worker::diagnostics::{ECHO_I64, SEGFAULT, SLEEP};
use serde::Serialize;

/// The frame of call `id` of `task` on `arg`.
fn call<I: Serialize, O>(id: u64, task: Task<I, O>, arg: &I) -> Vec<u8> {
    let call = Request::Call(loky_proto::Call {
        id,
        task: task.name().into(),
        kind: CallKind::Single,
        args: encode_payload(arg).unwrap().into(),
    });
    let mut frame = Vec::new();
    encode_frame(&call, &mut frame, DEFAULT_MAX_FRAME).unwrap();
    frame
}

#[test]
fn a_held_reply_goes_out_while_the_next_call_runs_long() {
    let (mut worker, _journal) = Worker::with_journal(|_| {});
    worker.hello();
    // One write: the worker reads both calls at once, so the second has
    // arrived when the first is done, and the first's reply is held.
    worker.write_raw(
        &[
            call(1, ECHO_I64, &5),
            call(2, SLEEP, &Duration::from_secs(60)),
        ]
        .concat(),
    );
    assert_eq!(value::<i64>(worker.reply(1)), 5);
}

#[test]
fn replies_held_when_the_worker_dies_are_in_its_journal_once() {
    for _ in 0..20 {
        let (mut worker, journal) = Worker::with_journal(|_| {});
        let calls = [
            call(1, ECHO_I64, &10),
            call(2, ECHO_I64, &20),
            call(3, SEGFAULT, &()),
        ];
        worker.write_raw(&calls.concat());
        let mut output = Vec::new();
        worker.channel().read_to_end(&mut output).unwrap();
        assert_eq!(worker.wait_exit(DEADLINE).signal(), Some(libc::SIGSEGV));
        // Whatever the worker sent before its death, and what it held.
        let held = journal.recover(output.len() as u64);
        let mut frames = FrameBuffer::new(DEFAULT_MAX_FRAME);
        frames.extend(&output);
        frames.extend(&held);
        let mut replies = Vec::new();
        while let Some(body) = frames.next_frame().unwrap() {
            match decode_body::<Response<'_>>(body).unwrap() {
                Response::Hello(_) => {}
                Response::Reply(reply) => {
                    replies.push((reply.id, value::<i64>(reply.outcome.into_owned())));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(frames.pending(), 0, "whole frames only");
        assert_eq!(replies, [(1, 10), (2, 20)]);
    }
}
