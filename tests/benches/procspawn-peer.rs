//! procspawn 1.0 on the cases of loky-rs's benchmark (`cargo xtask bench
//! --peers`): the same pool sizes, payloads and units as
//! `tests/src/bin/loky-bench/cases.rs`, printed as one JSON object on
//! stdout like the Python peer's:
//!
//! ```text
//! {"procspawn": "1.0", "cases": {"cold_start_ms": [..], "submit_per_sec": {"error": ".."}},
//!  "notes": {"submit_per_sec": ".."}}
//! ```
//!
//! Usage: `procspawn-peer --runs N --round-trips N [--only PREFIXES]`.
//! A procspawn pool runs closures (`fn` pointers) in worker processes that
//! are this same binary, so `procspawn::init()` comes first in `main`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use procspawn::Pool;
use serde_bytes::ByteBuf;
use serde_json::{Value, json};

const SUBMITS: usize = 20_000;
const MAP_ITEMS: i64 = 200_000;
const CHUNKSIZE: i64 = 1_000;
const PAYLOAD: usize = 10 << 20;
const POOL: usize = 2;
/// Spawns per batch when 20 000 at once fail.
const BATCH: usize = 1_000;

type Run = Result<f64, String>;

fn main() {
    procspawn::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let runs = number("--runs", 10);
    let round_trips = number("--round-trips", 2_000);
    let only: Vec<String> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.split(',')
                .filter(|w| !w.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let mut notes = BTreeMap::new();
    let cases: [(&str, &Measure<'_>); 9] = [
        ("cold_start_ms", &|_| repeat(runs, cold_start)),
        ("submit_per_sec", &|notes| submit_throughput(runs, notes)),
        ("round_trip_us", &|_| round_trip(runs, round_trips)),
        ("map_per_sec", &|_| map_throughput(runs)),
        ("echo_mib_per_sec", &|_| echo_payload(runs)),
        ("crash_error_ms", &|_| repeat(runs, crash_error)),
        ("crash_new_pool_ms", &|_| repeat(runs, crash_new_pool)),
        ("crash_respawn_us", &|_| crash_respawn(runs)),
        ("idle_rss_mib", &|_| repeat(runs, idle_rss)),
    ];
    let mut results = serde_json::Map::new();
    for (key, measure) in cases {
        if !only.is_empty() && !only.iter().any(|w| key.starts_with(w.as_str())) {
            continue;
        }
        eprintln!("procspawn-peer: {key}");
        let value = match measure(&mut notes) {
            Ok(samples) => json!(samples),
            Err(error) => json!({ "error": error }),
        };
        results.insert(key.to_owned(), value);
    }
    let out = json!({ "procspawn": "1.0", "cases": Value::Object(results), "notes": notes });
    println!("{out}");
}

type Samples = Result<Vec<f64>, String>;

/// Measures one case; may note how it had to be run.
type Measure<'a> = dyn Fn(&mut BTreeMap<String, String>) -> Samples + 'a;

fn repeat(runs: usize, mut once: impl FnMut() -> Run) -> Samples {
    (0..runs).map(|_| once()).collect()
}

fn pool(workers: usize) -> Result<Pool, String> {
    Pool::new(workers).map_err(|e| e.to_string())
}

/// A pool of `workers` that all started and ran calls.
fn warm_pool(workers: usize) -> Result<Pool, String> {
    let pool = pool(workers)?;
    warm(&pool, workers)?;
    Ok(pool)
}

/// One short sleep per worker at once, then 200 no-ops, as the loky-rs
/// cases warm their pools.
fn warm(pool: &Pool, workers: usize) -> Result<(), String> {
    let sleeps: Vec<_> = (0..workers)
        .map(|_| pool.spawn(20u64, |ms| std::thread::sleep(Duration::from_millis(ms))))
        .collect();
    for handle in sleeps {
        handle.join().map_err(|e| e.to_string())?;
    }
    for _ in 0..200 {
        pool.spawn((), noop).join().map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn noop((): ()) {}

fn echo_i64(x: i64) -> i64 {
    x
}

fn cold_start() -> Run {
    let start = Instant::now();
    let pool = pool(POOL)?;
    let value = pool.spawn(7, echo_i64).join().map_err(|e| e.to_string())?;
    let took = start.elapsed();
    check(value == 7)?;
    pool.shutdown();
    Ok(ms(took))
}

/// 20 000 spawns, then every result; in batches of 1000 if 20 000 at once
/// fail (each queued spawn holds two IPC channels).
fn submit_throughput(runs: usize, notes: &mut BTreeMap<String, String>) -> Samples {
    let pool = warm_pool(POOL)?;
    let all_at_once = spawn_and_join(&pool, SUBMITS);
    let batch = match all_at_once {
        Ok(_) => SUBMITS,
        Err(error) => {
            notes.insert(
                "submit_per_sec".to_owned(),
                format!("in batches of {BATCH}: {SUBMITS} spawns at once fail ({error})"),
            );
            // A failed attempt may leave the pool unusable.
            return submit_batched(runs);
        }
    };
    repeat(runs, || {
        let start = Instant::now();
        spawn_and_join(&pool, batch)?;
        Ok(rate(SUBMITS, start.elapsed()))
    })
}

fn submit_batched(runs: usize) -> Samples {
    let pool = warm_pool(POOL)?;
    repeat(runs, || {
        let start = Instant::now();
        for _ in 0..SUBMITS / BATCH {
            spawn_and_join(&pool, BATCH)?;
        }
        Ok(rate(SUBMITS, start.elapsed()))
    })
}

/// Spawns `count` no-ops, then joins them all.
fn spawn_and_join(pool: &Pool, count: usize) -> Result<(), String> {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let handles: Vec<_> = (0..count).map(|_| pool.spawn((), noop)).collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().map_err(|e| e.to_string()))
    }));
    outcome.unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a panic".to_owned());
        Err(message)
    })
}

