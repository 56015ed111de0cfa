//! The builder's settings for workers started by a launcher command
//! (feature `remote`).

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use loky_proto::remote::Liveness;

use super::ExecutorBuilder;
use crate::config::RemoteConfig;
use crate::error::{Error, Result, SpawnError};
use crate::launcher::Launcher;

/// Where workers connect back unless told otherwise: every IPv4 interface,
/// a port the system chooses.
const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// What the builder was told about starting workers.
#[derive(Debug, Clone, Default)]
pub(crate) struct RemoteOptions {
    launcher: Launcher,
    listen: Option<SocketAddr>,
    advertise: Option<String>,
    heartbeat_interval: Option<Duration>,
    heartbeat_timeout: Option<Duration>,
}

impl ExecutorBuilder {
    /// How workers are started (feature `remote`); default
    /// [`Launcher::local()`]: as child processes of the executor.
    ///
    /// With any other launcher, each worker is started by running its
    /// command, here or on another machine, and connects back to this
    /// executor over TCP (see [`listen`](Self::listen) and
    /// [`advertise`](Self::advertise)), proving itself with credentials
    /// made for that one launch and written on the command's standard
    /// input. Everything else works as with local workers: futures, crash
    /// policies, deadlines, `kill`, memory limits (the worker applies its
    /// own), idle timeout, recycling. A worker whose connection is lost or
    /// whose heartbeats stop is a dead worker, and a worker that loses its
    /// executor exits. Frames never travel through shared memory: the
    /// connection carries bytes only.
    ///
    /// The worker program (its path, as this process names it) must exist
    /// where the command runs it, as on a cluster's shared file system. A
    /// worker that waits in a scheduler's queue counts against
    /// [`start_timeout`](Self::start_timeout).
    ///
    /// ```no_run
    /// use loky::{Launcher, ProcessPoolExecutor};
    ///
    /// // Each worker a Slurm job step (inside an sbatch script: of its job).
    /// let ex = ProcessPoolExecutor::builder()
    ///     .max_workers(64)
    ///     .launcher(Launcher::slurm())
    ///     .listen("0.0.0.0:0".parse().unwrap())
    ///     .advertise("login1.cluster.org")
    ///     .build()?;
    /// # Ok::<(), loky::Error>(())
    /// ```
    ///
    /// A template that cannot start workers is refused by `build`
    /// ([`Error::InvalidArgument`]), as is a launcher program found
    /// nowhere ([`Error::Spawn`]).
    pub fn launcher(mut self, launcher: Launcher) -> Self {
        self.remote.launcher = launcher;
        self
    }

    /// Where workers started by a [`launcher`](Self::launcher) connect
    /// back (feature `remote`): the address the executor listens on, for
    /// TCP with mutual TLS. Default `0.0.0.0:0`: every IPv4 interface, a
    /// port the system chooses. Port 0 is the usual choice: each executor
    /// gets a port of its own, and workers learn it from their ticket.
    ///
    /// Only workers holding the credentials of one of this executor's
    /// launches get past the TLS handshake; any other connection is closed
    /// and changes nothing.
    ///
    /// ```no_run
    /// use loky::{Launcher, ProcessPoolExecutor};
    ///
    /// // Workers on this machine, started by a command, over loopback.
    /// let ex = ProcessPoolExecutor::builder()
    ///     .launcher(Launcher::command("nice -n 10 {worker}"))
    ///     .listen("127.0.0.1:0".parse().unwrap())
    ///     .build()?;
    /// # Ok::<(), loky::Error>(())
    /// ```
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.remote.listen = Some(addr);
        self
    }

    /// The host name or address that workers started by a
    /// [`launcher`](Self::launcher) dial to reach this executor (feature
    /// `remote`); the port is the one it listens on. Default: the address
    /// given to [`listen`](Self::listen) if it is a specific one, else this
    /// machine's host name.
    ///
    /// ```no_run
    /// use loky::{Launcher, ProcessPoolExecutor};
    ///
    /// let ex = ProcessPoolExecutor::builder()
    ///     .launcher(Launcher::ssh("node7"))
    ///     .advertise("10.1.0.5") // the address node7 reaches this machine at
    ///     .build()?;
    /// # Ok::<(), loky::Error>(())
    /// ```
    pub fn advertise(mut self, host: impl Into<String>) -> Self {
        self.remote.advertise = Some(host.into());
        self
    }

    /// How often the executor and each worker started by a
    /// [`launcher`](Self::launcher) tell each other they are alive when
    /// nothing else passes between them (feature `remote`); default 1 s.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.remote.heartbeat_interval = Some(interval);
        self
    }

    /// How long a side that hears nothing from the other waits before it
    /// takes the other for dead (feature `remote`); default 5 s, and more
    /// than the [`heartbeat_interval`](Self::heartbeat_interval). Past it,
    /// the executor fails the worker's calls with
    /// [`Error::TerminatedWorker`] ([`WorkerExit::Lost`](crate::WorkerExit::Lost)),
    /// and the worker kills its task and exits.
    pub fn heartbeat_timeout(mut self, timeout: Duration) -> Self {
        self.remote.heartbeat_timeout = Some(timeout);
        self
    }
}

