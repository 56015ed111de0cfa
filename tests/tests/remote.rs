//! Workers started by a launcher command, connecting back over loopback
//! TCP with mutual TLS: results, `map`, panics, crashes, deadlines, `kill`,
//! `Respawn`, memory limits, recycling and the reusable executor behave as
//! with local workers; launchers that fail or never connect are clear
//! errors; strangers on the port and another executor's credentials change
//! nothing.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use loky::diagnostics::{ALLOCATE, EXIT, GETENV, PANIC, PID, SEGFAULT, SLEEP, SQUARE};
use loky::{
    CallOptions, CrashPolicy, Error, ExecutorBuilder, Launcher, ProcessPoolExecutor, WorkerExit,
};
use loky_tests::{GATE, Gate};

use common::{RESULT_TIMEOUT, run};

/// A launcher that runs the worker program here, through `env`, which
/// leaves a mark in the worker's environment.
const LAUNCHER: &str = "env LOKY_TEST_LAUNCHED=yes {worker}";

fn builder(n: usize) -> ExecutorBuilder {
    common::builder(n)
        .launcher(Launcher::command(LAUNCHER))
        .listen("127.0.0.1:0".parse().unwrap())
}

fn pool(n: usize) -> ProcessPoolExecutor {
    builder(n)
        .build()
        .expect("a launcher of workers over loopback")
}

/// This machine's name, as a worker's agent reports it.
fn host_name() -> String {
    let mut name = [0u8; 256];
    // SAFETY: name is a writable buffer of its length for the call.
    let ret = unsafe { libc::gethostname(name.as_mut_ptr().cast(), name.len()) };
    assert_eq!(ret, 0);
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    String::from_utf8_lossy(&name[..end]).into_owned()
}

fn terminated(result: loky::Result<impl std::fmt::Debug>) -> loky::TerminatedWorker {
    match result {
        Err(Error::TerminatedWorker(dead)) => dead,
        other => panic!("expected TerminatedWorker, got {other:?}"),
    }
}

#[test]
fn results_map_and_panics_come_back_as_from_local_workers() {
    let ex = pool(2);
    assert_eq!(run(&ex, SQUARE, 7).unwrap(), 49);
    let launched = run(&ex, GETENV, "LOKY_TEST_LAUNCHED".to_owned()).unwrap();
    assert_eq!(launched.as_deref(), Some("yes"), "the launcher started it");
    let squares: Vec<i64> = ex
        .map(SQUARE, 0..2000)
        .chunksize(50)
        .collect::<loky::Result<_>>()
        .unwrap();
    assert_eq!(squares, (0..2000).map(|x| x * x).collect::<Vec<i64>>());
    match run(&ex, PANIC, "remote boom".to_owned()) {
        Err(Error::Task(panic)) => {
            assert_eq!(panic.message(), "remote boom");
            assert!(ex.worker_pids().contains(&panic.pid()), "{panic}");
        }
        other => panic!("expected a task panic, got {other:?}"),
    }
    // Its pids are those of the workers themselves (here, on this host).
    let pid = run(&ex, PID, ()).unwrap();
    assert!(ex.worker_pids().contains(&pid));
    let workers = ex.worker_pids();
    assert_eq!(workers.len(), 2);
    assert!(common::shutdown_within(&ex, RESULT_TIMEOUT));
    // Children of their agents: gone and reaped once the pool is.
    assert!(common::reaped_within(&workers, RESULT_TIMEOUT));
}

/// The worker looks the executor's host name up itself (through libc's
/// resolver: for a statically linked worker, the name-service modules it
/// loads at run time).
#[test]
fn a_worker_told_a_host_name_looks_it_up_and_connects_back() {
    let ex = builder(1)
        .advertise("localhost")
        .build()
        .expect("a launcher of workers dialing `localhost`");
    assert_eq!(run(&ex, SQUARE, 9).unwrap(), 81);
    ex.shutdown(true);
    // The name is the one dialed: one that resolves nowhere (`.invalid` is
    // reserved for that) leaves the worker unable to connect.
    let ex = builder(1)
        .advertise("loky-test.invalid")
        .start_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let err = run(&ex, SQUARE, 9).unwrap_err();
    assert!(matches!(err, Error::BrokenProcessPool(_)), "{err:?}");
    assert!(err.to_string().contains("never connected back"), "{err}");
}

