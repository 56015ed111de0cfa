//! Starts the stock `loky-worker` binary the way an executor does and
//! speaks the protocol to it.
#![allow(dead_code, reason = "each test file uses its own part of the helpers")]

use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use loky_proto::shm::JournalReader;
use loky_proto::{
    CallKind, DEFAULT_MAX_FRAME, FrameError, Hello, Outcome, Progress, Reply, Request, Response,
    Task, decode_body, decode_payload, encode_frame, encode_payload, read_frame,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The stock worker binary.
pub(crate) const WORKER: &str = env!("CARGO_BIN_EXE_loky-worker");

/// How long any single step may take before the test fails.
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

/// A command for `program` with `channel` as its fd 3 and the environment
/// that makes it a worker of this process: stdin null, its own process
/// group.
pub(crate) fn worker_command(program: &str, channel: &UnixStream) -> Command {
    let mut command = Command::new(program);
    command
        .env(loky_proto::env::CHANNEL, channel_value())
        .stdin(Stdio::null())
        .process_group(0);
    inherit_as(
        &mut command,
        channel.as_raw_fd(),
        loky_proto::env::CHANNEL_FD_NUMBER,
    );
    command
}

/// Makes `fd`, open in this process until the command is spawned, the
/// child's descriptor `target`, without close-on-exec.
fn inherit_as(command: &mut Command, fd: RawFd, target: RawFd) {
    // SAFETY: the closure runs in the forked child before exec and calls
    // only dup2 and fcntl, which are async-signal-safe; `fd` is open in the
    // child (close-on-exec only closes it at exec).
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(fd, target) < 0 || libc::fcntl(target, libc::F_SETFD, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The channel value naming fd 3 and this process.
pub(crate) fn channel_value() -> String {
    loky_proto::env::channel_value(loky_proto::env::CHANNEL_FD_NUMBER, std::process::id())
}

/// A running worker and the parent's end of its channel. Dropping it kills
/// the worker's process group and reaps the worker.
pub(crate) struct Worker {
    pub(crate) child: Child,
    channel: Option<UnixStream>,
    body: Vec<u8>,
}

impl Worker {
    /// Starts the stock worker.
    pub(crate) fn start() -> Worker {
        Worker::start_with(|_| {})
    }

    /// Starts the stock worker after `configure` adjusted its command.
    pub(crate) fn start_with(configure: impl FnOnce(&mut Command)) -> Worker {
        let (parent, child_end) = UnixStream::pair().expect("socketpair");
        let mut command = worker_command(WORKER, &child_end);
        configure(&mut command);
        let child = command.spawn().expect("start the worker");
        drop(child_end);
        parent.set_read_timeout(Some(DEADLINE)).unwrap();
        Worker {
            child,
            channel: Some(parent),
            body: Vec::new(),
        }
    }

    /// Starts the stock worker with a reply journal, as an executor starts
    /// a local worker, after `configure` adjusted its command; and the
    /// executor's view of the journal.
    pub(crate) fn with_journal(configure: impl FnOnce(&mut Command)) -> (Worker, JournalReader) {
        let (fd, journal) = JournalReader::create().unwrap();
        // Above fd 4, so that neither dup2 in the child overwrites it first.
        // SAFETY: F_DUPFD_CLOEXEC duplicates a descriptor we own; the result
        // is a fresh one that nothing else owns.
        let fd =
            unsafe { OwnedFd::from_raw_fd(libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10)) };
        let raw = fd.as_raw_fd();
        let worker = Worker::start_with(|command| {
            command.env(
                loky_proto::env::JOURNAL,
                loky_proto::env::JOURNAL_FD_NUMBER.to_string(),
            );
            inherit_as(command, raw, loky_proto::env::JOURNAL_FD_NUMBER);
            configure(command);
        });
        drop(fd);
        (worker, journal)
    }

    /// A worker started some other way, with the parent's end of its
    /// channel.
    pub(crate) fn from_parts(child: Child, channel: UnixStream) -> Worker {
        channel.set_read_timeout(Some(DEADLINE)).unwrap();
        Worker {
            child,
            channel: Some(channel),
            body: Vec::new(),
        }
    }

    /// Starts the stock worker and reads its hello.
    pub(crate) fn ready() -> Worker {
        let mut worker = Worker::start();
        worker.hello();
        worker
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn channel(&mut self) -> &mut UnixStream {
        self.channel.as_mut().expect("the channel is open")
    }

    /// Closes the parent's end of the channel.
    pub(crate) fn close(&mut self) {
        self.channel = None;
    }

    /// Writes raw bytes to the channel.
    pub(crate) fn write_raw(&mut self, bytes: &[u8]) {
        self.channel()
            .write_all(bytes)
            .expect("write to the worker");
    }

    /// Sends call `id` of `task` with already encoded arguments.
    pub(crate) fn send(&mut self, id: u64, task: &str, kind: CallKind, args: &[u8]) {
        let call = Request::Call(loky_proto::Call {
            id,
            task: task.into(),
            kind,
            args: args.into(),
        });
        let mut frame = Vec::new();
        encode_frame(&call, &mut frame, DEFAULT_MAX_FRAME).unwrap();
        self.write_raw(&frame);
    }

    /// Sends call `id` of `task` on one argument.
    pub(crate) fn send_one<I: Serialize, O>(&mut self, id: u64, task: Task<I, O>, arg: &I) {
        self.send(
            id,
            task.name(),
            CallKind::Single,
            &encode_payload(arg).unwrap(),
        );
    }

    /// Sends call `id` of `task` on a chunk of arguments.
    pub(crate) fn send_chunk<I: Serialize, O>(&mut self, id: u64, task: Task<I, O>, args: &[I]) {
        self.send(
            id,
            task.name(),
            CallKind::Chunk,
            &encode_payload(args).unwrap(),
        );
    }

    /// Reads the next message, failing the test past the deadline.
    pub(crate) fn recv(&mut self) -> Response<'static> {
        let channel = self.channel.as_mut().expect("the channel is open");
        read_frame(channel, &mut self.body, DEFAULT_MAX_FRAME).expect("read a frame");
        match decode_body(&self.body).expect("decode a response") {
            Response::Hello(hello) => Response::Hello(hello),
            Response::Reply(Reply { id, outcome }) => Response::Reply(Reply {
                id,
                outcome: outcome.into_owned(),
            }),
            Response::Progress(Progress { id, items }) => Response::Progress(Progress {
                id,
                items: items.into_iter().map(Outcome::into_owned).collect(),
            }),
            Response::Retiring(reason) => Response::Retiring(reason),
        }
    }

    /// Reads until the end of the channel, which must come next (before the
    /// deadline).
    pub(crate) fn expect_end(&mut self) {
        let channel = self.channel.as_mut().expect("the channel is open");
        match read_frame(channel, &mut self.body, DEFAULT_MAX_FRAME) {
            Err(FrameError::Closed) => {}
            other => panic!("expected the end of the channel, got {other:?}"),
        }
    }

    /// Reads the hello.
    pub(crate) fn hello(&mut self) -> Hello {
        match self.recv() {
            Response::Hello(hello) => hello,
            other => panic!("expected the hello, got {other:?}"),
        }
    }

    /// Reads the reply to call `id`, past the progress reports of a chunk
    /// that ran long.
    pub(crate) fn reply(&mut self, id: u64) -> Outcome<'static> {
        loop {
            match self.recv() {
                Response::Reply(reply) if reply.id == id => return reply.outcome,
                Response::Progress(progress) if progress.id == id => {}
                other => panic!("expected the reply to call {id}, got {other:?}"),
            }
        }
    }

    /// Runs `task` on `arg` and decodes its output.
    pub(crate) fn call<I: Serialize, O: DeserializeOwned>(
        &mut self,
        id: u64,
        task: Task<I, O>,
        arg: &I,
    ) -> O {
        self.send_one(id, task, arg);
        value(self.reply(id))
    }

    /// Waits until the worker exits, failing the test past `within`.
    pub(crate) fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        wait_exit(&mut self.child, within)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        kill_group(self.child.id());
        let _ = self.child.wait();
    }
}

