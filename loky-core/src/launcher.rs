//! How an executor starts its workers: as its own child processes, or
//! through a command that starts them elsewhere and lets them connect back.

use std::ffi::OsString;
use std::fmt;

use loky_proto::remote::CONNECT_BACK_ARG;

/// The placeholder a command template must contain once.
const PLACEHOLDER: &str = "{worker}";

/// How an executor starts its workers.
///
/// [`Launcher::local()`] (the default) starts each worker as a child
/// process of the executor. Any other launcher runs a command that starts
/// the worker, here or on another machine; the worker then connects back to
/// the executor over TCP, proving itself with credentials made for that
/// launch alone, which the executor writes on the command's standard input
/// (never in its arguments or environment).
///
/// ```
/// use loky::Launcher;
///
/// let launcher = Launcher::command("srun --nodes=1 --ntasks=1 --partition=short {worker}");
/// assert_eq!(
///     launcher.to_string(),
///     "srun --nodes=1 --ntasks=1 --partition=short {worker}"
/// );
/// assert!(Launcher::local().is_local());
/// assert!(!Launcher::ssh("node7").is_local());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Launcher {
    kind: Kind,
}

#[derive(Clone, PartialEq, Eq, Hash, Default)]
enum Kind {
    #[default]
    Local,
    Command(Template),
}

/// A command template, as written and as parsed.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Template {
    source: String,
    words: Result<Vec<Word>, LauncherError>,
}

/// One word of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Word {
    Literal(String),
    /// `{worker}` as a word of its own: the worker's words, each a word.
    Worker,
    /// `{worker}` inside a larger word: the worker's words quoted for a
    /// POSIX shell and joined into that one word.
    Quoted {
        before: String,
        after: String,
    },
}

/// A launcher that cannot build a command.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
pub enum LauncherError {
    /// The template has no words.
    #[error("the launcher command template is empty")]
    Empty,
    /// The template does not split into words.
    #[error("the launcher command template `{0}` has an unclosed quote or a trailing backslash")]
    Unbalanced(String),
    /// `{worker}` is missing or repeated.
    #[error(
        "the launcher command template `{template}` must contain `{{worker}}` exactly once \
         (found {count})"
    )]
    Placeholder {
        /// The template.
        template: String,
        /// How many times it contains `{worker}`.
        count: usize,
    },
    /// The host of [`Launcher::ssh`] is empty or looks like an option.
    #[error("`{0}` is not a host for ssh")]
    Host(String),
    /// The worker's words must be quoted for a shell and are not Unicode.
    #[error("the worker program path {0:?} is not Unicode, so it cannot be quoted for a shell")]
    NotUnicode(OsString),
    /// The worker's words contain a character no shell quoting can carry.
    #[error("the worker program path {0:?} cannot be quoted for a shell")]
    Unquotable(String),
}

impl Launcher {
    /// Workers are child processes of the executor (the default).
    pub fn local() -> Launcher {
        Launcher::default()
    }

    /// Workers are started by `template`: split into words like a shell
    /// does (quotes and backslashes, no expansions, no shell run), with
    /// `{worker}` replaced by the worker program and its arguments.
    ///
    /// `{worker}` as a word of its own becomes as many words (the program
    /// path, then its arguments); inside a larger word (as in
    /// `bash -c "exec {worker}"`) it becomes those words quoted for a POSIX
    /// shell. A template that does not contain `{worker}` exactly once, or
    /// does not split, is refused when the executor is built.
    pub fn command(template: impl Into<String>) -> Launcher {
        let source = template.into();
        let words = parse(&source);
        Launcher {
            kind: Kind::Command(Template { source, words }),
        }
    }

    /// Workers are Slurm job steps, started by `srun` (inside an
    /// allocation, such as an `sbatch` script, each worker is a step of
    /// that job; outside one, a job of its own).
    ///
    /// The same as
    /// `Launcher::command("srun --nodes=1 --ntasks=1 --quiet {worker}")`.
    pub fn slurm() -> Launcher {
        Launcher::command("srun --nodes=1 --ntasks=1 --quiet {worker}")
    }

