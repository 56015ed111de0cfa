//! A worker started by a launcher command, as its reader and writer threads
//! see it: the launch's channel (a local socket that the listener's relay
//! joins to the worker's TLS link once the worker is admitted), the
//! launcher process, and the relay's handle.
//!
//! Before the worker arrives, its channel carries nothing and the launcher
//! process stands for the worker: its exit with a failure, or any stop,
//! close or disconnection, gives the launch up (its credentials are
//! withdrawn, which ends the channel, and the launcher is stopped). A
//! launcher that exits with success may have handed the worker on (a
//! detaching command): the worker is still awaited, up to the start
//! timeout. After the worker arrived, the launcher is only a diagnostic
//! (`srun` exits with success when a node fails): signals go to the
//! worker's group through its agent, and the worker's end is the end of its
//! link, with the exit status the agent reported, or the reason the link
//! was lost.
//!
//! The channel only ever carries bytes: no descriptor crosses a TCP link,
//! so shared-memory frames never reach a remote worker.

use std::io::{self, Read};
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use loky_proto::Hello;
use loky_proto::remote::{EndReason, LinkEnd, WorkerStatus};
use rustix::event::{PollFd, PollFlags, Timespec, poll};

use super::listener::{Arrival, Expected};
use crate::exit::{WorkerExit, WorkerLost};
use crate::os;
use crate::worker::io::{Readiness, Transport};
use crate::worker::{Stop, Whereabouts};

/// How long a launcher may take to exit on its own once its worker's link
/// ended in order (`srun` and `ssh` follow their task within milliseconds),
/// and once a launch is given up before its worker arrived; then it is
/// killed with its group.
const LAUNCHER_LINGER: Duration = Duration::from_secs(1);

/// After a lost link, how long the launcher may take to end on its own
/// (`scancel` ends the step's connection and `srun` at about the same
/// time), for its status in the message; then it is killed.
const LOST_LINGER: Duration = Duration::from_millis(100);

/// The launcher process of one launch.
struct LauncherProcess {
    process: os::Process,
    /// Readable once it exited, where the kernel has pidfds.
    pidfd: Option<OwnedFd>,
    /// Its command line, for messages.
    command: String,
}

impl LauncherProcess {
    /// Waits up to `timeout` for it to exit; whether it did.
    fn wait_exit(&self, timeout: Duration) -> bool {
        let Some(pidfd) = &self.pidfd else {
            return self.process.has_exited();
        };
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let timespec = Timespec::try_from(left).unwrap_or(Timespec {
                tv_sec: 1,
                tv_nsec: 0,
            });
            let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
            match poll(&mut fds, Some(&timespec)) {
                Ok(n) if n > 0 => return true,
                Ok(_) | Err(rustix::io::Errno::INTR) if !left.is_zero() => {}
                _ => return self.process.has_exited(),
            }
        }
    }

    /// Reaps it, after at most `linger` for it to exit on its own, then a
    /// `SIGTERM` to its group and as long again, then a `SIGKILL`; its
    /// status if it ended on its own.
    fn reap(&self, linger: Duration) -> Option<WorkerExit> {
        let on_its_own = self.wait_exit(linger);
        if !on_its_own {
            self.process.signal(os::SIGTERM);
            if !self.wait_exit(linger) {
                self.process.signal(os::SIGKILL);
            }
        }
        let status = self.process.reap().ok().map(WorkerExit::from_status);
        status.filter(|_| on_its_own)
    }
}

/// What the transport, the listener (delivering the worker) and the
/// supervisor (stopping it) share.
#[derive(Default)]
pub(super) struct LaunchState {
    /// The launch's credentials, until the worker arrived or the launch was
    /// given up.
    expected: Option<Expected>,
    /// The worker, once admitted, until reaped.
    arrival: Option<Arrival>,
    /// The host it runs on, once it arrived.
    host: Option<String>,
    /// No worker is taken any more: one arriving now is dropped.
    given_up: bool,
    /// The launcher's exit is still watched (before the worker arrives).
    watching: bool,
    /// How the launcher ended, if it did on its own.
    launcher_exit: Option<WorkerExit>,
}

