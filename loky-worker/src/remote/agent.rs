//! The agent of one connect-back worker: ticket, link, worker process,
//! relay.

use std::io::{self, IsTerminal, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use loky_proto::env;
use loky_proto::remote::{Control, Endpoint, Relay, Ticket, TicketError, WorkerStatus, connect};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::{Errno, FdFlags, fcntl_setfd};
use rustix::process::{Pid, Signal, kill_process_group};

use crate::channel::chain;

/// How long the agent waits for its ticket on standard input. The executor
/// writes it as it starts the launcher; a launcher may take a while to
/// bring the worker's standard input along (a scheduler starting the job).
const TICKET_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the agent; returns its exit code once the link ended in order, or
/// the message of what went wrong (the worker, if it was started, is dead
/// by then).
pub(super) fn run() -> Result<i32, String> {
    let ticket = read_ticket().map_err(|err| chain(&err))?;
    let introduction = Control::Agent {
        host: host_name(),
        pid: std::process::id(),
    };
    let connected = connect(&ticket, &introduction).map_err(|err| chain(&err))?;
    let executor = connected.executor;
    let (local, channel) =
        UnixStream::pair().map_err(|err| format!("cannot make the worker's channel: {err}"))?;
    let worker = start_worker(&ticket, channel)?;
    let relay = Relay::new(
        connected.conn,
        connected.tcp,
        local,
        ticket.liveness,
        worker,
    )
    .map_err(|err| format!("cannot start the relay: {err}"))?;
    let (end, mut worker) = relay.run();
    // A worker that ended before the link did ends the agent with its
    // status, however the link ended after it.
    if let Some(status) = worker.status {
        return Ok(exit_code_for(status, worker.asked_to_leave));
    }
    worker.reap();
    Err(format!(
        "lost the executor at {executor}: {}; the worker was killed",
        end.reason
    ))
}

/// Reads the ticket from standard input, which must be a pipe or a file.
fn read_ticket() -> Result<Ticket, TicketError> {
    if io::stdin().is_terminal() {
        return Err(TicketError::Invalid(
            "standard input is a terminal; a launcher passes the credentials through a pipe \
             (never through a terminal, which would echo them: with ssh, use -T)",
        ));
    }
    let mut input = StdinUntil {
        deadline: Instant::now() + TICKET_TIMEOUT,
    };
    Ticket::read_from(&mut input).map_err(|err| match err {
        TicketError::Io(err) if err.kind() == io::ErrorKind::TimedOut => {
            TicketError::TimedOut(TICKET_TIMEOUT)
        }
        other => other,
    })
}

/// Standard input, read without buffering (nothing past the ticket is
/// taken) and failing with `TimedOut` once `deadline` passes.
struct StdinUntil {
    deadline: Instant,
}

impl Read for StdinUntil {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let stdin = io::stdin();
        let fd = stdin.as_fd();
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            let timeout = Timespec::try_from(left).unwrap_or(Timespec {
                tv_sec: 1,
                tv_nsec: 0,
            });
            match poll(&mut [PollFd::new(&fd, PollFlags::IN)], Some(&timeout)) {
                Ok(0) | Err(Errno::INTR) => continue,
                Ok(_) => {}
                Err(err) => return Err(err.into()),
            }
            match rustix::io::read(fd, &mut *buf) {
                Ok(n) => return Ok(n),
                Err(Errno::INTR | Errno::AGAIN) => continue,
                Err(err) => return Err(err.into()),
            }
        }
    }
}

/// This machine's name, for the executor's messages.
fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Starts this program again as an ordinary local worker whose channel is
/// `channel` and whose parent (the executor, as the worker sees it) is this
/// agent: in a process group of its own, with the ticket's environment and
/// no standard input.
fn start_worker(ticket: &Ticket, channel: UnixStream) -> Result<WorkerProcess, String> {
    let program =
        std::env::current_exe().map_err(|err| format!("cannot find this program: {err}"))?;
    // The only descriptor the worker inherits besides stdout and stderr.
    // No other thread runs yet, so nothing else can inherit it meanwhile.
    fcntl_setfd(&channel, FdFlags::empty())
        .map_err(|err| format!("cannot pass the channel to the worker: {err}"))?;
    let mut command = Command::new(&program);
    // The relay carries bytes only, never descriptors: no shared-memory
    // frames, whatever this process inherited. Nor a journal: the agent
    // reads none (every reply goes out as soon as it is ready).
    command.env_remove(env::SHM_THRESHOLD);
    command.env_remove(env::JOURNAL);
    for key in &ticket.env_remove {
        command.env_remove(key);
    }
    command
        .args(std::env::args_os().skip(2))
        .envs(ticket.env.iter().map(|(key, value)| (key, value)))
        .env(
            env::CHANNEL,
            env::channel_value(channel.as_raw_fd(), std::process::id()),
        )
        .stdin(Stdio::null())
        .process_group(0);
    let child = command
        .spawn()
        .map_err(|err| format!("cannot start the worker {}: {err}", program.display()))?;
    Ok(WorkerProcess {
        child,
        status: None,
        linger: ticket.liveness.timeout,
        asked_to_leave: false,
    })
}

