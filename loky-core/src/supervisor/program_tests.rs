//! The supervisor and the program its workers run, with fake workers:
//! functions go only to workers of this very build; a worker whose `main`
//! forgot `loky::init()` breaks the pool at once.

use std::time::Instant;

use loky_proto::program::ProgramId;
use loky_proto::{FnRef, Signature, exit_code};

use super::fake::{Action, Harness, TASK};
use crate::call::Target;
use crate::config::{Config, CrashPolicy};
use crate::error::Error;
use crate::events::StartFailure;
use crate::exit::WorkerExit;
use crate::future::FutureState;

fn harness(max_workers: usize, policy: CrashPolicy) -> Harness {
    let mut config = Config::for_tests(max_workers);
    config.crash_policy = policy;
    Harness::new(config)
}

/// A function of this program taking and giving `u32`, as `submit_fn`
/// makes it.
fn double() -> Target {
    Target::Function {
        sig: Signature {
            name: "fn(u32) -> u32",
            input: "u32",
            output: "u32",
        },
        function: FnRef::new(|x: u32| 2 * x)
            .expect("a function of this program")
            .into(),
    }
}

fn other_build() -> ProgramId {
    let mut other = ProgramId::current().clone();
    other.bytes[0] ^= 1;
    other
}

fn error_of(future: &FutureState) -> Error {
    match future.wait(Some(Instant::now())) {
        Err(Error::Timeout) => panic!("the future is not settled"),
        Err(err) => err,
        Ok(_) => panic!("the future succeeded"),
    }
}

#[test]
fn a_function_is_sent_to_a_worker_of_this_build() {
    let mut h = harness(1, CrashPolicy::BreakPool);
    let future = h.submit_target(&double(), 4);
    h.turn();
    h.hello(1);
    h.turn();
    assert_eq!(h.sent(1), 1);
    assert!(future.is_running());
}

#[test]
fn a_worker_of_another_build_gets_no_function_and_serves_on() {
    for identity in [other_build(), ProgramId::unknown()] {
        let mut h = harness(1, CrashPolicy::BreakPool);
        let function = h.submit_target(&double(), 4);
        h.turn();
        h.hello_as(1, identity.clone());
        h.turn();
        match error_of(&function) {
            Error::ProgramMismatch(m) => {
                assert_eq!((m.worker_program(), m.pid()), ("fake-worker", 1001));
                assert_eq!(m.worker_identity(), &identity);
                assert_eq!(m.identity(), ProgramId::current());
            }
            other => panic!("expected ProgramMismatch, got {other}"),
        }
        assert_eq!(h.sent(1), 0, "nothing was sent");
        assert!(!h.actions(1).iter().any(|a| matches!(a, Action::Stopped(_))));
        assert!(!h.pool.is_broken());
        let task = h.submit(5);
        h.turn();
        assert_eq!(h.sent(1), 1, "named tasks still go there");
        assert!(task.is_running());
    }
}

#[test]
fn a_worker_that_forgot_init_breaks_the_pool_whatever_the_policy() {
    for policy in [CrashPolicy::BreakPool, CrashPolicy::Respawn] {
        let mut h = harness(2, policy);
        let future = h.submit(1);
        h.turn();
        let exit = WorkerExit::Code(exit_code::NOT_INITIALIZED);
        h.fail_start(1, StartFailure::Died, exit);
        h.turn();
        match error_of(&future) {
            Error::MissingInit(missing) => assert_eq!(missing.pid(), 1001),
            other => panic!("expected MissingInit, got {other}"),
        }
        assert!(h.pool.is_broken());
        assert_eq!(h.launched(), [1, 2], "no worker is started again");
        let refused = h
            .pool
            .submit_call(&Target::Task(TASK.signature()), None, |frame| {
                frame.extend_from_slice(&[0]);
                Ok::<_, std::convert::Infallible>(())
            });
        assert!(matches!(refused, Err(Error::MissingInit(_))));
    }
}
