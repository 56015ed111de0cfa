//! `cargo xtask ssh -- COMMAND...`: runs COMMAND against an ssh server of
//! its own on this machine, and stops it afterwards.
//!
//! As root, it installs Debian's `openssh-server` and `openssh-client` if
//! they are missing, then, under `target/ssh/`, makes a host key and two
//! client keys (one the server accepts, one it refuses), a server
//! configuration (loopback only, a free port, keys only, nothing of
//! `/etc/ssh` or `~/.ssh` used or changed) and a client configuration
//! naming the server [`HOST`] (and [`DENIED_HOST`] with the refused key).
//! COMMAND runs with an `ssh` first on its `PATH` that is the system's
//! `ssh` reading that configuration, `LOKY_SSH_HOST` and
//! `LOKY_SSH_DENIED_HOST` naming the two hosts: `Launcher::ssh(host)` runs
//! its usual command line against a real `sshd`.

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use crate::runner::{self, Workspace};
use crate::system::{self, wait_until};

/// Debian's packages of the server and the client.
const PACKAGES: &[&str] = &["openssh-server", "openssh-client"];

/// The host name under which the client reaches the server with a key it
/// accepts.
const HOST: &str = "loky-ssh-test";

/// The same server reached with a key it does not accept.
const DENIED_HOST: &str = "loky-ssh-denied";

/// How long the server may take to accept a first login.
const STARTUP: Duration = Duration::from_secs(60);

/// Runs `cargo xtask ssh ARGS`.
pub(crate) fn run(workspace: &Workspace, args: &[String]) -> ExitCode {
    let command = match system::command_after_dashes("ssh", args) {
        Ok(command) => command,
        Err(usage) => return usage,
    };
    let dir = workspace.target_dir().join("ssh");
    system::exit_code(with_server(&dir, |env| {
        let mut child = Command::new(&command[0]);
        child.args(&command[1..]).envs(env.vars());
        runner::run(&mut child)
    }))
}

/// What a command run against the server needs.
struct Env {
    /// The directory of the `ssh` that reads the test configuration.
    bin: PathBuf,
}

impl Env {
    /// The environment of a command run against the server.
    fn vars(&self) -> Vec<(&'static str, std::ffi::OsString)> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let dirs = std::iter::once(self.bin.clone()).chain(std::env::split_paths(&path));
        let path = std::env::join_paths(dirs).unwrap_or(path);
        vec![
            ("PATH", path),
            ("LOKY_SSH_HOST", HOST.into()),
            ("LOKY_SSH_DENIED_HOST", DENIED_HOST.into()),
        ]
    }
}

/// Sets the server up under `dir`, starts it, runs `body`, and stops the
/// server whatever `body` did.
fn with_server(dir: &Path, body: impl FnOnce(&Env) -> Result<(), String>) -> Result<(), String> {
    if !system::is_root() {
        return Err(
            "the ssh tests need root (they log in as root to a server of their own)".into(),
        );
    }
    system::install("OpenSSH", &["sshd", "ssh", "ssh-keygen"], PACKAGES)?;
    let sshd = program("sshd")?;
    let env = configure(dir)?;
    // The privilege separation directory, which the package's service
    // would make.
    fs::create_dir_all("/run/sshd").map_err(|e| format!("cannot create /run/sshd: {e}"))?;
    let config = dir.join("sshd_config");
    let mut server = Server {
        child: Some(
            Command::new(&sshd)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start sshd: {e}"))?,
        ),
    };
    println!("started sshd (pid {})", server.pid());
    let ssh = env.bin.join("ssh");
    let result = wait_until(STARTUP, "sshd to accept a login", || {
        Command::new(&ssh)
            .args(["-T", "-o", "BatchMode=yes", HOST, "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    })
    .and_then(|()| body(&env));
    server.stop();
    result
}

/// The absolute path of `name` (sshd must be started by one).
fn program(name: &str) -> Result<PathBuf, String> {
    system::find(name).ok_or_else(|| format!("{name} is not installed"))
}

/// `path` quoted for a POSIX shell.
fn quoted(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "'\\''"))
}

/// Writes the keys and configurations under `dir` (emptied first).
fn configure(dir: &Path) -> Result<Env, String> {
    let io = |what: String| move |e: std::io::Error| format!("cannot {what}: {e}");
    let _ = fs::remove_dir_all(dir);
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).map_err(io(format!("create {}", bin.display())))?;
    for key in ["host_key", "client_key", "refused_key"] {
        let mut keygen = Command::new("ssh-keygen");
        keygen
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "loky-test", "-f"])
            .arg(dir.join(key))
            .stdin(Stdio::null());
        runner::run(&mut keygen)?;
    }
    let read = |name: &str| fs::read_to_string(dir.join(name)).map_err(io(format!("read {name}")));
    fs::write(dir.join("authorized_keys"), read("client_key.pub")?)
        .map_err(io("write authorized_keys".into()))?;
    let port = free_port()?;
    let d = dir.display();
    let server = format!(
        "Port {port}
ListenAddress 127.0.0.1
HostKey \"{d}/host_key\"
PidFile \"{d}/sshd.pid\"
AuthorizedKeysFile \"{d}/authorized_keys\"
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
PrintMotd no
LogLevel ERROR
"
    );
    fs::write(dir.join("sshd_config"), server).map_err(io("write sshd_config".into()))?;
    // The host key, as the client must find it: `[host]:port key`.
    let host_pub = read("host_key.pub")?;
    let host_key = host_pub.split_whitespace().take(2).collect::<Vec<_>>();
    let host_key = host_key.join(" ");
    fs::write(
        dir.join("known_hosts"),
        format!("[127.0.0.1]:{port} {host_key}\n"),
    )
    .map_err(io("write known_hosts".into()))?;
    let user = user()?;
    let client = format!(
        "Host {HOST} {DENIED_HOST}
    HostName 127.0.0.1
    Port {port}
    User {user}
    IdentitiesOnly yes
    UserKnownHostsFile \"{d}/known_hosts\"
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    LogLevel ERROR

Host {HOST}
    IdentityFile \"{d}/client_key\"

Host {DENIED_HOST}
    IdentityFile \"{d}/refused_key\"
"
    );
    fs::write(dir.join("ssh_config"), client).map_err(io("write ssh_config".into()))?;
    let ssh = program("ssh")?;
    let wrapper = bin.join("ssh");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {} -F {} \"$@\"\n",
            quoted(&ssh),
            quoted(&dir.join("ssh_config"))
        ),
    )
    .map_err(io("write the ssh wrapper".into()))?;
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755))
        .map_err(io("make the ssh wrapper executable".into()))?;
    Ok(Env { bin })
}

/// A loopback port nothing listens on now.
fn free_port() -> Result<u16, String> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// The name of the user xtask runs as.
fn user() -> Result<String, String> {
    let out = Command::new("id")
        .arg("-un")
        .output()
        .map_err(|e| format!("cannot run id: {e}"))?;
    let name = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if name.is_empty() {
        return Err("id -un printed no user name".into());
    }
    Ok(name)
}

/// The running server, stopped on drop.
struct Server {
    child: Option<Child>,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            system::stop("sshd", &mut child);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