    /// Workers run on `host`, started by `ssh` without a terminal (which
    /// would echo the credentials) and never asking for a password; the
    /// remote shell `exec`s the worker.
    ///
    /// The same as
    /// `Launcher::command("ssh -T -o BatchMode=yes -- HOST \"exec {worker}\"")`,
    /// the worker's words quoted for the remote shell. A host that is empty,
    /// starts with `-` or holds spaces, quotes or backslashes is refused when
    /// the executor is built.
    pub fn ssh(host: impl Into<String>) -> Launcher {
        let host = host.into();
        let launcher = Launcher::command(format!(
            "ssh -T -o BatchMode=yes -- {host} \"exec {PLACEHOLDER}\""
        ));
        let plain = !host.is_empty()
            && !host.starts_with('-')
            && !host.contains(|c: char| c.is_whitespace() || "'\"\\".contains(c));
        if plain {
            return launcher;
        }
        let source = launcher.to_string();
        Launcher {
            kind: Kind::Command(Template {
                source,
                words: Err(LauncherError::Host(host)),
            }),
        }
    }

    /// Whether workers are the executor's own child processes.
    pub fn is_local(&self) -> bool {
        matches!(self.kind, Kind::Local)
    }

    /// The command template, unless the launcher is local.
    pub fn template(&self) -> Option<&str> {
        match &self.kind {
            Kind::Local => None,
            Kind::Command(template) => Some(&template.source),
        }
    }

    /// Checks that the launcher can build commands.
    pub fn check(&self) -> Result<(), LauncherError> {
        match &self.kind {
            Kind::Local => Ok(()),
            Kind::Command(template) => template.words.as_ref().map(|_| ()).map_err(Clone::clone),
        }
    }

    /// The command line that starts `program` in connect-back mode, or
    /// `None` for a local launcher.
    pub(crate) fn command_line(
        &self,
        program: &OsString,
    ) -> Option<Result<Vec<OsString>, LauncherError>> {
        let Kind::Command(template) = &self.kind else {
            return None;
        };
        let worker = [program.clone(), OsString::from(CONNECT_BACK_ARG)];
        Some(
            template
                .words
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|words| expand(words, &worker)),
        )
    }
}

impl fmt::Display for Launcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Local => f.write_str("local"),
            Kind::Command(template) => f.write_str(&template.source),
        }
    }
}

impl fmt::Debug for Launcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Local => f.write_str("Launcher::local()"),
            Kind::Command(template) => write!(f, "Launcher::command({:?})", template.source),
        }
    }
}

/// Splits a template into words and finds its placeholder.
fn parse(template: &str) -> Result<Vec<Word>, LauncherError> {
    let words =
        shlex::split(template).ok_or_else(|| LauncherError::Unbalanced(template.to_owned()))?;
    if words.is_empty() {
        return Err(LauncherError::Empty);
    }
    let count: usize = words.iter().map(|w| w.matches(PLACEHOLDER).count()).sum();
    if count != 1 {
        return Err(LauncherError::Placeholder {
            template: template.to_owned(),
            count,
        });
    }
    Ok(words
        .into_iter()
        .map(|word| match word.split_once(PLACEHOLDER) {
            Some(("", "")) => Word::Worker,
            Some((before, after)) => Word::Quoted {
                before: before.to_owned(),
                after: after.to_owned(),
            },
            None => Word::Literal(word),
        })
        .collect())
}

/// The template's words with the placeholder replaced by `worker`.
fn expand(words: &[Word], worker: &[OsString]) -> Result<Vec<OsString>, LauncherError> {
    let mut line = Vec::with_capacity(words.len() + worker.len());
    for word in words {
        match word {
            Word::Literal(word) => line.push(OsString::from(word)),
            Word::Worker => line.extend(worker.iter().cloned()),
            Word::Quoted { before, after } => {
                line.push(OsString::from(format!("{before}{}{after}", quote(worker)?)));
            }
        }
    }
    Ok(line)
}

