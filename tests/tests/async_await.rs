//! Awaiting futures from async runtimes, against real workers: nothing
//! blocks the runtime's thread, a dropped await detaches and leaves no
//! waker behind, errors are those of `result()`, and `shutdown_async`
//! waits without blocking.
//!
//! A runtime that a blocking wait would stall runs on its own thread,
//! checked with a bounded wait: a regression fails the test, it does not
//! hang it.

mod common;

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use loky::diagnostics::{ECHO_I64, EXIT, PANIC, SLEEP};
use loky::{CrashPolicy, Error, Shutdown};
use loky_tests::Gate;
use loky_tests::map_tasks::HELD_OR_ECHO;

/// Generous: for things that must happen.
const LONG: Duration = Duration::from_secs(30);

/// Runs `body` on a thread of its own and gives its value, or fails the
/// test if it takes longer than [`LONG`].
fn within<T: Send + 'static>(what: &str, body: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(body());
    });
    rx.recv_timeout(LONG)
        .unwrap_or_else(|_| panic!("{what} did not finish within {LONG:?}"))
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// The one thread of the runtime must keep running other tasks while 300
/// futures are awaited: one of them is held at a gate that only a timer
/// task of the same runtime opens, after it ticked 20 times.
#[test]
fn three_hundred_futures_awaited_at_once_on_a_current_thread_runtime_while_a_timer_ticks() {
    let ex = common::pool(2);
    let gate = Gate::new();
    let held = ex.submit(HELD_OR_ECHO, (Some(gate.arg()), 1000)).unwrap();
    let (held_tx, held_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = held_tx.send(gate.entered(LONG));
    });
    let futures: Vec<_> = (0..299).map(|i| ex.submit(ECHO_I64, i).unwrap()).collect();
    let awaited_held = held.clone();
    let (results, held_result, ticks) = within("the runtime", move || {
        current_thread_runtime().block_on(async move {
            let ticker = tokio::spawn(async move {
                let mut interval = tokio::time::interval(Duration::from_millis(2));
                let mut ticks = 0;
                let mut pending_release = None;
                loop {
                    interval.tick().await;
                    ticks += 1;
                    if pending_release.is_none()
                        && let Ok(h) = held_rx.try_recv()
                    {
                        pending_release = Some((ticks, h));
                    }
                    if let Some((since, _)) = &pending_release
                        && ticks >= since + 20
                    {
                        let (_, h) = pending_release.take().unwrap();
                        h.release();
                        return ticks;
                    }
                }
            });
            let held = tokio::spawn(async move { awaited_held.await });
            let waits: Vec<_> = futures
                .into_iter()
                .map(|f| tokio::spawn(async move { f.await }))
                .collect();
            let mut results = Vec::new();
            for wait in waits {
                results.push(wait.await.unwrap());
            }
            (results, held.await.unwrap(), ticker.await.unwrap())
        })
    });
    assert!(ticks >= 20, "{ticks}");
    let values: Vec<i64> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(values, (0..299).collect::<Vec<_>>());
    assert_eq!(held_result.unwrap(), 1000);
    assert_eq!(held.result().unwrap(), 1000);
}

/// The same 300 futures under another executor, a plain `block_on`.
#[test]
fn three_hundred_futures_awaited_at_once_under_block_on() {
    let ex = common::pool(2);
    let futures: Vec<_> = (0..300).map(|i| ex.submit(ECHO_I64, i).unwrap()).collect();
    let results = within("block_on", move || {
        futures_executor::block_on(join_all(
            futures.into_iter().map(|f| f.into_future()).collect(),
        ))
    });
    let values: Vec<i64> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(values, (0..300).collect::<Vec<_>>());
}

