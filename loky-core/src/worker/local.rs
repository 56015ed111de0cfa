//! Workers on this machine: started with `posix_spawn` in a process group of
//! their own, reached through a socketpair (their end as fd 3), watched
//! with a pidfd, stopped with signals to the process and its group.

use std::io::{self, Read};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;
use loky_proto::env;
use loky_proto::shm::JournalReader;

use super::io::{Readiness, Transport};
use super::spawner::{Spawned, Spawner, Start};
use super::{Launcher, Stop, WorkerHandle};
use crate::call::Encoding;
use crate::config::{Config, LinkSettings};
use crate::error::{Error, SpawnError};
use crate::events::{Event, WorkerId};
use crate::exit::WorkerExit;
use crate::link::Link;
use crate::os;

/// Starts workers as child processes of this one, on a thread of the
/// pool's that lives as long as it does (see [`spawner`](super::spawner)):
/// the supervisor never waits for a spawn.
pub(crate) struct LocalLauncher {
    config: Arc<Config>,
    /// Started at the first launch.
    spawner: Option<Spawner>,
}

impl LocalLauncher {
    pub(crate) fn new(config: Arc<Config>) -> Self {
        LocalLauncher {
            config,
            spawner: None,
        }
    }
}

impl Launcher for LocalLauncher {
    fn starts_here(&self) -> bool {
        true
    }

    fn encoding(&self) -> Encoding {
        Encoding::Local {
            threshold: self.config.shm_threshold,
        }
    }

    fn launch(
        &mut self,
        worker: WorkerId,
        link: Arc<Link>,
        events: Sender<Event>,
    ) -> Result<Box<dyn WorkerHandle>, Error> {
        let spawner = match &mut self.spawner {
            Some(spawner) => spawner,
            none => none.insert(
                Spawner::start(LocalStart::new(self.config.clone())).map_err(|e| {
                    Error::broken_by("could not start the thread that starts workers", e)
                })?,
            ),
        };
        spawner.launch(worker, link, events)
    }

    /// Waits for the spawner to free what is left of the dead workers,
    /// and ends it.
    fn finish(&mut self) {
        self.spawner = None;
    }
}

/// How the spawner starts a local worker.
struct LocalStart {
    config: Arc<Config>,
    settings: LinkSettings,
    command: Command,
}

impl LocalStart {
    fn new(config: Arc<Config>) -> LocalStart {
        let mut command = config.command();
        // The worker sends its large replies in shared memory, and shared
        // buffers as descriptors.
        command.env(env::SHM_THRESHOLD, config.shm_threshold.to_string());
        LocalStart {
            settings: config.link_settings(),
            config,
            command,
        }
    }
}

impl Start for LocalStart {
    fn spawn(&mut self, worker: WorkerId) -> Result<Spawned, Error> {
        // Without a journal (no memory files here), the worker sends each
        // reply as soon as it is ready.
        let (journal_fd, journal) = JournalReader::create().ok().unzip();
        let spawned = os::spawn_worker(&self.command, journal_fd.as_ref()).map_err(|e| {
            Error::broken_by(
                "a worker could not be started",
                SpawnError::new(&self.config.program, e),
            )
        })?;
        let watch = os::ChannelWatch::new(&spawned.channel, spawned.pidfd)
            .map_err(|e| Error::broken_by("could not watch a worker's channel", e))?;
        let transport = Arc::new(LocalTransport {
            stream: spawned.channel,
            process: spawned.process,
            watch,
            journal,
        });
        let settings = self.settings.clone();
        Ok(Spawned {
            pid: transport.pid(),
            connect: Box::new(move |link, events| {
                super::io::start(worker, transport, link, &settings, events)
                    .map_err(|e| Error::broken_by("could not start a worker's threads", e))
            }),
        })
    }
}

/// A local worker: its process and the parent's end of its socketpair.
pub(super) struct LocalTransport {
    stream: UnixStream,
    process: os::Process,
    /// What its reader waits on: the channel and the process's pidfd.
    watch: os::ChannelWatch,
    /// The replies the worker holds back, for after its death.
    journal: Option<JournalReader>,
}