/// `words` quoted for a POSIX shell and joined with spaces.
fn quote(words: &[OsString]) -> Result<String, LauncherError> {
    let words = words
        .iter()
        .map(|word| {
            word.to_str()
                .ok_or_else(|| LauncherError::NotUnicode(word.clone()))
        })
        .collect::<Result<Vec<&str>, _>>()?;
    shlex::try_join(words.iter().copied()).map_err(|_| LauncherError::Unquotable(words.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(launcher: &Launcher, program: &str) -> Result<Vec<String>, LauncherError> {
        launcher
            .command_line(&OsString::from(program))
            .expect("not local")
            .map(|words| {
                words
                    .into_iter()
                    .map(|w| w.into_string().unwrap())
                    .collect()
            })
    }

    #[test]
    fn the_worker_placeholder_becomes_the_program_and_its_argument() {
        let launcher = Launcher::command("srun --nodes=1 --ntasks=1 {worker}");
        assert_eq!(
            line(&launcher, "/opt/app/bin/worker").unwrap(),
            [
                "srun",
                "--nodes=1",
                "--ntasks=1",
                "/opt/app/bin/worker",
                CONNECT_BACK_ARG
            ]
        );
    }

    #[test]
    fn templates_split_like_a_shell_without_one() {
        let launcher =
            Launcher::command(r#"env "LABEL=a b" 'x$HOME' back\ slash {worker} --after "*""#);
        assert_eq!(
            line(&launcher, "w").unwrap(),
            [
                "env",
                "LABEL=a b",
                "x$HOME",
                "back slash",
                "w",
                CONNECT_BACK_ARG,
                "--after",
                "*"
            ]
        );
    }

    #[test]
    fn a_placeholder_inside_a_word_is_quoted_for_a_shell() {
        let launcher = Launcher::command(r#"bash -c "exec {worker} 2>>log""#);
        let words = line(&launcher, "/my dir/it's").unwrap();
        assert_eq!(words[..2], ["bash", "-c"]);
        let script = &words[2];
        assert!(
            script.starts_with("exec ") && script.ends_with(" 2>>log"),
            "{script}"
        );
        // The shell splits it back into the program and its argument.
        let inner = shlex::split(&script["exec ".len()..script.len() - " 2>>log".len()]).unwrap();
        assert_eq!(inner, ["/my dir/it's", CONNECT_BACK_ARG]);
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        assert_eq!(Launcher::command("").check(), Err(LauncherError::Empty));
        assert_eq!(Launcher::command("  ").check(), Err(LauncherError::Empty));
        assert!(matches!(
            Launcher::command("srun 'unclosed {worker}").check(),
            Err(LauncherError::Unbalanced(_))
        ));
        assert!(matches!(
            Launcher::command("srun hostname").check(),
            Err(LauncherError::Placeholder { count: 0, .. })
        ));
        let twice = Launcher::command("{worker} {worker}").check().unwrap_err();
        assert!(matches!(twice, LauncherError::Placeholder { count: 2, .. }));
        assert!(twice.to_string().contains("exactly once"), "{twice}");
        assert!(line(&Launcher::command("srun"), "w").is_err());
    }

    #[test]
    fn slurm_runs_one_task_on_one_node() {
        let words = line(&Launcher::slurm(), "/bin/w").unwrap();
        assert_eq!(words[0], "srun");
        assert!(words.contains(&"--ntasks=1".to_owned()));
        assert_eq!(words[words.len() - 2..], ["/bin/w", CONNECT_BACK_ARG]);
    }

    #[test]
    fn ssh_never_uses_a_terminal_and_quotes_for_the_remote_shell() {
        let launcher = Launcher::ssh("node7");
        let words = line(&launcher, "/srv/my app/worker").unwrap();
        assert_eq!(
            words[..6],
            ["ssh", "-T", "-o", "BatchMode=yes", "--", "node7"]
        );
        assert_eq!(words.len(), 7, "the command is one word: {words:?}");
        assert_eq!(
            shlex::split(&words[6]).unwrap(),
            ["exec", "/srv/my app/worker", CONNECT_BACK_ARG]
        );
        assert_eq!(
            launcher,
            Launcher::command("ssh -T -o BatchMode=yes -- node7 \"exec {worker}\"")
        );
        for host in ["", "-oProxyCommand=x", "a b", "it's", "back\\slash"] {
            assert_eq!(
                Launcher::ssh(host).check(),
                Err(LauncherError::Host(host.to_owned()))
            );
        }
    }

    #[test]
    fn local_has_no_command() {
        let local = Launcher::local();
        assert!(local.is_local());
        assert_eq!(local.check(), Ok(()));
        assert!(local.command_line(&OsString::from("w")).is_none());
        assert_eq!(local.template(), None);
        assert_eq!(local.to_string(), "local");
        assert_eq!(local, Launcher::default());
    }

    #[test]
    fn launchers_compare_by_template() {
        assert_eq!(
            Launcher::slurm(),
            Launcher::command("srun --nodes=1 --ntasks=1 --quiet {worker}")
        );
        assert_ne!(Launcher::slurm(), Launcher::local());
        assert_eq!(
            format!("{:?}", Launcher::command("x {worker}")),
            "Launcher::command(\"x {worker}\")"
        );
    }
}
