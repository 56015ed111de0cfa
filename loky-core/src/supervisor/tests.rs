//! The supervisor's state machine, driven by hand through the fake
//! launcher: one test (at least) per transition of `supervisor.md`. No
//! process and no thread: timers are run at chosen instants.

use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use loky_proto::shm::FrameBuf;

use super::fake::{Action, Harness, OTHER, Step, TASK};
use crate::call::Target;
use crate::config::{Config, CrashPolicy, Initializer, Shutdown};
use crate::error::Error;
use crate::events::{End, Event, LinkError, StartFailure};
use crate::exit::WorkerExit;
use crate::future::{FutureState, RawOutput};
use crate::pool_thread::Role;
use crate::worker::Stop;

const KILLED: WorkerExit = WorkerExit::Signal(9);
const EXITED: WorkerExit = WorkerExit::Code(0);

fn harness(max_workers: usize, configure: impl FnOnce(&mut Config)) -> Harness {
    let mut config = Config::for_tests(max_workers);
    configure(&mut config);
    Harness::new(config)
}

/// The error `future` settled with (it must be settled).
fn error_of(future: &FutureState) -> Error {
    match future.wait(Some(Instant::now())) {
        Err(Error::Timeout) => panic!("the future of `{}` is not settled", future.task),
        Err(err) => err,
        Ok(_) => panic!("the future of `{}` succeeded", future.task),
    }
}

fn value_of(future: &FutureState) -> u32 {
    match &*future.wait(Some(Instant::now())).expect("a value") {
        RawOutput::Value(bytes) => loky_proto::decode_payload(bytes).expect("a u32"),
        RawOutput::Items(_) => panic!("a chunk"),
    }
}

/// A harness with `n` serving workers (ids 1..=n) that have each answered
/// one call, so that their calls are measured short.
fn serving(n: usize, configure: impl FnOnce(&mut Config)) -> Harness {
    let mut h = harness(n, configure);
    let warm: Vec<_> = (0..n).map(|i| h.submit(i as u32)).collect();
    h.turn();
    for id in h.launched() {
        h.hello(id);
    }
    h.turn();
    for id in h.launched() {
        h.reply(id, 0);
    }
    h.turn();
    assert!(warm.iter().all(|f| f.is_done()));
    // The warm-up call took as long as the machine's load made it: the
    // tests of serving workers start from a task known to be short.
    h.task_takes(Duration::from_micros(10));
    h
}

fn at(h: &Harness, seconds: f64) -> Instant {
    let _ = h;
    Instant::now() + Duration::from_secs_f64(seconds)
}

// Starting

#[test]
fn the_first_submit_starts_max_workers_workers_that_get_no_call_before_hello() {
    let mut h = harness(2, |_| {});
    let future = h.submit(1);
    h.turn();
    assert_eq!(h.launched(), [1, 2]);
    assert_eq!(h.sent(1) + h.sent(2), 0);
    assert!(!future.is_running(), "a queued call is not running");
    assert!(future.cancel(), "a queued call can be cancelled");
}

#[test]
fn a_pool_of_workers_started_here_starts_its_first_worker_alone_then_the_others() {
    let mut h = harness(3, |_| {});
    h.start_here();
    let first = h.submit(1);
    let second = h.submit(2);
    h.turn();
    assert_eq!(h.launched(), [1], "one start while none said hello");
    h.hello(1);
    h.turn();
    assert_eq!(h.launched(), [1, 2, 3], "the others once the first did");
    assert_eq!(h.sent(1), 1, "the first worker serves at once");
    h.hello(2);
    h.turn();
    assert_eq!(h.sent(2), 1);
    assert_eq!(h.launched(), [1, 2, 3], "no more than max_workers");
    h.reply(1, 10);
    h.reply(2, 20);
    h.turn();
    assert_eq!((value_of(&first), value_of(&second)), (10, 20));
}

#[test]
fn the_first_hello_sends_the_waiting_call_before_the_others_start_and_worker_pids_waits_for_them() {
    let mut h = harness(2, |_| {});
    h.start_here();
    let future = h.submit(1);
    h.turn();
    h.hello(1);
    h.turn();
    // The call does not wait behind the start of the second worker, and
    // `worker_pids` called once it is answered waits for that worker.
    assert_eq!(
        h.steps(),
        [
            Step::Launched(1),
            Step::Sent {
                worker: 1,
                calls: 1,
                awaited: 1
            },
            Step::Launched(2),
        ]
    );
    h.reply(1, 10);
    h.turn();
    assert_eq!(value_of(&future), 10);
}

#[test]
fn a_start_that_fails_after_the_first_hello_leaves_worker_pids_waiting_for_none() {
    let mut h = harness(2, |_| {});
    h.start_here();
    let future = h.submit(1);
    h.turn();
    h.refuse_launches(Some("no more workers"));
    h.hello(1);
    h.turn();
    assert!(h.pool.is_broken());
    assert_eq!(h.pool.spawning(), 0);
    // Sent before the failed start; it fails with the first worker, which
    // the broken pool kills.
    assert!(future.is_running());
}

#[test]
fn a_pool_of_workers_started_here_whose_first_start_crashed_starts_one_again_alone() {
    let mut h = harness(2, |c| c.crash_policy = CrashPolicy::Respawn);
    h.start_here();
    let future = h.submit(1);
    h.turn();
    h.fail_start(1, StartFailure::Died, KILLED);
    h.turn();
    assert_eq!(h.launched(), [1, 2], "one replacement, alone");
    h.hello(2);
    h.turn();
    assert_eq!(h.launched(), [1, 2, 3]);
    assert_eq!(h.sent(2), 1);
    h.reply(2, 5);
    h.turn();
    assert_eq!(value_of(&future), 5);
}