#[test]
fn a_crash_breaks_the_pool_with_a_terminated_worker_naming_its_host() {
    let ex = pool(1);
    let pid = run(&ex, PID, ()).unwrap();
    let dead = terminated(run(&ex, SEGFAULT, ()));
    assert_eq!(dead.signal(), Some(libc::SIGSEGV));
    assert_eq!(dead.exit(), WorkerExit::Signal(libc::SIGSEGV));
    assert_eq!(dead.pid(), pid);
    assert_eq!(dead.host(), Some(host_name().as_str()));
    assert_eq!(dead.task(), Some("segfault"));
    let message = dead.to_string();
    assert!(
        message.contains(&format!("(pid {pid} on host {})", host_name())),
        "{message}"
    );
    assert!(message.contains("SIGSEGV(-11)"), "{message}");
    assert!(matches!(ex.submit(SQUARE, 1), Err(e) if e.is_broken_pool()));
}

#[test]
fn under_respawn_a_crashed_worker_is_replaced_through_the_launcher() {
    let ex = builder(1)
        .on_worker_crash(CrashPolicy::Respawn)
        .build()
        .unwrap();
    let first = run(&ex, PID, ()).unwrap();
    let dead = terminated(run(&ex, EXIT, 3));
    assert_eq!(dead.exit_code(), Some(3));
    assert_eq!(dead.host(), Some(host_name().as_str()));
    let second = run(&ex, PID, ()).unwrap();
    assert_ne!(first, second, "a new worker");
    let launched = run(&ex, GETENV, "LOKY_TEST_LAUNCHED".to_owned()).unwrap();
    assert_eq!(launched.as_deref(), Some("yes"), "started by the launcher");
    assert_eq!(run(&ex, SQUARE, 12).unwrap(), 144);
}

