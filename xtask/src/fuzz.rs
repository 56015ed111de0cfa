//! `cargo xtask fuzz [--seconds N] [--seed] [--merge] [TARGET]`: builds the
//! fuzz targets of `fuzz/` with coverage instrumentation and runs each (or
//! TARGET) under libFuzzer for N seconds (default 600), then prints how many
//! inputs each ran.
//!
//! libFuzzer (the `libfuzzer-sys` crate, which builds it from source with
//! the C++ compiler) needs no nightly toolchain and no cargo subcommand when
//! its instrumentation flags are passed as here: those are exactly what
//! `cargo fuzz build --sanitizer none` passes, so `cargo fuzz run -s none
//! TARGET` works on the same targets for whoever has cargo-fuzz.
//!
//! The committed corpus (`fuzz/corpus/TARGET`) is only read; new inputs go
//! to `fuzz/target/corpus/TARGET`. `--merge` folds those that add coverage
//! into the committed corpus; `--seed` rewrites its seed inputs first. A
//! finding is written to `fuzz/artifacts/TARGET/` and fails the command.

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use crate::runner::{self, Workspace};

/// Every fuzz target, as a binary of the `fuzz` package.
pub(crate) const TARGETS: &[&str] = &["worker_reads_requests", "parent_reads_responses"];

/// How long `cargo xtask test` runs each target: a smoke run on every CI
/// machine, the long runs are `cargo xtask fuzz`'s.
pub(crate) const CI_SECONDS: u64 = 15;

/// Default run time of each target.
const DEFAULT_SECONDS: u64 = 600;

/// Largest input: frames of any kind fit, and runs stay fast.
const MAX_LEN: &str = "-max_len=4096";

/// The instrumentation `cargo fuzz build -s none` passes (libFuzzer's
/// coverage counters, comparison tracing, `cfg(fuzzing)`), all stable flags.
const RUSTFLAGS: &str = "-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    -Cllvm-args=-sanitizer-coverage-stack-depth \
    -Cllvm-args=-simplifycfg-branch-fold-threshold=0 \
    --cfg fuzzing";

/// Options of `cargo xtask fuzz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Options {
    seconds: u64,
    target: Option<String>,
    seed: bool,
    merge: bool,
}

impl Options {
    /// Parses the arguments after `fuzz`.
    pub(crate) fn parse(args: &[String]) -> Result<Self, String> {
        let mut options = Options {
            seconds: DEFAULT_SECONDS,
            target: None,
            seed: false,
            merge: false,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--seconds" => {
                    let value = args.next().ok_or("--seconds needs a number")?;
                    options.seconds = value
                        .parse()
                        .map_err(|_| format!("--seconds needs a number, not `{value}`"))?;
                }
                "--seed" => options.seed = true,
                "--merge" => options.merge = true,
                target if TARGETS.contains(&target) && options.target.is_none() => {
                    options.target = Some(target.to_owned());
                }
                other => {
                    return Err(format!(
                        "unknown option or target `{other}` for `fuzz` (targets: {})",
                        TARGETS.join(", ")
                    ));
                }
            }
        }
        Ok(options)
    }
}

/// The `cargo xtask test` step: every target for [`CI_SECONDS`].
pub(crate) fn ci_command(workspace: &Workspace) -> Command {
    let seconds = CI_SECONDS.to_string();
    workspace.cargo(&[
        "run",
        "--quiet",
        "--package",
        "xtask",
        "--",
        "fuzz",
        "--seconds",
        &seconds,
    ])
}

/// Runs `cargo xtask fuzz` with `options`.
pub(crate) fn run(workspace: &Workspace, options: &Options) -> ExitCode {
    match fuzz(workspace, options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn fuzz(workspace: &Workspace, options: &Options) -> Result<(), String> {
    let dir = workspace.root().join("fuzz");
    let host = host_triple()?;
    if options.seed {
        let mut seed = cargo_in(
            workspace,
            &dir,
            &["run", "--release", "--bin", "seed-corpus"],
        );
        runner::run(&mut seed)?;
    }
    let mut build = cargo_in(workspace, &dir, &["build", "--release", "--target", &host]);
    for target in TARGETS {
        build.args(["--bin", target]);
    }
    build.env("RUSTFLAGS", RUSTFLAGS);
    let (built, _) = runner::timed(&format!("build: {}", runner::display(&build)), || {
        runner::run(&mut build)
    });
    built?;
    let bin_dir = dir.join("target").join(&host).join("release");
    let targets: Vec<&str> = match &options.target {
        Some(target) => vec![target.as_str()],
        None => TARGETS.to_vec(),
    };
    let mut summaries = Vec::new();
    for target in targets {
        let summary = run_target(&dir, &bin_dir, target, options.seconds)?;
        if options.merge {
            merge(&dir, &bin_dir, target)?;
        }
        summaries.push(summary);
    }
    println!("\nfuzz summary:");
    for line in summaries {
        println!("  {line}");
    }
    Ok(())
}

/// A cargo command run in `dir` (the fuzz workspace).
fn cargo_in(workspace: &Workspace, dir: &Path, args: &[&str]) -> Command {
    let mut command = workspace.cargo(args);
    command.current_dir(dir);
    command
}

/// The host's target triple, from `rustc -vV`: the fuzz build names it so
/// that the instrumentation flags reach only the target's code, not build
/// scripts.
fn host_triple() -> Result<String, String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(rustc)
        .arg("-vV")
        .output()
        .map_err(|e| format!("cannot run rustc -vV: {e}"))?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_owned)
        .ok_or_else(|| "rustc -vV names no host".to_owned())
}

