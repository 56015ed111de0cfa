//! `cargo xtask slurm -- COMMAND...`: runs COMMAND against a single-node
//! Slurm cluster on this machine, and stops what it started.
//!
//! As root, it installs Debian's `slurmd slurmctld slurm-client munge` if
//! they are missing, starts `munged` (as the `munge` user, unless one is
//! already running) and `slurmctld` and `slurmd` in the foreground with a
//! configuration of their own under `target/slurm/`, waits until the node
//! is idle, runs COMMAND with `SLURM_CONF` pointing at that configuration,
//! then stops the daemons it started, whatever COMMAND did.
//!
//! The configuration is the smallest that runs jobs as root in a container:
//! process tracking by parent pid, no task plugin, no accounting, one node
//! named after this host with all its CPUs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::thread;
use std::time::Duration;

use crate::runner::{self, Workspace};
use crate::system::{self, wait_until};

/// Debian's packages of a single-node cluster.
const PACKAGES: &[&str] = &["slurmd", "slurmctld", "slurm-client", "munge"];

/// How long the cluster may take to come up.
const STARTUP: Duration = Duration::from_secs(60);

/// Runs `cargo xtask slurm ARGS`.
pub(crate) fn run(workspace: &Workspace, args: &[String]) -> ExitCode {
    match system::command_after_dashes("slurm", args) {
        Ok(command) => {
            system::exit_code(with_cluster(workspace, |conf| run_command(command, conf)))
        }
        Err(usage) => usage,
    }
}

/// Brings a cluster up, runs `body` with its configuration file, and brings
/// the cluster down again.
fn with_cluster(
    workspace: &Workspace,
    body: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), String> {
    install()?;
    let dir = workspace.target_dir().join("slurm");
    let conf = write_config(&dir)?;
    let mut daemons = Daemons {
        started: Vec::new(),
        step_daemons_before: step_daemons(),
    };
    let result = daemons
        .start(&conf)
        .and_then(|()| wait_idle(&conf))
        .and_then(|()| body(&conf));
    cancel_jobs(&conf);
    daemons.stop();
    result
}

/// Cancels every job left on the cluster and waits (bounded) until none is
/// left, so that no job step outlives the cluster.
fn cancel_jobs(conf: &Path) {
    let _ = Command::new("scancel")
        .arg("--me")
        .env("SLURM_CONF", conf)
        .status();
    let _ = wait_until(system::STOP_GRACE, "the jobs to end", || {
        Command::new("squeue")
            .arg("-h")
            .env("SLURM_CONF", conf)
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|out| out.status.success() && out.stdout.is_empty())
    });
}

/// The pids of the `slurmstepd` processes running now.
fn step_daemons() -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.starts_with(b"slurmstepd"))
        })
        .collect()
}

fn run_command(command: &[String], conf: &Path) -> Result<(), String> {
    let mut child = Command::new(&command[0]);
    child.args(&command[1..]).env("SLURM_CONF", conf);
    runner::run(&mut child)
}

/// Installs the packages unless every program is there.
fn install() -> Result<(), String> {
    system::install(
        "Slurm",
        &["slurmd", "slurmctld", "srun", "sinfo", "munged"],
        PACKAGES,
    )
}

/// The short host name (as `hostname -s` prints it), which Slurm expects
/// as the node's name.
fn short_host_name() -> Result<String, String> {
    let name = fs::read_to_string("/proc/sys/kernel/hostname")
        .map_err(|e| format!("cannot read the host name: {e}"))?;
    let short = name.trim().split('.').next().unwrap_or_default();
    if short.is_empty() {
        return Err("the host has no name".into());
    }
    Ok(short.to_owned())
}

/// Writes the cluster's configuration under `dir`; returns its path.
fn write_config(dir: &Path) -> Result<PathBuf, String> {
    let io = |what: &str| {
        let what = what.to_owned();
        move |e: std::io::Error| format!("cannot {what}: {e}")
    };
    // State from an earlier run would bring back its jobs.
    let _ = fs::remove_dir_all(dir);
    for sub in ["state", "spool"] {
        fs::create_dir_all(dir.join(sub)).map_err(io("create the Slurm directories"))?;
    }
    let host = short_host_name()?;
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let d = dir.display();
    let conf = format!(
        "ClusterName=loky-test
SlurmctldHost={host}
SlurmUser=root
AuthType=auth/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
MpiDefault=none
SelectTypeParameters=CR_Core
NodeName={host} CPUs={cpus} State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"
    );
    let path = dir.join("slurm.conf");
    fs::write(&path, conf).map_err(io("write slurm.conf"))?;
    Ok(path)
}

/// The daemons this run started, stopped in reverse order.
struct Daemons {
    started: Vec<(&'static str, Child)>,
    /// The step daemons that ran before this cluster started: the others
    /// are this cluster's.
    step_daemons_before: Vec<u32>,
}

impl Daemons {
    fn start(&mut self, conf: &Path) -> Result<(), String> {
        if munge_works() {
            println!("munged is already running: using it");
        } else {
            self.start_munged()?;
        }
        let conf = conf.to_string_lossy().into_owned();
        self.spawn(
            "slurmctld",
            Command::new("slurmctld").args(["-D", "-c", "-f", &conf]),
        )?;
        self.spawn("slurmd", Command::new("slurmd").args(["-D", "-f", &conf]))
    }

    fn start_munged(&mut self) -> Result<(), String> {
        // The socket's directory, which the package's service would make.
        fs::create_dir_all("/run/munge").map_err(|e| format!("cannot create /run/munge: {e}"))?;
        let mut chown = Command::new("chown");
        chown.args(["munge:munge", "/run/munge"]);
        runner::run(&mut chown)?;
        self.spawn(
            "munged",
            Command::new("setpriv").args([
                "--reuid=munge",
                "--regid=munge",
                "--init-groups",
                "munged",
                "--foreground",
            ]),
        )?;
        wait_until(STARTUP, "munged to answer", munge_works)
    }

    fn spawn(&mut self, name: &'static str, command: &mut Command) -> Result<(), String> {
        let child = command
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        println!("started {name} (pid {})", child.id());
        self.started.push((name, child));
        Ok(())
    }

    /// Stops every daemon this run started: SIGTERM, then SIGKILL after
    /// a grace period.
    fn stop(&mut self) {
        while let Some((name, mut child)) = self.started.pop() {
            system::stop(name, &mut child);
        }
        // A step whose srun was killed can outlive slurmd, waiting for it.
        for pid in step_daemons() {
            if !self.step_daemons_before.contains(&pid) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                println!("killed a leftover step daemon (pid {pid})");
            }
        }
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether munge can encode and decode a credential.
fn munge_works() -> bool {
    let Ok(munge) = Command::new("munge")
        .arg("-n")
        .stderr(Stdio::null())
        .output()
    else {
        return false;
    };
    if !munge.status.success() {
        return false;
    }
    let Ok(mut unmunge) = Command::new("unmunge")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    if let Some(mut stdin) = unmunge.stdin.take() {
        let _ = std::io::Write::write_all(&mut stdin, &munge.stdout);
    }
    unmunge.wait().is_ok_and(|status| status.success())
}

/// Waits until the node is idle (it takes jobs).
fn wait_idle(conf: &Path) -> Result<(), String> {
    wait_until(STARTUP, "the Slurm node to be idle", || {
        Command::new("sinfo")
            .args(["-h", "-o", "%t"])
            .env("SLURM_CONF", conf)
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "idle")
    })
}
