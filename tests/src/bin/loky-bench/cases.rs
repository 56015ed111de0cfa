//! The cases of DESIGN.md's performance table, on loky-rs with the stock
//! `loky-worker` program, and variants (3f: the round trip of a function
//! sent with `submit_fn`, with this program as worker).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use loky::{
    CrashPolicy, Error, ExecutorBuilder, Future, ProcessPoolExecutor, SharedBytes, WorkerProgram,
    diagnostics,
};
use serde_bytes::ByteBuf;

use crate::heap;
use crate::remote;
use crate::stats::{self, Samples};

/// No-op submits in the throughput case (and frames in its raw figure).
pub(crate) const SUBMITS: usize = 20_000;
/// Items of the map case.
pub(crate) const MAP_ITEMS: i64 = 200_000;
/// Chunk size of the map case.
pub(crate) const CHUNKSIZE: usize = 1_000;
/// Bytes echoed in the payload case.
pub(crate) const PAYLOAD: usize = 10 << 20;
/// Workers of the pools of the cold-start, throughput, map and crash cases.
pub(crate) const POOL: usize = 2;
/// Futures held pending in the memory case.
const PENDING: usize = 200_000;
/// How long the memory case keeps both workers busy while it submits.
const BUSY: Duration = Duration::from_secs(4);

/// The case keys, shared with the Python peer's JSON.
pub(crate) mod key {
    pub(crate) const COLD_START: &str = "cold_start_ms";
    pub(crate) const COLD_START_REMOTE: &str = "cold_start_remote_ms";
    pub(crate) const COLD_START_STATIC: &str = "cold_start_static_ms";
    pub(crate) const SUBMIT: &str = "submit_per_sec";
    pub(crate) const AWAIT: &str = "await_per_sec";
    pub(crate) const ROUND_TRIP: &str = "round_trip_us";
    pub(crate) const ROUND_TRIP_FN: &str = "round_trip_fn_us";
    pub(crate) const ROUND_TRIP_SLEEPING: &str = "round_trip_sleeping_us";
    pub(crate) const ROUND_TRIP_REMOTE: &str = "round_trip_remote_us";
    pub(crate) const MAP: &str = "map_per_sec";
    pub(crate) const ECHO: &str = "echo_mib_per_sec";
    pub(crate) const ECHO_SHARED: &str = "echo_shared_mib_per_sec";
    pub(crate) const CRASH_ERROR: &str = "crash_error_ms";
    pub(crate) const CRASH_REUSABLE: &str = "crash_reusable_ms";
    pub(crate) const CRASH_NEW_POOL: &str = "crash_new_pool_ms";
    pub(crate) const CRASH_RESPAWN: &str = "crash_respawn_us";
    pub(crate) const CRASH_RESPAWN_ALONE: &str = "crash_respawn_alone_ms";
    pub(crate) const CRASH_RESPAWN_ALONE_STATIC: &str = "crash_respawn_alone_static_ms";
    pub(crate) const PENDING_MEMORY: &str = "pending_future_bytes";
    pub(crate) const IDLE_RSS: &str = "idle_rss_mib";
    pub(crate) const IDLE_PSS: &str = "idle_pss_mib";
    pub(crate) const IDLE_RSS_STATIC: &str = "idle_rss_static_mib";
    pub(crate) const IDLE_RSS_REMOTE: &str = "idle_rss_remote_mib";
}

/// Figures by case key.
pub(crate) type Results = BTreeMap<String, Samples>;

/// How to run the loky-rs cases.
pub(crate) struct Bench {
    /// The stock `loky-worker` program, as `cargo build` builds it.
    pub(crate) worker: PathBuf,
    /// The same program linked statically, or why there is none.
    pub(crate) static_worker: Result<PathBuf, String>,
    /// The same program built with the feature `remote` (which workers
    /// that connect back need), or why there is none.
    pub(crate) remote_worker: Result<PathBuf, String>,
    pub(crate) runs: usize,
    /// Round trips per run of the latency case.
    pub(crate) round_trips: usize,
}

pub(crate) type Run<T = f64> = Result<T, Error>;

/// Measures one case.
type Measure = fn(&Bench) -> Samples;

