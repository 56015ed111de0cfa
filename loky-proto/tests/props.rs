//! Property tests of the wire protocol: every message round-trips through
//! both frame readers; garbage never panics, always ends in a frame or a
//! typed error, and never makes a reader allocate for a length that did not
//! arrive.

use std::alloc::{GlobalAlloc, Layout, System};
use std::borrow::Cow;
use std::cell::Cell;
use std::io::{self, Cursor, Read};

use loky_proto::program::{IdKind, ProgramId};
use loky_proto::{
    Call, CallError, CallKind, DEFAULT_MAX_FRAME, FnCall, FnRef, FrameBuffer, FrameError,
    HEADER_LEN, Hello, Outcome, PanicInfo, Reply, Request, Response, RetireReason, TaskInfo,
    decode_body, encode_frame, read_frame,
};
use proptest::collection::vec;
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// Allocation tracking

/// The system allocator, recording the largest single allocation each
/// thread makes, and how many allocations (reallocations included).
struct Tracking;

thread_local! {
    // Const-initialised and without a destructor: using it never allocates.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

fn record(size: usize) {
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
    let _ = COUNT.try_with(|count| count.set(count.get() + 1));
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees hold; recording touches only a
// thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: forwarded as is; the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is; `ptr` came from `System` through us.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        // SAFETY: forwarded as is; `ptr` came from `System` through us.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// Runs `f` and returns the largest single allocation it made on this
/// thread.
fn largest_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST.set(0);
    let result = f();
    (result, LARGEST.get())
}

/// Runs `f` and returns how many allocations and reallocations it made on
/// this thread.
fn allocations<R>(f: impl FnOnce() -> R) -> (R, usize) {
    COUNT.set(0);
    let result = f();
    (result, COUNT.get())
}

/// What `read_frame` may allocate beyond the bytes it received: its body
/// vector grows by doubling from small probes.
const READ_SLACK: usize = 4 << 10;

/// What `FrameBuffer` may allocate beyond twice the bytes it received: it
/// offers each read 64 KiB, and its vector grows by doubling, so a partial
/// frame can take it to twice that.
const BUFFER_SLACK: usize = 2 * (64 << 10) + (4 << 10);

// ---------------------------------------------------------------------------
// Strategies

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,12}"
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..48)
}

fn call_error() -> impl Strategy<Value = CallError> {
    prop_oneof![
        text().prop_map(|task| CallError::UnknownTask { task }),
        (text(), text(), text()).prop_map(|(task, expected, message)| CallError::DecodeArgs {
            task,
            expected,
            message
        }),
        (text(), text()).prop_map(|(task, message)| CallError::EncodeOutput { task, message }),
        text().prop_map(|message| CallError::Function { message }),
    ]
}

fn panic_info() -> impl Strategy<Value = PanicInfo> {
    (text(), proptest::option::of(text()), text()).prop_map(|(message, location, backtrace)| {
        PanicInfo {
            message,
            location,
            backtrace,
        }
    })
}

fn outcome() -> impl Strategy<Value = Outcome<'static>> {
    let leaf = prop_oneof![
        bytes().prop_map(|b| Outcome::Value(b.into())),
        panic_info().prop_map(Outcome::Panic),
        call_error().prop_map(Outcome::Failed),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| vec(inner, 0..4).prop_map(Outcome::Items))
}

fn kind() -> impl Strategy<Value = CallKind> {
    prop_oneof![Just(CallKind::Single), Just(CallKind::Chunk)]
}

/// References to a few functions of this program.
fn function() -> impl Strategy<Value = FnRef> {
    prop_oneof![
        Just(FnRef::new(|x: i64| x + 1).unwrap()),
        Just(FnRef::new(|s: String| s.len()).unwrap()),
        Just(FnRef::new(|(a, b): (Vec<u8>, bool)| (b, a)).unwrap()),
    ]
}

fn request() -> impl Strategy<Value = Request<'static>> {
    prop_oneof![
        (any::<u64>(), text(), kind(), bytes()).prop_map(|(id, task, kind, args)| {
            Request::Call(Call {
                id,
                task: task.into(),
                kind,
                args: args.into(),
            })
        }),
        (any::<u64>(), function(), kind(), bytes()).prop_map(|(id, function, kind, args)| {
            Request::CallFn(FnCall {
                id,
                function,
                kind,
                args: args.into(),
            })
        }),
    ]
}

