//! Workers on this machine: started with `posix_spawn` in a process group of
//! their own, reached through a socketpair (their end as fd 3), watched
//! with a pidfd, stopped with signals to the process and its group.

use std::io::{self, Read};
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;
use loky_proto::env;

use super::io::{Readiness, Transport};
use super::{Launcher, Stop, WorkerHandle};
use crate::call::Encoding;
use crate::config::{Config, LinkSettings};
use crate::error::{Error, SpawnError};
use crate::events::{Event, WorkerId};
use crate::exit::WorkerExit;
use crate::link::Link;
use crate::os;

/// Starts workers as child processes of this one.
pub(crate) struct LocalLauncher {
    config: Arc<Config>,
    settings: LinkSettings,
}

impl LocalLauncher {
    /// Call from a thread that lives as long as the workers it starts (the
    /// supervisor's): their parent-death signal fires when it ends.
    pub(crate) fn new(config: Arc<Config>) -> Self {
        LocalLauncher {
            settings: config.link_settings(),
            config,
        }
    }
}

impl Launcher for LocalLauncher {
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
        let mut command = self.config.command();
        // The worker sends its large replies in shared memory, and shared
        // buffers as descriptors.
        command.env(env::SHM_THRESHOLD, self.config.shm_threshold.to_string());
        let spawned = os::spawn_worker(&command).map_err(|e| {
            Error::broken_by(
                "a worker could not be started",
                SpawnError::new(&self.config.program, e),
            )
        })?;
        let transport = Arc::new(LocalTransport {
            stream: spawned.channel,
            process: spawned.process,
            pidfd: spawned.pidfd,
        });
        super::io::start(worker, transport, link, &self.settings, events)
            .map_err(|e| Error::broken_by("could not start a worker's threads", e))
    }
}

/// A local worker: its process and the parent's end of its socketpair.
struct LocalTransport {
    stream: UnixStream,
    process: os::Process,
    pidfd: Option<OwnedFd>,
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
        let (channel, exited) = os::poll_channel(&self.stream, self.pidfd.as_ref(), timeout)?;
        Ok(Readiness { channel, exited })
    }

    fn try_write(&self, bytes: &[u8]) -> usize {
        os::send_nonblocking(&self.stream, bytes)
    }

    fn write(&self, bytes: &[u8]) -> io::Result<usize> {
        os::send_blocking(&self.stream, bytes)
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
        self.process.signal(os::SIGKILL);
        self.process.wait_exited()?;
        // Its group may have gained members while it died.
        self.process.signal(os::SIGKILL);
        let status = self.process.reap()?;
        Ok(WorkerExit::from_status(status))
    }
}