#[test]
fn deadlines_and_kill_stop_remote_tasks_and_their_workers_are_replaced() {
    let ex = pool(1);
    let started = Instant::now();
    let late = ex
        .submit_with(
            SLEEP,
            Duration::from_secs(120),
            CallOptions::new().timeout(Duration::from_millis(300)),
        )
        .unwrap();
    match late.result_timeout(RESULT_TIMEOUT) {
        Err(Error::DeadlineExceeded(past)) => assert_eq!(past.task(), "sleep"),
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    let gate = Gate::new();
    let held_future = ex.submit(GATE, gate.arg()).unwrap();
    let held = gate.entered(RESULT_TIMEOUT);
    assert!(held_future.kill());
    assert!(matches!(
        held_future.result_timeout(RESULT_TIMEOUT),
        Err(Error::Cancelled)
    ));
    assert!(
        common::dead_within(&[held.pid], RESULT_TIMEOUT),
        "the killed worker is gone"
    );
    assert_eq!(run(&ex, SQUARE, 5).unwrap(), 25, "the pool serves on");
}

#[test]
fn the_worker_applies_its_memory_limit_itself() {
    let limit = 256 << 20;
    let ex = builder(1).memory_limit(limit).build().unwrap();
    let dead = terminated(run(&ex, ALLOCATE, 1 << 30));
    assert_eq!(dead.memory_limit_exceeded(), Some(limit), "{dead}");
    assert!(dead.to_string().contains("exceeded its memory limit"));
}

#[test]
fn workers_are_recycled_after_their_tasks_and_their_launchers_reaped() {
    let ex = builder(1).max_tasks_per_child(2).build().unwrap();
    let pids: Vec<u32> = (0..6).map(|_| run(&ex, PID, ()).unwrap()).collect();
    assert_eq!(pids[0], pids[1]);
    assert_ne!(pids[1], pids[2]);
    assert_eq!(pids[2], pids[3]);
    assert_ne!(pids[3], pids[4]);
    assert!(common::shutdown_within(&ex, RESULT_TIMEOUT));
    assert!(common::reaped_within(&pids, RESULT_TIMEOUT));
}

#[test]
fn the_reusable_executor_compares_launchers() {
    let reusable = |launcher: &str| {
        common::builder(1)
            .launcher(Launcher::command(launcher))
            .listen("127.0.0.1:0".parse().unwrap())
            .get_reusable()
            .unwrap()
    };
    let first = reusable(LAUNCHER);
    assert_eq!(run(&first, SQUARE, 3).unwrap(), 9);
    assert!(first.same_pool(&reusable(LAUNCHER)));
    let other = reusable("env LOKY_TEST_LAUNCHED=other {worker}");
    assert!(!first.same_pool(&other));
    let launched = run(&other, GETENV, "LOKY_TEST_LAUNCHED".to_owned()).unwrap();
    assert_eq!(launched.as_deref(), Some("other"));
    other.shutdown(true);
}

#[test]
fn a_launcher_that_fails_breaks_the_pool_naming_it() {
    let ex = common::builder(1)
        .launcher(Launcher::command("sh -c 'exit 9' {worker}"))
        .listen("127.0.0.1:0".parse().unwrap())
        .build()
        .unwrap();
    let err = run(&ex, SQUARE, 2).unwrap_err();
    assert!(matches!(err, Error::BrokenProcessPool(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("never connected back through the launcher `sh -c 'exit 9' {worker}`"),
        "{message}"
    );
    assert!(message.contains("EXIT(9)"), "{message}");
}

#[test]
fn a_worker_that_never_connects_back_fails_its_start_in_time() {
    // The launcher hands the worker on and ends well, but no worker ever
    // comes: the start timeout bounds the wait.
    let ex = common::builder(1)
        .launcher(Launcher::command("sh -c 'exit 0' {worker}"))
        .listen("127.0.0.1:0".parse().unwrap())
        .start_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = run(&ex, SQUARE, 2).unwrap_err();
    assert!(started.elapsed() < RESULT_TIMEOUT);
    let message = err.to_string();
    assert!(
        message.contains("within the start timeout of 500ms"),
        "{message}"
    );
}

#[test]
fn bad_launchers_are_refused_at_build() {
    let build = |launcher: Launcher| common::builder(1).launcher(launcher).build();
    let err = build(Launcher::command("srun --quiet")).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    let err = build(Launcher::command("/no/such/launcher {worker}")).unwrap_err();
    assert!(matches!(err, Error::Spawn(_)), "{err:?}");
    let err = common::builder(1)
        .listen("127.0.0.1:0".parse().unwrap())
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("launcher"), "{err}");
    // A port in use.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let err = builder(1)
        .listen(taken.local_addr().unwrap())
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Spawn(_)), "{err:?}");
    assert!(err.to_string().contains("cannot listen"), "{err}");
}

/// A free port on loopback (nothing else binds ports here meanwhile).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// What a stranger does to the executor's port.
#[derive(Debug, Clone, Copy)]
enum Stranger {
    Garbage,
    /// A frame header announcing 4 GiB, then as many bytes as it can push.
    HugeLength,
    Http,
    /// Connects and says nothing until it is shut out.
    Silent,
}

/// Runs one stranger; returns how many bytes it could push.
fn stranger(addr: SocketAddr, kind: Stranger) -> usize {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(RESULT_TIMEOUT)).unwrap();
    tcp.set_write_timeout(Some(RESULT_TIMEOUT)).unwrap();
    let mut pushed = 0;
    match kind {
        Stranger::Garbage => {
            let bytes: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
            pushed += tcp.write(&bytes).unwrap_or(0);
        }
        Stranger::HugeLength => {
            let mut bytes = vec![0u8; 1 << 20];
            bytes[..4].copy_from_slice(&u32::MAX.to_le_bytes());
            for _ in 0..64 {
                match tcp.write(&bytes) {
                    Ok(n) => pushed += n,
                    Err(_) => break,
                }
            }
        }
        Stranger::Http => {
            let request = b"GET / HTTP/1.1\r\nHost: executor\r\n\r\n";
            pushed += tcp.write(request).unwrap_or(0);
        }
        Stranger::Silent => {}
    }
    // The executor shuts it out: end of stream or reset.
    let mut sink = [0u8; 1024];
    while matches!(tcp.read(&mut sink), Ok(n) if n > 0) {}
    pushed
}