/// Polls every future until all are ready: `join_all` without a crate.
async fn join_all<F: std::future::Future + Unpin>(mut futures: Vec<F>) -> Vec<F::Output> {
    let mut results: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, result) in futures.iter_mut().zip(results.iter_mut()) {
            if result.is_none() {
                match Pin::new(&mut *future).poll(cx) {
                    Poll::Ready(value) => *result = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    results.into_iter().map(Option::unwrap).collect()
}

/// A waker that counts how many of its clones are alive, and forwards its
/// wakes.
struct Tracked {
    inner: Waker,
    alive: Arc<AtomicUsize>,
}

impl Wake for Tracked {
    fn wake(self: Arc<Self>) {
        self.inner.wake_by_ref();
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.alive.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Polls `F` with a [`Tracked`] waker made for each poll.
struct Counted<F> {
    inner: F,
    alive: Arc<AtomicUsize>,
}

impl<F: std::future::Future + Unpin> std::future::Future for Counted<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.alive.fetch_add(1, Ordering::SeqCst);
        let waker = Waker::from(Arc::new(Tracked {
            inner: cx.waker().clone(),
            alive: self.alive.clone(),
        }));
        Pin::new(&mut self.inner).poll(&mut Context::from_waker(&waker))
    }
}

#[test]
fn a_timeout_that_drops_an_await_leaves_the_task_running_and_no_waker_behind() {
    let ex = common::pool(1);
    let gate = Gate::new();
    let fut = ex.submit(HELD_OR_ECHO, (Some(gate.arg()), 5)).unwrap();
    let held = gate.entered(LONG);
    let alive = Arc::new(AtomicUsize::new(0));
    let (handle, counted) = (fut.clone(), alive.clone());
    let timed_out = within("the timeouts", move || {
        current_thread_runtime().block_on(async move {
            let mut timed_out = 0;
            for _ in 0..200 {
                let counted = Counted {
                    inner: handle.wait_async(),
                    alive: counted.clone(),
                };
                if tokio::time::timeout(Duration::from_millis(1), counted)
                    .await
                    .is_err()
                {
                    timed_out += 1;
                }
            }
            timed_out
        })
    });
    assert_eq!(timed_out, 200);
    assert_eq!(
        alive.load(Ordering::SeqCst),
        0,
        "every waker given to a dropped await was let go"
    );
    assert!(fut.running() && !fut.cancelled(), "{fut:?}");
    held.release();
    assert_eq!(fut.result_timeout(LONG).unwrap(), 5);
    // The handle is usable from async code after that too.
    let again = within("the last await", move || {
        futures_executor::block_on(fut.wait_async())
    });
    assert_eq!(again.unwrap(), 5);
}

/// Every kind of failure, through `.await` and through `result()`.
#[test]
fn errors_arrive_through_await_exactly_as_through_result() {
    let ex = common::builder(1)
        .on_worker_crash(CrashPolicy::Respawn)
        .build()
        .unwrap();
    let panicked = ex.submit(PANIC, "boom".to_owned()).unwrap();
    let crashed = ex.submit(EXIT, 3).unwrap();
    let options = loky::CallOptions::new().timeout(Duration::from_millis(200));
    let late = ex
        .submit_with(SLEEP, Duration::from_secs(60), options)
        .unwrap();
    let gate = Gate::new();
    let blocker = ex.submit(HELD_OR_ECHO, (Some(gate.arg()), 0)).unwrap();
    let cancelled = ex.submit(ECHO_I64, 1).unwrap();
    let held = gate.entered(LONG);
    assert!(cancelled.cancel());
    held.release();
    blocker.result_timeout(LONG).unwrap();
    let futures = [panicked, crashed, late];
    let awaited = {
        let futures = futures.clone();
        within("the awaits", move || {
            futures_executor::block_on(async move {
                let mut errors = Vec::new();
                for fut in futures {
                    errors.push(fut.await.unwrap_err());
                }
                errors.push(cancelled.await.unwrap_err());
                errors
            })
        })
    };
    assert!(matches!(awaited[0], Error::Task(_)), "{:?}", awaited[0]);
    assert!(
        matches!(awaited[1], Error::TerminatedWorker(_)),
        "{:?}",
        awaited[1]
    );
    assert!(
        matches!(awaited[2], Error::DeadlineExceeded(_)),
        "{:?}",
        awaited[2]
    );
    assert!(matches!(awaited[3], Error::Cancelled), "{:?}", awaited[3]);
    for (fut, from_await) in futures.iter().zip(&awaited) {
        let from_result = fut.result().unwrap_err();
        assert_eq!(format!("{from_await:?}"), format!("{from_result:?}"));
        assert_eq!(from_await.to_string(), from_result.to_string());
    }
}

/// While `shutdown_async` waits for a held task, another task of the same
/// current-thread runtime keeps running: it is the one that releases it.
#[test]
fn shutdown_async_waits_for_running_work_without_blocking_its_runtime() {
    let ex = common::pool(1);
    let gate = Gate::new();
    let fut = ex.submit(HELD_OR_ECHO, (Some(gate.arg()), 9)).unwrap();
    let held = gate.entered(LONG);
    let pid = held.pid;
    let (handle, result) = (ex.clone(), fut.clone());
    let (released_before_end, value) = within("the runtime", move || {
        current_thread_runtime().block_on(async move {
            let released = Arc::new(AtomicUsize::new(0));
            let flag = released.clone();
            let releaser = tokio::spawn(async move {
                for _ in 0..10 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                flag.store(1, Ordering::SeqCst);
                held.release();
            });
            handle.shutdown_async(Shutdown::default()).await;
            let released_before_end = released.load(Ordering::SeqCst) == 1;
            releaser.await.unwrap();
            (released_before_end, result.result())
        })
    });
    assert!(
        released_before_end,
        "shutdown_async returned before the task ended"
    );
    assert_eq!(value.unwrap(), 9);
    assert!(ex.is_shutdown() && ex.worker_pids().is_empty());
    assert!(common::reaped_within(&[pid], LONG));
    assert!(matches!(
        ex.submit(ECHO_I64, 1),
        Err(Error::ShutdownExecutor(_))
    ));
}
