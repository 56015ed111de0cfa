//! Project automation for loky-rs, run as `cargo xtask <command>`.
//!
//! - `cargo xtask test [--quick] [--no-chaos] [--no-nextest] [--slurm]
//!   [--ssh]`:
//!   every check CI runs, in order, each under a deadline, stopping at the
//!   first failure, then a summary table (see [`test`](mod@test)).
//! - `cargo xtask bench [args...]`: the benchmark binary of `loky-tests`
//!   (see [`bench`](mod@bench)).
//! - `cargo xtask fuzz [--seconds N] [--seed] [--merge] [TARGET]`: the fuzz
//!   targets of the decoders under libFuzzer (see [`fuzz`](mod@fuzz)).
//! - `cargo xtask link-order`: profiles the stock worker under callgrind and
//!   writes the linker script that lays out the code it runs first (see
//!   [`link_order`](mod@link_order)).
//! - `cargo xtask doc-examples`: fails if an example on `loky`'s rendered
//!   pages names an inner crate (see [`doc_examples`](mod@doc_examples)).
//! - `cargo xtask package`: the published packages build and pass `loky`'s
//!   doc tests as packed (see [`package`](mod@package)).
//! - `cargo xtask slurm -- COMMAND...`: COMMAND against a single-node Slurm
//!   cluster on this machine (see [`slurm`](mod@slurm)).
//! - `cargo xtask ssh -- COMMAND...`: COMMAND against an ssh server of its
//!   own on this machine (see [`ssh`](mod@ssh)).
//!
//! Only the standard library and libc (process groups and signals, in
//! `os`) are used, so the first `cargo xtask` on a clean checkout builds in
//! seconds.

mod bench;
mod doc_examples;
mod examples;
mod fuzz;
mod libtest;
mod link_order;
mod os;
mod package;
mod runner;
mod slurm;
mod ssh;
mod static_link;
mod steps;
mod system;
mod test;

use std::process::ExitCode;

use runner::Workspace;

/// Printed by `cargo xtask help`, with no arguments, and after a usage error.
const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  test [--quick] [--no-chaos] [--no-nextest] [--slurm] [--ssh]
      fmt check, clippy (-D warnings), docs (-D warnings), the build, tests
      (nextest when installed, else cargo test), doctests, the feature
      `remote` (its clippy, docs and tests; the network-namespace tests as
      root), the chaos runs, the examples and a short fuzz run; each step has
      a deadline, past which it is stopped with its process group and fails;
      stops at the first failure and prints a summary.
      --quick       skip fmt, clippy, doc and doc examples
      --no-chaos    skip the chaos runs
      --no-nextest  run the tests with cargo test even where nextest is installed
      --slurm       also run the Slurm tests on a single-node cluster (root:
                    installs Slurm from Debian's packages if missing)
      --ssh         also run the ssh launcher's tests against an ssh server
                    of their own (root: installs OpenSSH if missing)
  bench [--peers] [args...]
      run the loky-bench binary of loky-tests (release build); every argument,
      --peers included, is passed through to it.
  fuzz [--seconds N] [--seed] [--merge] [TARGET]
      build the fuzz targets of the decoders (fuzz/) with libFuzzer's
      instrumentation and run each (or TARGET: worker_reads_requests,
      parent_reads_responses) for N seconds (default 600) on its committed
      corpus; prints the inputs run. --seed rewrites the seed inputs first;
      --merge folds new coverage into the committed corpus.
  link-order
      profile the stock worker under callgrind (needs valgrind) and write
      loky-worker/link/hot-text.ld, which lays out the functions it runs
      (start-up, calls, the wait for the next) first in its text.
  doc-examples
      fail if a code example on loky's rendered docs (target/doc/loky, from
      `cargo doc`) names loky_core, loky_proto or loky_worker.
  package
      cargo package the published crates, then build them and run the doc
      tests of loky from the packages (in target/package-check).
  slurm -- COMMAND [ARGS...]
      run COMMAND with SLURM_CONF set, against a single-node Slurm cluster
      started for it (root: installs it if missing) and stopped after it.
  ssh -- COMMAND [ARGS...]
      run COMMAND with an `ssh` on its PATH that logs in to an sshd started
      for it on a loopback port (LOKY_SSH_HOST names it; root: installs
      OpenSSH if missing), and stop the server after it.
  help
      print this text.";

/// Exit code for a command line that xtask does not understand.
const USAGE_ERROR: u8 = 2;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    };
    match command.as_str() {
        "test" => match test::Options::parse(rest) {
            Ok(options) => test::run(&Workspace::locate(), options),
            Err(message) => usage_error(&message),
        },
        "bench" => bench::run(&Workspace::locate(), rest),
        "fuzz" => match fuzz::Options::parse(rest) {
            Ok(options) => fuzz::run(&Workspace::locate(), &options),
            Err(message) => usage_error(&message),
        },
        "doc-examples" => doc_examples::run(&Workspace::locate()),
        "link-order" => link_order::run(&Workspace::locate()),
        "package" => package::run(&Workspace::locate()),
        "slurm" => slurm::run(&Workspace::locate(), rest),
        "ssh" => ssh::run(&Workspace::locate(), rest),
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        other => usage_error(&format!("unknown command `{other}`")),
    }
}

/// Reports a command-line mistake and the usage text on stderr.
fn usage_error(message: &str) -> ExitCode {
    eprintln!("error: {message}\n\n{USAGE}");
    ExitCode::from(USAGE_ERROR)
}