/// This process's resident memory, in bytes.
fn resident() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib << 10
}

#[test]
fn fifty_strangers_on_the_port_change_nothing() {
    let addr = free_port();
    let ex = builder(2).listen(addr).build().unwrap();
    // Both workers serve: each holds a task at the gate.
    let gate = Gate::new();
    let held: Vec<_> = (0..2)
        .map(|_| ex.submit(GATE, gate.arg()).unwrap())
        .collect();
    let entered: Vec<_> = (0..2).map(|_| gate.entered(RESULT_TIMEOUT)).collect();
    let mut workers: Vec<u32> = entered.iter().map(|held| held.pid).collect();
    drop(entered);
    for fut in held {
        fut.result_timeout(RESULT_TIMEOUT).unwrap();
    }
    workers.sort_unstable();
    let mut listed = ex.worker_pids();
    listed.sort_unstable();
    assert_eq!(listed, workers);
    let before = resident();
    let kinds = [
        Stranger::Garbage,
        Stranger::HugeLength,
        Stranger::Http,
        Stranger::Silent,
    ];
    let strangers: Vec<_> = (0..50)
        .map(|i| {
            let kind = kinds[i % kinds.len()];
            std::thread::spawn(move || (kind, stranger(addr, kind)))
        })
        .collect();
    // 200 calls while they knock.
    let futures: Vec<_> = (0..200).map(|i| ex.submit(SQUARE, i).unwrap()).collect();
    for (i, fut) in futures.into_iter().enumerate() {
        let i = i as i64;
        assert_eq!(fut.result_timeout(RESULT_TIMEOUT).unwrap(), i * i);
    }
    for stranger in strangers {
        let (kind, pushed) = stranger.join().unwrap();
        if let Stranger::HugeLength = kind {
            assert!(pushed < 64 << 20, "the executor took {pushed} bytes");
        }
    }
    let mut after = ex.worker_pids();
    after.sort_unstable();
    assert_eq!(after, workers, "no worker replaced or added");
    let grown = resident().saturating_sub(before);
    assert!(grown < 256 << 20, "the executor grew by {grown} bytes");
    assert_eq!(run(&ex, SQUARE, 9).unwrap(), 81);
}

/// A scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loky-remote-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The error of a pool of one worker started by `template`.
fn launch_error(template: &str, listen: SocketAddr) -> String {
    let ex = common::builder(1)
        .launcher(Launcher::command(template))
        .listen(listen)
        .build()
        .unwrap();
    let err = run(&ex, SQUARE, 2).unwrap_err();
    assert!(matches!(err, Error::BrokenProcessPool(_)), "{err:?}");
    err.to_string()
}

