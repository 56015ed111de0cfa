//! The supervisor's launcher for workers started by a launcher command:
//! the pool's listener, and one launch (credentials, command, channel) per
//! worker.

use std::ffi::OsString;
use std::io;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crossbeam_channel::Sender;
use loky_proto::env;

use super::launch;
use super::listener::{Arrival, Listener, ListenerConfig, WorkerSettings};
use super::transport::{self, LaunchState, RemoteTransport};
use crate::config::{Config, LinkSettings, RemoteConfig};
use crate::error::{Error, Result, SpawnError, chain};
use crate::events::{Event, WorkerId};
use crate::link::Link;
use crate::worker::{Launcher, WorkerHandle, io as worker_io};

/// The longest a worker keeps trying to reach its executor once started.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// Variables of the executor's environment that workers read, which a
/// local worker inherits and a remote one gets in its ticket.
const FORWARDED: &[&str] = &[env::MAX_MEMORY_LEAK_SIZE, env::MEMORY_CHECK_INTERVAL];

/// Starts a pool's workers through its launcher command; they connect back
/// to the pool's listener.
pub(crate) struct RemoteLauncher {
    config: Arc<Config>,
    settings: LinkSettings,
    remote: RemoteConfig,
    /// Until the pool is finished.
    listener: Option<Listener>,
    /// What every launch's ticket says besides its credentials.
    worker: WorkerSettings,
}

impl RemoteLauncher {
    /// Binds the pool's listener.
    pub(crate) fn new(config: Arc<Config>, remote: &RemoteConfig) -> Result<RemoteLauncher, Error> {
        let mut worker = worker_settings(&config)?;
        let listener_config = ListenerConfig {
            liveness: remote.liveness,
            ..ListenerConfig::default()
        };
        let listener = Listener::bind(remote.listen, listener_config).map_err(|err| {
            let source = io::Error::new(io::ErrorKind::AddrNotAvailable, chain(&err));
            Error::Spawn(SpawnError::new(&config.program, source))
        })?;
        worker.dial = vec![remote.dial(listener.local_addr().port())];
        Ok(RemoteLauncher {
            settings: config.link_settings(),
            config,
            remote: remote.clone(),
            listener: Some(listener),
            worker,
        })
    }

    /// Expects launch `id`'s worker, then starts the launcher command with
    /// its ticket.
    fn start(&self, id: WorkerId) -> Result<RemoteTransport, Error> {
        fn failed(err: impl std::error::Error + Send + Sync + 'static) -> Error {
            Error::broken_by("a worker could not be launched", err)
        }
        let state = Arc::new(Mutex::new(LaunchState::new()));
        let delivering = Arc::downgrade(&state);
        let deliver = Box::new(move |arrival: Arrival| deliver(&delivering, arrival));
        let listener = self
            .listener
            .as_ref()
            .expect("no launch after the pool finished");
        let (expected, channel) = listener.expect(id, &self.worker, deliver).map_err(failed)?;
        let program = self.config.program.clone().into_os_string();
        let mut command = launch::launcher_command(&self.remote.launcher, &program)
            .expect("a launcher other than local has a command")
            .map_err(failed)?;
        let child = launch::start(&mut command, expected.ticket()).map_err(failed)?;
        transport::hold(&state, expected);
        Ok(RemoteTransport::new(
            channel,
            child,
            self.remote.launcher.to_string(),
            state,
            self.remote.liveness.timeout,
        ))
    }
}

/// What a remote worker's ticket asks of it besides its credentials and
/// where to dial: its environment gets the changes a local worker gets, and
/// the variables it would inherit from this process that workers read.
fn worker_settings(config: &Config) -> Result<WorkerSettings> {
    let changes = config.worker_env();
    let unicode = |text: OsString| {
        text.into_string().map_err(|text| {
            Error::InvalidArgument(format!(
                "the environment variable {text:?} is not Unicode, which workers started by a \
                 launcher need"
            ))
        })
    };
    let mut set = Vec::new();
    for key in FORWARDED {
        if let Some(value) = std::env::var_os(key) {
            set.push((key.to_string(), unicode(value)?));
        }
    }
    for (key, value) in changes.set {
        set.push((unicode(key)?, unicode(value)?));
    }
    let remove = changes
        .remove
        .into_iter()
        .map(unicode)
        .collect::<Result<_>>()?;
    Ok(WorkerSettings {
        dial: Vec::new(),
        connect_timeout: config.start_timeout.min(MAX_CONNECT_TIMEOUT),
        env: set,
        env_remove: remove,
    })
}

/// Hands an admitted worker to its launch, if the launch still exists.
fn deliver(state: &Weak<Mutex<LaunchState>>, arrival: Arrival) {
    match state.upgrade() {
        Some(state) => transport::deliver(&state, arrival),
        // The launch is over: dropping the link stops its worker.
        None => drop(arrival),
    }
}

impl Launcher for RemoteLauncher {
    fn launch(
        &mut self,
        worker: WorkerId,
        link: Arc<Link>,
        events: Sender<Event>,
    ) -> Result<Box<dyn WorkerHandle>, Error> {
        let transport = Arc::new(self.start(worker)?);
        worker_io::start(worker, transport, link, &self.settings, events)
            .map_err(|e| Error::broken_by("could not start a worker's threads", e))
    }

    /// Closes the listener (its port and its threads).
    fn finish(&mut self) {
        if let Some(listener) = self.listener.take() {
            log::debug!(
                "connections to the listener of the pool's workers at {}: {:?}",
                listener.local_addr(),
                listener.stats()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ticket_carries_what_a_local_worker_gets() {
        let mut config = Config::for_tests(1);
        config.memory_limit = Some(1 << 30);
        config.env = vec![("APP".into(), "1".into())];
        let settings = worker_settings(&config).unwrap();
        let value = |key: &str| {
            let set = &settings.env;
            set.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
        };
        assert_eq!(
            value(env::MEMORY_LIMIT).map(String::as_str),
            Some("1073741824")
        );
        assert_eq!(value(env::DEPTH).map(String::as_str), Some("1"));
        assert_eq!(value("APP").map(String::as_str), Some("1"));
        // Shared memory never reaches a remote worker.
        assert_eq!(settings.env_remove, [env::SHM_THRESHOLD, "RUST_BACKTRACE"]);
        config.memory_limit = None;
        let settings = worker_settings(&config).unwrap();
        assert_eq!(settings.env_remove, [env::SHM_THRESHOLD, env::MEMORY_LIMIT]);
    }
}