fn identity() -> impl Strategy<Value = ProgramId> {
    let kind = prop_oneof![
        Just(IdKind::BuildId),
        Just(IdKind::FileId),
        Just(IdKind::Unknown)
    ];
    (kind, vec(any::<u8>(), 0..32)).prop_map(|(kind, bytes)| ProgramId { kind, bytes })
}

fn task_info() -> impl Strategy<Value = TaskInfo> {
    (text(), text(), text()).prop_map(|(name, input, output)| TaskInfo {
        name,
        input,
        output,
    })
}

fn response() -> impl Strategy<Value = Response<'static>> {
    prop_oneof![
        (
            any::<u32>(),
            any::<u32>(),
            text(),
            identity(),
            vec(task_info(), 0..4)
        )
            .prop_map(|(protocol, pid, program, identity, tasks)| {
                Response::Hello(Hello {
                    protocol,
                    pid,
                    program,
                    identity,
                    tasks,
                })
            }),
        (any::<u64>(), outcome()).prop_map(|(id, outcome)| Response::Reply(Reply { id, outcome })),
        (any::<u64>(), any::<u64>()).prop_map(|(baseline, current)| Response::Retiring(
            RetireReason::MemoryLeak { baseline, current }
        )),
    ]
}

// ---------------------------------------------------------------------------
// Readers

/// A stream that hands out its bytes in the given read sizes (cycling), as
/// a socket may.
struct Chunked {
    data: Cursor<Vec<u8>>,
    sizes: Vec<usize>,
    next: usize,
}

impl Chunked {
    fn new(data: Vec<u8>, sizes: Vec<usize>) -> Self {
        Chunked {
            data: Cursor::new(data),
            sizes,
            next: 0,
        }
    }
}

impl Read for Chunked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.sizes[self.next % self.sizes.len()].max(1);
        self.next += 1;
        let n = size.min(buf.len());
        self.data.read(&mut buf[..n])
    }
}

/// Every frame body `read_frame` yields from `stream`, and the error that
/// ended it.
fn read_all_frames(stream: &[u8], max: usize) -> (Vec<Vec<u8>>, FrameError) {
    let mut reader = Cursor::new(stream);
    let mut bodies = Vec::new();
    let mut body = Vec::new();
    loop {
        match read_frame(&mut reader, &mut body, max) {
            Ok(()) => bodies.push(body.clone()),
            Err(err) => return (bodies, err),
        }
    }
}

/// Every frame body a `FrameBuffer` yields from `stream` fed in reads of
/// `sizes`, and the error that ended it.
fn buffer_all_frames(stream: Vec<u8>, sizes: Vec<usize>, max: usize) -> (Vec<Vec<u8>>, FrameError) {
    let mut reader = Chunked::new(stream, sizes);
    let mut buffer = FrameBuffer::new(max);
    let mut bodies = Vec::new();
    loop {
        loop {
            match buffer.next_frame() {
                Ok(Some(body)) => bodies.push(body.to_vec()),
                Ok(None) => break,
                Err(err) => return (bodies, err),
            }
        }
        if buffer.fill_from(&mut reader).expect("a cursor cannot fail") == 0 {
            return (bodies, buffer.end_of_stream());
        }
    }
}

fn frames_of<T: serde::Serialize>(messages: &[T]) -> Vec<u8> {
    let mut stream = Vec::new();
    for message in messages {
        encode_frame(message, &mut stream, DEFAULT_MAX_FRAME).unwrap();
    }
    stream
}

fn read_sizes() -> impl Strategy<Value = Vec<usize>> {
    vec(1usize..300, 1..8)
}

// ---------------------------------------------------------------------------
// Round trips