#[test]
fn workers_holding_another_executors_credentials_are_refused() {
    let dir = scratch("refused");
    let ticket = dir.join("ticket");
    // Executor A's launcher keeps its ticket; no worker ever starts.
    let addr = free_port();
    let a = common::builder(1)
        .launcher(Launcher::command(format!(
            "sh -c 'cat > {}' {{worker}}",
            ticket.display()
        )))
        .listen(addr)
        .start_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    assert!(run(&a, SQUARE, 1).is_err(), "A's worker never connects");
    a.shutdown(true);
    let gave_up = format!("which ended with EXIT({})", loky::exit_code::NO_EXECUTOR);
    // A worker with A's whole ticket dials executor B on A's old address:
    // B's certificate is not of A's authority, so the worker refuses B.
    let stderr = dir.join("stray");
    let stray = format!(
        "sh -c 'exec \"$0\" \"$1\" < {} 2> {}' {{worker}}",
        ticket.display(),
        stderr.display()
    );
    let message = launch_error(&stray, addr);
    assert!(message.contains(&gave_up), "{message}");
    let said = std::fs::read_to_string(&stderr).unwrap();
    assert!(said.contains("is not the executor that issued"), "{said}");
    // A worker that trusts executor C and dials it, but holds A's
    // certificate: C refuses it.
    let stderr = dir.join("forged");
    let forged = format!(
        "sh -c '{} forge {} | exec \"$0\" \"$1\" 2> {}' {{worker}}",
        env!("CARGO_BIN_EXE_loky-remote-parent"),
        ticket.display(),
        stderr.display()
    );
    let message = launch_error(&forged, "127.0.0.1:0".parse().unwrap());
    assert!(message.contains(&gave_up), "{message}");
    let said = std::fs::read_to_string(&stderr).unwrap();
    assert!(said.contains("refused this worker"), "{said}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Waits up to `timeout` for process `pid`, which need not be a child of
/// this one, to end; false if it still runs.
fn ends_within(pid: u32, timeout: Duration) -> bool {
    // SAFETY: pidfd_open takes a pid and flags; it returns a new descriptor
    // or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return true; // Gone already.
    }
    let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let mut poll = libc::pollfd {
        fd: fd as i32,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll is one valid pollfd for the call; the descriptor is
    // ours and closed below.
    let ready = unsafe { libc::poll(&mut poll, 1, millis) };
    // SAFETY: fd is ours, open and used by nothing else.
    unsafe { libc::close(fd as i32) };
    ready > 0
}

/// An executor in a process of its own (`loky-remote-parent serve`) whose
/// one worker, started by `template`, runs a long task; its pid.
fn busy_parent(template: &str, extra: &[&str]) -> (std::process::Child, u32) {
    let mut parent = std::process::Command::new(env!("CARGO_BIN_EXE_loky-remote-parent"))
        .args([
            "serve",
            common::worker_program().to_str().unwrap(),
            template,
        ])
        .args(extra)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = parent.stdout.take().unwrap();
    let (tx, line) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut first = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut first);
        let _ = tx.send(first);
    });
    let first = line
        .recv_timeout(RESULT_TIMEOUT)
        .expect("the parent's worker serves");
    let pid = first
        .trim()
        .strip_prefix("worker: ")
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output from the parent: {first:?}"));
    (parent, pid)
}

#[test]
fn a_worker_whose_executor_vanishes_or_goes_silent_exits_within_ten_seconds() {
    // `setsid` puts the worker's agent in a session of its own, out of
    // reach of the executor's process group, as a worker on another
    // machine is: only losing its executor can end it.
    for (signal, what) in [(libc::SIGKILL, "vanished"), (libc::SIGSTOP, "went silent")] {
        let (mut parent, worker) = busy_parent("setsid {worker}", &[]);
        let started = Instant::now();
        // SAFETY: kill has no memory-safety preconditions; the parent is
        // our unreaped child.
        unsafe { libc::kill(parent.id() as libc::pid_t, signal) };
        let ended = ends_within(worker, Duration::from_secs(10));
        let took = started.elapsed();
        let _ = parent.kill();
        let _ = parent.wait();
        assert!(
            ended,
            "the worker of an executor that {what} still runs after 10 s"
        );
        eprintln!("the executor {what}: its worker exited after {took:.2?}");
    }
}

#[test]
fn a_busy_worker_whose_executor_shuts_down_without_killing_it_exits_within_ten_seconds() {
    // The executor lets go without waiting (`shutdown(false)`) while its
    // worker runs a 300 s task, and its process ends.
    let (mut parent, worker) = busy_parent("setsid {worker}", &["leave"]);
    let started = Instant::now();
    let left = ends_within(parent.id(), RESULT_TIMEOUT);
    if !left {
        let _ = parent.kill();
    }
    let status = parent.wait().unwrap();
    assert!(left, "the executor's process did not end");
    assert!(status.success(), "{status}");
    let ended = ends_within(worker, Duration::from_secs(10));
    assert!(ended, "the worker still runs 10 s after its executor ended");
    eprintln!(
        "the executor shut down without killing its worker: the worker exited after {:.2?}",
        started.elapsed()
    );
}