/// Runs `target` for `seconds` on its committed corpus; returns a line
/// with the number of inputs run, or the finding.
fn run_target(dir: &Path, bin_dir: &Path, target: &str, seconds: u64) -> Result<String, String> {
    let work = dir.join("target").join("corpus").join(target);
    let artifacts = dir.join("artifacts").join(target);
    for d in [&work, &artifacts] {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let mut command = Command::new(bin_dir.join(target));
    command
        .arg(&work)
        .arg(dir.join("corpus").join(target))
        .arg(format!("-max_total_time={seconds}"))
        .arg(MAX_LEN)
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    let header = format!(
        "fuzz {target} for {seconds} s: {}",
        runner::display(&command)
    );
    let (output, elapsed) = runner::timed(&header, || command.output());
    let output = output.map_err(|e| format!("cannot run {target}: {e}"))?;
    let log = String::from_utf8_lossy(&output.stderr);
    // libFuzzer's status lines, without the progress ones.
    for line in log
        .lines()
        .filter(|l| !l.contains("pulse") && !l.starts_with('#'))
    {
        eprintln!("{line}");
    }
    let runs = stat(&log, "stat::number_of_executed_units:");
    if !output.status.success() {
        return Err(format!(
            "{target} found a failing input after {runs} runs (see above; it is in {})",
            artifacts.display()
        ));
    }
    Ok(format!(
        "{target}: {runs} inputs in {:.0} s, no finding ({})",
        elapsed.as_secs_f64(),
        last_status(&log)
    ))
}

/// The value of one of libFuzzer's final stats.
fn stat(log: &str, name: &str) -> String {
    log.lines()
        .find_map(|line| line.strip_prefix(name))
        .map_or_else(|| "?".to_owned(), |v| v.trim().to_owned())
}

/// Coverage and corpus from libFuzzer's last status line.
fn last_status(log: &str) -> String {
    log.lines()
        .rev()
        .find(|line| line.starts_with('#') && line.contains("cov:"))
        .and_then(|line| line.split_once("cov:"))
        .map_or_else(String::new, |(_, rest)| {
            format!("cov:{}", rest.split(" exec/s").next().unwrap_or(rest))
        })
}

/// Folds the inputs of the working corpus that add coverage into the
/// committed corpus.
fn merge(dir: &Path, bin_dir: &Path, target: &str) -> Result<(), String> {
    let mut command = Command::new(bin_dir.join(target));
    command
        .arg("-merge=1")
        .arg(MAX_LEN)
        .arg(dir.join("corpus").join(target))
        .arg(dir.join("target").join("corpus").join(target))
        .stdin(Stdio::null());
    runner::timed(&format!("merge {target}"), || runner::run(&mut command)).0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, String> {
        Options::parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn options() {
        let default = parse(&[]).unwrap();
        assert_eq!((default.seconds, default.target), (DEFAULT_SECONDS, None));
        let one = parse(&["--seconds", "5", "parent_reads_responses", "--merge"]).unwrap();
        assert_eq!(one.seconds, 5);
        assert_eq!(one.target.as_deref(), Some("parent_reads_responses"));
        assert!(one.merge && !one.seed);
        assert!(parse(&["--seconds"]).is_err());
        assert!(parse(&["--seconds", "x"]).is_err());
        assert!(parse(&["no_such_target"]).is_err());
    }

    #[test]
    fn every_target_has_a_source_and_a_corpus() {
        let dir = Workspace::locate().root().join("fuzz");
        for target in TARGETS {
            assert!(
                dir.join(format!("fuzz_targets/{target}.rs")).is_file(),
                "{target}"
            );
            assert!(dir.join("corpus").join(target).is_dir(), "{target}");
        }
    }

    #[test]
    fn stats_are_read_from_the_log() {
        let log = "#100\tNEW    cov: 12 ft: 30 corp: 4/80b lim: 4 exec/s: 0 rss: 30Mb\n\
                   stat::number_of_executed_units: 123456\n";
        assert_eq!(stat(log, "stat::number_of_executed_units:"), "123456");
        assert_eq!(last_status(log), "cov: 12 ft: 30 corp: 4/80b lim: 4");
    }
}