/// The worker process as its agent sees it.
struct WorkerProcess {
    child: Child,
    /// Set once reaped: its pid may be reused after that.
    status: Option<WorkerStatus>,
    /// How long to wait for the executor to close the link once the
    /// worker's exit is reported.
    linger: Duration,
    /// The executor closed the worker's input in order (it asked the worker
    /// to leave) before the worker ended.
    asked_to_leave: bool,
}

impl WorkerProcess {
    /// Kills what is left of the worker's process group, then reaps the
    /// worker. After its channel ended the worker is already exiting, so
    /// the kill does not change its status; after the loss of the executor
    /// it is what ends it.
    fn reap(&mut self) -> WorkerStatus {
        if let Some(status) = self.status {
            return status;
        }
        self.signal_group(Signal::KILL);
        let status = match self.child.wait() {
            Ok(status) => status_of(status),
            // Cannot happen for our own child; report it as killed.
            Err(_) => WorkerStatus::Signal(Signal::KILL.as_raw()),
        };
        self.status = Some(status);
        status
    }

    fn signal_group(&self, signal: Signal) {
        if let Some(pid) = Pid::from_raw(self.child.id() as i32) {
            // ESRCH: the whole group is gone already.
            let _ = kill_process_group(pid, signal);
        }
    }
}

impl Endpoint for WorkerProcess {
    fn signal(&mut self, signal: i32) -> Result<(), String> {
        let signal = Signal::from_named_raw(signal)
            .ok_or_else(|| format!("the executor sent an unknown signal number {signal}"))?;
        if self.status.is_none() {
            self.signal_group(signal);
        }
        Ok(())
    }

    fn local_closed(&mut self) -> Option<WorkerStatus> {
        Some(self.reap())
    }

    fn linger(&self) -> Option<Duration> {
        Some(self.linger)
    }

    fn peer_closed(&mut self) {
        if self.status.is_none() {
            self.asked_to_leave = true;
        }
    }
}

fn status_of(status: ExitStatus) -> WorkerStatus {
    match (status.code(), status.signal()) {
        (Some(code), _) => WorkerStatus::Code(code),
        (None, Some(signal)) => WorkerStatus::Signal(signal),
        (None, None) => WorkerStatus::Signal(Signal::KILL.as_raw()),
    }
}

/// The agent's own exit code for its worker's status: the same code, or
/// 128 + the signal, as a shell reports it. A worker asked to leave ends
/// its process group, itself included, with `SIGKILL` (so that nothing its
/// tasks started outlives it): that is its clean exit, 0, so that a
/// launcher such as `srun` reports no failure when an executor shuts down.
fn exit_code_for(status: WorkerStatus, asked_to_leave: bool) -> i32 {
    match status {
        WorkerStatus::Signal(signal) if asked_to_leave && signal == Signal::KILL.as_raw() => 0,
        WorkerStatus::Code(code) => code,
        WorkerStatus::Signal(signal) => 128 + signal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_exits_as_a_shell_reports_its_worker() {
        assert_eq!(exit_code_for(WorkerStatus::Code(3), false), 3);
        assert_eq!(exit_code_for(WorkerStatus::Signal(9), false), 137);
        // Asked to leave, its own SIGKILL is a clean exit; nothing else is.
        assert_eq!(exit_code_for(WorkerStatus::Signal(9), true), 0);
        assert_eq!(exit_code_for(WorkerStatus::Signal(11), true), 139);
        assert_eq!(exit_code_for(WorkerStatus::Code(3), true), 3);
    }
}
