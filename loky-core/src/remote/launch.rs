//! Starting one launcher command and handing it its ticket.

use std::ffi::OsString;
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use loky_proto::remote::{Ticket, TicketError};

use crate::launcher::{Launcher, LauncherError};

/// Why a launcher command could not be started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LaunchError {
    /// The launcher cannot build a command.
    #[error(transparent)]
    Launcher(#[from] LauncherError),
    /// The ticket cannot be written.
    #[error("cannot write the launch ticket")]
    Ticket(#[from] TicketError),
    /// The command did not start.
    #[error("cannot run the launcher command `{command}`")]
    Spawn {
        /// The command line, for the message.
        command: String,
        #[source]
        source: io::Error,
    },
}

/// The command that starts `program` through `launcher`, or `None` for a
/// local launcher: a process group of its own (so that a terminal's signals
/// go to the executor only, which decides what becomes of its workers),
/// standard input a pipe for the ticket, output passed through.
pub(crate) fn launcher_command(
    launcher: &Launcher,
    program: &OsString,
) -> Option<Result<Command, LauncherError>> {
    let line = match launcher.command_line(program)? {
        Ok(line) => line,
        Err(err) => return Some(Err(err)),
    };
    let (first, rest) = line.split_first().expect("a checked template has words");
    let mut command = Command::new(first);
    command
        .args(rest)
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .process_group(0);
    Some(Ok(command))
}

/// Starts `command` and writes `ticket` on its standard input, which is
/// then closed. A ticket is a few kilobytes, less than a pipe holds, so
/// writing it never waits on the launched process.
pub(crate) fn start(command: &mut Command, ticket: &Ticket) -> Result<Child, LaunchError> {
    let bytes = ticket.encode()?;
    let mut child = command.spawn().map_err(|source| LaunchError::Spawn {
        command: display(command),
        source,
    })?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // A launcher that exits at once (a typo in the template) closes the
    // pipe: its exit status, reaped by the caller, tells why.
    match stdin.write_all(&bytes) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => {}
        Err(source) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(LaunchError::Spawn {
                command: display(command),
                source,
            });
        }
    }
    Ok(child)
}

/// The command line, for messages.
fn display(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|word| word.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_launcher_has_no_command() {
        assert!(launcher_command(&Launcher::local(), &OsString::from("w")).is_none());
    }

    #[test]
    fn a_command_gets_the_ticket_on_stdin_and_nothing_in_its_arguments() {
        let launcher = Launcher::command("sh -c \"cat > \\\"$0\\\"\" {worker}");
        let dir = std::env::temp_dir().join(format!("loky-launch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("ticket");
        // `sh -c SCRIPT $0 ...`: the worker program's path is where the
        // script writes its standard input.
        let mut command = launcher_command(&launcher, &out.clone().into_os_string())
            .unwrap()
            .unwrap();
        let ticket = Ticket {
            executor: vec!["127.0.0.1:1".into()],
            ca: vec![1; 10],
            cert: vec![2; 10],
            key: b"secret-key-bytes".to_vec(),
            liveness: Default::default(),
            connect_timeout: std::time::Duration::from_secs(1),
            env: Vec::new(),
            env_remove: Vec::new(),
        };
        let mut child = start(&mut command, &ticket).unwrap();
        assert!(child.wait().unwrap().success());
        let written = std::fs::read(&out).unwrap();
        assert_eq!(written, ticket.encode().unwrap());
        let args: Vec<_> = command.get_args().collect();
        assert!(
            args.iter()
                .all(|arg| !arg.to_string_lossy().contains("secret")),
            "{args:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_launcher_that_cannot_start_says_which_command() {
        let launcher = Launcher::command("/nonexistent/launcher {worker}");
        let mut command = launcher_command(&launcher, &OsString::from("w"))
            .unwrap()
            .unwrap();
        let ticket = Ticket {
            executor: vec!["127.0.0.1:1".into()],
            ca: vec![1],
            cert: vec![2],
            key: vec![3],
            liveness: Default::default(),
            connect_timeout: std::time::Duration::from_secs(1),
            env: Vec::new(),
            env_remove: Vec::new(),
        };
        let err = start(&mut command, &ticket).unwrap_err();
        assert!(
            err.to_string()
                .contains("/nonexistent/launcher w --loky-connect-back"),
            "{err}"
        );
    }
}
