//! `--peers`: Python loky and procspawn on the same cases, in the same run.
//!
//! A virtual environment under the target directory gets `loky` from pip
//! once; `tests/bench/loky_peer.py` measures the cases and prints JSON with
//! the same case keys and units as [`crate::cases`]. The procspawn peer
//! (`tests/benches/procspawn-peer.rs`, built by `cargo xtask bench
//! --peers`) prints the same JSON.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cases::Results;

/// The peer script, in the source tree.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/loky_peer.py");

/// How long the whole peer run may take.
const PEER_TIMEOUT: Duration = Duration::from_secs(900);

/// The peers' names, as the table shows them.
pub(crate) const PYTHON: &str = "Python loky";
pub(crate) const PROCSPAWN: &str = "procspawn";

/// Where `cargo xtask bench` says the procspawn peer is.
const PROCSPAWN_ENV: &str = "LOKY_BENCH_PROCSPAWN_PEER";

/// What a peer run produced.
pub(crate) struct PeerResults {
    /// `Python 3.x.y, loky a.b.c`, or `procspawn 1.0`.
    pub(crate) versions: String,
    pub(crate) results: Results,
    /// How a case had to be run on this peer, by case key.
    pub(crate) notes: BTreeMap<String, String>,
}

/// Measures procspawn, or says why it could not.
pub(crate) fn measure_procspawn(
    runs: usize,
    round_trips: usize,
    only: &[String],
) -> Result<PeerResults, String> {
    let path = std::env::var_os(PROCSPAWN_ENV).ok_or_else(|| {
        format!("{PROCSPAWN_ENV} is not set (`cargo xtask bench --peers` builds the peer)")
    })?;
    eprintln!(
        "loky-bench: procspawn (runs {})",
        Path::new(&path).display()
    );
    run_peer(Command::new(path), runs, round_trips, only)
}

/// Runs a peer's `command` with the bench's options and reads its JSON.
fn run_peer(
    mut command: Command,
    runs: usize,
    round_trips: usize,
    only: &[String],
) -> Result<PeerResults, String> {
    command
        .args(["--runs", &runs.to_string()])
        .args(["--round-trips", &round_trips.to_string()])
        .args(["--only", &only.join(",")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let stdout = run_with_deadline(command, PEER_TIMEOUT)?;
    parse(&stdout)
}

/// Measures Python loky, or says why it could not.
pub(crate) fn measure_python(
    venv: &Path,
    runs: usize,
    round_trips: usize,
    only: &[String],
) -> Result<PeerResults, String> {
    let python = prepare_venv(venv)?;
    eprintln!("loky-bench: Python loky (runs with {})", python.display());
    let mut command = Command::new(&python);
    command.arg("-I").arg(SCRIPT);
    run_peer(command, runs, round_trips, only)
}

/// The venv's Python with `loky` installed, creating and filling the venv
/// when needed.
fn prepare_venv(venv: &Path) -> Result<PathBuf, String> {
    let python = venv.join("bin").join("python");
    if !python.is_file() {
        eprintln!(
            "loky-bench: creating a virtual environment in {}",
            venv.display()
        );
        status(Command::new("python3").arg("-m").arg("venv").arg(venv))
            .map_err(|e| format!("python3 cannot create a virtual environment: {e}"))?;
    }
    let has_loky = || {
        Command::new(&python)
            // Isolated: from the workspace root, the `loky/` crate folder
            // would pass for a namespace package.
            .args(["-I", "-c", "import loky; loky.__version__"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has_loky() {
        eprintln!("loky-bench: installing loky with pip");
        status(Command::new(&python).args(["-m", "pip", "install", "--quiet", "loky"]))
            .map_err(|e| format!("pip cannot install loky: {e}"))?;
    }
    Ok(python)
}

/// Runs `command` to success, its output shown.
fn status(command: &mut Command) -> Result<(), String> {
    let status = command
        .stdin(Stdio::null())
        .status()
        .map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("it ended with {status}"))
    }
}

/// Runs `command`, capturing its stdout; kills it past `timeout`.
fn run_with_deadline(mut command: Command, timeout: Duration) -> Result<String, String> {
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start the peer script: {e}"))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => {
                // Polling a child is what this loop is for: no event to wait on.
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the peer script ran past {timeout:?} and was killed"
                ));
            }
            Err(e) => return Err(format!("cannot wait for the peer script: {e}")),
        }
    };
    let text = reader
        .join()
        .map_err(|_| "the peer reader panicked".to_owned())?
        .map_err(|e| format!("cannot read the peer's output: {e}"))?;
    if status.success() {
        Ok(text)
    } else {
        Err(format!("the peer script ended with {status}"))
    }
}

/// Reads a peer's JSON: `{"python": .., "loky": ..}` or `{"procspawn":
/// ..}`, then `"cases": {key: [samples] | {"error": ".."}}` and optional
/// `"notes": {key: ".."}`.
fn parse(stdout: &str) -> Result<PeerResults, String> {
    let json: serde_json::Value = serde_json::from_str(stdout.trim())
        .map_err(|e| format!("the peer printed no valid JSON ({e}): {stdout:?}"))?;
    let text = |field: &str| json[field].as_str().unwrap_or("?").to_owned();
    let versions = match json["procspawn"].as_str() {
        Some(version) => format!("procspawn {version}"),
        None => format!("Python {}, loky {}", text("python"), text("loky")),
    };
    let notes = json["notes"]
        .as_object()
        .map(|notes| {
            notes
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let cases = json["cases"]
        .as_object()
        .ok_or("the peer's JSON has no `cases` object")?;
    let results = cases
        .iter()
        .map(|(key, value)| {
            let samples = match value {
                serde_json::Value::Array(items) => {
                    Ok(items.iter().filter_map(serde_json::Value::as_f64).collect())
                }
                other => Err(other["error"].as_str().unwrap_or("no samples").to_owned()),
            };
            (key.clone(), samples)
        })
        .collect();
    Ok(PeerResults {
        versions,
        results,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_samples_and_errors() {
        let peer = parse(
            r#"{"python": "3.11.7", "loky": "3.5.6",
                "cases": {"cold_start_ms": [1.5, 2.5], "idle_rss_mib": {"error": "no /proc"}}}"#,
        )
        .unwrap();
        assert_eq!(peer.versions, "Python 3.11.7, loky 3.5.6");
        assert_eq!(peer.results["cold_start_ms"], Ok(vec![1.5, 2.5]));
        assert_eq!(peer.results["idle_rss_mib"], Err("no /proc".to_owned()));
        assert!(parse("oops").is_err());
        let procspawn = parse(
            r#"{"procspawn": "1.0", "cases": {"round_trip_us": [30.0]},
                "notes": {"round_trip_us": "batched"}}"#,
        )
        .unwrap();
        assert_eq!(procspawn.versions, "procspawn 1.0");
        assert_eq!(procspawn.notes["round_trip_us"], "batched");
    }
}
