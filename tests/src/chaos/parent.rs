//! The parent of a pool SIGKILLed mid-work: its workers must die with it.
//!
//! The chaos program runs itself as that parent (`loky-chaos parent N`,
//! workers being the chaos program too), so the scenario needs no other
//! binary. The parent reports its workers' pids on stdout once every
//! worker runs a task; its workers get `/dev/null` as stdout so that the
//! report's pipe ends with the parent.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use loky::{ProcessPoolExecutor, WorkerProgram};

use super::model::Fault;
use super::probe::{self, PidFd};
use super::rng::Rng;
use super::scenario::Ctx;

/// How long the parent may take to start its workers.
const REPORT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long workers may outlive their SIGKILLed parent (the design says
/// milliseconds; a loaded machine gets slack).
const ORPHAN_TIMEOUT: Duration = Duration::from_secs(5);

/// The parent's side: `workers` workers each running a long sleep; prints
/// `pids: P1 P2 ...` once they all run, then waits for the sleeps.
pub fn serve_as_parent(workers: usize) -> ExitCode {
    match run_parent(workers) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("loky-chaos parent: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run_parent(workers: usize) -> Result<(), String> {
    let stdout = std::io::stdout();
    let mut report = File::from(
        stdout
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| e.to_string())?,
    );
    probe::detach_stdout().map_err(|e| e.to_string())?;
    let ex = ProcessPoolExecutor::builder()
        .max_workers(workers)
        .worker_program(WorkerProgram::CurrentExe)
        .build()
        .map_err(|e| e.to_string())?;
    let sleeps = (0..workers)
        .map(|_| ex.submit(loky::diagnostics::SLEEP, Duration::from_secs(60)))
        .collect::<loky::Result<Vec<_>>>()
        .map_err(|e| e.to_string())?;
    // A call is running once a ready worker took it; there is no
    // notification of that, so spin (yielding) to a deadline.
    let deadline = Instant::now() + REPORT_TIMEOUT;
    while ex.worker_pids().len() < workers || sleeps.iter().any(|f| !f.running()) {
        if Instant::now() > deadline {
            return Err("the workers did not start".to_owned());
        }
        std::thread::yield_now();
    }
    let pids: Vec<String> = ex.worker_pids().iter().map(u32::to_string).collect();
    writeln!(report, "pids: {}", pids.join(" ")).map_err(|e| e.to_string())?;
    drop(report);
    for fut in sleeps {
        let _ = fut.result();
    }
    Ok(())
}

/// The scenario: starts `exe parent N` (`exe` is the chaos program),
/// SIGKILLs it at a random moment after its workers run, reaps it, and
/// records the workers that outlived it as orphans.
pub(crate) fn parent_killed(ctx: Ctx<'_>, rng: &mut Rng) {
    let ledger = ctx.ledger;
    let Some(exe) = ctx.exe else {
        ledger.require(false, || "parent-killed needs the chaos program".to_owned());
        return;
    };
    let workers = rng.range(1, 3);
    let mut parent = match Command::new(exe)
        .args(["parent", &workers.to_string()])
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            ledger.require(false, || format!("could not start the parent program: {e}"));
            return;
        }
    };
    let (line, reader) = read_report(&mut parent);
    let handles: Vec<PidFd> = parse_pids(&line)
        .into_iter()
        .filter_map(PidFd::open)
        .collect();
    ledger.require(handles.len() == workers as usize, || {
        format!("the parent reported {line:?} for {workers} workers")
    });
    // The moment of the kill is the fault.
    std::thread::sleep(rng.millis(0, 30));
    match parent.kill() {
        Ok(()) => ledger.fault(Fault::ParentKill),
        Err(e) => ledger.miss(format!("SIGKILL to the parent: {e}")),
    }
    let _ = parent.wait();
    let _ = reader.join();
    let orphans = handles
        .iter()
        .filter(|h| !h.wait_exit(ORPHAN_TIMEOUT))
        .map(|h| {
            h.send(libc::SIGKILL);
            h.pid()
        });
    ledger.orphans.extend(orphans);
}

/// The first line the parent prints (empty if none comes in time), and
/// the thread reading it, which ends when the parent does.
fn read_report(parent: &mut Child) -> (String, JoinHandle<()>) {
    let stdout = parent.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    (rx.recv_timeout(REPORT_TIMEOUT).unwrap_or_default(), reader)
}

fn parse_pids(line: &str) -> Vec<u32> {
    line.trim()
        .strip_prefix("pids:")
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}
