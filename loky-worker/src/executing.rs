//! The executing thread, which runs calls one at a time, in order, and the
//! watcher thread, which ends the worker as soon as its channel hangs up
//! (the executor closed it or died), even while a task runs, and sends the
//! replies the executing thread held back once a task ran past
//! [`HOLD_AT_MOST`](crate::outbox::HOLD_AT_MOST) after them.
//!
//! The watcher also replaces an executing thread that is lost. A task whose
//! panic message cannot be formatted (its `Display` panics) makes std abort
//! the process from inside its panic machinery, before any hook runs. The
//! worker's SIGABRT handler recognises that case (the executing thread, in a
//! task, panicking, our hook not reached), parks the thread for good inside
//! the handler, so the abort never completes, and wakes the watcher, which
//! starts a new executing thread. That one answers the lost call with a
//! placeholder panic and serves on with the same reader of calls (which may
//! hold calls already received), a new writer on the same outbox (every
//! earlier reply was sent or held back before the lost task started) and a
//! new leak check.

use std::cell::UnsafeCell;
use std::os::unix::net::UnixStream;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, Scope};
use std::time::Instant;

use loky_proto::shm::JournalWriter;
use loky_proto::{Outcome, Reply, Response, exit_code};

use crate::channel::{CallReader, ResponseWriter, fatal};
use crate::memory::LeakCheck;
use crate::outbox::Outbox;
use crate::{Registry, call, os, panic, progress};

/// Stack of a replacement executing thread: what the main thread usually
/// gets, as tasks may rely on it.
const EXECUTING_STACK: usize = 8 << 20;

/// The executing side of a worker, shared with the thread that may replace
/// the executing thread.
pub(crate) struct Executing<'a> {
    registry: &'a Registry,
    /// Used by one executing thread at a time: the first one, then each
    /// replacement once the thread before it is parked for good.
    calls: UnsafeCell<CallReader>,
    /// The writer of the first executing thread, taken when it starts.
    first_out: Mutex<Option<ResponseWriter>>,
    /// The channel, which the watcher watches.
    stream: UnixStream,
    /// Where every writer writes, and its settings, for a replacement's
    /// writer.
    outbox: Arc<Outbox>,
    shm_threshold: Option<usize>,
    max_frame: usize,
    /// The call whose task runs now, if any.
    running: Mutex<Option<u64>>,
}

