//! A worker in another network namespace, reached over a veth pair, and a
//! link taken down: what a partition looks like. Needs root and iproute2;
//! `cargo xtask test` runs these as root.
//!
//! Addresses come from 198.18.0.0/15, the range set aside for network
//! testing, and never leave this machine.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use loky_proto::exit_code;
use loky_proto::remote::EndReason;
use loky_worker::diagnostics::{ECHO_I64, SLEEP};

use crate::NOTICE;
use crate::executor::{LIVENESS, Remote, TestExecutor};

/// A network namespace joined to this one by a veth pair, each end with an
/// address of a /30 of its own. Dropping it deletes both.
pub(crate) struct Namespace {
    pub(crate) name: String,
    /// This namespace's end of the pair.
    host_link: String,
    pub(crate) host_addr: Ipv4Addr,
    pub(crate) inner_addr: Ipv4Addr,
}

/// Runs `ip ARGS`, failing the test with its stderr.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Namespace {
    pub(crate) fn create() -> Namespace {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = std::process::id().wrapping_mul(31).wrapping_add(n) % (1 << 15);
        // The id-th /30 of 198.18.0.0/15.
        let base = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + id * 4;
        let namespace = Namespace {
            name: format!("loky-{id}"),
            host_link: format!("lky{id}h"),
            host_addr: Ipv4Addr::from(base + 1),
            inner_addr: Ipv4Addr::from(base + 2),
        };
        let inner_link = format!("lky{id}n");
        let (name, host_link) = (&namespace.name, &namespace.host_link);
        ip(&["netns", "add", name]);
        ip(&[
            "link",
            "add",
            host_link,
            "type",
            "veth",
            "peer",
            "name",
            &inner_link,
        ]);
        ip(&["link", "set", &inner_link, "netns", name]);
        let host_cidr = format!("{}/30", namespace.host_addr);
        ip(&["addr", "add", &host_cidr, "dev", host_link]);
        ip(&["link", "set", host_link, "up"]);
        let inner_cidr = format!("{}/30", namespace.inner_addr);
        ip(&["-n", name, "addr", "add", &inner_cidr, "dev", &inner_link]);
        ip(&["-n", name, "link", "set", &inner_link, "up"]);
        ip(&["-n", name, "link", "set", "lo", "up"]);
        namespace
    }

    /// Takes this side's end of the link down: nothing crosses any more,
    /// and neither side is told.
    pub(crate) fn take_link_down(&self) {
        ip(&["link", "set", &self.host_link, "down"]);
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and so both.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_link])
            .output();
    }
}

/// A worker started in a namespace of its own, connected to an executor
/// listening on this side of the link, past its hello.
fn start_in_namespace() -> (Namespace, Remote) {
    let namespace = Namespace::create();
    let executor = TestExecutor::bind(SocketAddr::new(namespace.host_addr.into(), 0));
    let ticket = executor.ticket(&[]).encode().unwrap();
    let child = TestExecutor::launch_with(&["ip", "netns", "exec", &namespace.name], &ticket);
    let mut remote = executor.accept(child);
    remote.worker.hello();
    (namespace, remote)
}

#[test]
#[ignore = "needs root and iproute2: cargo xtask test runs it as root"]
fn netns_a_worker_whose_link_goes_down_is_declared_dead_and_exits() {
    let (namespace, mut remote) = start_in_namespace();
    assert_eq!(remote.worker.call(1, ECHO_I64, &5), 5);
    remote
        .worker
        .send_one(2, SLEEP, &std::time::Duration::from_secs(300));
    namespace.take_link_down();
    let down = Instant::now();
    let end = remote
        .relay
        .wait_end(NOTICE)
        .expect("the link is declared dead");
    let noticed = down.elapsed();
    assert!(
        matches!(end.reason, EndReason::HeartbeatsStopped(_)),
        "{end:?}"
    );
    remote.worker.expect_end();
    let status = remote.worker.wait_exit(NOTICE);
    assert_eq!(status.code(), Some(exit_code::NO_EXECUTOR));
    eprintln!(
        "link down: the executor noticed after {noticed:.2?} (heartbeat timeout {:?}), \
         the worker exited after {:.2?}",
        LIVENESS.timeout,
        down.elapsed()
    );
}

#[test]
#[ignore = "needs root and iproute2: cargo xtask test runs it as root"]
fn netns_a_worker_in_another_namespace_serves() {
    let (namespace, mut remote) = start_in_namespace();
    for i in 0..100 {
        assert_eq!(remote.worker.call(i, ECHO_I64, &(i as i64)), i as i64);
    }
    assert_eq!(
        remote.peer.ip(),
        namespace.inner_addr,
        "the worker connects from the other namespace"
    );
}