/// SIGKILLs the process group `pgid`.
pub(crate) fn kill_group(pgid: u32) {
    // SAFETY: kill has no memory-safety preconditions; the group is the
    // one this test started.
    unsafe { libc::kill(-(pgid as libc::pid_t), libc::SIGKILL) };
}

/// Sends `signal` to process `pid`.
pub(crate) fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions; the process is one
    // this test started.
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}

/// The output in `outcome`, which must be a value.
pub(crate) fn value<O: DeserializeOwned>(outcome: Outcome<'_>) -> O {
    match outcome {
        Outcome::Value(bytes) => decode_payload(&bytes).expect("decode the output"),
        other => panic!("expected a value, got {other:?}"),
    }
}

/// Polls until `done` returns something, with a short backoff, failing the
/// test past `within`.
pub(crate) fn poll_until<T>(
    within: Duration,
    what: &str,
    mut done: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    let mut backoff = Duration::from_millis(1);
    loop {
        if let Some(found) = done() {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_millis(20));
    }
}

/// Waits until `child` exits, failing the test past `within`.
pub(crate) fn wait_exit(child: &mut Child, within: Duration) -> ExitStatus {
    poll_until(within, "the worker to exit", || {
        child.try_wait().expect("try_wait")
    })
}

/// Whether process `pid` is gone or a zombie.
pub(crate) fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => true,
    }
}