#[test]
fn a_pool_that_has_a_serving_worker_replaces_every_dead_one_at_once() {
    let mut h = harness(3, |c| c.crash_policy = CrashPolicy::Respawn);
    h.start_here();
    h.submit(1);
    h.turn();
    for id in 1..=3 {
        h.hello(id);
        h.turn();
    }
    h.reply(1, 1);
    h.turn();
    // Two die at once while calls wait: both are replaced together, since
    // a worker of the pool serves.
    let waiting: Vec<_> = (0..4).map(|x| h.submit(x)).collect();
    h.die(2, KILLED, End::Closed);
    h.die(3, KILLED, End::Closed);
    h.turn();
    assert_eq!(h.launched(), [1, 2, 3, 4, 5]);
    assert!(waiting.iter().all(|f| !f.is_done()));
}

#[test]
fn hello_makes_a_worker_serve_the_queued_call() {
    let mut h = harness(1, |_| {});
    let future = h.submit(7);
    h.turn();
    h.hello(1);
    h.turn();
    assert_eq!(h.sent(1), 1);
    assert!(future.is_running());
    h.reply(1, 49);
    h.turn();
    assert_eq!(value_of(&future), 49);
}

#[test]
fn a_launch_failure_breaks_the_pool_with_its_cause() {
    let mut h = harness(1, |_| {});
    h.refuse_launches(Some("no processes left"));
    let future = h.submit(1);
    h.turn();
    let err = error_of(&future);
    assert!(err.is_broken_pool(), "{err}");
    assert!(err.to_string().contains("no processes left"), "{err}");
    assert!(
        h.pool
            .submit_call(&Target::Task(TASK.signature()), None, enc(1))
            .is_err()
    );
    assert!(h.is_finished());
}

#[test]
fn a_launch_that_fails_after_it_returned_breaks_the_pool_with_its_cause() {
    let mut h = harness(2, |_| {});
    let future = h.submit(1);
    h.turn();
    assert_eq!(h.launched(), [1, 2]);
    h.event(
        2,
        Event::LaunchFailed {
            worker: 2,
            error: Error::broken("no processes left"),
        },
    );
    h.turn();
    let err = error_of(&future);
    assert!(err.to_string().contains("no processes left"), "{err}");
    assert_eq!(h.actions(2), [Action::Released]);
    assert!(h.actions(1).contains(&Action::Stopped(Stop::Kill)));
}

fn enc(x: u32) -> impl FnOnce(&mut FrameBuf) -> Result<(), std::convert::Infallible> {
    move |frame| {
        frame.extend_from_slice(&loky_proto::encode_payload(&x).expect("encodes"));
        Ok(())
    }
}

#[test]
fn no_hello_within_the_start_timeout_breaks_the_pool_with_the_reason_as_source() {
    let mut h = harness(1, |_| {});
    let future = h.submit(1);
    h.turn();
    h.fail_start(1, StartFailure::NoHello(Duration::from_millis(300)), KILLED);
    h.turn();
    let err = error_of(&future);
    let text = err.to_string();
    assert!(
        text.contains("/fake/loky-worker") && text.contains("no hello within"),
        "{text}"
    );
    let source = err.source().expect("the start failure is the source");
    assert!(source.to_string().contains("no hello within"), "{source}");
    assert_eq!(
        h.actions(1),
        [Action::Released],
        "reaped by its reader already"
    );
}

#[test]
fn deaths_before_hello_by_a_signal_are_crashes_until_the_third_in_a_row() {
    let mut h = harness(1, |c| c.crash_policy = CrashPolicy::Respawn);
    let future = h.submit(1);
    h.turn();
    for id in 1..=3 {
        h.fail_start(id, StartFailure::Died, KILLED);
        h.turn();
        assert_eq!(
            h.launched().len(),
            id as usize + 1,
            "worker {id} is replaced"
        );
        assert!(!future.is_done());
    }
    h.fail_start(4, StartFailure::Died, KILLED);
    h.turn();
    assert!(error_of(&future).is_broken_pool());
}

#[test]
fn a_hello_resets_the_count_of_deaths_before_hello() {
    let mut h = harness(1, |c| c.crash_policy = CrashPolicy::Respawn);
    h.submit(1);
    h.turn();
    h.fail_start(1, StartFailure::Died, KILLED);
    h.turn();
    h.fail_start(2, StartFailure::Died, KILLED);
    h.turn();
    assert_eq!(h.sup.start_crashes, 2);
    h.hello(3);
    h.turn();
    assert_eq!(h.sup.start_crashes, 0);
}

#[test]
fn a_death_before_hello_under_break_pool_is_a_terminated_worker() {
    let mut h = harness(1, |_| {});
    let future = h.submit(1);
    h.turn();
    h.fail_start(1, StartFailure::Died, KILLED);
    h.turn();
    assert!(matches!(error_of(&future), Error::TerminatedWorker(t) if t.signal() == Some(9)));
}

// Initializing

fn with_initializer(c: &mut Config) {
    c.initializer = Some(Initializer {
        sig: OTHER.signature(),
        args: loky_proto::encode_payload(&0u32).expect("encodes"),
    });
}

#[test]
fn the_initializer_runs_before_any_call_then_the_worker_serves() {
    let mut h = harness(1, with_initializer);
    let future = h.submit(1);
    h.turn();
    h.hello(1);
    h.turn();
    assert_eq!(h.sent(1), 1, "only the initializer");
    assert!(!future.is_running());
    h.reply(1, 0);
    h.turn();
    assert_eq!(h.sent(1), 2);
    assert!(future.is_running());
}

#[test]
fn a_failing_initializer_breaks_the_pool_naming_it() {
    let mut h = harness(1, with_initializer);
    let future = h.submit(1);
    h.turn();
    h.hello(1);
    h.turn();
    let link = h.link(1);
    let call = link.take_all().remove(0);
    call.item.future.settle(Err(Error::broken("it refused")));
    h.event(
        1,
        Event::Completed {
            worker: 1,
            replies: 1,
        },
    );
    h.turn();
    let err = error_of(&future);
    assert!(
        err.to_string().contains("initializer `other` failed"),
        "{err}"
    );
    assert!(err.source().is_some());
    assert!(h.actions(1).contains(&Action::Stopped(Stop::Kill)));
}

