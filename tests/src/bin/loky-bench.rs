//! `loky-bench`: measures the performance targets of DESIGN.md ("Performance
//! targets") and prints them as a table, each case beside its target, the
//! raw limit of a bare socketpair echo measured in the same run, and, with
//! `--peers`, Python loky on the same cases.
//!
//! Run it with `cargo xtask bench [OPTIONS]`, which builds the stock
//! `loky-worker` program first and runs this binary, both with the cargo
//! profile `release-lto` (the workspace's `release` with link-time
//! optimization and one codegen unit).
//!
//! Options:
//! - `--runs N`: runs per case (default 10); each figure is the median of the
//!   runs, with their min and max.
//! - `--quick`: 3 runs and shorter latency runs (a smoke test for CI).
//! - `--peers`: also measure Python loky (in a virtual environment under
//!   the target directory, with `loky` from pip) and procspawn (the
//!   `procspawn-peer` bench target, whose path `cargo xtask bench` passes in
//!   `LOKY_BENCH_PROCSPAWN_PEER`); each is skipped with a message when it
//!   cannot run.
//! - `--write FILE`: put the results, the command and the machine into FILE
//!   (`BENCHMARKS.md`), between its generated-block markers.
//! - `--note TEXT`: a note printed with the results (for example, that the
//!   machine was busy).
//! - `--only PREFIXES`: only the cases (and raw figures) whose key starts
//!   with one of the comma-separated PREFIXES, e.g. `--only
//!   round_trip,raw_latency`; for profiling one case.
//!
//! The rows 1s, 7ds and 9s measure the stock worker linked statically
//! (`+crt-static`), whose path `cargo xtask bench` passes in
//! `LOKY_BENCH_STATIC_WORKER`; the rows 1r, 3r and 9r the stock worker
//! built with the feature `remote`, in `LOKY_BENCH_REMOTE_WORKER`. Without
//! them they say "not built".
//!
//! The hidden subcommand `raw-echo` makes this binary the echo child of the
//! raw-limit baseline.

// The crate root is not a `mod.rs`, so its modules' paths are given.
#[path = "loky-bench/cases.rs"]
mod cases;
#[path = "loky-bench/heap.rs"]
mod heap;
#[path = "loky-bench/peer.rs"]
mod peer;
#[path = "loky-bench/raw.rs"]
mod raw;
#[path = "loky-bench/remote.rs"]
mod remote;
#[path = "loky-bench/report.rs"]
mod report;
#[path = "loky-bench/stats.rs"]
mod stats;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use report::Report;

#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;

/// The environment variable naming the stock worker linked statically, for
/// the rows that measure it (`cargo xtask bench` builds it on Linux with
/// glibc).
const STATIC_WORKER_ENV: &str = "LOKY_BENCH_STATIC_WORKER";

/// The environment variable naming the stock worker built with the feature
/// `remote`, for the rows of workers that connect back and row 9r.
const REMOTE_WORKER_ENV: &str = "LOKY_BENCH_REMOTE_WORKER";

/// Sequential round trips per run of the latency cases.
const ROUND_TRIPS: usize = 2_000;
/// The same, with `--quick`.
const QUICK_ROUND_TRIPS: usize = 500;