fn round_trip(runs: usize, round_trips: usize) -> Samples {
    let pool = warm_pool(1)?;
    repeat(runs, || {
        let mut times = Vec::with_capacity(round_trips);
        for i in 0..round_trips as i64 {
            let start = Instant::now();
            let value = pool.spawn(i, echo_i64).join().map_err(|e| e.to_string())?;
            times.push(start.elapsed().as_secs_f64() * 1e6);
            check(value == i)?;
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    })
}

fn squares(items: Vec<i64>) -> Vec<i64> {
    items.into_iter().map(|x| x * x).collect()
}

/// procspawn has no map: one spawn per chunk of 1000, then every result.
fn map_throughput(runs: usize) -> Samples {
    let pool = warm_pool(POOL)?;
    repeat(runs, || {
        let start = Instant::now();
        let handles: Vec<_> = (0..MAP_ITEMS / CHUNKSIZE)
            .map(|c| pool.spawn((c * CHUNKSIZE..(c + 1) * CHUNKSIZE).collect(), squares))
            .collect();
        let mut count = 0;
        let mut last = 0;
        for handle in handles {
            let chunk = handle.join().map_err(|e| e.to_string())?;
            count += chunk.len();
            last = chunk.last().copied().unwrap_or(0);
        }
        let took = start.elapsed();
        check(last == (MAP_ITEMS - 1) * (MAP_ITEMS - 1))?;
        Ok(rate(count, took))
    })
}

fn echo_bytes(bytes: ByteBuf) -> ByteBuf {
    bytes
}

fn echo_payload(runs: usize) -> Samples {
    let pool = warm_pool(1)?;
    let payload = vec![0xa5u8; PAYLOAD];
    let once = || -> Run {
        let start = Instant::now();
        let reply = pool
            .spawn(ByteBuf::from(payload.clone()), echo_bytes)
            .join()
            .map_err(|e| e.to_string())?;
        let took = start.elapsed();
        check(reply.len() == PAYLOAD)?;
        Ok(PAYLOAD as f64 / f64::from(1u32 << 20) / took.as_secs_f64())
    };
    once()?;
    repeat(runs, once)
}

/// Dies of SIGSEGV (Rust's handler would let a sent one pass).
fn segfault((): ()) {
    // SAFETY: restoring the default disposition and raising a signal have
    // no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGSEGV, libc::SIG_DFL);
        libc::raise(libc::SIGSEGV);
    }
}

/// From spawning a segfaulting call to its error.
fn crash(pool: &Pool) -> Result<Duration, String> {
    let start = Instant::now();
    match pool.spawn((), segfault).join() {
        Err(_) => Ok(start.elapsed()),
        Ok(()) => Err("the segfaulting call returned".to_owned()),
    }
}

fn crash_error() -> Run {
    let pool = warm_pool(POOL)?;
    let took = crash(&pool)?;
    pool.shutdown();
    Ok(ms(took))
}

fn crash_new_pool() -> Run {
    let broken = warm_pool(POOL)?;
    crash(&broken)?;
    let start = Instant::now();
    let pool = pool(POOL)?;
    let value = pool.spawn(7, echo_i64).join().map_err(|e| e.to_string())?;
    let took = start.elapsed();
    check(value == 7)?;
    pool.shutdown();
    broken.shutdown();
    Ok(ms(took))
}

/// A pool of 2 lives on after a crash (procspawn restarts the worker):
/// from the crash's error to the next result.
fn crash_respawn(runs: usize) -> Samples {
    let pool = warm_pool(POOL)?;
    repeat(runs, || {
        // Every worker serving and warm again before each crash, as in the
        // loky-rs case.
        warm(&pool, POOL)?;
        crash(&pool)?;
        let start = Instant::now();
        let value = pool.spawn(7, echo_i64).join().map_err(|e| e.to_string())?;
        let took = start.elapsed();
        check(value == 7)?;
        Ok(took.as_secs_f64() * 1e6)
    })
}

fn pid((): ()) -> u32 {
    std::process::id()
}

fn idle_rss() -> Run {
    let pool = pool(1)?;
    let pid = pool.spawn((), pid).join().map_err(|e| e.to_string())?;
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or("no VmRSS")?;
    pool.shutdown();
    Ok(kib / 1024.0)
}

fn check(ok: bool) -> Result<(), String> {
    ok.then_some(())
        .ok_or_else(|| "a call answered another value".to_owned())
}

fn ms(took: Duration) -> f64 {
    took.as_secs_f64() * 1e3
}

fn rate(count: usize, took: Duration) -> f64 {
    count as f64 / took.as_secs_f64()
}