impl LaunchState {
    /// A launch whose launcher is about to start.
    pub(super) fn new() -> LaunchState {
        LaunchState {
            watching: true,
            ..LaunchState::default()
        }
    }
}

fn lock(state: &Mutex<LaunchState>) -> MutexGuard<'_, LaunchState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps the launch's credentials valid until its worker arrives or the
/// launch is given up.
pub(super) fn hold(state: &Mutex<LaunchState>, expected: Expected) {
    let mut launch = lock(state);
    if launch.arrival.is_none() && !launch.given_up {
        launch.expected = Some(expected);
    }
}

/// Takes the worker of a launch as the listener admits it.
pub(super) fn deliver(state: &Mutex<LaunchState>, arrival: Arrival) {
    let mut launch = lock(state);
    if launch.given_up {
        drop(launch);
        // Drops the link: the agent takes it for the loss of its executor
        // and kills the worker.
        drop(arrival);
        return;
    }
    log::debug!(
        "the worker of launch {} connected back from {} (its agent: pid {} on {})",
        arrival.launch,
        arrival.peer,
        arrival.agent_pid,
        arrival.host
    );
    launch.expected = None;
    launch.watching = false;
    launch.host = Some(arrival.host.clone());
    launch.arrival = Some(arrival);
}

/// A worker started by a launcher command.
pub(super) struct RemoteTransport {
    channel: UnixStream,
    launcher: LauncherProcess,
    state: Arc<Mutex<LaunchState>>,
    /// The worker's pid on its own host, from its hello on; 0 until then.
    pid: AtomicU32,
    /// How long an unanswered link may stay silent.
    heartbeat_timeout: Duration,
}

impl RemoteTransport {
    pub(super) fn new(
        channel: UnixStream,
        launcher: std::process::Child,
        command: String,
        state: Arc<Mutex<LaunchState>>,
        heartbeat_timeout: Duration,
    ) -> RemoteTransport {
        let (process, pidfd) = os::adopt(launcher);
        RemoteTransport {
            channel,
            pid: AtomicU32::new(0),
            launcher: LauncherProcess {
                process,
                pidfd,
                command,
            },
            state,
            heartbeat_timeout,
        }
    }

    /// Gives the launch up if its worker has not arrived: withdraws its
    /// credentials (which ends the channel) and asks the launcher to stop
    /// (reaping escalates). Whether it had not arrived.
    fn give_up(&self) -> bool {
        let mut launch = lock(&self.state);
        if launch.arrival.is_some() || launch.host.is_some() {
            return false;
        }
        if !launch.given_up {
            launch.given_up = true;
            launch.watching = false;
            launch.expected = None;
            self.launcher.process.signal(os::SIGTERM);
        }
        true
    }

    /// The launcher exited before its worker arrived.
    fn launcher_exited_early(&self) {
        let mut launch = lock(&self.state);
        launch.watching = false;
        if launch.arrival.is_some() || launch.given_up {
            return;
        }
        let exit = self
            .launcher
            .process
            .reap()
            .ok()
            .map(WorkerExit::from_status);
        launch.launcher_exit = exit;
        if exit == Some(WorkerExit::Code(0)) {
            return; // It may have handed the worker on: keep waiting.
        }
        launch.given_up = true;
        launch.expected = None;
    }

    /// How the worker's link ended: reported status, or lost.
    fn link_exit(&self, arrival: &Arrival) -> WorkerExit {
        let end = arrival.relay.end().or_else(|| {
            // The reader stopped on its own account (garbage, a panic):
            // stop the worker, and wait for its agent to say so.
            arrival.relay.signal(os::SIGKILL);
            arrival.relay.wait_end(self.heartbeat_timeout)
        });
        match end {
            Some(LinkEnd {
                status: Some(status),
                ..
            }) => match status {
                WorkerStatus::Code(code) => WorkerExit::Code(code),
                WorkerStatus::Signal(signal) => WorkerExit::Signal(signal),
            },
            Some(LinkEnd {
                reason: EndReason::HeartbeatsStopped(_),
                ..
            }) => WorkerExit::Lost(WorkerLost::HeartbeatsStopped),
            Some(_) | None => WorkerExit::Lost(WorkerLost::ConnectionLost),
        }
    }
}