impl Bench {
    /// Measures every case.
    pub(crate) fn measure(&self, wants: &dyn Fn(&str) -> bool) -> Results {
        let cases: [(&str, Measure); 23] = [
            (key::COLD_START, Bench::cold_start),
            (key::COLD_START_STATIC, |b| {
                b.on_worker(&b.static_worker, Bench::cold_start)
            }),
            (key::COLD_START_REMOTE, |b| {
                b.on_worker(&b.remote_worker, remote::cold_start)
            }),
            (key::SUBMIT, Bench::submit_throughput),
            (key::AWAIT, Bench::await_throughput),
            (key::ROUND_TRIP, Bench::round_trip),
            (key::ROUND_TRIP_FN, Bench::round_trip_fn),
            (key::ROUND_TRIP_SLEEPING, Bench::round_trip_sleeping),
            (key::ROUND_TRIP_REMOTE, |b| {
                b.on_worker(&b.remote_worker, remote::round_trip)
            }),
            (key::MAP, Bench::map_throughput),
            (key::ECHO, Bench::echo_payload),
            (key::ECHO_SHARED, Bench::echo_shared),
            (key::CRASH_ERROR, Bench::crash_error),
            (key::CRASH_REUSABLE, Bench::crash_reusable),
            (key::CRASH_NEW_POOL, Bench::crash_new_pool),
            (key::CRASH_RESPAWN, Bench::crash_respawn),
            (key::CRASH_RESPAWN_ALONE, Bench::crash_respawn_alone),
            (key::CRASH_RESPAWN_ALONE_STATIC, |b| {
                b.on_worker(&b.static_worker, Bench::crash_respawn_alone)
            }),
            (key::PENDING_MEMORY, Bench::pending_memory),
            (key::IDLE_RSS, Bench::idle_rss),
            (key::IDLE_PSS, Bench::idle_pss),
            (key::IDLE_RSS_STATIC, |b| {
                b.on_worker(&b.static_worker, Bench::idle_rss)
            }),
            (key::IDLE_RSS_REMOTE, |b| {
                b.on_worker(&b.remote_worker, Bench::idle_rss)
            }),
        ];
        let mut results = Results::new();
        for (key, measure) in cases.into_iter().filter(|(key, _)| wants(key)) {
            eprintln!("loky-bench: loky-rs {key}");
            results.insert(key.to_owned(), measure(self));
        }
        results
    }

    /// Case `measure` with `worker` (the static or the remote build of the
    /// stock worker) instead of the stock worker.
    fn on_worker(&self, worker: &Result<PathBuf, String>, measure: Measure) -> Samples {
        let other = || Err("this case runs another worker already".to_owned());
        measure(&Bench {
            worker: worker.clone()?,
            static_worker: other(),
            remote_worker: other(),
            ..*self
        })
    }

    pub(crate) fn builder(&self, workers: usize) -> ExecutorBuilder {
        ProcessPoolExecutor::builder()
            .max_workers(workers)
            .worker_program(WorkerProgram::Path(self.worker.clone()))
    }

    fn pool(&self, workers: usize) -> Run<ProcessPoolExecutor> {
        self.builder(workers).build()
    }

    /// A pool of `workers` that all said hello and ran calls.
    fn warm_pool(&self, workers: usize) -> Run<ProcessPoolExecutor> {
        let ex = self.pool(workers)?;
        warm(&ex, workers)?;
        Ok(ex)
    }

    /// Case 1: Build a pool of 2, submit, get the result; a fresh pool each run
    /// (its shutdown is not timed).
    fn cold_start(&self) -> Samples {
        self.cold_start_of(|| self.pool(POOL))
    }

    /// Case 1 with the pools that `build` makes.
    pub(crate) fn cold_start_of(&self, build: impl Fn() -> Run<ProcessPoolExecutor>) -> Samples {
        let once = || -> Run {
            let start = Instant::now();
            let ex = build()?;
            let value = ex.submit(diagnostics::ECHO_I64, 7)?.result()?;
            let took = start.elapsed();
            check(value == 7, "ECHO_I64 answered another value")?;
            drop(ex);
            Ok(stats::ms(took))
        };
        // The first start reads the worker program from disk.
        once().map_err(|e| e.to_string())?;
        stats::repeat(self.runs, once)
    }