impl RemoteOptions {
    /// The pool's settings for workers of `program`: `None` for local
    /// workers.
    pub(crate) fn resolve(&self, program: &Path) -> Result<Option<RemoteConfig>> {
        self.launcher
            .check()
            .map_err(|err| Error::InvalidArgument(err.to_string()))?;
        if self.launcher.is_local() {
            let set = self.listen.is_some()
                || self.advertise.is_some()
                || self.heartbeat_interval.is_some()
                || self.heartbeat_timeout.is_some();
            if set {
                return Err(Error::InvalidArgument(
                    "`listen`, `advertise` and the heartbeat settings are for workers started \
                     by a launcher command: choose one with `launcher`"
                        .to_owned(),
                ));
            }
            return Ok(None);
        }
        check_launcher_program(&self.launcher, program)?;
        let listen = self.listen.unwrap_or(DEFAULT_LISTEN);
        Ok(Some(RemoteConfig {
            launcher: self.launcher.clone(),
            listen,
            advertise: self.advertise(listen)?,
            liveness: self.liveness()?,
        }))
    }

    fn advertise(&self, listen: SocketAddr) -> Result<String> {
        let host = match &self.advertise {
            Some(host) => host.trim().to_owned(),
            None if !listen.ip().is_unspecified() => listen.ip().to_string(),
            None => host_name(),
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(Error::InvalidArgument(format!(
                "`{host}` is not a host name or address for workers to dial"
            )));
        }
        Ok(host)
    }

    fn liveness(&self) -> Result<Liveness> {
        let liveness = Liveness {
            interval: self
                .heartbeat_interval
                .unwrap_or(Liveness::DEFAULT.interval),
            timeout: self.heartbeat_timeout.unwrap_or(Liveness::DEFAULT.timeout),
        };
        if liveness.interval.is_zero() || liveness.timeout <= liveness.interval {
            return Err(Error::InvalidArgument(format!(
                "the heartbeat timeout ({:?}) must be longer than the heartbeat interval ({:?}), \
                 which must not be zero",
                liveness.timeout, liveness.interval
            )));
        }
        Ok(liveness)
    }
}