#[test]
fn a_death_in_the_initializer_breaks_the_pool_even_under_respawn() {
    let mut h = harness(1, |c| {
        with_initializer(c);
        c.crash_policy = CrashPolicy::Respawn;
    });
    let future = h.submit(1);
    h.turn();
    h.hello(1);
    h.turn();
    h.die(1, KILLED, End::Closed);
    h.turn();
    let err = error_of(&future);
    assert!(
        err.to_string()
            .contains("initializer `other` killed its worker"),
        "{err}"
    );
    assert_eq!(h.launched(), [1], "no replacement");
}

// Serving: deaths

#[test]
fn a_death_while_busy_under_break_pool_fails_every_call_and_later_submits() {
    let mut h = harness(1, |_| {});
    let running = h.submit(1);
    let queued = h.submit(2);
    h.turn();
    h.hello(1);
    h.turn();
    h.die(1, WorkerExit::Signal(11), End::Closed);
    h.turn();
    match error_of(&running) {
        Error::TerminatedWorker(t) => {
            assert_eq!(t.task(), Some("t"));
            assert_eq!(t.pid(), 1001);
        }
        other => panic!("{other:?}"),
    }
    assert!(error_of(&queued).is_broken_pool());
    assert!(h.pool.check_open().unwrap_err().is_broken_pool());
    assert_eq!(h.actions(1).last(), Some(&Action::Released));
    assert!(h.is_finished());
}

#[test]
fn a_crash_that_breaks_the_pool_settles_its_call_before_the_other_workers_are_stopped() {
    let mut h = serving(2, |_| {});
    let running = h.submit(1);
    h.turn();
    let crashed = h.holder_of_one_call();
    let other = 3 - crashed;
    let probe = h.actions_probe(other);
    let seen = Arc::new(std::sync::Mutex::new(None));
    let record = seen.clone();
    running.on_done(Box::new(move || {
        *record.lock().unwrap() = Some(probe());
    }));
    h.die(crashed, WorkerExit::Signal(11), End::Closed);
    h.turn();
    assert!(matches!(error_of(&running), Error::TerminatedWorker(_)));
    let at_settle = seen.lock().unwrap().take().expect("settled");
    assert!(
        !at_settle.contains(&Action::Stopped(Stop::Kill)),
        "the other worker was stopped before the crashed call was settled: {at_settle:?}"
    );
    assert!(h.actions(other).contains(&Action::Stopped(Stop::Kill)));
}

#[test]
fn a_death_while_busy_under_respawn_fails_the_running_call_and_resends_the_rest() {
    let mut h = serving(1, |c| c.crash_policy = CrashPolicy::Respawn);
    let calls: Vec<_> = (0..3).map(|x| h.submit(x)).collect();
    h.turn();
    assert_eq!(h.held(1), 3, "short calls are pipelined");
    let calls_ids = h.link(1).ids();
    h.die(1, KILLED, End::Closed);
    h.turn();
    assert!(matches!(error_of(&calls[0]), Error::TerminatedWorker(_)));
    assert_eq!(h.launched(), [1, 2]);
    h.hello(2);
    h.turn();
    assert_eq!(
        h.link(2).ids(),
        calls_ids[1..],
        "the others go to the replacement, in order"
    );
    h.reply(2, 10);
    h.reply(2, 11);
    h.turn();
    assert_eq!((value_of(&calls[1]), value_of(&calls[2])), (10, 11));
    assert!(!h.pool.is_broken());
}

#[test]
fn a_dead_worker_is_released_once_its_reader_reaped_it_or_at_the_pools_end() {
    let mut h = serving(2, |c| c.crash_policy = CrashPolicy::Respawn);
    let crashed = h.submit(1);
    h.turn();
    let worker = h.holder_of_one_call();
    // A worker that said what it dies of: its reader reports the death
    // before the reap.
    h.event(
        worker,
        Event::Died {
            worker,
            exit: WorkerExit::Signal(11),
            end: End::Closed,
        },
    );
    h.turn();
    assert!(matches!(error_of(&crashed), Error::TerminatedWorker(_)));
    assert!(
        !h.actions(worker).contains(&Action::Released),
        "the supervisor did not wait for the reap"
    );
    h.event(worker, Event::Reaped { worker });
    h.turn();
    assert_eq!(h.actions(worker).last(), Some(&Action::Released));

    // A death whose reap has not come when the pool ends is released
    // then: nothing of it outlives the pool.
    let other = 3 - worker;
    h.event(
        other,
        Event::Died {
            worker: other,
            exit: KILLED,
            end: End::Closed,
        },
    );
    h.turn();
    assert!(!h.actions(other).contains(&Action::Released));
    h.end();
    assert_eq!(h.actions(other).last(), Some(&Action::Released));
}

/// Two serving workers under `Respawn`, one of which crashed running a
/// call; and which one.
fn one_of_two_crashed() -> (Harness, u64) {
    let mut h = serving(2, |c| c.crash_policy = CrashPolicy::Respawn);
    let crashing = h.submit(1);
    h.turn();
    let worker = h.holder_of_one_call();
    h.die(worker, KILLED, End::Closed);
    h.turn();
    assert!(matches!(error_of(&crashing), Error::TerminatedWorker(_)));
    (h, worker)
}

#[test]
fn while_other_workers_serve_a_crashed_worker_is_replaced_a_little_later() {
    let (mut h, worker) = one_of_two_crashed();
    assert_eq!(h.launched(), [1, 2], "not yet: the other worker serves");
    // The next call goes at once to the other worker, alone on the machine.
    let next = h.submit(2);
    h.turn();
    assert_eq!(h.held(3 - worker), 1);
    h.reply(3 - worker, 4);
    h.turn();
    assert_eq!(value_of(&next), 4);
    assert_eq!(h.launched(), [1, 2]);
    h.turn_at(at(&h, 0.010));
    assert_eq!(h.launched(), [1, 2, 3], "replaced within the delay");
}

#[test]
fn a_replacement_that_waits_is_not_started_once_the_pool_shuts_down_with_nothing_queued() {
    let (mut h, _) = one_of_two_crashed();
    h.pool.shutdown(Shutdown {
        wait: false,
        ..Shutdown::default()
    });
    h.turn();
    h.turn_at(at(&h, 0.010));
    assert_eq!(
        h.launched(),
        [1, 2],
        "no worker started for a pool shutting down"
    );
}