proptest! {
    #[test]
    fn requests_round_trip(messages in vec(request(), 1..6), sizes in read_sizes()) {
        let stream = frames_of(&messages);
        for (bodies, end) in [
            read_all_frames(&stream, DEFAULT_MAX_FRAME),
            buffer_all_frames(stream.clone(), sizes, DEFAULT_MAX_FRAME),
        ] {
            prop_assert!(matches!(end, FrameError::Closed), "{end:?}");
            let decoded: Vec<Request<'_>> =
                bodies.iter().map(|body| decode_body(body).unwrap()).collect();
            prop_assert_eq!(&decoded, &messages);
        }
    }

    #[test]
    fn responses_round_trip(messages in vec(response(), 1..6), sizes in read_sizes()) {
        let stream = frames_of(&messages);
        for (bodies, end) in [
            read_all_frames(&stream, DEFAULT_MAX_FRAME),
            buffer_all_frames(stream.clone(), sizes, DEFAULT_MAX_FRAME),
        ] {
            prop_assert!(matches!(end, FrameError::Closed), "{end:?}");
            let decoded: Vec<Response<'_>> =
                bodies.iter().map(|body| decode_body(body).unwrap()).collect();
            prop_assert_eq!(&decoded, &messages);
        }
    }

    // -----------------------------------------------------------------------
    // Garbage

    #[test]
    fn garbage_ends_in_frames_or_a_typed_error(
        stream in vec(any::<u8>(), 0..512),
        sizes in read_sizes(),
        max in 0usize..1024,
    ) {
        for (bodies, end) in [
            read_all_frames(&stream, max),
            buffer_all_frames(stream.clone(), sizes, max),
        ] {
            prop_assert!(!matches!(end, FrameError::Io(_) | FrameError::Encode(_)), "{end:?}");
            for body in &bodies {
                // Either is fine; neither may panic.
                let _ = decode_body::<Request<'_>>(body);
                let _ = decode_body::<Response<'_>>(body);
            }
        }
    }

    #[test]
    fn garbage_bodies_decode_to_a_typed_error(body in vec(any::<u8>(), 0..256)) {
        for result in [
            decode_body::<Request<'_>>(&body).map(drop),
            decode_body::<Response<'_>>(&body).map(drop),
        ] {
            if let Err(err) = result {
                prop_assert!(matches!(err, FrameError::Decode(_) | FrameError::TrailingBytes(_)));
            }
        }
    }

    #[test]
    fn huge_lengths_over_a_small_limit_allocate_nothing_big(
        len in 1025u32..=u32::MAX,
        tail in vec(any::<u8>(), 0..4096),
        sizes in read_sizes(),
    ) {
        const MAX: usize = 1024;
        let mut stream = len.to_le_bytes().to_vec();
        stream.extend_from_slice(&tail);
        let fed = stream.len();
        let ((_, end), largest) = largest_allocation(|| read_all_frames(&stream, MAX));
        let too_large = matches!(end, FrameError::TooLarge { len: l, max: MAX } if l == len as usize);
        prop_assert!(too_large, "{:?}", end);
        prop_assert!(largest <= MAX.max(fed) + READ_SLACK, "read_frame allocated {largest}");
        let stream2 = stream.clone();
        let ((_, end), largest) = largest_allocation(|| buffer_all_frames(stream2, sizes, MAX));
        prop_assert!(matches!(end, FrameError::TooLarge { .. }), "{end:?}");
        prop_assert!(largest <= MAX.max(2 * fed) + BUFFER_SLACK, "FrameBuffer allocated {largest}");
    }

    #[test]
    fn huge_lengths_under_the_limit_allocate_only_what_arrives(
        len in (1u32 << 20)..=u32::MAX,
        tail in vec(any::<u8>(), 0..4096),
        sizes in read_sizes(),
    ) {
        let mut stream = len.to_le_bytes().to_vec();
        stream.extend_from_slice(&tail);
        let fed = stream.len();
        let max = len as usize;
        let ((_, end), largest) = largest_allocation(|| read_all_frames(&stream, max));
        prop_assert!(matches!(end, FrameError::Truncated { .. }), "{end:?}");
        prop_assert!(largest <= 2 * fed + READ_SLACK, "read_frame allocated {largest}");
        let stream2 = stream.clone();
        let ((_, end), largest) = largest_allocation(|| buffer_all_frames(stream2, sizes, max));
        prop_assert!(matches!(end, FrameError::Truncated { .. }), "{end:?}");
        prop_assert!(largest <= 2 * fed + BUFFER_SLACK, "FrameBuffer allocated {largest}");
    }

    #[test]
    fn truncated_frames_are_rejected(message in response(), cut in any::<prop::sample::Index>()) {
        let stream = frames_of(&[message]);
        let cut = 1 + cut.index(stream.len() - 1);
        let stream = &stream[..cut];
        let (bodies, end) = read_all_frames(stream, DEFAULT_MAX_FRAME);
        prop_assert!(bodies.is_empty());
        prop_assert!(matches!(end, FrameError::Truncated { .. }), "{end:?}");
        let (bodies, end) = buffer_all_frames(stream.to_vec(), vec![7], DEFAULT_MAX_FRAME);
        prop_assert!(bodies.is_empty());
        prop_assert!(matches!(end, FrameError::Truncated { .. }), "{end:?}");
    }

    #[test]
    fn trailing_bytes_are_rejected(message in request(), extra in vec(any::<u8>(), 1..16)) {
        let stream = frames_of(&[message]);
        let mut body = stream[HEADER_LEN..].to_vec();
        body.extend_from_slice(&extra);
        let end = decode_body::<Request<'_>>(&body).unwrap_err();
        prop_assert!(matches!(end, FrameError::TrailingBytes(n) if n >= 1 && n <= extra.len()), "{end:?}");
    }
}

