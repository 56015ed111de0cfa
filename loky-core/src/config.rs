//! The settings of a pool, as the builder resolved them.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use loky_proto::{Signature, env};

/// What happens when a worker dies unexpectedly; set with
/// [`ExecutorBuilder::on_worker_crash`](crate::ExecutorBuilder::on_worker_crash).
///
/// ```
/// use loky::{CrashPolicy, Error, ProcessPoolExecutor, Task};
///
/// const EXIT: Task<i32, ()> = Task::new("exit");
/// const SQUARE: Task<i64, i64> = Task::new("square");
///
/// # // Runs where LOKY_WORKER names a worker program (`cargo xtask test` sets it).
/// # if std::env::var_os("LOKY_WORKER").is_none() { return Ok(()); }
/// let ex = ProcessPoolExecutor::builder()
///     .on_worker_crash(CrashPolicy::Respawn)
///     .build()?;
/// let crash = ex.submit(EXIT, 3)?.result();
/// assert!(matches!(crash, Err(Error::TerminatedWorker(_))));
/// assert_eq!(ex.submit(SQUARE, 7)?.result()?, 49); // the pool goes on
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum CrashPolicy {
    /// loky's behaviour: the pool is broken; every unfinished future fails
    /// with [`Error::TerminatedWorker`](crate::Error::TerminatedWorker) and
    /// later submits fail too.
    #[default]
    BreakPool,
    /// Only the call that was running on the dead worker fails (with
    /// `TerminatedWorker` naming it); calls it held but had not started go
    /// to other workers; the worker is replaced and the pool never breaks.
    Respawn,
}

/// How to shut an executor down; see
/// [`ProcessPoolExecutor::shutdown_with`](crate::ProcessPoolExecutor::shutdown_with).
///
/// The default waits for every submitted task, as `shutdown(true)`.
///
/// ```
/// use loky::{ProcessPoolExecutor, Shutdown};
///
/// # // Runs where LOKY_WORKER names a worker program (`cargo xtask test` sets it).
/// # if std::env::var_os("LOKY_WORKER").is_none() { return Ok(()); }
/// let ex = ProcessPoolExecutor::new(2)?;
/// // Stop now: kill the workers; unfinished futures fail with ShutdownExecutor.
/// ex.shutdown_with(Shutdown { kill_workers: true, ..Shutdown::default() });
/// # Ok::<(), loky::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shutdown {
    /// Block until every task finished and every worker was reaped.
    pub wait: bool,
    /// Kill the workers (and their process groups) at once; unfinished
    /// futures fail with
    /// [`Error::ShutdownExecutor`](crate::Error::ShutdownExecutor).
    pub kill_workers: bool,
    /// Cancel the futures that have not started.
    pub cancel_futures: bool,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            wait: true,
            kill_workers: false,
            cancel_futures: false,
        }
    }
}

/// What a worker's own I/O threads need to know of the pool's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LinkSettings {
    /// How long a new worker may take to say hello.
    pub(crate) start_timeout: Duration,
    /// The largest frame accepted from the worker.
    pub(crate) max_frame: usize,
}

/// A registered task run first in every new worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Initializer {
    pub(crate) sig: Signature,
    pub(crate) args: Vec<u8>,
}

/// Everything a pool needs to know to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Config {
    pub(crate) max_workers: usize,
    pub(crate) program: PathBuf,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) initializer: Option<Initializer>,
    pub(crate) max_tasks_per_child: Option<usize>,
    pub(crate) crash_policy: CrashPolicy,
    pub(crate) task_timeout: Option<Duration>,
    pub(crate) memory_limit: Option<u64>,
    pub(crate) kill_grace: Duration,
    pub(crate) start_timeout: Duration,
    pub(crate) max_frame: usize,
    /// Frames for local workers whose body exceeds this travel in shared
    /// memory.
    pub(crate) shm_threshold: usize,
    /// How long a thread blocked on a result may watch for it before it
    /// sleeps (see `ExecutorBuilder::wait_spin`); zero: never.
    pub(crate) wait_spin: Duration,
    /// Nesting depth of the workers this pool starts.
    pub(crate) depth: u32,
    /// What dropping the last handle does.
    pub(crate) on_drop: Shutdown,
    /// Workers started by a launcher command, connecting back; `None`:
    /// the executor's own child processes.
    #[cfg(feature = "remote")]
    pub(crate) remote: Option<RemoteConfig>,
}

