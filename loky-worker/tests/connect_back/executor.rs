//! A test executor for connect-back workers: an authority, a listener,
//! tickets, launches, and the executor's side of each link.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use loky_proto::remote::{
    Authority, CONNECT_BACK_ARG, Control, Liveness, RelayHandle, Ticket, handshake,
    receive_control, send_control, spawn_executor_relay,
};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustls::{Connection, ServerConnection};

use crate::common::{DEADLINE, WORKER, Worker, kill_group};

/// Heartbeats fast enough for tests to see a loss quickly, and a timeout
/// long enough for a loaded machine.
pub(crate) const LIVENESS: Liveness = Liveness {
    interval: Duration::from_millis(250),
    timeout: Duration::from_secs(4),
};

/// An executor's authority and listener.
pub(crate) struct TestExecutor {
    pub(crate) authority: Authority,
    listener: TcpListener,
    pub(crate) addr: SocketAddr,
}

/// A worker that connected back: the protocol helpers on its relayed
/// channel, with the launcher process as the child (dropping it kills the
/// launcher's group), the relay's handle and the agent's introduction.
pub(crate) struct Remote {
    pub(crate) worker: Worker,
    pub(crate) relay: RelayHandle,
    pub(crate) agent: Control,
    /// Where the worker's connection came from.
    pub(crate) peer: SocketAddr,
}

impl TestExecutor {
    /// Listens on loopback.
    pub(crate) fn new() -> TestExecutor {
        TestExecutor::bind("127.0.0.1:0".parse().unwrap())
    }

    /// Listens on `addr`.
    pub(crate) fn bind(addr: SocketAddr) -> TestExecutor {
        let listener = TcpListener::bind(addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        TestExecutor {
            authority: Authority::new().unwrap(),
            addr: listener.local_addr().unwrap(),
            listener,
        }
    }

    /// A fresh ticket for one launch, with `env` for the worker.
    pub(crate) fn ticket(&self, env: &[(&str, &str)]) -> Ticket {
        let identity = self.authority.issue_client("launch-test").unwrap();
        Ticket {
            executor: vec![self.addr.to_string()],
            ca: self.authority.certificate().to_vec(),
            cert: identity.cert.to_vec(),
            key: identity.key.secret_pkcs8_der().to_vec(),
            liveness: LIVENESS,
            connect_timeout: Duration::from_secs(10),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            // As an executor does for a worker under a memory limit: a
            // backtrace would hide the limit's exit code.
            env_remove: vec!["RUST_BACKTRACE".into(), "RUST_LIB_BACKTRACE".into()],
        }
    }

    /// Starts the stock worker in connect-back mode through `launcher`
    /// (words before the worker), with `stdin` written to its standard
    /// input. Its stderr is captured.
    pub(crate) fn launch_with(launcher: &[&str], stdin: &[u8]) -> Child {
        let (program, args) = match launcher.split_first() {
            Some((program, args)) => (*program, args),
            None => (WORKER, &[][..]),
        };
        let mut command = Command::new(program);
        command.args(args);
        if !launcher.is_empty() {
            command.arg(WORKER);
        }
        command
            .arg(CONNECT_BACK_ARG)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command.spawn().expect("start the launcher");
        let mut input = child.stdin.take().unwrap();
        // A launcher that already left makes this fail: the test's checks
        // say why.
        let _ = input.write_all(stdin);
        child
    }

    /// Starts the stock worker in connect-back mode with `ticket`.
    pub(crate) fn launch(&self, ticket: &Ticket) -> Child {
        TestExecutor::launch_with(&[], &ticket.encode().unwrap())
    }

    /// Launches a worker with `env` and takes its connection.
    pub(crate) fn start(&self, env: &[(&str, &str)]) -> Remote {
        let child = self.launch(&self.ticket(env));
        self.accept(child)
    }

    /// Takes the next connection (of `child`'s worker): authenticates it,
    /// welcomes the agent and starts the relay. Should none come, kills
    /// `child`'s group before failing the test.
    pub(crate) fn accept(&self, mut child: Child) -> Remote {
        let (conn, tcp, agent) = match self.welcome() {
            Ok(welcomed) => welcomed,
            Err(err) => {
                kill_group(child.id());
                let _ = child.wait();
                panic!("{err}; launcher stderr: {}", stderr_of(&mut child));
            }
        };
        let peer = tcp.peer_addr().unwrap();
        let (channel, relay) = spawn_executor_relay(conn, tcp, LIVENESS).unwrap();
        Remote {
            worker: Worker::from_parts(child, channel),
            relay,
            agent,
            peer,
        }
    }

    /// Takes the next connection, authenticates it and welcomes its agent;
    /// returns the link before any relay runs, or why it failed.
    pub(crate) fn welcome(&self) -> Result<(Connection, TcpStream, Control), String> {
        let deadline = Instant::now() + DEADLINE;
        let mut fds = [PollFd::new(&self.listener, PollFlags::IN)];
        let timeout = Timespec::try_from(DEADLINE).unwrap();
        if poll(&mut fds, Some(&timeout)).unwrap() == 0 {
            return Err(format!("no worker connected within {DEADLINE:?}"));
        }
        let (mut tcp, _) = self.listener.accept().unwrap();
        tcp.set_nonblocking(false).unwrap();
        let mut conn =
            Connection::Server(ServerConnection::new(self.authority.server_config()).unwrap());
        handshake(&mut conn, &mut tcp, deadline).map_err(|e| format!("handshake: {e:?}"))?;
        let agent = receive_control(&mut conn, &mut tcp, deadline).map_err(|e| e.to_string())?;
        send_control(&mut conn, &mut tcp, &Control::Welcome, deadline)
            .map_err(|e| e.to_string())?;
        Ok((conn, tcp, agent))
    }
}

/// Everything `child` wrote on stderr (it must have exited or be about to).
pub(crate) fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        stderr.read_to_string(&mut text).unwrap();
    }
    text
}