// SAFETY: `calls` is the only field that is not Sync. One thread at a time
// uses it: the first executing thread, then a replacement, which the
// watcher starts only once the thread before it parked itself for good
// inside the SIGABRT handler (it never runs again) and the handler's
// release store of the rescue flag was acquired by the watcher (see
// `os::wait_for_hangup_or`), so every access of the parked thread happens
// before the replacement's.
unsafe impl Sync for Executing<'_> {}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<'a> Executing<'a> {
    pub(crate) fn new(
        registry: &'a Registry,
        calls: CallReader,
        stream: UnixStream,
        journal: Option<JournalWriter>,
        shm_threshold: Option<usize>,
        max_frame: usize,
    ) -> Self {
        let outbox = Arc::new(Outbox::new(writer_stream(&stream), journal));
        let out = ResponseWriter::new(outbox.clone(), shm_threshold, max_frame);
        Executing {
            registry,
            calls: UnsafeCell::new(calls),
            first_out: Mutex::new(Some(out)),
            stream,
            outbox,
            shm_threshold,
            max_frame,
            running: Mutex::new(None),
        }
    }

    /// Sends the worker's first message.
    pub(crate) fn say_hello(&self, hello: &Response<'_>) {
        let mut first = lock(&self.first_out);
        let out = first
            .as_mut()
            .expect("the executing thread has not started");
        out.push(hello);
        out.flush();
    }

    /// Serves calls on this thread, with a watcher on the channel, until
    /// the channel ends the worker.
    pub(crate) fn serve(&self) -> ! {
        let rescue = os::RescuePipe::install().unwrap_or_else(|err| {
            fatal(
                exit_code::INTERNAL_ERROR,
                &format!("cannot set up the executing thread's rescue: {err}"),
            )
        });
        thread::scope(|scope| {
            let watcher = thread::Builder::new()
                .name("loky-worker-watch".into())
                .spawn_scoped(scope, || self.watch(scope, &rescue));
            if let Err(err) = watcher {
                fatal(
                    exit_code::INTERNAL_ERROR,
                    &format!("cannot start the channel watcher: {err}"),
                );
            }
            let out = lock(&self.first_out).take();
            self.run_calls(out.expect("one first executing thread"))
        })
    }

    /// The watcher: ends the worker when the channel hangs up; starts a new
    /// executing thread when the current one is lost.
    fn watch<'s>(&'s self, scope: &'s Scope<'s, '_>, rescue: &os::RescuePipe) {
        panic::set_runtime_thread();
        loop {
            match os::wait_for_hangup_or(&self.stream, rescue, self.outbox.timer()) {
                os::Woken::HangUp => os::terminate(0),
                os::Woken::Timer => self.outbox.send_held(),
                os::Woken::Rescue => {
                    let started = thread::Builder::new()
                        .name("loky-worker-exec".into())
                        .stack_size(EXECUTING_STACK)
                        .spawn_scoped(scope, || {
                            panic::set_runtime_thread();
                            let out = self.answer_lost_call();
                            self.run_calls(out)
                        });
                    if let Err(err) = started {
                        fatal(
                            exit_code::INTERNAL_ERROR,
                            &format!("cannot replace the executing thread: {err}"),
                        );
                    }
                }
            }
        }
    }

    /// A new writer, having answered the call whose thread was lost with a
    /// placeholder panic.
    fn answer_lost_call(&self) -> ResponseWriter {
        let mut out = ResponseWriter::new(self.outbox.clone(), self.shm_threshold, self.max_frame);
        if let Some(id) = lock(&self.running).take() {
            let outcome = Outcome::Panic(panic::unformattable());
            out.push(&Response::Reply(Reply { id, outcome }));
            out.flush();
        }
        out
    }

    /// Runs calls until the channel ends the worker.
    fn run_calls(&self, mut out: ResponseWriter) -> ! {
        // SAFETY: this thread is the only user of the reader from now on
        // (see `impl Sync for Executing`).
        let calls = unsafe { &mut *self.calls.get() };
        let mut leak = LeakCheck::from_env();
        // Progress reports of long chunks go out through the same outbox,
        // after the replies held back.
        progress::set_channel(self.outbox.clone());
        // The panic hook ends the worker on a runtime panic; this guard
        // covers a hook that a task replaced.
        let _ = catch_unwind(AssertUnwindSafe(|| {
            loop {
                self.run_one(calls, &mut out, &mut leak);
            }
        }));
        fatal(exit_code::INTERNAL_ERROR, "the worker loop stopped")
    }

    /// Reads, runs and answers one call.
    fn run_one(&self, calls: &mut CallReader, out: &mut ResponseWriter, leak: &mut LeakCheck) {
        let (request, mut attachments) = calls.next_request();
        let (id, name) = call::describe(&request);
        *lock(&self.running) = Some(id);
        // One reading of the clock a call: when it starts, for its progress
        // reports and for the leak check that follows it.
        let started = Instant::now();
        progress::begin(id, started);
        // The call's shared buffers are reachable while its arguments
        // decode; those of the output attach to the reply.
        attachments
            .decode(|| out.push_call(id, name, |buf| call::run(self.registry, &request, buf)));
        progress::end();
        *lock(&self.running) = None;
        // Unused descriptors close before the reply says the call is done.
        drop(attachments);
        let retiring = leak.after_call(started, os::resident_bytes);
        if let Some(reason) = retiring {
            out.push(&Response::Retiring(reason));
            out.flush();
        } else if calls.has_next() {
            // Held back while the next call runs (for a short while at
            // most), so that a burst's replies go out together; in the
            // journal, which the executor reads should that call crash the
            // worker.
            out.hold_or_flush();
        } else {
            // Every other reply goes out before the next task starts:
            // should that task crash the worker, the results already
            // computed are safe.
            out.flush();
        }
        calls.release();
    }
}

/// A clone of the channel for a writer; the worker cannot run without one.
fn writer_stream(stream: &UnixStream) -> UnixStream {
    stream.try_clone().unwrap_or_else(|err| {
        fatal(
            exit_code::CHANNEL_ERROR,
            &format!("cannot write to the channel: {err}"),
        )
    })
}