#[test]
fn a_crashed_worker_is_replaced_at_once_when_calls_wait_for_a_worker() {
    let mut h = serving(2, |c| c.crash_policy = CrashPolicy::Respawn);
    let busy = h.submit(1);
    let crashing = h.submit(2);
    h.turn();
    assert_eq!((h.held(1), h.held(2)), (1, 1));
    // Behind the busy worker, an unknown task's call waits in the queue.
    let waiting = h.submit_sig(OTHER.signature(), 3);
    h.turn();
    h.die(2, KILLED, End::Closed);
    h.turn();
    assert!(matches!(error_of(&crashing), Error::TerminatedWorker(_)));
    assert_eq!(h.launched(), [1, 2, 3]);
    assert!(!busy.is_done() && !waiting.is_done());
}

#[test]
fn a_death_while_idle_breaks_the_pool_under_break_pool_and_is_replaced_under_respawn() {
    let mut h = serving(1, |_| {});
    h.die(1, EXITED, End::Closed);
    h.turn();
    assert!(h.pool.is_broken());

    let mut h = serving(1, |c| c.crash_policy = CrashPolicy::Respawn);
    h.die(1, EXITED, End::Closed);
    h.turn();
    assert!(!h.pool.is_broken());
    assert_eq!(h.launched(), [1, 2]);
}

#[test]
fn a_protocol_error_is_a_crash_whose_source_says_what_was_wrong() {
    let mut h = serving(1, |_| {});
    let future = h.submit(1);
    h.turn();
    h.die(1, KILLED, End::Protocol(LinkError::SecondHello));
    h.turn();
    let err = error_of(&future);
    assert!(
        err.to_string()
            .contains("broke the protocol: it sent a second hello"),
        "{err}"
    );
    assert_eq!(err.source().unwrap().to_string(), "it sent a second hello");
}

#[test]
fn a_panic_in_a_reader_breaks_the_pool_and_fails_its_calls_with_an_internal_error() {
    let mut h = serving(2, |c| c.crash_policy = CrashPolicy::Respawn);
    let future = h.submit(1);
    h.turn();
    let busy = h.holder_of_one_call();
    h.die(
        busy,
        KILLED,
        End::Internal {
            reason: "internal error in the reader".into(),
            orphans: Vec::new(),
        },
    );
    h.turn();
    assert!(
        error_of(&future)
            .to_string()
            .contains("internal error in the reader")
    );
    assert!(h.pool.is_broken(), "whatever the crash policy");
    let other = 3 - busy;
    assert!(h.actions(other).contains(&Action::Stopped(Stop::Kill)));
}

#[test]
fn a_panic_in_a_writer_breaks_the_pool() {
    let mut h = serving(1, |_| {});
    let future = h.submit(1);
    h.turn();
    let message = "boom".to_owned();
    h.event(
        1,
        Event::ThreadPanicked {
            worker: 1,
            role: Role::Writer,
            message,
        },
    );
    h.turn();
    assert!(h.actions(1).contains(&Action::Stopped(Stop::Kill)));
    h.die(1, KILLED, End::Closed);
    h.turn();
    let err = error_of(&future);
    assert!(
        err.to_string().contains("writer thread of worker 1001"),
        "{err}"
    );
    assert!(h.is_finished());
}

// Retiring

#[test]
fn a_worker_asking_to_leave_is_closed_once_its_calls_are_answered_and_replaced() {
    let mut h = serving(1, |_| {});
    let future = h.submit(1);
    h.turn();
    h.retire(1);
    h.turn();
    assert!(
        !h.actions(1).contains(&Action::Closed),
        "it still runs a call"
    );
    let next = h.submit(2);
    h.turn();
    assert_eq!(
        h.launched(),
        [1, 2],
        "a replacement starts for the queued call"
    );
    h.reply(1, 1);
    h.turn();
    assert!(future.is_done());
    assert!(h.actions(1).contains(&Action::Closed));
    h.die(1, EXITED, End::Closed);
    h.hello(2);
    h.turn();
    assert!(!h.pool.is_broken(), "an exit it was asked for is no crash");
    h.reply(2, 2);
    h.turn();
    assert_eq!(value_of(&next), 2);
}

#[test]
fn a_retiring_worker_that_dies_holding_a_call_crashed() {
    let mut h = serving(1, |_| {});
    let future = h.submit(1);
    h.turn();
    h.retire(1);
    h.turn();
    h.die(1, KILLED, End::Closed);
    h.turn();
    assert!(matches!(error_of(&future), Error::TerminatedWorker(_)));
}

#[test]
fn max_tasks_per_child_retires_a_worker_after_that_many_calls() {
    let mut h = serving(1, |c| c.max_tasks_per_child = Some(2));
    let second = h.submit(2);
    let third = h.submit(3);
    h.turn();
    assert_eq!(h.sent(1), 2, "the warm-up call and one more");
    h.reply(1, 2);
    h.turn();
    assert!(h.actions(1).contains(&Action::Closed));
    assert!(second.is_done() && !third.is_running());
    assert_eq!(h.launched(), [1, 2]);
    h.die(1, EXITED, End::Closed);
    h.hello(2);
    h.turn();
    assert!(third.is_running());
    assert!(!h.pool.is_broken());
}

#[test]
fn the_idle_timeout_closes_a_worker_idle_that_long() {
    let mut h = serving(1, |c| c.idle_timeout = Some(Duration::from_secs(10)));
    let idle_since = h.link(1).idle_since().expect("idle");
    assert_eq!(
        h.sup.next_timer(),
        Some(idle_since + Duration::from_secs(10))
    );
    h.turn_at(idle_since + Duration::from_secs(9));
    assert!(!h.actions(1).contains(&Action::Closed));
    h.turn_at(idle_since + Duration::from_secs(10));
    assert!(h.actions(1).contains(&Action::Closed));
    h.die(1, EXITED, End::Closed);
    h.turn();
    assert!(!h.pool.is_broken());
    assert!(
        h.sup.slots.is_empty(),
        "not replaced while nothing is queued"
    );
}