// ---------------------------------------------------------------------------
// Distinct errors, deterministically

#[test]
fn oversized_frames_are_rejected_on_both_sides() {
    let reply = Response::Reply(Reply {
        id: 1,
        outcome: Outcome::Value(vec![0; 100].into()),
    });
    let mut out = vec![9];
    let err = encode_frame(&reply, &mut out, 64).unwrap_err();
    assert!(
        matches!(err, FrameError::TooLarge { max: 64, .. }),
        "{err:?}"
    );
    assert_eq!(out, [9], "a refused frame leaves the buffer as it was");

    let stream = frames_of(&[reply]);
    let (_, end) = read_all_frames(&stream, 64);
    assert!(
        matches!(end, FrameError::TooLarge { max: 64, .. }),
        "{end:?}"
    );
    let (_, end) = buffer_all_frames(stream, vec![5], 64);
    assert!(
        matches!(end, FrameError::TooLarge { max: 64, .. }),
        "{end:?}"
    );
}

#[test]
fn a_header_cut_short_is_truncated_not_closed() {
    let (_, end) = read_all_frames(&[1, 0], DEFAULT_MAX_FRAME);
    assert!(
        matches!(
            end,
            FrameError::Truncated {
                expected: 4,
                got: 2
            }
        ),
        "{end:?}"
    );
    let (_, end) = buffer_all_frames(vec![1, 0], vec![1], DEFAULT_MAX_FRAME);
    assert!(
        matches!(
            end,
            FrameError::Truncated {
                expected: 4,
                got: 2
            }
        ),
        "{end:?}"
    );
}

// ---------------------------------------------------------------------------
// Zero-copy decoding

#[test]
fn decoded_payloads_borrow_from_the_frame() {
    let call = Request::Call(Call {
        id: 3,
        task: "echo".into(),
        kind: CallKind::Single,
        args: vec![1, 2, 3].into(),
    });
    let stream = frames_of(&[call]);
    let Request::Call(call) = decode_body(&stream[HEADER_LEN..]).unwrap() else {
        panic!("expected a call");
    };
    assert!(matches!(call.task, Cow::Borrowed("echo")));
    assert!(matches!(call.args, Cow::Borrowed([1, 2, 3])));

    let reply = Response::Reply(Reply {
        id: 4,
        outcome: Outcome::Items(vec![Outcome::Value(vec![7; 40].into())]),
    });
    let stream = frames_of(&[reply]);
    let Response::Reply(reply) = decode_body(&stream[HEADER_LEN..]).unwrap() else {
        panic!("expected a reply");
    };
    let Outcome::Items(items) = reply.outcome else {
        panic!("expected items");
    };
    assert!(matches!(&items[0], Outcome::Value(Cow::Borrowed(b)) if b.len() == 40));
}