/// A pool's settings for workers started by a launcher command (feature
/// `remote`), as the builder resolved them.
#[cfg(feature = "remote")]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RemoteConfig {
    pub(crate) launcher: crate::launcher::Launcher,
    /// Where the listener binds.
    pub(crate) listen: std::net::SocketAddr,
    /// The host name or address workers dial; the port is the listener's.
    pub(crate) advertise: String,
    pub(crate) liveness: loky_proto::remote::Liveness,
}

#[cfg(feature = "remote")]
impl RemoteConfig {
    /// The address workers dial.
    pub(crate) fn dial(&self, port: u16) -> String {
        use std::net::{IpAddr, SocketAddr};
        match self.advertise.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port).to_string(),
            Err(_) => format!("{}:{port}", self.advertise),
        }
    }
}

/// What a worker's environment gets on top of the one it starts with: the
/// variables removed, then those set (in order: a later one wins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct WorkerEnv {
    pub(crate) remove: Vec<OsString>,
    pub(crate) set: Vec<(OsString, OsString)>,
}

impl Config {
    /// The same settings but for `max_workers`: such pools can be resized
    /// into one another.
    pub(crate) fn same_but_size(&self, other: &Config) -> bool {
        Config {
            max_workers: other.max_workers,
            ..self.clone()
        } == *other
    }

    pub(crate) fn link_settings(&self) -> LinkSettings {
        LinkSettings {
            start_timeout: self.start_timeout,
            max_frame: self.max_frame,
        }
    }

    /// The command that starts one worker (the channel is added at spawn).
    pub(crate) fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        let changes = self.worker_env();
        for key in &changes.remove {
            command.env_remove(key);
        }
        command.envs(changes.set);
        command
    }

    /// The environment changes every worker gets, the user's last.
    pub(crate) fn worker_env(&self) -> WorkerEnv {
        let mut changes = WorkerEnv {
            // Whoever reaches the worker says whether it takes descriptors.
            remove: vec![env::SHM_THRESHOLD.into()],
            set: vec![
                (env::DEPTH.into(), self.depth.to_string().into()),
                (env::WORKER_PROGRAM.into(), self.program.clone().into()),
                (env::MAX_FRAME.into(), self.max_frame.to_string().into()),
            ],
        };
        match self.memory_limit {
            Some(limit) => {
                let limit = limit.to_string().into();
                changes.set.push((env::MEMORY_LIMIT.into(), limit));
                // With RUST_BACKTRACE set, std prints a backtrace on
                // allocation failure before aborting, which clobbers the
                // errno the worker uses to tell an out-of-memory abort from
                // another one.
                changes.remove.push("RUST_BACKTRACE".into());
            }
            None => changes.remove.push(env::MEMORY_LIMIT.into()),
        }
        changes.set.extend(self.env.iter().cloned());
        changes
    }
}

#[cfg(test)]
impl Config {
    /// Default settings for `max_workers` workers of a program that is
    /// never run (the supervisor's unit tests start no process).
    pub(crate) fn for_tests(max_workers: usize) -> Config {
        Config {
            max_workers,
            program: PathBuf::from("/fake/loky-worker"),
            env: Vec::new(),
            idle_timeout: None,
            initializer: None,
            max_tasks_per_child: None,
            crash_policy: CrashPolicy::BreakPool,
            task_timeout: None,
            memory_limit: None,
            kill_grace: Duration::from_millis(500),
            start_timeout: Duration::from_secs(30),
            max_frame: loky_proto::DEFAULT_MAX_FRAME,
            shm_threshold: loky_proto::shm::DEFAULT_SHM_THRESHOLD,
            wait_spin: Duration::ZERO,
            depth: 1,
            on_drop: Shutdown::default(),
            #[cfg(feature = "remote")]
            remote: None,
        }
    }
}