#[test]
fn a_zero_idle_timeout_never_retires_a_worker_that_has_work_waiting() {
    let mut h = harness(1, |c| c.idle_timeout = Some(Duration::ZERO));
    let first = h.submit(1);
    h.turn();
    h.hello(1);
    h.turn();
    assert_eq!(h.actions(1), [Action::Sent(0)]);
    h.reply(1, 1);
    h.turn();
    assert!(first.is_done());
    assert!(
        h.actions(1).contains(&Action::Closed),
        "idle with nothing queued"
    );
    assert_eq!(h.launched(), [1], "and not replaced");
}

#[test]
fn shrinking_the_pool_retires_the_idlest_workers() {
    let mut h = serving(2, |_| {});
    h.submit(1);
    h.turn();
    let busy = h.holder_of_one_call();
    h.sup.handle(Event::Resize(1));
    h.turn();
    assert!(h.actions(3 - busy).contains(&Action::Closed));
    assert!(!h.actions(busy).contains(&Action::Closed));
}

#[test]
fn a_worker_retired_while_starting_is_closed_and_its_hello_ignored() {
    let mut h = harness(2, |_| {});
    h.submit(1);
    h.turn();
    h.sup.handle(Event::Resize(1));
    h.turn();
    let retired = if h.actions(1).contains(&Action::Closed) {
        1
    } else {
        2
    };
    h.hello(retired);
    h.turn();
    assert_eq!(h.sent(retired), 0);
    h.fail_start(3 - retired, StartFailure::Died, EXITED);
    h.die(retired, EXITED, End::Closed);
    h.turn();
    assert!(
        h.pool.is_broken(),
        "the live one's start failure still counts"
    );
}

// Killing

#[test]
fn a_call_past_its_deadline_gets_term_then_kill_after_the_grace_period() {
    let mut h = serving(1, |c| {
        c.task_timeout = Some(Duration::from_secs(1));
        c.crash_policy = CrashPolicy::BreakPool;
    });
    let late = h.submit(1);
    let next = h.submit(2);
    h.turn();
    let (_, _, since) = h.link(1).front().expect("running");
    assert_eq!(h.sup.next_timer(), Some(since + Duration::from_secs(1)));
    h.turn_at(since + Duration::from_millis(999));
    assert!(!h.actions(1).contains(&Action::Stopped(Stop::Term)));
    let fired = since + Duration::from_secs(1);
    h.turn_at(fired);
    assert!(h.actions(1).contains(&Action::Stopped(Stop::Term)));
    assert_eq!(h.sup.next_timer(), Some(fired + Duration::from_millis(500)));
    h.turn_at(fired + Duration::from_millis(499));
    assert!(!h.actions(1).contains(&Action::Stopped(Stop::Kill)));
    h.turn_at(fired + Duration::from_millis(500));
    assert!(h.actions(1).contains(&Action::Stopped(Stop::Kill)));
    h.die(1, KILLED, End::Closed);
    h.turn();
    match error_of(&late) {
        Error::DeadlineExceeded(d) => assert_eq!(d.timeout(), Duration::from_secs(1)),
        other => panic!("{other:?}"),
    }
    assert!(
        !h.pool.is_broken(),
        "a deadline is no crash, even under BreakPool"
    );
    assert!(!next.is_done(), "the next call waits for the replacement");
    assert_eq!(h.launched(), [1, 2]);
}

#[test]
fn durations_too_long_for_an_instant_mean_no_limit() {
    let mut h = serving(1, |c| {
        c.task_timeout = Some(Duration::MAX);
        c.idle_timeout = Some(Duration::MAX);
        c.kill_grace = Duration::MAX;
    });
    let future = h.submit(1);
    h.turn();
    assert_eq!(h.sup.next_timer(), None);
    h.turn_at(at(&h, 1e9));
    assert_eq!(h.sent(1), 2);
    assert_eq!(h.actions(1).len(), 2, "no stop, no close");
    h.sup.handle(Event::Kill(future.clone()));
    h.turn_at(at(&h, 1e9));
    assert_eq!(h.actions(1).last(), Some(&Action::Stopped(Stop::Term)));
    assert_eq!(
        h.sup.next_timer(),
        None,
        "an unbounded grace never escalates"
    );
}

#[test]
fn kill_of_a_running_call_terms_then_kills_and_fails_it_as_cancelled() {
    let mut h = serving(1, |c| c.kill_grace = Duration::from_millis(100));
    let future = h.submit(1);
    h.turn();
    assert!(future.kill());
    h.turn();
    assert!(h.actions(1).contains(&Action::Stopped(Stop::Term)));
    h.turn_at(at(&h, 0.2));
    assert!(h.actions(1).contains(&Action::Stopped(Stop::Kill)));
    h.die(1, KILLED, End::Closed);
    h.turn();
    assert!(matches!(error_of(&future), Error::Cancelled));
    assert!(!h.pool.is_broken());
}

#[test]
fn kill_of_a_call_sent_but_not_started_settles_it_at_once() {
    let mut h = serving(1, |_| {});
    let running = h.submit(1);
    let behind = h.submit(2);
    h.turn();
    assert_eq!(h.held(1), 2);
    assert!(behind.kill());
    h.turn();
    assert!(matches!(error_of(&behind), Error::Cancelled));
    assert!(!running.is_done());
    assert!(!h.actions(1).contains(&Action::Stopped(Stop::Term)));
}

#[test]
fn a_call_queued_again_after_a_death_can_be_cancelled() {
    let mut h = serving(1, |c| c.crash_policy = CrashPolicy::Respawn);
    h.submit(1);
    let requeued = h.submit(2);
    h.turn();
    h.die(1, KILLED, End::Closed);
    h.turn();
    assert!(
        !requeued.is_running(),
        "back in the pool's queue, not running"
    );
    assert!(requeued.cancel(), "and cancellable again");
    assert!(
        requeued.kill(),
        "killing a cancelled call says it is stopped"
    );
    h.turn();
    assert!(matches!(error_of(&requeued), Error::Cancelled));
    h.hello(2);
    h.turn();
    assert_eq!(h.sent(2), 0);
}

