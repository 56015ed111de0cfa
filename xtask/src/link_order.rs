//! `cargo xtask link-order`: writes `loky-worker/link/hot-text.ld`, the
//! linker script with which `loky-worker`'s build script lays out the code
//! the stock worker runs first in its text, from a profile of that worker.
//!
//! It builds the stock worker and `loky-tests`' example `hold_worker` with
//! the bench's profile and runs the example under callgrind, following the
//! worker it starts. Once the worker has run its calls and idles, its
//! profile is dumped, and every function of the worker program that ran
//! gets a pattern in the script. The patterns leave out what changes from
//! one build to the next (crate disambiguators and back-references of v0
//! symbol names, the hash of legacy ones), so the script serves any build
//! of the same code: another profile, another toolchain, or the package
//! built from crates.io.
//!
//! Needs valgrind (`callgrind_control` included). Run it again when the
//! code a worker runs at start-up or for a call changes much: a stale
//! script costs memory, never correctness.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use crate::runner::{self, Workspace};
use crate::{bench, static_link, system};

/// The script, relative to the workspace root.
const SCRIPT: &str = "loky-worker/link/hot-text.ld";

/// The example that holds a pool of one worker (`tests/examples`).
const HOLDER: &str = "hold_worker";

/// The output section the script gathers the functions in.
const SECTION: &str = ".text.worker_hot";

/// How long the worker's profile may take to be written.
const DUMP_WITHIN: Duration = Duration::from_secs(60);

/// Profiles the stock worker and writes [`SCRIPT`].
pub(crate) fn run(workspace: &Workspace) -> ExitCode {
    system::exit_code(write_script(workspace))
}

fn write_script(workspace: &Workspace) -> Result<(), String> {
    for program in ["valgrind", "callgrind_control"] {
        if !system::installed(program) {
            return Err(format!(
                "`{program}` is not installed (Debian: apt-get install valgrind)"
            ));
        }
    }
    let profile = bench::PROFILE;
    // Without the script it writes: the layout changes no function, and a
    // script broken by hand must not stop its own replacement.
    let mut build = workspace.cargo(&["build", "--profile", profile]);
    build
        .args(static_link::STOCK_WORKER)
        .arg("--no-default-features");
    runner::run(&mut build)?;
    let mut build = workspace.cargo(&["build", "--profile", profile, "-p", "loky-tests"]);
    build.args(["--example", HOLDER]);
    runner::run(&mut build)?;
    let built = workspace.target_dir().join(profile);
    let out = workspace.target_dir().join("link-order");
    if out.exists() {
        std::fs::remove_dir_all(&out)
            .map_err(|e| format!("cannot clear {}: {e}", out.display()))?;
    }
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let profile_file = profile_worker(
        &built.join("examples").join(HOLDER),
        &built.join("loky-worker"),
        &out,
    )?;
    let text = std::fs::read_to_string(&profile_file)
        .map_err(|e| format!("cannot read {}: {e}", profile_file.display()))?;
    let functions: Vec<String> = functions_run_in(&text, "loky-worker")
        .into_iter()
        .filter(|name| is_symbol(name))
        .collect();
    if functions.is_empty() {
        return Err(format!(
            "{} names no function of loky-worker",
            profile_file.display()
        ));
    }
    let patterns: BTreeSet<String> = functions.iter().map(|f| pattern(f)).collect();
    let script = workspace.root().join(SCRIPT);
    std::fs::write(&script, linker_script(&patterns))
        .map_err(|e| format!("cannot write {}: {e}", script.display()))?;
    println!(
        "{}: {} patterns for the {} functions the worker ran",
        script.display(),
        patterns.len(),
        functions.len()
    );
    Ok(())
}

/// Runs `holder` with `worker` under callgrind, dumps the worker's profile
/// once it idles, and returns that profile's file.
fn profile_worker(holder: &Path, worker: &Path, out: &Path) -> Result<PathBuf, String> {
    let mut command = Command::new("valgrind");
    command
        .args(["--tool=callgrind", "--trace-children=yes", "--demangle=no"])
        .arg(format!(
            "--callgrind-out-file={}/callgrind.%p",
            out.display()
        ))
        .arg(format!("--log-file={}/valgrind.%p.log", out.display()))
        .arg(holder)
        .arg(worker)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run `{}`: {e}", runner::display(&command)))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let first = BufReader::new(stdout).lines().next();
    let pid = first
        .and_then(Result::ok)
        .and_then(|line| line.strip_prefix("worker ")?.trim().parse::<u32>().ok());
    let dumped = match pid {
        Some(pid) => dump(pid, out),
        None => Err(format!(
            "{HOLDER} printed no worker pid (valgrind's logs are in {})",
            out.display()
        )),
    };
    // End of file on its stdin ends the hold, and the example shuts its
    // pool down; it is stopped only if it does not end by itself.
    drop(child.stdin.take());
    let ended = system::wait_until(system::STOP_GRACE, &format!("{HOLDER} to end"), || {
        !matches!(child.try_wait(), Ok(None))
    });
    if ended.is_err() {
        system::stop(HOLDER, &mut child);
    }
    dumped
}

