//! A worker certain to die of a signal says which in its journal, then
//! ends its channel, so that its executor need not wait for the kernel to
//! finish the process; the signal it names is the one it dies of.

mod common;

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::time::Duration;

use common::{DEADLINE, Worker};
use loky_proto::shm::JournalReader;
use loky_worker::diagnostics::{ABORT, EXIT, SEGFAULT, SLEEP, STACK_OVERFLOW};

/// Reads the channel to its end; then the journal's death note and the
/// signal the worker died of.
fn death(mut worker: Worker, journal: &JournalReader) -> (Option<i32>, Option<i32>) {
    let mut rest = Vec::new();
    match worker.channel().read_to_end(&mut rest) {
        Ok(_) => {}
        // A worker that dies before it read all we sent resets the channel.
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(err) => panic!("reading the channel: {err}"),
    }
    let note = journal.death_note();
    (note, worker.wait_exit(DEADLINE).signal())
}

#[test]
fn a_crash_in_a_task_is_announced_with_the_signal_it_dies_of() {
    let tasks = [
        ("segfault", SEGFAULT.name(), libc::SIGSEGV),
        ("abort", ABORT.name(), libc::SIGABRT),
        // std's handler reports the overflow, then aborts.
        ("stack overflow", STACK_OVERFLOW.name(), libc::SIGABRT),
    ];
    for (what, task, signal) in tasks {
        let (mut worker, journal) = Worker::with_journal(|command| {
            command.stderr(std::process::Stdio::null());
        });
        worker.hello();
        let unit = loky_proto::encode_payload(&()).unwrap();
        worker.send(1, task, loky_proto::CallKind::Single, &unit);
        assert_eq!(
            death(worker, &journal),
            (Some(signal), Some(signal)),
            "{what}"
        );
    }
}

#[test]
fn a_fault_signal_sent_from_outside_is_announced_too() {
    for signal in [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE] {
        let (mut worker, journal) = Worker::with_journal(|_| {});
        worker.hello();
        worker.send_one(1, SLEEP, &Duration::from_secs(60));
        common::signal(worker.pid(), signal);
        assert_eq!(
            death(worker, &journal),
            (Some(signal), Some(signal)),
            "{signal}"
        );
    }
}

#[test]
fn an_exit_or_a_kill_is_not_announced() {
    let (mut worker, journal) = Worker::with_journal(|_| {});
    worker.hello();
    worker.send_one(1, EXIT, &3);
    let mut rest = Vec::new();
    worker.channel().read_to_end(&mut rest).unwrap();
    assert_eq!(journal.death_note(), None);
    assert_eq!(worker.wait_exit(DEADLINE).code(), Some(3));

    let (mut worker, journal) = Worker::with_journal(|_| {});
    worker.hello();
    common::signal(worker.pid(), libc::SIGKILL);
    assert_eq!(death(worker, &journal), (None, Some(libc::SIGKILL)));
}

/// A worker that may write a core file says nothing: its executor, taking
/// the note, would kill it in the middle of the dump.
#[test]
fn a_worker_allowed_core_files_does_not_announce_its_crash() {
    let (mut worker, journal) = Worker::with_journal(|command| {
        // SAFETY: setrlimit is async-signal-safe and gets a valid struct.
        // A limit of one byte is below any core file's size (and, for a
        // core pattern that pipes, means no dump at all), so none is
        // written.
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: 1,
                    rlim_max: libc::RLIM_INFINITY,
                };
                if libc::setrlimit(libc::RLIMIT_CORE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    worker.hello();
    worker.send_one(1, SEGFAULT, &());
    assert_eq!(death(worker, &journal), (None, Some(libc::SIGSEGV)));
}

/// The niceness of process `pid` (field 19 of `/proc/PID/stat`), which a
/// zombie keeps until it is reaped.
fn niceness(pid: u32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses and may
    // hold spaces: state is field 3, niceness field 19.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(19 - 3).unwrap().parse().unwrap()
}

/// Waits until `pid`, our child, has exited, leaving it a zombie.
fn wait_exited_unreaped(pid: u32) {
    // SAFETY: info is a valid siginfo_t for waitid to fill; WNOWAIT leaves
    // the child to be reaped by its `Child`.
    let ret = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOWAIT,
        )
    };
    assert_eq!(ret, 0, "waitid: {}", std::io::Error::last_os_error());
}

/// A worker certain to die gives itself the lowest priority, so that the
/// kernel's freeing of its memory yields to the processes still working;
/// all of it when it leads its process group (as its executor starts it),
/// else only the dying thread, never the rest of a group it shares (here
/// this test's own).
#[test]
fn a_dying_worker_gives_itself_the_lowest_priority() {
    let ours = niceness(std::process::id());
    assert!(ours < 19, "this test runs at niceness {ours}");
    for leads_its_group in [true, false] {
        let (mut worker, journal) = Worker::with_journal(|command| {
            if leads_its_group {
                command.process_group(0);
            }
        });
        worker.hello();
        assert_eq!(niceness(worker.pid()), ours, "a serving worker");
        worker.send_one(1, SEGFAULT, &());
        wait_exited_unreaped(worker.pid());
        assert_eq!(
            niceness(worker.pid()),
            19,
            "leads its group: {leads_its_group}"
        );
        assert_eq!(niceness(std::process::id()), ours, "this test's process");
        assert_eq!(
            death(worker, &journal),
            (Some(libc::SIGSEGV), Some(libc::SIGSEGV))
        );
    }
}