    /// Case 2: Submit 20 000 no-ops, then wait for every result, on a warm pool
    /// of 2.
    fn submit_throughput(&self) -> Samples {
        let ex = self.warm_pool(POOL).map_err(|e| e.to_string())?;
        stats::repeat(self.runs, || -> Run {
            let start = Instant::now();
            let futures = (0..SUBMITS)
                .map(|_| ex.submit(diagnostics::NOOP, ()))
                .collect::<Run<Vec<_>>>()?;
            for future in futures {
                future.result()?;
            }
            Ok(stats::rate(SUBMITS, start.elapsed()))
        })
    }

    /// Case 2b: Case 2 with every result awaited on a current-thread tokio
    /// runtime instead of waited for by `result()`.
    fn await_throughput(&self) -> Samples {
        let ex = self.warm_pool(POOL).map_err(|e| e.to_string())?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| e.to_string())?;
        stats::repeat(self.runs, || -> Run {
            runtime.block_on(async {
                let start = Instant::now();
                let futures = (0..SUBMITS)
                    .map(|_| ex.submit(diagnostics::NOOP, ()))
                    .collect::<Run<Vec<_>>>()?;
                for future in futures {
                    future.await?;
                }
                Ok(stats::rate(SUBMITS, start.elapsed()))
            })
        })
    }

    /// Case 3: The median of sequential submit → result round trips on a warm
    /// pool of 1.
    fn round_trip(&self) -> Samples {
        let ex = self.warm_pool(1).map_err(|e| e.to_string())?;
        self.latency(|i| ex.submit(diagnostics::ECHO_I64, i))
    }

    /// Case 3s: case 3 with a waiting thread that sleeps at once, as the
    /// raw echo's does, instead of checking for its result for a while.
    fn round_trip_sleeping(&self) -> Samples {
        let ex = self
            .builder(1)
            .wait_spin(Duration::ZERO)
            .build()
            .map_err(|e| e.to_string())?;
        warm(&ex, 1).map_err(|e| e.to_string())?;
        self.latency(|i| ex.submit(diagnostics::ECHO_I64, i))
    }

    /// Case 3f: case 3 with a closure sent by `submit_fn` to a warm pool of
    /// 1 worker running this program (which serves the diagnostic tasks
    /// too, for the warm-up).
    fn round_trip_fn(&self) -> Samples {
        let ex = ProcessPoolExecutor::builder()
            .max_workers(1)
            .worker_program(WorkerProgram::CurrentExe)
            .build()
            .map_err(|e| e.to_string())?;
        warm(&ex, 1).map_err(|e| e.to_string())?;
        self.latency(|i| ex.submit_fn(|x: i64| x, i))
    }

    /// The median time of sequential `call(i)` → result round trips, each
    /// to answer `i`.
    pub(crate) fn latency(&self, call: impl Fn(i64) -> Run<loky::Future<i64>>) -> Samples {
        stats::repeat(self.runs, || -> Run {
            let mut times = Vec::with_capacity(self.round_trips);
            for i in 0..self.round_trips as i64 {
                let start = Instant::now();
                let value = call(i)?.result()?;
                times.push(stats::us(start.elapsed()));
                check(value == i, "the echo answered another value")?;
            }
            Ok(stats::median(&mut times))
        })
    }

    /// Case 4: `map` of 200 000 ints in chunks of 1000 on a warm pool of 2,
    /// from the call to the last result collected.
    fn map_throughput(&self) -> Samples {
        let ex = self.warm_pool(POOL).map_err(|e| e.to_string())?;
        stats::repeat(self.runs, || -> Run {
            let start = Instant::now();
            let squares = ex
                .map(diagnostics::SQUARE, 0..MAP_ITEMS)
                .chunksize(CHUNKSIZE)
                .collect::<Run<Vec<i64>>>()?;
            let took = start.elapsed();
            let last = MAP_ITEMS - 1;
            check(squares.last() == Some(&(last * last)), "wrong squares")?;
            Ok(stats::rate(squares.len(), took))
        })
    }

    /// Case 5: Echo 10 MiB of bytes on a warm pool of 1: payload size over the
    /// round trip (submit → result, encoding and decoding included).
    fn echo_payload(&self) -> Samples {
        let ex = self.warm_pool(1).map_err(|e| e.to_string())?;
        let payload = vec![0xa5u8; PAYLOAD];
        let echo = |payload: Vec<u8>| -> Run<Duration> {
            let start = Instant::now();
            let reply = ex
                .submit(diagnostics::ECHO_BYTES, ByteBuf::from(payload))?
                .result()?;
            let took = start.elapsed();
            check(reply.len() == PAYLOAD, "ECHO_BYTES answered another length")?;
            Ok(took)
        };
        echo(payload.clone()).map_err(|e| e.to_string())?;
        stats::repeat(self.runs, || -> Run {
            let took = echo(payload.clone())?;
            Ok(stats::mib_per_sec(PAYLOAD, took))
        })
    }

    /// Case 5b: Echo 10 MiB of `SharedBytes` on a warm pool of 1 (the
    /// buffer made once, outside the timing).
    fn echo_shared(&self) -> Samples {
        let ex = self.warm_pool(1).map_err(|e| e.to_string())?;
        let payload = SharedBytes::from(vec![0xa5u8; PAYLOAD]);
        let echo = || -> Run<Duration> {
            let start = Instant::now();
            let reply = ex
                .submit(diagnostics::ECHO_SHARED, payload.clone())?
                .result()?;
            let took = start.elapsed();
            check(
                reply.len() == PAYLOAD,
                "ECHO_SHARED answered another length",
            )?;
            Ok(took)
        };
        echo().map_err(|e| e.to_string())?;
        stats::repeat(self.runs, || -> Run {
            Ok(stats::mib_per_sec(PAYLOAD, echo()?))
        })
    }

    /// Case 6: From submitting a segfaulting task on a warm pool of 2 to its
    /// future's error.
    fn crash_error(&self) -> Samples {
        stats::repeat(self.runs, || -> Run {
            let ex = self.warm_pool(POOL)?;
            Ok(stats::ms(crash(&ex)?))
        })
    }

    /// Case 7: After a crash broke the reusable executor: get it again (a new
    /// pool replaces the broken one), submit, result.
    fn crash_reusable(&self) -> Samples {
        let reusable = || self.builder(POOL).get_reusable();
        let samples = stats::repeat(self.runs, || -> Run {
            let ex = reusable()?;
            warm(&ex, POOL)?;
            crash(&ex)?;
            drop(ex);
            let start = Instant::now();
            let ex = reusable()?;
            let value = ex.submit(diagnostics::ECHO_I64, 7)?.result()?;
            let took = start.elapsed();
            check(value == 7, "ECHO_I64 answered another value")?;
            Ok(stats::ms(took))
        });
        if let Ok(ex) = reusable() {
            ex.shutdown(true);
        }
        samples
    }

    /// Case 7, variant: after a crash broke a pool, build a new one, submit,
    /// result.
    fn crash_new_pool(&self) -> Samples {
        stats::repeat(self.runs, || -> Run {
            let broken = self.warm_pool(POOL)?;
            crash(&broken)?;
            let start = Instant::now();
            let ex = self.pool(POOL)?;
            let value = ex.submit(diagnostics::ECHO_I64, 7)?.result()?;
            let took = start.elapsed();
            check(value == 7, "ECHO_I64 answered another value")?;
            Ok(stats::ms(took))
        })
    }

    /// Case 7c: with `CrashPolicy::Respawn` and 2 workers, from the crash's
    /// error to the next result (the other worker can answer at once).
    fn crash_respawn(&self) -> Samples {
        self.respawn_next_result(POOL, stats::us)
    }

    /// Case 7d: with `CrashPolicy::Respawn` and a single worker, from the
    /// crash's error to the next result (which needs the replacement).
    fn crash_respawn_alone(&self) -> Samples {
        self.respawn_next_result(1, stats::ms)
    }

    /// From a crash's error to the next result on a warm `Respawn` pool of
    /// `workers` (warmed again before each crash), in the unit `unit`
    /// gives.
    fn respawn_next_result(&self, workers: usize, unit: fn(Duration) -> f64) -> Samples {
        let ex = self
            .builder(workers)
            .on_worker_crash(CrashPolicy::Respawn)
            .build()
            .and_then(|ex| warm(&ex, workers).map(|()| ex))
            .map_err(|e| e.to_string())?;
        stats::repeat(self.runs, || -> Run {
            // Every worker serving and warm (the previous run's
            // replacement included), as the case says.
            warm(&ex, workers)?;
            crash(&ex)?;
            let start = Instant::now();
            let value = ex.submit(diagnostics::ECHO_I64, 7)?.result()?;
            let took = start.elapsed();
            check(value == 7, "ECHO_I64 answered another value")?;
            Ok(unit(took))
        })
    }

    /// Case 8: the parent's heap growth per future while 200 000 no-op
    /// submits wait behind two busy workers (counted by the bench's
    /// allocator; the caller's vector of futures is made beforehand).
    fn pending_memory(&self) -> Samples {
        let ex = self.warm_pool(POOL).map_err(|e| e.to_string())?;
        stats::repeat(self.runs.min(3), || -> Run {
            let busy = (0..POOL)
                .map(|_| ex.submit(diagnostics::SLEEP, BUSY))
                .collect::<Run<Vec<_>>>()?;
            let mut futures: Vec<Future<()>> = Vec::with_capacity(PENDING);
            let grown = heap::growth(|| -> Run<()> {
                for _ in 0..PENDING {
                    futures.push(ex.submit(diagnostics::NOOP, ())?);
                }
                Ok(())
            });
            let (submitted, bytes) = grown;
            submitted?;
            let pending = futures.iter().filter(|f| !f.done()).count();
            for future in busy.into_iter().chain(futures) {
                future.result()?;
            }
            check(
                pending > PENDING / 2,
                "the workers were not busy while submitting",
            )?;
            Ok(bytes as f64 / PENDING as f64)
        })
    }

    /// Case 9: Resident memory of an idle worker after one task (a fresh pool of
    /// 1 each run).
    fn idle_rss(&self) -> Samples {
        stats::repeat(self.runs, || self.idle_worker_memory(vm_rss_mib))
    }

    /// Case 9, variant: the same worker's proportional set size, where the pages
    /// it shares (libc, the program's text) count divided by their sharers.
    fn idle_pss(&self) -> Samples {
        stats::repeat(self.runs, || self.idle_worker_memory(pss_mib))
    }

    fn idle_worker_memory(&self, measure: fn(u32) -> Result<f64, String>) -> Result<f64, String> {
        let ex = self.pool(1).map_err(|e| e.to_string())?;
        let pid = ex
            .submit(diagnostics::PID, ())
            .and_then(|f| f.result())
            .map_err(|e| e.to_string())?;
        measure(pid)
    }
}

