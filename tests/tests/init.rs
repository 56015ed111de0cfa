//! `loky::init()`: an application that calls it first in `main` is its own
//! worker program with no further setting; one that forgets it while naming
//! itself as its worker program finishes at once with an error saying so,
//! never growing a tree of processes. `WorkerProgram::Named` finds an
//! application's own worker program by name.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use loky::{Error, ProcessPoolExecutor, WorkerProgram};

const APP: &str = env!("CARGO_BIN_EXE_loky-fn-app");
const NO_INIT: &str = env!("CARGO_BIN_EXE_loky-no-init");

#[test]
fn an_application_that_calls_init_is_its_own_worker_program() {
    let output = Command::new(APP)
        .env_remove("LOKY_WORKER")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in [
        "square: 49\n",
        "map: 499500\n",
        "workers run this program: true\n",
        "reusable: 64\n",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from {stdout}");
    }
}

/// The pids of the running (not zombie) processes executing `program`.
fn processes_of(program: &Path) -> Vec<u32> {
    let program = std::fs::canonicalize(program).unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == program)
        })
        .collect()
}

/// Kills every process running `program`, until none is left (a process
/// tree that grows is killed from its root down; the rest die with their
/// parents).
fn kill_all(program: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let pids = processes_of(program);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            // SAFETY: kill has no memory-safety preconditions; these are
            // processes of a program of this test.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

/// Runs `loky-no-init` with `args`, sampling how many of its processes run
/// at once; gives its stdout, the most processes seen, and how long it
/// took. Fails the test past 20 s, or as soon as more than `bound` of its
/// processes run at once. The program is held before it starts until the
/// sampling has seen it, so that the sampling is shown to see its
/// processes however fast they end.
fn run_sampled(args: &[&str], bound: usize) -> (String, usize, Duration) {
    let started = Instant::now();
    let mut child = Command::new(NO_INIT)
        .args(args)
        .arg("hold")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut hold = child.stdin.take();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let mut most = 0;
    loop {
        most = most.max(processes_of(Path::new(NO_INIT)).len());
        if most >= 1 {
            // Seen: let it start.
            drop(hold.take());
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if most > bound || started.elapsed() > Duration::from_secs(20) {
            kill_all(Path::new(NO_INIT));
            let _ = child.wait();
            panic!(
                "the program that forgot init() ran {most} processes at once (bound {bound}) \
                 and for {:?}",
                started.elapsed()
            );
        }
        // The sampling period: the processes are watched, not waited for.
        std::thread::sleep(Duration::from_millis(1));
    }
    (reader.join().unwrap(), most, started.elapsed())
}

#[test]
fn a_program_that_forgets_init_ends_at_once_with_the_clear_error() {
    for (workers, policy) in [(2, "break"), (4, "respawn")] {
        let bound = 1 + 2 * workers;
        let (stdout, most, took) = run_sampled(&[&workers.to_string(), policy], bound);
        assert!(took < Duration::from_secs(20), "{took:?}");
        assert!(stdout.contains("kind: MissingInit\n"), "{stdout}");
        assert!(
            stdout.contains(
                "built an executor before calling `loky::init()`: its `main` must call \
                 `loky::init()` (or `loky::serve_if_worker`) first"
            ),
            "{stdout}"
        );
        let error_line = stdout.lines().find(|l| l.starts_with("error: ")).unwrap();
        assert!(error_line.contains(NO_INIT), "{error_line}");
        assert!(most >= 1, "the sampling saw the program itself");
        assert!(
            common::eventually(Duration::from_secs(5), || processes_of(Path::new(NO_INIT))
                .is_empty()),
            "processes of the program were left behind: {:?}",
            processes_of(Path::new(NO_INIT))
        );
    }
}

#[test]
fn named_worker_programs_are_found_by_name() {
    let ex = ProcessPoolExecutor::builder()
        .max_workers(1)
        .worker_program(WorkerProgram::Named("loky-test-worker".to_owned()))
        .build()
        .unwrap();
    assert_eq!(
        common::run(&ex, loky::diagnostics::SQUARE, 12).unwrap(),
        144
    );
    let pid = ex.worker_pids()[0];
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(
        exe,
        std::fs::canonicalize(common::worker_program()).unwrap()
    );

    let err = ProcessPoolExecutor::builder()
        .worker_program(WorkerProgram::Named("no-such-loky-worker".to_owned()))
        .build()
        .unwrap_err();
    let Error::WorkerNotFound(not_found) = &err else {
        panic!("expected WorkerNotFound, got {err:?}");
    };
    let text = err.to_string();
    assert!(
        text.starts_with("worker program `no-such-loky-worker` not found"),
        "{text}"
    );
    assert!(
        not_found
            .searched()
            .iter()
            .any(|p| p.ends_with("no-such-loky-worker")),
        "{not_found:?}"
    );
    assert!(
        !not_found
            .searched()
            .iter()
            .any(|p| p.contains("LOKY_WORKER")),
        "LOKY_WORKER is not consulted: {not_found:?}"
    );
}
