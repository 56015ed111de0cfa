//! The test step where nextest is not installed: cargo builds the test
//! binaries (libtest harnesses) and xtask runs each one itself, under a
//! deadline of its own, so that a hung test stops its binary, not the whole
//! run, and the report names the binary. (libtest has no per-test timeout;
//! it prints "test NAME has been running for over 60 seconds", which names
//! the test.)

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::runner::{self, Failure};

/// A test binary that cargo built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TestBinary {
    /// The target's name (`crash`, `loky_core`).
    pub(crate) target: String,
    /// The directory of its package's `Cargo.toml`: where cargo would run it.
    pub(crate) package_dir: PathBuf,
    /// The executable.
    pub(crate) executable: PathBuf,
}

impl TestBinary {
    /// `target (package directory name)`, for messages.
    pub(crate) fn label(&self) -> String {
        let package = self
            .package_dir
            .file_name()
            .map_or_else(String::new, |name| name.to_string_lossy().into_owned());
        format!("{} ({package})", self.target)
    }
}

/// Builds with `build` (a `cargo test --no-run --message-format=json...`
/// command), then runs every test binary it reports, each within
/// `per_binary`, all within `deadline`. Every binary runs even after one
/// fails; the error names each that failed or hung.
pub(crate) fn build_and_run(
    build: &mut Command,
    deadline: Duration,
    per_binary: Duration,
) -> Result<(), Failure> {
    let start = Instant::now();
    let json = runner::capture_within(build, deadline)?;
    let binaries = test_binaries(&json);
    if binaries.is_empty() {
        return Err(Failure::Failed("cargo reported no test binary".to_owned()));
    }
    let mut failed = Vec::new();
    let mut hung = None;
    for binary in &binaries {
        let left = deadline.saturating_sub(start.elapsed());
        let mut command = Command::new(&binary.executable);
        command
            .current_dir(&binary.package_dir)
            .env("CARGO_MANIFEST_DIR", &binary.package_dir)
            .stdin(Stdio::null());
        println!("\n--> {}", binary.label());
        match runner::run_within(&mut command, per_binary.min(left)) {
            Ok(()) => {}
            Err(Failure::TimedOut { deadline, .. }) => {
                eprintln!(
                    "note: libtest's \"has been running for over 60 seconds\" lines above \
                     name the test of {} that hung",
                    binary.label()
                );
                hung.get_or_insert(Failure::TimedOut {
                    command: format!("test binary {}", binary.label()),
                    deadline,
                });
            }
            Err(Failure::Failed(_)) => failed.push(binary.label()),
        }
    }
    match (hung, failed.is_empty()) {
        (Some(hung), _) => Err(hung),
        (None, true) => Ok(()),
        (None, false) => Err(Failure::Failed(format!(
            "test binaries failed: {}",
            failed.join(", ")
        ))),
    }
}

/// The test binaries among the JSON messages of a cargo build: artifacts
/// built with the test profile that have an executable.
pub(crate) fn test_binaries(json: &str) -> Vec<TestBinary> {
    json.lines()
        .filter(|line| line.contains("\"reason\":\"compiler-artifact\""))
        .filter(|line| {
            object_after(line, "\"profile\":").is_some_and(|p| p.contains("\"test\":true"))
        })
        .filter_map(|line| {
            let executable = string_field(line, "executable")?;
            let manifest = string_field(line, "manifest_path")?;
            let target = string_field(object_after(line, "\"target\":")?, "name")?;
            Some(TestBinary {
                target,
                package_dir: Path::new(&manifest).parent()?.to_path_buf(),
                executable: PathBuf::from(executable),
            })
        })
        .collect()
}

/// The JSON object (with no nested object) that follows `key` in `line`.
fn object_after<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(key)? + key.len();
    let rest = line[start..].strip_prefix('{')?;
    Some(&rest[..rest.find('}')?])
}