fn main() -> ExitCode {
    // The worker program of the `submit_fn` case is this one (with the
    // diagnostic tasks, for the warm-up).
    loky::serve_if_worker(&loky::diagnostics::registry());
    let args: Vec<String> = std::env::args().skip(1).collect();
    let child: Option<fn() -> std::io::Result<()>> = match args.first().map(String::as_str) {
        Some(raw::ECHO_SUBCOMMAND) => Some(raw::serve_echo),
        Some(raw::SEALED_ECHO_SUBCOMMAND) => Some(raw::serve_sealed_echo),
        _ => None,
    };
    if let Some(serve) = child {
        return match serve() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("loky-bench {}: {e}", args[0]);
                ExitCode::FAILURE
            }
        };
    }
    let options = match Options::parse(&args) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("loky-bench: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loky-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "\
usage: loky-bench [--runs N] [--quick] [--peers] [--write FILE] [--note TEXT]
                  [--only PREFIXES]
  (usually through `cargo xtask bench [OPTIONS]`)
";

/// The command line.
#[derive(Debug, Default, PartialEq)]
struct Options {
    runs: Option<usize>,
    quick: bool,
    peers: bool,
    write: Option<PathBuf>,
    note: Option<String>,
    only: Vec<String>,
}

impl Options {
    /// `None` for `--help`.
    fn parse(args: &[String]) -> Result<Option<Options>, String> {
        let mut options = Options::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match arg.as_str() {
                "--runs" => {
                    let runs = value("--runs")?;
                    match runs.parse::<usize>() {
                        Ok(n) if n > 0 => options.runs = Some(n),
                        _ => return Err(format!("--runs takes a positive number, not {runs:?}")),
                    }
                }
                "--quick" => options.quick = true,
                "--peers" => options.peers = true,
                "--write" => options.write = Some(PathBuf::from(value("--write")?)),
                "--note" => options.note = Some(value("--note")?),
                "--only" => {
                    let words = value("--only")?;
                    options.only = words
                        .split(',')
                        .filter(|w| !w.is_empty())
                        .map(str::to_owned)
                        .collect();
                }
                "-h" | "--help" => return Ok(None),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(Some(options))
    }

    fn runs(&self) -> usize {
        self.runs.unwrap_or(if self.quick { 3 } else { 10 })
    }

    /// Whether the case or raw figure `key` is to be measured.
    fn wants(&self, key: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|word| key.starts_with(word.as_str()))
    }

    fn round_trips(&self) -> usize {
        if self.quick {
            QUICK_ROUND_TRIPS
        } else {
            ROUND_TRIPS
        }
    }
}

fn run(options: &Options) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let dir = exe.parent().ok_or("this program has no directory")?;
    let worker = dir.join(format!("loky-worker{}", std::env::consts::EXE_SUFFIX));
    if !worker.is_file() {
        return Err(format!(
            "the stock worker program {} is missing: build it with the same \
             profile as this program, e.g. `cargo build --profile release-lto \
             -p loky-worker` (`cargo xtask bench` does)",
            worker.display()
        ));
    }
    let machine = Machine::probe();
    let load_before = load_average();
    let runs = options.runs();
    let wants = |key: &str| options.wants(key);
    let raw = raw::measure(runs, options.round_trips(), &wants);
    let built = |env: &str| {
        std::env::var_os(env)
            .map(PathBuf::from)
            .filter(|path| path.is_file())
            .ok_or_else(|| format!("not built (no file in {env})"))
    };
    let loky = cases::Bench {
        worker,
        static_worker: built(STATIC_WORKER_ENV),
        remote_worker: built(REMOTE_WORKER_ENV),
        runs,
        round_trips: options.round_trips(),
    }
    .measure(&wants);
    let peers = if options.peers {
        let venv = dir.parent().unwrap_or(dir).join("bench-venv");
        let python = peer::measure_python(&venv, runs, options.round_trips(), &options.only);
        let procspawn = peer::measure_procspawn(runs, options.round_trips(), &options.only);
        vec![(peer::PYTHON, python), (peer::PROCSPAWN, procspawn)]
    } else {
        Vec::new()
    };
    for (name, outcome) in &peers {
        if let Err(why) = outcome {
            eprintln!("loky-bench: {name} skipped: {why}");
        }
    }
    let report = Report { loky, raw, peers };
    let context = Context {
        command: command_line(),
        // Cargo puts a profile's programs in a directory named after it.
        profile: dir.file_name().map_or_else(
            || "?".to_owned(),
            |name| name.to_string_lossy().into_owned(),
        ),
        machine,
        load_before,
        load_after: load_average(),
        runs,
        round_trips: options.round_trips(),
        note: options.note.clone(),
    };
    println!("\n{}", context.text());
    println!("{}", report.text_table());
    println!("{}", report.verdicts());
    for line in report.peer_lines() {
        println!("{line}");
    }
    if let Some(path) = &options.write {
        report::write_into(path, &document(&context, &report))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("written to {}", path.display());
    }
    Ok(())
}

/// How the run was made: the command, the machine, the load.
struct Context {
    command: String,
    /// The cargo profile this program and the stock worker were built with.
    profile: String,
    machine: Machine,
    load_before: String,
    load_after: String,
    runs: usize,
    round_trips: usize,
    note: Option<String>,
}