/// Makes every worker of `ex` start and run calls: one short sleep per
/// worker at once (a worker holds one call until it has run some, so each
/// sleep lands on its own worker), then no-ops so the pool's estimate of a
/// call's duration is that of a short call.
pub(crate) fn warm(ex: &ProcessPoolExecutor, workers: usize) -> Run<()> {
    let sleeps = (0..workers)
        .map(|_| ex.submit(diagnostics::SLEEP, Duration::from_millis(20)))
        .collect::<Run<Vec<_>>>()?;
    for future in sleeps {
        future.result()?;
    }
    let noops = (0..200)
        .map(|_| ex.submit(diagnostics::NOOP, ()))
        .collect::<Run<Vec<_>>>()?;
    noops.into_iter().try_for_each(|future| future.result())
}

/// Submits a segfaulting task and waits for its error; returns the time
/// from submit to error.
fn crash(ex: &ProcessPoolExecutor) -> Run<Duration> {
    let start = Instant::now();
    let outcome = ex.submit(diagnostics::SEGFAULT, ())?.result();
    let took = start.elapsed();
    match outcome {
        Err(Error::TerminatedWorker(_)) => Ok(took),
        Err(other) => Err(other),
        Ok(()) => Err(Error::InvalidArgument(
            "SEGFAULT returned instead of crashing its worker".to_owned(),
        )),
    }
}

/// `Ok` if `ok`, else an error saying `what`.
pub(crate) fn check(ok: bool, what: &str) -> Run<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(what.to_owned()))
    }
}

/// `VmRSS` of process `pid`, in MiB.
pub(crate) fn vm_rss_mib(pid: u32) -> Result<f64, String> {
    proc_kib(pid, "status", "VmRSS:")
}

/// `Pss` of process `pid`, in MiB.
pub(crate) fn pss_mib(pid: u32) -> Result<f64, String> {
    proc_kib(pid, "smaps_rollup", "Pss:")
}

/// The `field` (in kB) of `/proc/PID/FILE`, in MiB.
fn proc_kib(pid: u32, file: &str, field: &str) -> Result<f64, String> {
    let path = format!("/proc/{pid}/{file}");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    text.lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map(|kib| kib / 1024.0)
        .ok_or_else(|| format!("no {field} in {path}"))
}