impl Transport for LocalTransport {
    fn pid(&self) -> u32 {
        self.process.id()
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.stream).read(buf)
    }

    fn local_socket(&self) -> Option<&UnixStream> {
        Some(&self.stream)
    }

    fn wait(&self, timeout: Option<Duration>) -> io::Result<Readiness> {
        let (channel, exited) = self.watch.wait(timeout)?;
        Ok(Readiness { channel, exited })
    }

    fn pause_wait(&self) -> bool {
        self.watch.pause().is_ok()
    }

    fn resume_wait(&self) -> io::Result<()> {
        self.watch.resume()
    }

    fn try_write(&self, bytes: &[u8]) -> usize {
        os::send_nonblocking(&self.stream, bytes)
    }

    fn write(&self, bytes: &[u8]) -> io::Result<usize> {
        os::send_blocking(&self.stream, bytes)
    }

    fn recover(&self, received: u64) -> Vec<u8> {
        self.journal
            .as_ref()
            .map_or_else(Vec::new, |journal| journal.recover(received))
    }

    fn close_input(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    fn disconnect(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    fn stop(&self, how: Stop) {
        self.process.signal(match how {
            Stop::Term => os::SIGTERM,
            Stop::Kill => os::SIGKILL,
        });
    }

    /// Kills what is left of the worker's group (what its tasks started),
    /// then reaps it. Waiting for the exit holds no lock, so a concurrent
    /// [`stop`](Self::stop) never waits for it.
    fn reap(&self) -> io::Result<WorkerExit> {
        let exit = self.exited()?;
        self.finish()?;
        Ok(exit)
    }

    /// Kills the worker and what is left of its group, and waits for its
    /// exit, leaving it unreaped: its status is known as soon as it exited,
    /// before its reap. A worker that said in its journal which signal it
    /// is dying of, before its channel ended, is taken at its word without
    /// waiting, and without a kill: the kernel may still be freeing its
    /// memory, and [`finish`](Self::finish) kills what is left. A kill here
    /// would wake its threads to die on this thread's core, which the
    /// freeing of its memory (about 0.4 ms) could then hold before the
    /// death is reported.
    fn exited(&self) -> io::Result<WorkerExit> {
        if let Some(signal) = self.journal.as_ref().and_then(JournalReader::death_note) {
            return Ok(WorkerExit::Signal(signal));
        }
        self.process.signal(os::SIGKILL);
        let status = self.process.wait_exited()?;
        Ok(WorkerExit::from_status(status))
    }

    /// Kills what its group gained while it died, and reaps it.
    fn finish(&self) -> io::Result<()> {
        self.process.signal(os::SIGKILL);
        self.process.reap().map(drop)
    }
}

/// A process that never speaks.
#[cfg(test)]
fn sleeper() -> Command {
    let mut command = Command::new("sleep");
    command.arg("60");
    command
}

#[cfg(test)]
impl LocalTransport {
    /// A local worker's transport over `channel`, whose process is one that
    /// never speaks (and is stopped and reaped as a worker is): whoever
    /// holds the channel's other end plays the worker.
    pub(super) fn over(channel: UnixStream) -> LocalTransport {
        let spawned = os::spawn_worker(&sleeper(), None).unwrap();
        let watch = os::ChannelWatch::new(&channel, spawned.pidfd).unwrap();
        LocalTransport {
            stream: channel,
            process: spawned.process,
            watch,
            journal: None,
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use loky_proto::shm::JournalWriter;

    use super::*;

    /// A process that never speaks, started as a local worker with a
    /// journal, and the worker's side of that journal.
    fn silent_worker() -> (LocalTransport, JournalWriter) {
        let (fd, journal) = JournalReader::create().unwrap();
        let writer = JournalWriter::open(fd.try_clone().unwrap()).unwrap();
        let spawned = os::spawn_worker(&sleeper(), Some(&fd)).unwrap();
        let watch = os::ChannelWatch::new(&spawned.channel, spawned.pidfd).unwrap();
        let transport = LocalTransport {
            stream: spawned.channel,
            process: spawned.process,
            watch,
            journal: Some(journal),
        };
        (transport, writer)
    }

    #[test]
    fn a_worker_that_said_what_it_dies_of_is_taken_at_its_word() {
        let (transport, writer) = silent_worker();
        writer.death_note().write(libc::SIGSEGV);
        // The process is alive: the note, not its exit, says how it ended,
        // and `finish` kills it.
        assert_eq!(
            transport.exited().unwrap(),
            WorkerExit::Signal(libc::SIGSEGV)
        );
        // Not killed: the death is reported before any kill, which would
        // have it exit (and a zombie) at once.
        assert!(!was_killed(transport.pid()), "killed before `finish`");
        transport.finish().unwrap();
        // Reaped: no such process any more (not even a zombie).
        // SAFETY: signal 0 only checks that the pid exists.
        let exists = unsafe { libc::kill(transport.pid() as libc::pid_t, 0) } == 0;
        assert!(!exists, "the worker is reaped");
    }

    /// Whether process `pid` was sent `SIGKILL`: one pending, or already
    /// dead of it (a zombie), as `/proc/PID/status` says.
    fn was_killed(pid: u32) -> bool {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .map(str::trim)
                .unwrap()
        };
        let pending = |name| u64::from_str_radix(field(name), 16).unwrap();
        let kill = 1 << (libc::SIGKILL - 1);
        field("State:").starts_with(['Z', 'X'])
            || pending("SigPnd:") & kill != 0
            || pending("ShdPnd:") & kill != 0
    }

    #[test]
    fn without_a_death_note_the_exit_says_how_it_ended() {
        let (transport, _writer) = silent_worker();
        assert_eq!(
            transport.exited().unwrap(),
            WorkerExit::Signal(libc::SIGKILL)
        );
        transport.finish().unwrap();
    }
}