/// Has callgrind dump the profile of process `pid` into `out`; returns
/// the dump's file.
fn dump(pid: u32, out: &Path) -> Result<PathBuf, String> {
    let mut command = Command::new("callgrind_control");
    command.args(["--dump", &pid.to_string()]);
    runner::run_capturing(&mut command)?;
    let file = out.join(format!("callgrind.{pid}.1"));
    system::wait_until(DUMP_WITHIN, "the worker's profile", || {
        std::fs::metadata(&file).is_ok_and(|m| m.len() > 0)
    })?;
    Ok(file)
}

/// The functions with costs in callgrind's profile `text` whose object's
/// file is named `object`, in the order they first appear.
///
/// Names and objects may be compressed: `fn=(7) name` defines id 7, a later
/// `fn=(7)` or `cfn=(7)` refers to it, and `cfn=`/`cob=` (callees) define
/// ids too; only `fn=` lines (a function's own costs) count.
fn functions_run_in(text: &str, object: &str) -> Vec<String> {
    let mut objects: HashMap<&str, &str> = HashMap::new();
    let mut names: HashMap<&str, &str> = HashMap::new();
    let mut in_object = false;
    let mut found = Vec::new();
    let mut seen = BTreeSet::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key {
            "ob" | "cob" => {
                let path = resolve(&mut objects, value);
                if key == "ob" {
                    in_object = Path::new(path).file_name().is_some_and(|n| n == object);
                }
            }
            "fn" | "cfn" => {
                let name = resolve(&mut names, value);
                if key == "fn" && in_object && seen.insert(name) {
                    found.push(name.to_owned());
                }
            }
            _ => {}
        }
    }
    found
}

/// The name in a compressed `(id) name` or `(id)` value, recording a
/// definition in `ids`; an uncompressed value is the name.
fn resolve<'a>(ids: &mut HashMap<&'a str, &'a str>, value: &'a str) -> &'a str {
    let Some(rest) = value.strip_prefix('(') else {
        return value;
    };
    let Some((id, name)) = rest.split_once(')') else {
        return value;
    };
    let name = name.trim_start();
    if name.is_empty() {
        ids.get(id).copied().unwrap_or("")
    } else {
        ids.insert(id, name);
        name
    }
}

/// Whether callgrind's `name` for a function is a symbol's: not one it
/// makes up for code without a symbol (`0x0000000000037620`) or around
/// `main` (`(below main)`).
fn is_symbol(name: &str) -> bool {
    !name.starts_with("0x")
        && !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'.'))
}