#[test]
fn a_breaking_pool_turns_a_polite_kill_into_a_sigkill() {
    let mut h = serving(2, |c| c.task_timeout = Some(Duration::from_secs(1)));
    h.submit(1);
    h.turn();
    let busy = h.holder_of_one_call();
    h.turn_at(at(&h, 1.5));
    assert!(h.actions(busy).contains(&Action::Stopped(Stop::Term)));
    h.die(3 - busy, KILLED, End::Closed);
    h.turn();
    assert!(h.pool.is_broken());
    assert_eq!(h.actions(busy).last(), Some(&Action::Stopped(Stop::Kill)));
    assert_eq!(h.sup.next_timer(), None);
}

// Shutdown

#[test]
fn shutdown_waits_for_the_calls_then_closes_every_worker() {
    let mut h = serving(2, |_| {});
    let future = h.submit(1);
    h.turn();
    h.pool.shutdown(Shutdown {
        wait: false,
        ..Shutdown::default()
    });
    h.turn();
    let busy = h.holder_of_one_call();
    assert!(h.actions(3 - busy).contains(&Action::Closed));
    assert!(!h.actions(busy).contains(&Action::Closed));
    h.reply(busy, 5);
    h.turn();
    assert!(h.actions(busy).contains(&Action::Closed));
    h.die(1, EXITED, End::Closed);
    h.die(2, EXITED, End::Closed);
    h.turn();
    assert_eq!(value_of(&future), 5);
    assert!(h.is_finished());
    assert!(!h.pool.is_broken());
}

#[test]
fn a_released_last_handle_leaves_its_pool_finishing_in_the_background() {
    let h = serving(1, |_| {});
    let handle = super::PoolHandle::new(h.pool.clone());
    let (released, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        handle.release(Shutdown {
            wait: false,
            ..Shutdown::default()
        });
        let _ = released.send(());
    });
    // Nothing turns the supervisor: had the drop waited for the pool to
    // finish, as the default `on_drop` does, it would never return.
    done.recv_timeout(Duration::from_secs(60))
        .expect("the release waited for the pool to finish");
    assert!(h.pool.is_shut_down());
    assert!(!h.is_finished());
}

#[test]
fn a_worker_that_says_hello_after_shutdown_starts_no_other_and_the_pool_finishes() {
    let mut h = harness(2, |_| {});
    h.start_here();
    let future = h.submit(1);
    h.turn();
    h.hello(1);
    h.turn();
    assert_eq!(h.launched(), [1, 2]);
    h.reply(1, 7);
    h.turn();
    assert_eq!(value_of(&future), 7);
    // Shut down while the second worker still starts: the first leaves,
    // then the second says hello, the only live worker that did.
    h.pool.shutdown(Shutdown {
        wait: false,
        ..Shutdown::default()
    });
    h.turn();
    assert!(h.actions(1).contains(&Action::Closed));
    h.die(1, EXITED, End::Closed);
    h.turn();
    h.hello(2);
    h.turn();
    assert_eq!(h.launched(), [1, 2], "nothing to do: no worker starts");
    assert!(h.actions(2).contains(&Action::Closed));
    h.die(2, EXITED, End::Closed);
    h.turn();
    assert_eq!(h.launched(), [1, 2]);
    assert!(h.is_finished());
}

#[test]
fn shutdown_with_cancel_futures_cancels_what_is_queued() {
    let mut h = harness(1, |_| {});
    let running = h.submit(1);
    let queued = h.submit(2);
    h.turn();
    h.hello(1);
    h.turn();
    h.pool.shutdown(Shutdown {
        wait: false,
        kill_workers: false,
        cancel_futures: true,
    });
    h.turn();
    assert!(queued.is_cancelled());
    assert!(running.is_running());
}

#[test]
fn shutdown_with_kill_workers_kills_every_worker_and_fails_their_calls() {
    let mut h = serving(1, |_| {});
    let future = h.submit(1);
    h.turn();
    h.pool.shutdown(Shutdown {
        wait: false,
        kill_workers: true,
        cancel_futures: false,
    });
    h.turn();
    assert!(
        h.actions(1)
            .ends_with(&[Action::Closed, Action::Stopped(Stop::Kill)])
    );
    h.die(1, KILLED, End::Closed);
    h.turn();
    assert!(matches!(error_of(&future), Error::ShutdownExecutor(s) if s.workers_killed()));
    assert!(h.is_finished());
}

// Dispatch: what is sent ahead

#[test]
fn calls_of_a_task_not_measured_yet_are_not_sent_ahead() {
    let mut h = serving(1, |_| {});
    let calls: Vec<_> = (0..3).map(|x| h.submit_sig(OTHER.signature(), x)).collect();
    h.turn();
    assert_eq!(h.held(1), 1, "OTHER's duration is unknown");
    assert!(
        !calls[1].is_running() && calls[1].cancel(),
        "a queued call is cancellable"
    );
    h.reply(1, 0);
    h.turn();
    assert_eq!(h.held(1), 1, "the cancelled call was skipped");
    assert!(calls[2].is_running());
}

#[test]
fn calls_of_a_task_measured_short_are_sent_ahead() {
    let mut h = serving(1, |_| {});
    (0..3).for_each(|x| drop(h.submit(x)));
    h.turn();
    assert_eq!(h.held(1), 3);
}

#[test]
fn the_calls_a_worker_gets_in_one_round_are_sent_together_in_order() {
    let mut h = serving(2, |_| {});
    let before = (h.batches(1).len(), h.batches(2).len());
    (0..10).for_each(|x| drop(h.submit(x)));
    h.turn();
    // Spread fewest first, five each, in one batch per worker.
    assert_eq!(h.batches(1)[before.0..], [5]);
    assert_eq!(h.batches(2)[before.1..], [5]);
    for worker in [1, 2] {
        let ids = h.link(worker).ids();
        assert!(ids.is_sorted(), "in submission order: {ids:?}");
    }
}