/// This machine's name.
fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Fails unless the launcher's program (its first word) can be run: a file
/// at its path, or on `PATH` when it names no directory. A template that
/// starts with the worker itself runs the worker program, checked already.
fn check_launcher_program(launcher: &Launcher, worker: &Path) -> Result<()> {
    let line = launcher
        .command_line(&worker.as_os_str().to_owned())
        .expect("not a local launcher")
        .map_err(|err| Error::InvalidArgument(err.to_string()))?;
    let program = PathBuf::from(&line[0]);
    if program == worker {
        return Ok(());
    }
    let found = if program.components().count() > 1 {
        is_executable(&program)
    } else {
        std::env::var_os("PATH").is_some_and(|paths| {
            std::env::split_paths(&paths).any(|dir| is_executable(&dir.join(&program)))
        })
    };
    if found {
        return Ok(());
    }
    Err(Error::Spawn(SpawnError::new(
        &program,
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("the launcher `{launcher}` cannot run: its program is not found"),
        ),
    )))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker program's path (the checks never run it).
    const WORKER: &str = "/opt/app/worker";

    fn options(launcher: Launcher) -> RemoteOptions {
        RemoteOptions {
            launcher,
            ..RemoteOptions::default()
        }
    }

    #[test]
    fn a_local_launcher_needs_no_remote_settings_and_refuses_them() {
        assert_eq!(
            RemoteOptions::default().resolve(Path::new(WORKER)).unwrap(),
            None
        );
        let listening = RemoteOptions {
            listen: Some(DEFAULT_LISTEN),
            ..RemoteOptions::default()
        };
        let err = listening.resolve(Path::new(WORKER)).unwrap_err();
        assert!(err.to_string().contains("launcher"), "{err}");
    }

    #[test]
    fn defaults_listen_everywhere_and_advertise_this_host() {
        let config = options(Launcher::command("env {worker}"))
            .resolve(Path::new(WORKER))
            .unwrap()
            .unwrap();
        assert_eq!(config.listen, DEFAULT_LISTEN);
        assert_eq!(config.advertise, host_name());
        assert_eq!(config.liveness, Liveness::DEFAULT);
        assert_eq!(config.dial(4242), format!("{}:4242", host_name()));
    }

    #[test]
    fn a_specific_listen_address_is_the_default_advertised_one() {
        let mut options = options(Launcher::command("env {worker}"));
        options.listen = Some("[::1]:0".parse().unwrap());
        let config = options.resolve(Path::new(WORKER)).unwrap().unwrap();
        assert_eq!(config.advertise, "::1");
        assert_eq!(config.dial(7), "[::1]:7");
        options.advertise = Some("login1.cluster.org".into());
        let config = options.resolve(Path::new(WORKER)).unwrap().unwrap();
        assert_eq!(config.dial(7), "login1.cluster.org:7");
    }

    #[test]
    fn bad_settings_are_refused_at_build() {
        let bad_template = options(Launcher::command("srun"));
        assert!(matches!(
            bad_template.resolve(Path::new(WORKER)),
            Err(Error::InvalidArgument(message)) if message.contains("{worker}")
        ));
        let missing = options(Launcher::command("/no/such/launcher {worker}"));
        let err = missing.resolve(Path::new(WORKER)).unwrap_err();
        assert!(matches!(err, Error::Spawn(_)), "{err}");
        assert!(err.to_string().contains("/no/such/launcher"), "{err}");
        let not_on_path = options(Launcher::command("no-such-launcher-anywhere {worker}"));
        assert!(matches!(
            not_on_path.resolve(Path::new(WORKER)),
            Err(Error::Spawn(_))
        ));
        // The worker program alone as the launcher runs it as it is.
        assert!(
            options(Launcher::command("{worker}"))
                .resolve(Path::new(WORKER))
                .is_ok()
        );
        let mut slow = options(Launcher::command("env {worker}"));
        slow.heartbeat_interval = Some(Duration::from_secs(5));
        slow.heartbeat_timeout = Some(Duration::from_secs(5));
        assert!(matches!(
            slow.resolve(Path::new(WORKER)),
            Err(Error::InvalidArgument(_))
        ));
        let mut blank = options(Launcher::command("env {worker}"));
        blank.advertise = Some(" ".into());
        assert!(matches!(
            blank.resolve(Path::new(WORKER)),
            Err(Error::InvalidArgument(_))
        ));
    }
}