/// A glob for `symbol` that matches it in any build of the same code.
///
/// In a v0 name (`_R...`), a crate root's disambiguator (`Cs<base-62>_`)
/// comes from cargo's metadata for the crate, and back-references
/// (`B<base-62>_`) are offsets that move with it: both become `*`. The
/// scan does not parse the grammar, so a `B..._` inside an identifier may
/// become `*` too, which only widens the match. A legacy name's hash
/// (`17h<16 hex digits>E`) becomes `*`; a suffix that makes a local symbol
/// unique (`.llvm.<digits>`, `.<digits>`) is dropped (the script matches
/// `NAME.*` too).
fn pattern(symbol: &str) -> String {
    let symbol = symbol.split_once(".llvm.").map_or(symbol, |(name, _)| name);
    // A local symbol made unique by a number (`write_str.78`).
    let symbol = match symbol.rsplit_once('.') {
        Some((name, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => symbol,
    };
    if let Some(name) = symbol.strip_suffix('E')
        && let Some((path, hash)) = name.rsplit_once("17h")
        && symbol.starts_with("_ZN")
        && hash.len() == 16
        && hash.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return format!("{path}17h*E");
    }
    if !symbol.starts_with("_R") {
        return symbol.to_owned();
    }
    let bytes = symbol.as_bytes();
    let mut out = String::with_capacity(symbol.len());
    let mut i = 0;
    while i < bytes.len() {
        let tag_len = match bytes[i..] {
            [b'C', b's', ..] => 2,
            [b'B', ..] => 1,
            _ => 0,
        };
        if tag_len > 0 {
            let digits = bytes[i + tag_len..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric())
                .count();
            let end = i + tag_len + digits;
            if bytes.get(end) == Some(&b'_') {
                out.push_str(&symbol[i..i + tag_len]);
                out.push_str("*_");
                i = end + 1;
                continue;
            }
        }
        out.push(char::from(bytes[i]));
        i += 1;
    }
    out
}

/// The linker script that gathers the sections of `patterns` in
/// [`SECTION`], before `.text`, on top of the linker's default layout.
/// With function sections, a function `f` is in `.text.f`, or
/// `.text.unlikely.f` when it is cold (`#[cold]`).
fn linker_script(patterns: &BTreeSet<String>) -> String {
    let mut script = String::from(
        "/* Written by `cargo xtask link-order` from a profile of the stock worker:\n   \
         the functions it runs to start, serve calls and wait, laid out first\n   \
         (see build.rs). Do not edit. */\n\
         SECTIONS\n{\n",
    );
    let _ = writeln!(script, "  {SECTION} : {{");
    for p in patterns {
        let _ = writeln!(
            script,
            "    *(.text.{p} .text.{p}.* .text.unlikely.{p} .text.unlikely.{p}.*)"
        );
    }
    script.push_str("  }\n}\nINSERT BEFORE .text;\n");
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v0_name_loses_its_crate_disambiguators_and_back_references() {
        let symbol = "_RNvMs0_NtNtNtNtCsjrHSEGnQ3l9_3std2os4unix3net6streamNtB5_10UnixStream15set_nonblocking";
        assert_eq!(
            pattern(symbol),
            "_RNvMs0_NtNtNtNtCs*_3std2os4unix3net6streamNtB*_10UnixStream15set_nonblocking"
        );
        // The instantiating crate of a generic function, after its `E`.
        assert_eq!(
            pattern(
                "_RINvNtCslNYArtu3iFV_5alloc4growNtB2_6GlobalECs4X4t9plMPHF_9addr2line.llvm.123"
            ),
            "_RINvNtCs*_5alloc4growNtB*_6GlobalECs*_9addr2line"
        );
    }

    #[test]
    fn a_legacy_name_loses_its_hash_and_other_names_are_kept() {
        assert_eq!(
            pattern("_ZN3std4sync9once_lock17OnceLock$LT$T$GT$10initialize17h05b4d799244e695fE"),
            "_ZN3std4sync9once_lock17OnceLock$LT$T$GT$10initialize17h*E"
        );
        // Not a hash: too short.
        assert_eq!(pattern("_ZN3foo17habcE"), "_ZN3foo17habcE");
        assert_eq!(pattern("main"), "main");
        assert_eq!(pattern("_RNvCs1a_3foo3bar.78"), "_RNvCs*_3foo3bar");
        // `B` without a `_` after its digits is not a back-reference.
        assert_eq!(pattern("_RNvCs1a_3foo3Bar"), "_RNvCs*_3foo3Bar");
    }

    #[test]
    fn names_callgrind_makes_up_are_not_symbols() {
        assert!(is_symbol("_RNvCs1_4main4main"));
        assert!(is_symbol(
            "_ZN3std2rt10lang_start17h0123456789abcdefE.llvm.42"
        ));
        assert!(!is_symbol("(below main)"));
        assert!(!is_symbol("0x0000000000037620"));
        assert!(!is_symbol(""));
    }

    #[test]
    fn only_functions_with_costs_in_the_object_are_taken() {
        let profile = "\
version: 1
ob=(1) /lib/x86_64-linux-gnu/libc.so.6
fn=(1) malloc
1 10
ob=(2) /work/target/release-lto/loky-worker
fn=(2) _RNvCs1_4main4main
1 5
cob=(1)
cfn=(1)
calls=1 0
1 10
cfn=(3) _RNvCs1_4main5never
fn=(4) _RNvCs1_4main5serve
1 3
ob=(1)
fn=(3)
1 1
ob=(2)
fn=(2)
1 1
";
        assert_eq!(
            functions_run_in(profile, "loky-worker"),
            ["_RNvCs1_4main4main", "_RNvCs1_4main5serve"]
        );
    }

    #[test]
    fn the_script_inserts_one_section_with_each_pattern_before_text() {
        let patterns = BTreeSet::from(["_RNvCs*_3foo3bar".to_owned()]);
        let script = linker_script(&patterns);
        assert!(script.ends_with(
            "  .text.worker_hot : {\n    *(.text._RNvCs*_3foo3bar .text._RNvCs*_3foo3bar.* \
             .text.unlikely._RNvCs*_3foo3bar .text.unlikely._RNvCs*_3foo3bar.*)\n  }\n}\n\
             INSERT BEFORE .text;\n"
        ));
    }
}
