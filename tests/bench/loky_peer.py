#!/usr/bin/env python3
"""Python loky on the cases of loky-rs's benchmark (`cargo xtask bench --peers`).

Measures the cases of DESIGN.md's performance table as the Rust bench
(`tests/src/bin/loky-bench/cases.rs`) does, with the same pool sizes, sizes
and units, and prints one JSON object on stdout:

    {"python": "3.11.7", "loky": "3.5.6",
     "cases": {"cold_start_ms": [per-run figures...], "idle_rss_mib": {"error": "..."}, ...}}

Progress goes to stderr. The bench computes medians, min and max itself.
"""

import argparse
import faulthandler
import json
import os
import platform
import signal
import statistics
import sys
import time

import loky
from loky import ProcessPoolExecutor, get_reusable_executor

try:
    from loky import TerminatedWorkerError
except ImportError:  # older loky
    from loky.process_executor import TerminatedWorkerError

SUBMITS = 20_000
MAP_ITEMS = 200_000
CHUNKSIZE = 1_000
PAYLOAD = 10 << 20
POOL = 2


# The tasks, as loky-rs's diagnostic tasks.
def noop():
    return None


def echo(x):
    return x


def square(x):
    return x * x


def segfault():
    # loky workers enable faulthandler, whose dump on SIGSEGV would flood
    # the bench's output (and add a little to Python's time).
    faulthandler.disable()
    os.kill(os.getpid(), signal.SIGSEGV)


def pid():
    return os.getpid()


def warm(ex, workers):
    """Starts every worker (one short sleep each at once), then runs no-ops."""
    list(ex.map(time.sleep, [0.02] * workers))
    for f in [ex.submit(noop) for _ in range(200)]:
        f.result()


def warm_pool(workers):
    ex = ProcessPoolExecutor(max_workers=workers)
    warm(ex, workers)
    return ex


def ms(seconds):
    return seconds * 1e3


def cold_start(runs, _round_trips):
    def once():
        start = time.perf_counter()
        ex = ProcessPoolExecutor(max_workers=POOL)
        value = ex.submit(echo, 7).result()
        took = time.perf_counter() - start
        assert value == 7
        ex.shutdown(wait=True)
        return ms(took)

    once()  # the first start reads the interpreter and modules from disk
    return [once() for _ in range(runs)]


def submit_throughput(runs, _round_trips):
    ex = warm_pool(POOL)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        futures = [ex.submit(noop) for _ in range(SUBMITS)]
        for f in futures:
            f.result()
        samples.append(SUBMITS / (time.perf_counter() - start))
    ex.shutdown(wait=True)
    return samples


def round_trip(runs, round_trips):
    ex = warm_pool(1)
    samples = []
    for _ in range(runs):
        times = []
        for i in range(round_trips):
            start = time.perf_counter()
            value = ex.submit(echo, i).result()
            times.append((time.perf_counter() - start) * 1e6)
            assert value == i
        samples.append(statistics.median(times))
    ex.shutdown(wait=True)
    return samples


def map_throughput(runs, _round_trips):
    ex = warm_pool(POOL)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        squares = list(ex.map(square, range(MAP_ITEMS), chunksize=CHUNKSIZE))
        took = time.perf_counter() - start
        assert squares[-1] == (MAP_ITEMS - 1) ** 2
        samples.append(len(squares) / took)
    ex.shutdown(wait=True)
    return samples


def echo_payload(runs, _round_trips):
    ex = warm_pool(1)
    payload = b"\xa5" * PAYLOAD

    def once():
        start = time.perf_counter()
        reply = ex.submit(echo, payload).result()
        took = time.perf_counter() - start
        assert len(reply) == PAYLOAD
        return PAYLOAD / (1 << 20) / took

    once()
    samples = [once() for _ in range(runs)]
    ex.shutdown(wait=True)
    return samples


def crash(ex):
    """Submits a segfaulting task; returns the time from submit to its error."""
    start = time.perf_counter()
    try:
        ex.submit(segfault).result()
    except TerminatedWorkerError:
        return time.perf_counter() - start
    raise AssertionError("the segfaulting task returned")


def crash_error(runs, _round_trips):
    samples = []
    for _ in range(runs):
        ex = warm_pool(POOL)
        samples.append(ms(crash(ex)))
        ex.shutdown(wait=True)
    return samples


def crash_reusable(runs, _round_trips):
    samples = []
    for _ in range(runs):
        ex = get_reusable_executor(max_workers=POOL)
        warm(ex, POOL)
        crash(ex)
        start = time.perf_counter()
        ex = get_reusable_executor(max_workers=POOL)
        value = ex.submit(echo, 7).result()
        took = time.perf_counter() - start
        assert value == 7
        samples.append(ms(took))
    get_reusable_executor(max_workers=POOL).shutdown(wait=True)
    return samples


def crash_new_pool(runs, _round_trips):
    samples = []
    for _ in range(runs):
        broken = warm_pool(POOL)
        crash(broken)
        start = time.perf_counter()
        ex = ProcessPoolExecutor(max_workers=POOL)
        value = ex.submit(echo, 7).result()
        took = time.perf_counter() - start
        assert value == 7
        samples.append(ms(took))
        ex.shutdown(wait=True)
        broken.shutdown(wait=True)
    return samples


def proc_mib(process, file, field):
    """The `field` (in kB) of /proc/PROCESS/FILE, in MiB."""
    with open(f"/proc/{process}/{file}") as text:
        for line in text:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{process}/{file}")


def idle_memory(runs, file, field):
    samples = []
    for _ in range(runs):
        ex = ProcessPoolExecutor(max_workers=1)
        samples.append(proc_mib(ex.submit(pid).result(), file, field))
        ex.shutdown(wait=True)
    return samples


def idle_rss(runs, _round_trips):
    return idle_memory(runs, "status", "VmRSS:")


def idle_pss(runs, _round_trips):
    return idle_memory(runs, "smaps_rollup", "Pss:")


CASES = {
    "cold_start_ms": cold_start,
    "submit_per_sec": submit_throughput,
    "round_trip_us": round_trip,
    "map_per_sec": map_throughput,
    "echo_mib_per_sec": echo_payload,
    "crash_error_ms": crash_error,
    "crash_reusable_ms": crash_reusable,
    "crash_new_pool_ms": crash_new_pool,
    # Python loky has no respawn policy: a crash always breaks the pool.
    "idle_rss_mib": idle_rss,
    "idle_pss_mib": idle_pss,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--round-trips", type=int, default=2000)
    parser.add_argument("--only", default="", help="comma-separated prefixes of case keys")
    args = parser.parse_args()
    only = [word for word in args.only.split(",") if word]
    cases = {}
    for key, measure in CASES.items():
        if only and not any(key.startswith(word) for word in only):
            continue
        print(f"loky_peer: {key}", file=sys.stderr, flush=True)
        try:
            cases[key] = measure(args.runs, args.round_trips)
        except Exception as error:  # reported in the table, the run goes on
            cases[key] = {"error": f"{type(error).__name__}: {error}"}
    json.dump(
        {"python": platform.python_version(), "loky": loky.__version__, "cases": cases},
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
