//! The examples that `cargo xtask test` runs, and what their output must
//! contain. Every example of `loky/examples` must be listed (a test checks).

/// An example of the `loky` package that `cargo xtask test` runs and checks.
pub(crate) struct Example {
    /// Example name (`loky/examples/NAME.rs`).
    pub(crate) name: &'static str,
    /// Arguments after `--`.
    pub(crate) args: &'static [&'static str],
    /// Substrings that its stdout must contain, each anywhere.
    pub(crate) expect: &'static [&'static str],
}

/// The examples run by `cargo xtask test`, each as
/// `cargo run -p loky --example NAME -- ARGS` whose stdout must contain
/// every `expect` substring.
///
/// To add one, append an entry, for instance
/// `Example { name: "quick_start", args: &["--workers", "2"], expect: &["done: 42"] }`.
/// Prefer output that does not depend on timing or the machine (no counts of
/// CPUs, no durations), so the check is stable on a 2-core CI machine. The
/// examples whose output does depend on timing run with their full
/// durations, not `--quick`: their margins (a task that must still wait for
/// a worker, one that must still be running past a timeout) are then two to
/// five times wider, for a few seconds more.
pub(crate) const EXAMPLES: &[Example] = &[
    Example {
        name: "async_service",
        args: &[],
        expect: &[
            "200 requests: 188 answered, 4 crashed their worker, 4 past their deadline, \
             4 rejected by the handler\n",
            "the pool is not broken: true\n",
            "batch of 50: 50 results streamed, sum = 122650\n",
            "a request whose client gave up after 1 ms: its task still finished: Ok(99)\n",
            "shut down: true, workers left: 0\n",
        ],
    },
    Example {
        name: "progress",
        args: &[],
        expect: &["2000 items mapped, 0 failed, sum = 7996000\n"],
    },
    Example {
        name: "tour",
        args: &[],
        expect: &[
            "square(7) = 49",
            "parse(\"forty-two\") = Err(\"invalid digit found in string\")",
            "divide(1, 0) panicked: task `fn((i64, i64)) -> i64` panicked in worker",
            "attempt to divide by zero",
            "the workers survived",
            "The exit codes of the workers are {SIGABRT(-6)}",
            "submit on the broken pool fails at once: true",
            "get_reusable() replaced the broken pool: square(8) = 64",
            "exit(3) -> EXIT(3), then square(9) = 81, pool broken: false",
            "exceeded its deadline of 300ms",
            "pool broken: false; square(10) = 100",
            "400/400",
            "sum of squares = 21253400",
        ],
    },
    Example {
        name: "crash_recovery",
        args: &[],
        // Whether tasks 0-2 and 4 succeed depends on timing, as in Python.
        expect: &[
            "Task 3 failed: A worker process managed by the executor was unexpectedly terminated.",
            "The exit codes of the workers are {EXIT(1)}",
            "New executor created successfully",
            "New executor: problematic_task(4) = 8",
        ],
    },
    Example {
        name: "worker_termination",
        args: &[],
        expect: &[
            "Size 1M: Success (0)",
            "Size 10M: Success (0)",
            "Size 100M: Success (0)",
            "Size 1000M: Worker terminated (A worker process managed by the executor exceeded \
             its memory limit of 1073741824 bytes",
            "The exit codes of the workers are {EXIT(77)}",
            "Size 10000M: Worker terminated (",
        ],
    },
    Example {
        name: "shutdown_error",
        args: &[],
        expect: &[
            "Before shutdown: 10\n",
            "Cannot use shutdown executor: cannot schedule new futures after shutdown\n",
            "With new executor: 20\n",
        ],
    },
    Example {
        name: "timeouts",
        args: &[],
        expect: &[
            "Task (1s, timeout 3s): Completed after 1 seconds\n",
            "Task (5s, timeout 2s): Timed out\n",
            "Task (2s, timeout 4s): Completed after 2 seconds\n",
        ],
    },
    Example {
        name: "cancellation",
        args: &[],
        expect: &[
            "Could not cancel task 1 (already running)\n",
            "Successfully cancelled task 3\n",
            "Task 0: Task 0 result\n",
            "Task 1: Task 1 result\n",
            "Task 2: Task 2 result\n",
            "Task 3: Was cancelled\n",
            "Cancelled 1 tasks\n",
        ],
    },
    Example {
        name: "retries",
        args: &[],
        // Seeded: every attempt's fate, hence the whole run, is reproducible.
        expect: &[
            "✗ Task 1: Timeout (retry 3)\n✗ Task 1: Gave up after 2 retries\n",
            "✗ Task 8: Timeout (retry 1)\n✗ Task 8: Timeout (retry 2)\n\
             ✗ Task 8: Application error (Task 8: Intentional error)\n",
            "Final Results:\n\
             Task 0: Task 0: Success\n\
             Task 1: Failed after 2 retries\n\
             Task 2: Error: Task 2: Intentional error\n\
             Task 3: Task 3: Success\n\
             Task 4: Task 4: Success\n\
             Task 5: Error: Task 5: Intentional error\n\
             Task 6: Task 6: Success\n\
             Task 7: Task 7: Success\n\
             Task 8: Error: Task 8: Intentional error\n\
             Task 9: Error: Task 9: Intentional error\n",
        ],
    },
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::*;

    /// The examples cargo finds in `loky/examples`: `NAME.rs` files and
    /// `NAME/main.rs` directories.
    fn examples_on_disk() -> BTreeSet<String> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../loky/examples");
        let entries = std::fs::read_dir(&dir).expect("loky/examples exists");
        entries
            .flatten()
            .filter_map(|entry| {
                let path = entry.path();
                let name = path.file_stem()?.to_str()?.to_owned();
                let is_example =
                    path.extension().is_some_and(|e| e == "rs") || path.join("main.rs").is_file();
                is_example.then_some(name)
            })
            .collect()
    }

    /// Catches an example added without an entry here (never run by CI)
    /// and an entry whose example was removed or renamed.
    #[test]
    fn every_example_on_disk_is_run_and_every_entry_exists() {
        let on_disk = examples_on_disk();
        let listed: BTreeSet<String> = EXAMPLES.iter().map(|e| e.name.to_owned()).collect();
        assert_eq!(listed.len(), EXAMPLES.len(), "an example is listed twice");
        let unlisted: Vec<_> = on_disk.difference(&listed).collect();
        assert!(unlisted.is_empty(), "examples never run: {unlisted:?}");
        let missing: Vec<_> = listed.difference(&on_disk).collect();
        assert!(
            missing.is_empty(),
            "listed examples not on disk: {missing:?}"
        );
    }

    /// Catches an entry that checks nothing: every entry expects some
    /// output, and no expectation is empty (an empty one matches anything).
    #[test]
    fn every_entry_checks_some_output() {
        for example in EXAMPLES {
            assert!(
                !example.expect.is_empty(),
                "{} checks nothing",
                example.name
            );
            assert!(
                example.expect.iter().all(|want| !want.trim().is_empty()),
                "{} expects an empty string",
                example.name
            );
        }
    }
}
