//! Resource hygiene: pools leave no file descriptor and no process behind,
//! and a worker holds no descriptor but its own.

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;

use common::FutureExt;
use loky::diagnostics::SQUARE;

/// The tests here count the descriptors and children of the whole test
/// process, so they must not overlap.
static EXCLUSIVE: Mutex<()> = Mutex::new(());

#[test]
fn hundred_create_submit_shutdown_cycles_leak_no_fd_and_no_process() {
    let _guard = EXCLUSIVE.lock().unwrap_or_else(|e| e.into_inner());
    // Warm up once so that lazily opened process-wide descriptors exist.
    let ex = common::pool(2);
    ex.submit(SQUARE, 1).unwrap().result_bounded().unwrap();
    common::shutdown_bounded(&ex);
    let fds = common::open_fds();
    let children = common::children().len();
    for i in 0..100 {
        let ex = common::pool(2);
        assert_eq!(
            ex.submit(SQUARE, i).unwrap().result_bounded().unwrap(),
            i * i
        );
        common::shutdown_bounded(&ex);
    }
    assert_eq!(common::open_fds(), fds, "file descriptors leaked");
    assert_eq!(
        common::children().len(),
        children,
        "processes left behind: {:?}",
        common::children()
    );
}

#[test]
fn dropping_an_executor_reaps_its_workers() {
    let _guard = EXCLUSIVE.lock().unwrap_or_else(|e| e.into_inner());
    let pids = common::bounded("dropping the last handle", common::RESULT_TIMEOUT, || {
        let ex = common::pool(2);
        ex.submit(SQUARE, 3).unwrap().result_bounded().unwrap();
        ex.worker_pids()
    });
    assert_eq!(pids.len(), 2);
    for pid in pids {
        assert!(!common::alive(pid));
        assert!(common::stat(pid).is_none(), "worker {pid} was not reaped");
    }
}

/// What each open descriptor of process `pid` points to.
fn descriptors(pid: u32) -> BTreeMap<i32, String> {
    let dir = format!("/proc/{pid}/fd");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
        .flatten()
        .filter_map(|entry| {
            let fd = entry.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(entry.path()).ok()?;
            Some((fd, target.display().to_string()))
        })
        .collect()
}

/// Catches a worker that inherits a descriptor its parent opened: the
/// channel of a sibling (whose end of channel would then never come), of
/// another pool, or anything else; and a worker whose stdin is not
/// `/dev/null` or whose stdout and stderr are not the parent's.
///
/// Allowed besides: more descriptors on the worker's own channel (its
/// reader and writer hold clones), the worker's own pipe (both ends, a
/// pipe this process does not hold), by which it replaces a lost executing
/// thread, and its own timer (one), by which it sends the replies it held
/// back (its journal is mapped, its descriptor closed: any other is
/// foreign). Descriptors this process inherited without close-on-exec
/// (from a shell, the test runner) are the parent's too: a worker must not
/// hold them.
#[test]
fn a_worker_holds_only_its_stdio_and_descriptors_of_its_own() {
    let _guard = EXCLUSIVE.lock().unwrap_or_else(|e| e.into_inner());
    let inherited = descriptors(std::process::id());
    // A first pool's channels are open in this process when the second
    // pool starts its workers.
    let first = common::pool(2);
    let mut workers = common::every_worker_serving(&first);
    let second = common::pool(2);
    workers.extend(common::every_worker_serving(&second));
    let mut channels = Vec::new();
    for &pid in &workers {
        let held = descriptors(pid);
        let context = format!("worker {pid} holds {held:#?}");
        assert_eq!(
            held.get(&0).map(String::as_str),
            Some("/dev/null"),
            "{context}"
        );
        assert_eq!(held.get(&1), inherited.get(&1), "stdout: {context}");
        assert_eq!(held.get(&2), inherited.get(&2), "stderr: {context}");
        let channel = held.get(&3).expect("the channel is fd 3");
        assert!(channel.starts_with("socket:["), "{context}");
        let own_pipe = |target: &String| {
            target.starts_with("pipe:")
                && held.values().filter(|t| *t == target).count() == 2
                && !inherited.values().any(|t| t == target)
        };
        const TIMER: &str = "anon_inode:[timerfd]";
        assert!(
            held.values().filter(|t| *t == TIMER).count() <= 1,
            "{context}"
        );
        let foreign: Vec<(&i32, &String)> = held
            .iter()
            .filter(|&(fd, target)| {
                *fd > 3 && target != channel && !own_pipe(target) && target != TIMER
            })
            .collect();
        assert!(foreign.is_empty(), "{foreign:?} in {context}");
        channels.push(channel.clone());
    }
    channels.sort_unstable();
    channels.dedup();
    assert_eq!(channels.len(), workers.len(), "a channel is shared");
    common::shutdown_bounded(&first);
    common::shutdown_bounded(&second);
}