#[test]
fn decoding_a_body_that_announces_a_huge_array_allocates_at_most_serde_s_cap() {
    // A Hello whose task table announces u32::MAX entries in a 60-byte body.
    let hello = Response::Hello(Hello {
        protocol: 1,
        pid: 2,
        program: "p".into(),
        identity: ProgramId::current().clone(),
        tasks: Vec::new(),
    });
    let stream = frames_of(&[hello]);
    let mut body = stream[HEADER_LEN..].to_vec();
    // An empty array is one byte, 0x90, at the very end.
    assert_eq!(body.pop(), Some(0x90));
    body.extend_from_slice(&[0xdd, 0xff, 0xff, 0xff, 0xff]);
    let (result, largest) = largest_allocation(|| decode_body::<Response<'_>>(&body).map(drop));
    assert!(matches!(result, Err(FrameError::Decode(_))), "{result:?}");
    // serde caps the capacity it preallocates from a length hint at 1 MiB.
    assert!(
        largest <= (1 << 20) + READ_SLACK,
        "decode_body allocated {largest}"
    );
}

/// `split_array` cuts `items`' encoding into the encodings of its items.
fn assert_split_yields_each_item(items: &[(i64, String)]) {
    let bytes = loky_proto::encode_payload(&items).unwrap();
    let parts = loky_proto::split_array(&bytes).unwrap();
    assert_eq!(parts.len(), items.len());
    for (part, item) in parts.iter().zip(items) {
        let back: (i64, String) = loky_proto::decode_payload(part).unwrap();
        assert_eq!(&back, item);
    }
    let cut = &bytes[..bytes.len().saturating_sub(1)];
    assert!(loky_proto::split_array(cut).is_none() || items.is_empty());
}

proptest! {
    // Each case decodes up to 300 items one by one; 64 cases cover both
    // headers many times over.
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// `split_array` cuts an encoded sequence into the encodings of its
    /// items, whatever their sizes (fixarray and array16 headers).
    #[test]
    fn split_array_yields_each_item_of_an_encoded_sequence(
        items in proptest::collection::vec(any::<(i64, String)>(), 0..300usize),
    ) {
        assert_split_yields_each_item(&items);
    }
}

/// The array32 header, past 65 535 items, once: a case per property run
/// would decode millions of items for nothing the smaller cases miss.
#[test]
fn split_array_reads_an_array32_header() {
    let items: Vec<(i64, String)> = (0..70_000).map(|i| (i, format!("{i}"))).collect();
    assert_split_yields_each_item(&items);
}

#[test]
fn a_call_frame_is_allocated_once_in_a_fresh_frame_buffer() {
    use loky_proto::shm::FrameBuf;
    let function = FnRef::new(|x: i64| x + 1).unwrap();
    let args = |out: &mut FrameBuf| loky_proto::encode_payload_into(&41i64, out);
    // A task's call, whose envelope fits a first frame's room, and a
    // function's, whose envelope (with the program's identity) does not.
    let (task, task_allocations) = allocations(|| {
        let mut out = FrameBuf::local(usize::MAX);
        let sent = loky_proto::encode_call_frame(
            1,
            "a_task",
            CallKind::Single,
            &mut out,
            DEFAULT_MAX_FRAME,
            args,
        );
        (sent, out)
    });
    task.0.unwrap().unwrap();
    assert_eq!(task_allocations, 1, "a task's call frame");
    let (call, call_allocations) = allocations(|| {
        let mut out = FrameBuf::local(usize::MAX);
        let sent = loky_proto::encode_fn_call_frame(
            2,
            &function,
            CallKind::Single,
            &mut out,
            DEFAULT_MAX_FRAME,
            args,
        );
        (sent, out)
    });
    call.0.unwrap().unwrap();
    assert!(
        call.1.len() > 64,
        "the function's frame is {} bytes",
        call.1.len()
    );
    assert_eq!(call_allocations, 1, "a function's call frame");
}

#[test]
fn a_small_frame_is_taken_in_place_and_its_buffer_serves_again() {
    use loky_proto::shm::{EncodedFrame, FrameBuf};
    let expected = |args: &[u8]| {
        let mut plain = Vec::new();
        encode_call(&mut plain, args);
        plain
    };
    let mut spare = Vec::new();
    for round in 0..3 {
        let ((frame, back), made) = allocations(|| {
            let mut out = FrameBuf::local_in(usize::MAX, spare);
            encode_call(&mut out, &[round; 4]);
            let frame = out.take_frame();
            (frame, out.into_spare())
        });
        let EncodedFrame::Bytes(bytes) = &frame else {
            panic!("a plain frame");
        };
        assert_eq!(&bytes[..], &expected(&[round; 4])[..]);
        // The first round allocates the buffer; the others reuse it.
        assert_eq!(made, usize::from(round == 0), "round {round}");
        assert!(back.capacity() > 0 && back.is_empty());
        spare = back;
    }
    // A large frame moves out whole, with the buffer's memory.
    let mut out = FrameBuf::local_in(usize::MAX, spare);
    encode_call(&mut out, &[9; 1000]);
    let frame = out.take_frame();
    assert_eq!(frame.len(), expected(&[9; 1000]).len());
    assert_eq!(out.into_spare().capacity(), 0);
}

/// Appends a call frame of `a_task` whose arguments are the bytes `args`.
fn encode_call<O: loky_proto::FrameSink>(out: &mut O, args: &[u8]) {
    let args = |o: &mut O| loky_proto::encode_payload_into(&serde_bytes::Bytes::new(args), o);
    loky_proto::encode_call_frame(7, "a_task", CallKind::Single, out, DEFAULT_MAX_FRAME, args)
        .unwrap()
        .unwrap();
}