impl Transport for RemoteTransport {
    fn pid(&self) -> u32 {
        self.pid.load(Ordering::Relaxed)
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.channel).read(buf)
    }

    /// The channel, and before the worker arrived, the launcher's exit too.
    /// Only the channel's readiness is reported: the link's end (and a
    /// launch given up) is the end of the channel.
    fn wait(&self, timeout: Option<Duration>) -> io::Result<Readiness> {
        let watching = lock(&self.state).watching;
        let pidfd = self.launcher.pidfd.as_ref().filter(|_| watching);
        let (channel, exited) = os::poll_channel(&self.channel, pidfd, timeout)?;
        if exited {
            self.launcher_exited_early();
        }
        Ok(Readiness {
            channel,
            exited: false,
        })
    }

    fn try_write(&self, bytes: &[u8]) -> usize {
        os::send_nonblocking(&self.channel, bytes)
    }

    fn write(&self, bytes: &[u8]) -> io::Result<usize> {
        os::send_blocking(&self.channel, bytes)
    }

    /// Through the relay, the worker's input ends; a worker not yet
    /// arrived is not waited for.
    fn close_input(&self) {
        self.give_up();
        let _ = self.channel.shutdown(Shutdown::Write);
    }

    fn disconnect(&self) {
        self.give_up();
        let _ = self.channel.shutdown(Shutdown::Both);
    }

    /// To the worker's process group, through its agent; before it arrived,
    /// the launch is given up.
    fn stop(&self, how: Stop) {
        if self.give_up() {
            return;
        }
        let launch = lock(&self.state);
        if let Some(arrival) = &launch.arrival {
            arrival.relay.signal(match how {
                Stop::Term => os::SIGTERM,
                Stop::Kill => os::SIGKILL,
            });
        }
    }

    fn reap(&self) -> io::Result<WorkerExit> {
        let arrival = {
            let mut launch = lock(&self.state);
            launch.given_up = true;
            launch.watching = false;
            launch.expected = None;
            launch.arrival.take()
        };
        let Some(arrival) = arrival else {
            // Never arrived: the launcher's end is the worker's.
            let exit = self.launcher.reap(LAUNCHER_LINGER);
            let mut launch = lock(&self.state);
            launch.launcher_exit = launch.launcher_exit.or(exit);
            return Ok(launch
                .launcher_exit
                .unwrap_or(WorkerExit::Signal(os::SIGKILL)));
        };
        let exit = self.link_exit(&arrival);
        // The link is over: its agent, if it is still there, kills the
        // worker and exits, and so does a launcher that runs it.
        drop(arrival);
        let linger = if exit.lost().is_some() {
            LOST_LINGER
        } else {
            LAUNCHER_LINGER
        };
        let launcher_exit = self.launcher.reap(linger);
        let mut launch = lock(&self.state);
        launch.launcher_exit = launch.launcher_exit.or(launcher_exit);
        Ok(exit)
    }

    fn introduced(&self, hello: &Hello) {
        self.pid.store(hello.pid, Ordering::Relaxed);
    }

    fn whereabouts(&self) -> Option<Whereabouts> {
        let launch = lock(&self.state);
        Some(Whereabouts {
            host: launch.host.clone(),
            launcher: self.launcher.command.clone(),
            launcher_pid: self.launcher.process.id(),
            launcher_exit: launch.launcher_exit,
        })
    }
}

impl Drop for RemoteTransport {
    /// A launch dropped unreaped (its threads failed to start) admits
    /// nothing more, and drops its worker's link; the launcher is killed
    /// and reaped as its process drops.
    fn drop(&mut self) {
        let arrival = {
            let mut launch = lock(&self.state);
            launch.given_up = true;
            launch.expected = None;
            launch.arrival.take()
        };
        drop(arrival);
    }
}