#[test]
fn a_round_larger_than_a_batch_sends_what_it_gathered_as_it_goes() {
    let mut h = serving(8, |_| {});
    let before: Vec<usize> = (1..=8).map(|w| h.batches(w).len()).collect();
    (0..400).for_each(|x| drop(h.submit(x)));
    h.turn();
    // 8 workers with room for 800 each (a 10 µs task) take 400 calls: the
    // first 256 go in one batch per worker (32 each), the other 144 in a
    // second (18 each).
    for (w, before) in (1..=8).zip(before) {
        assert_eq!(h.batches(w)[before..], [32, 18], "worker {w}");
        assert_eq!(h.held(w), 50);
    }
}

#[test]
fn calls_of_a_task_measured_long_are_never_sent_ahead() {
    let mut h = serving(1, |_| {});
    h.task_takes(Duration::from_secs(2));
    (0..3).for_each(|x| drop(h.submit(x)));
    h.turn();
    assert_eq!(h.held(1), 1);
}

#[test]
fn nothing_is_sent_ahead_behind_a_call_of_a_task_not_known_short() {
    let mut h = serving(1, |_| {});
    h.submit_sig(OTHER.signature(), 0);
    let short = h.submit(1);
    h.turn();
    assert_eq!(h.held(1), 1);
    assert!(
        !short.is_running(),
        "a short call does not queue behind an unknown one"
    );
}

#[test]
fn nothing_is_sent_ahead_while_a_worker_of_the_pool_is_starting() {
    let mut h = serving(1, |_| {});
    h.sup.handle(Event::Resize(2));
    h.turn();
    assert_eq!(h.launched(), [1, 2]);
    (0..3).for_each(|x| drop(h.submit(x)));
    h.turn();
    assert_eq!(h.held(1), 1, "the starting worker will take the others");
    h.hello(2);
    h.turn();
    assert_eq!((h.held(1), h.held(2)), (2, 1), "then spread, fewest first");
}

// Dispatch

#[test]
fn an_idle_worker_gets_a_call_before_a_busy_one() {
    let mut h = serving(2, |_| {});
    let first = h.submit(1);
    h.turn();
    let busy = h.holder_of_one_call();
    h.submit(2);
    h.turn();
    assert_eq!((h.held(busy), h.held(3 - busy)), (1, 1));
    assert!(first.is_running());
}

#[test]
fn a_call_the_worker_does_not_register_fails_alone() {
    let mut h = serving(1, |_| {});
    let unknown = h.submit_sig(loky_proto::Task::<u32, u32>::new("nope").signature(), 1);
    let mismatch = h.submit_sig(loky_proto::Task::<u64, u32>::new("t").signature(), 1);
    h.turn();
    assert!(matches!(error_of(&unknown), Error::UnknownTask(_)));
    assert!(matches!(error_of(&mismatch), Error::TaskMismatch(_)));
    assert!(!h.pool.is_broken());
}