impl Context {
    fn lines(&self) -> Vec<String> {
        let mut lines = vec![
            format!("Command: `{}`", self.command),
            format!("Machine: {}", self.machine),
            format!(
                "Build: cargo profile `{}` (this program, the stock worker, the procspawn peer)",
                self.profile
            ),
            format!(
                "Load average (1, 5, 15 min): {} before, {} after",
                self.load_before, self.load_after
            ),
            format!(
                "Runs: {} per case; each figure is the median of the runs (min – max beside it); \
                 latency runs of {} round trips each",
                self.runs, self.round_trips
            ),
        ];
        if let Some(note) = &self.note {
            lines.push(format!("Note: {note}"));
        }
        lines
    }

    fn text(&self) -> String {
        self.lines().join("\n")
    }
}

/// The generated part of `BENCHMARKS.md`.
fn document(context: &Context, report: &Report) -> String {
    let mut out = format!("## Latest run ({})\n\n", today());
    for line in context.lines() {
        let _ = writeln!(out, "- {line}");
    }
    for line in report.peer_lines() {
        let _ = writeln!(out, "- {line}");
    }
    let _ = write!(
        out,
        "\n{}\n{}\n",
        report.markdown_table(),
        report.verdicts()
    );
    out
}

/// The command that ran the bench: xtask passes its own in
/// `LOKY_BENCH_COMMAND`; otherwise this program's arguments.
fn command_line() -> String {
    std::env::var("LOKY_BENCH_COMMAND").unwrap_or_else(|_| {
        let args: Vec<String> = std::env::args().skip(1).collect();
        format!("loky-bench {}", args.join(" "))
            .trim_end()
            .to_owned()
    })
}

/// The machine the figures come from.
struct Machine {
    cpus: usize,
    model: String,
    kernel: String,
    memory: String,
    rustc: String,
    commit: String,
}

impl Machine {
    fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let field = |text: &str, name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        };
        Machine {
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            model: field(&cpuinfo, "model name").unwrap_or_else(|| "unknown CPU".to_owned()),
            kernel: output("uname", &["-sr"]).unwrap_or_else(|| "unknown kernel".to_owned()),
            memory: field(&meminfo, "MemTotal")
                .and_then(|kb| kb.trim_end_matches("kB").trim().parse::<f64>().ok())
                .map_or_else(|| "?".to_owned(), |kb| format!("{:.1} GiB", kb / 1048576.0)),
            rustc: output("rustc", &["-V"]).unwrap_or_else(|| "rustc ?".to_owned()),
            commit: commit(),
        }
    }
}

impl std::fmt::Display for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} CPUs ({}), {} RAM, {}; {}; {}",
            self.cpus, self.model, self.memory, self.kernel, self.rustc, self.commit
        )
    }
}

/// The first line of a command's output, if it runs.
fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?.trim();
    (out.status.success() && !line.is_empty()).then(|| line.to_owned())
}

/// `commit abc1234` (with `+ changes` for a dirty tree) of the sources.
fn commit() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(hash) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            format!("commit {hash}{}", if dirty { " + changes" } else { "" })
        }
        None => "commit unknown".to_owned(),
    }
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "?".to_owned())
}

/// Today's date (UTC), `YYYY-MM-DD`.
fn today() -> String {
    output("date", &["-u", "+%Y-%m-%d"]).unwrap_or_else(|| "date unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Options>, String> {
        Options::parse(&args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn options() {
        let o = parse(&["--quick", "--peers", "--write", "B.md"])
            .unwrap()
            .unwrap();
        assert!(o.quick && o.peers);
        assert_eq!(o.write, Some(PathBuf::from("B.md")));
        assert_eq!(o.runs(), 3);
        assert_eq!(parse(&["--runs", "5"]).unwrap().unwrap().runs(), 5);
        assert!(parse(&["--runs", "0"]).is_err());
        assert!(parse(&["--write"]).is_err());
        assert!(parse(&["--frobnicate"]).is_err());
        assert_eq!(parse(&["--help"]), Ok(None));
        let only = parse(&["--only", "crash,raw_latency"]).unwrap().unwrap();
        assert!(only.wants("crash_error_ms") && only.wants("raw_latency_us"));
        assert!(!only.wants("raw_crash_ms"));
        assert!(!only.wants("map_per_sec") && o.wants("map_per_sec"));
    }
}