/// The value of the first string field `key` in `json`, unescaped; `None`
/// when it is missing or not a string (`null`).
fn string_field(json: &str, key: &str) -> Option<String> {
    let pattern = format!("\"{key}\":\"");
    let start = json.find(&pattern)? + pattern.len();
    let mut value = String::new();
    let mut chars = json[start..].chars();
    loop {
        match chars.next()? {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                't' => value.push('\t'),
                escaped => value.push(escaped),
            },
            c => value.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARTIFACTS: &str = concat!(
        r#"{"reason":"compiler-artifact","package_id":"path+file:///w/tests#loky-tests@0.1.0","manifest_path":"/w/tests/Cargo.toml","target":{"kind":["test"],"crate_types":["bin"],"name":"crash","src_path":"/w/tests/tests/crash.rs","edition":"2024","doc":false,"doctest":false,"test":true},"profile":{"opt_level":"0","debuginfo":2,"debug_assertions":true,"overflow_checks":true,"test":true},"features":[],"filenames":["/w/target/debug/deps/crash-1"],"executable":"/w/target/debug/deps/crash-1","fresh":true}"#,
        "\n",
        r#"{"reason":"compiler-artifact","package_id":"path+file:///w/tests#loky-tests@0.1.0","manifest_path":"/w/tests/Cargo.toml","target":{"kind":["bin"],"crate_types":["bin"],"name":"loky-test-worker","src_path":"/w/tests/src/main.rs","edition":"2024","doc":true,"doctest":false,"test":true},"profile":{"opt_level":"0","debuginfo":2,"debug_assertions":true,"overflow_checks":true,"test":false},"features":[],"filenames":["/w/target/debug/loky-test-worker"],"executable":"/w/target/debug/loky-test-worker","fresh":true}"#,
        "\n",
        r#"{"reason":"compiler-artifact","package_id":"registry+https://github.com/rust-lang/crates.io-index#libc@0.2.177","manifest_path":"/r/libc/Cargo.toml","target":{"kind":["lib"],"crate_types":["lib"],"name":"libc","src_path":"/r/libc/src/lib.rs","edition":"2021","doc":true,"doctest":true,"test":true},"profile":{"opt_level":"0","debuginfo":0,"debug_assertions":true,"overflow_checks":true,"test":false},"features":[],"filenames":["/w/target/debug/deps/liblibc.rlib"],"executable":null,"fresh":true}"#,
        "\n",
        r#"{"reason":"compiler-artifact","package_id":"path+file:///w/a%20b#x@0.1.0","manifest_path":"/w/a \"b\"/Cargo.toml","target":{"kind":["lib"],"crate_types":["lib"],"name":"x","src_path":"/w/a/src/lib.rs","edition":"2024","doc":true,"doctest":true,"test":true},"profile":{"opt_level":"0","debuginfo":2,"debug_assertions":true,"overflow_checks":true,"test":true},"features":[],"filenames":["/w/target/debug/deps/x-2"],"executable":"/w/target/debug/deps/x-2","fresh":false}"#,
        "\n",
        r#"{"reason":"build-finished","success":true}"#,
    );

    /// Catches a parser that runs the binaries the tests use (built with
    /// the dev profile, `"test":false`) or artifacts with no executable.
    #[test]
    fn only_test_profile_executables_are_test_binaries() {
        let found = test_binaries(ARTIFACTS);
        assert_eq!(
            found,
            [
                TestBinary {
                    target: "crash".into(),
                    package_dir: "/w/tests".into(),
                    executable: "/w/target/debug/deps/crash-1".into(),
                },
                TestBinary {
                    target: "x".into(),
                    package_dir: "/w/a \"b\"".into(),
                    executable: "/w/target/debug/deps/x-2".into(),
                },
            ]
        );
        assert_eq!(found[0].label(), "crash (tests)");
    }

    #[test]
    fn string_fields_are_unescaped_and_null_is_none() {
        assert_eq!(
            string_field(r#"{"a":"x\\y\"z"}"#, "a").as_deref(),
            Some("x\\y\"z")
        );
        assert_eq!(string_field(r#"{"a":null}"#, "a"), None);
        assert_eq!(string_field(r#"{"a":"cut"#, "a"), None);
    }
}