#[test]
fn a_dead_worker_is_released_after_its_futures_are_settled() {
    let mut h = serving(1, |c| c.crash_policy = CrashPolicy::Respawn);
    let future = h.submit(1);
    h.turn();
    let settled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = settled.clone();
    future.on_done(Box::new(move || {
        flag.store(true, std::sync::atomic::Ordering::SeqCst)
    }));
    h.die(1, KILLED, End::Exited);
    h.turn();
    assert!(settled.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(h.actions(1).last(), Some(&Action::Released));
}

// Calls sent by their caller

/// The workers callers may take now, and whether each is free.
fn enrolled(h: &Harness) -> Vec<(u64, bool)> {
    let mut workers = h.pool.direct.enrolled();
    workers.sort_unstable();
    workers
}

#[test]
fn a_call_to_an_idle_pool_goes_from_its_caller_to_a_free_worker_unseen_by_the_supervisor() {
    let mut h = serving(1, |_| {});
    assert_eq!(enrolled(&h), [(1, true)]);
    let future = h.submit_direct(5);
    assert_eq!(h.sent(1), 2, "sent without a turn of the supervisor");
    assert_eq!(h.events_waiting(), 0);
    assert_eq!(enrolled(&h), [(1, false)]);
    assert!(!h.reply(1, 25), "the supervisor need not hear of the reply");
    assert_eq!(value_of(&future), 25);
    assert_eq!(enrolled(&h), [(1, true)], "free again for the next caller");
    let next = h.submit_direct(6);
    assert_eq!(h.sent(1), 3);
    h.reply(1, 36);
    assert_eq!(value_of(&next), 36);
}

#[test]
fn a_caller_queues_behind_calls_that_wait_for_the_supervisor() {
    let mut h = serving(1, |_| {});
    let first = h.submit(1);
    let second = h.submit_direct(2);
    assert_eq!(h.sent(1), 1, "only the warm-up call is sent");
    assert_eq!(h.events_waiting(), 2);
    h.turn();
    let sent: Vec<u64> = h
        .actions(1)
        .iter()
        .filter_map(|a| match a {
            Action::Sent(id) => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(sent.len(), 3);
    assert!(sent.windows(2).all(|w| w[0] < w[1]), "in order: {sent:?}");
    h.reply(1, 1);
    h.reply(1, 4);
    assert_eq!((value_of(&first), value_of(&second)), (1, 4));
}

#[test]
fn while_calls_wait_a_reply_is_told_to_the_supervisor_which_sends_the_next() {
    let mut h = serving(1, |_| {});
    h.task_takes(Duration::from_secs(1));
    let running = h.submit_direct(1);
    let waiting = h.submit(2);
    h.turn();
    assert_eq!(h.held(1), 1, "a long call gets nothing queued behind it");
    assert!(
        h.reply(1, 1),
        "calls wait: the supervisor hears of the reply"
    );
    h.turn();
    assert_eq!(h.held(1), 1);
    h.reply(1, 4);
    assert_eq!((value_of(&running), value_of(&waiting)), (1, 4));
}

#[test]
fn a_worker_is_taken_from_callers_before_it_retires_or_is_killed() {
    let mut h = serving(2, |c| {
        c.crash_policy = CrashPolicy::Respawn;
        c.kill_grace = Duration::from_millis(100);
    });
    assert_eq!(enrolled(&h), [(1, true), (2, true)]);
    h.retire(1);
    h.turn();
    assert_eq!(enrolled(&h), [(2, true)]);
    let future = h.submit_direct(3);
    assert_eq!(h.held(2), 1, "sent to the worker still serving");
    assert!(future.kill());
    h.turn();
    assert!(h.actions(2).contains(&Action::Stopped(Stop::Term)));
    assert_eq!(enrolled(&h), []);
    let queued = h.submit_direct(4);
    assert_eq!(h.events_waiting(), 1, "no worker to take: queued");
    h.die(2, KILLED, End::Closed);
    h.turn();
    assert!(matches!(error_of(&future), Error::Cancelled));
    assert!(!queued.is_done());
}

#[test]
fn a_call_a_caller_sent_to_a_worker_that_dies_fails_with_its_death() {
    let mut h = serving(1, |c| c.crash_policy = CrashPolicy::Respawn);
    let future = h.submit_direct(3);
    h.die(1, WorkerExit::Signal(11), End::Closed);
    h.turn();
    assert!(matches!(error_of(&future), Error::TerminatedWorker(_)));
    assert_eq!(enrolled(&h), []);
    assert!(!h.pool.is_broken());
}

#[test]
fn shutdown_and_a_broken_pool_take_every_worker_from_callers() {
    let mut h = serving(2, |_| {});
    h.pool.shutdown(Shutdown {
        wait: false,
        ..Shutdown::default()
    });
    assert!(matches!(
        h.submit_with_timeout(1, None),
        Err(Error::ShutdownExecutor(_))
    ));
    h.turn();
    assert_eq!(enrolled(&h), []);

    let mut h = serving(2, |_| {});
    h.die(1, WorkerExit::Signal(11), End::Closed);
    h.turn();
    assert_eq!(enrolled(&h), []);
    assert!(matches!(h.submit_with_timeout(1, None), Err(e) if e.is_broken_pool()));
}

#[test]
fn calls_with_a_deadline_and_pools_that_recycle_workers_go_through_the_queue() {
    let mut h = serving(1, |_| {});
    let timed = h
        .submit_with_timeout(1, Some(Duration::from_secs(60)))
        .unwrap();
    assert_eq!(h.events_waiting(), 1);
    h.turn();
    h.reply(1, 1);
    assert_eq!(value_of(&timed), 1);

    let mut h = serving(1, |c| c.max_tasks_per_child = Some(10));
    assert_eq!(enrolled(&h), [], "its calls are counted by the supervisor");
    let _queued = h.submit_direct(1);
    assert_eq!(h.events_waiting(), 1);
}

#[test]
fn a_worker_busy_with_a_callers_call_is_looked_at_again_for_the_idle_timeout() {
    let mut h = serving(1, |c| c.idle_timeout = Some(Duration::from_secs(10)));
    let future = h.submit_direct(1);
    let next = h
        .sup
        .next_timer()
        .expect("a timer while the worker is busy");
    assert!(next <= at(&h, 10.0));
    assert!(!h.reply(1, 1), "unseen by the supervisor");
    assert_eq!(value_of(&future), 1);
    let idle_since = h.link(1).idle_since().expect("idle");
    h.turn_at(idle_since + Duration::from_secs(9));
    assert!(!h.actions(1).contains(&Action::Closed));
    assert_eq!(
        h.sup.next_timer(),
        Some(idle_since + Duration::from_secs(10))
    );
    h.turn_at(idle_since + Duration::from_secs(10));
    assert!(h.actions(1).contains(&Action::Closed));
    assert_eq!(enrolled(&h), []);
}

#[test]
fn a_zero_idle_timeout_looks_at_a_busy_worker_without_spinning() {
    let mut h = harness(1, |c| c.idle_timeout = Some(Duration::ZERO));
    let _busy = h.submit(1);
    h.turn();
    h.hello(1);
    h.turn();
    assert_eq!(h.held(1), 1);
    let before = Instant::now();
    let next = h
        .sup
        .next_timer()
        .expect("a timer while the worker is busy");
    assert!(next >= before + Duration::from_millis(10), "{next:?}");
}

#[test]
fn a_reply_that_leaves_calls_on_its_worker_is_told_so_the_next_deadline_starts() {
    let mut h = serving(1, |_| {});
    let first = h.submit(1);
    let timed = h
        .submit_with_timeout(2, Some(Duration::from_secs(60)))
        .unwrap();
    h.turn();
    assert_eq!(h.held(1), 2, "the short task's calls are sent ahead");
    assert!(
        h.reply(1, 1),
        "the call behind it starts now: the supervisor must time it"
    );
    h.turn();
    let next = h
        .sup
        .next_timer()
        .expect("the deadline of the call now running");
    assert!(next <= at(&h, 60.0) && next > at(&h, 59.0), "{next:?}");
    assert_eq!(value_of(&first), 1);
    assert!(!h.reply(1, 4), "nothing left on it: unseen");
    assert_eq!(value_of(&timed), 4);
}

#[test]
fn a_call_no_free_worker_runs_goes_to_the_queue_which_says_why() {
    let mut h = serving(1, |_| {});
    let submit = |h: &Harness, sig: loky_proto::Signature| {
        h.pool
            .submit_call(&Target::Task(sig), None, |frame| {
                loky_proto::encode_payload_into(&1u32, frame)
            })
            .expect("the pool is open")
    };
    let unknown = submit(&h, loky_proto::Task::<u32, u32>::new("nope").signature());
    let mismatch = submit(&h, loky_proto::Task::<u64, u32>::new("t").signature());
    assert_eq!(h.events_waiting(), 2, "not sent by their callers");
    assert_eq!(enrolled(&h), [(1, true)]);
    h.turn();
    assert!(matches!(error_of(&unknown), Error::UnknownTask(_)));
    assert!(matches!(error_of(&mismatch), Error::TaskMismatch(_)));
    let good = h.submit_direct(3);
    assert_eq!(
        h.events_waiting(),
        0,
        "the worker stays free for calls it runs"
    );
    h.reply(1, 9);
    assert_eq!(value_of(&good), 9);
}
