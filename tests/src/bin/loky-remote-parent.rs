//! `loky-remote-parent`: helpers of the tests of workers started by a
//! launcher command (feature `remote`).
//!
//! Subcommands:
//! - `serve WORKER TEMPLATE`: an executor of one worker of WORKER started
//!   by the launcher TEMPLATE, listening on loopback; prints `worker: PID`
//!   (the worker's pid), then runs a 300 s sleep on it and waits, so that a
//!   test can make the executor vanish (`SIGKILL`) or go silent
//!   (`SIGSTOP`) under a busy worker. With a fourth argument `leave`, it
//!   shuts the executor down without waiting or killing the worker instead,
//!   and exits at once.
//! - `forge FILE`: reads a launch ticket on stdin and writes it to stdout
//!   with the certificate and key of the ticket in FILE: a worker that
//!   dials and trusts its own executor but holds another executor's
//!   credentials.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use loky::diagnostics::{PID, SLEEP};
use loky::{Launcher, ProcessPoolExecutor, WorkerProgram};
use loky_proto::remote::Ticket;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") if args.len() == 3 => serve(&args[1], &args[2], false),
        Some("serve") if args.len() == 4 && args[3] == "leave" => serve(&args[1], &args[2], true),
        Some("forge") if args.len() == 2 => forge(&args[1]),
        _ => {
            eprintln!("usage: loky-remote-parent serve WORKER TEMPLATE [leave] | forge FILE");
            std::process::exit(2);
        }
    }
}

fn serve(worker: &str, template: &str, leave: bool) {
    let ex = ProcessPoolExecutor::builder()
        .max_workers(1)
        .worker_program(WorkerProgram::Path(PathBuf::from(worker)))
        .launcher(Launcher::command(template))
        .listen("127.0.0.1:0".parse().expect("an address"))
        .build()
        .expect("an executor");
    let pid = ex.submit(PID, ()).expect("submit").result().expect("a pid");
    println!("worker: {pid}");
    std::io::stdout().flush().expect("stdout");
    let sleep = ex.submit(SLEEP, Duration::from_secs(300)).expect("submit");
    if leave {
        // The call is running (the pool's one worker took it) when the
        // executor lets go of everything and the process ends.
        while !sleep.running() {
            std::thread::yield_now();
        }
        ex.shutdown(false);
        // Dropping the executor would wait for the pool to finish, as
        // shutdown(true) does: the process ends first.
        std::process::exit(0);
    }
    let _ = sleep.result();
}

fn forge(file: &str) {
    let theirs = std::fs::read(file).expect("the other executor's ticket");
    let theirs = Ticket::read_from(&mut theirs.as_slice()).expect("a ticket");
    let mut ticket = Ticket::read_from(&mut std::io::stdin().lock()).expect("a ticket on stdin");
    ticket.cert = theirs.cert;
    ticket.key = theirs.key;
    let bytes = ticket.encode().expect("encodes");
    std::io::stdout().write_all(&bytes).expect("stdout");
}
