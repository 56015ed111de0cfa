//! Lays out the stock `loky-worker` program's text with the code a worker
//! runs (start-up, a call, the wait for the next one) first, together.
//!
//! The kernel maps a program's text 64 KiB around each page it first runs,
//! so code run at start-up, spread over the whole text, leaves nearly all of
//! it resident in every worker. `link/hot-text.ld` (written by `cargo xtask
//! link-order` from a profile of the stock worker) gathers those functions
//! into one output section placed before `.text`; everything else keeps its
//! place. It is given to the linkers known to take such a script on top of
//! their default layout (lld, rustc's default on x86-64 Linux, and GNU ld);
//! with a linker chosen by hand it is left out, with a warning, and the
//! program is the same but for its layout. The feature `link-order`
//! (default) turns this on.

use std::env;
use std::path::Path;

/// The linker script, relative to this package.
const SCRIPT: &str = "link/hot-text.ld";

fn main() {
    println!("cargo::rerun-if-changed={SCRIPT}");
    println!("cargo::rerun-if-env-changed=RUSTC_LINKER");
    // Set when the script is given, for the test of the program's layout.
    println!("cargo::rustc-check-cfg=cfg(link_order)");
    if env::var_os("CARGO_FEATURE_LINK_ORDER").is_none()
        || env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux")
    {
        return;
    }
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if let Some(choice) = linker_chosen(env::var_os("RUSTC_LINKER").is_some(), &flags) {
        println!(
            "cargo::warning=the stock worker's text is left in the default order: {choice} \
             may not take the linker script {SCRIPT} (turn off the feature `link-order` to \
             silence this)"
        );
        return;
    }
    let dir = env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let script = Path::new(&dir).join(SCRIPT);
    println!(
        "cargo::rustc-link-arg-bin=loky-worker=-T{}",
        script.display()
    );
    println!("cargo::rustc-cfg=link_order");
}

/// Why the linker may be one that does not take the script, if it may: a
/// linker set in cargo's configuration (`RUSTC_LINKER`), or rustc's flags
/// (`CARGO_ENCODED_RUSTFLAGS`, separated by `\x1f`) naming a linker other
/// than lld or GNU ld.
fn linker_chosen(configured: bool, encoded_flags: &str) -> Option<String> {
    if configured {
        return Some("the linker configured for this target".to_owned());
    }
    encoded_flags
        .split('\x1f')
        .find(|flag| {
            // `-fuse-ld=NAME`, maybe among other words of `link-args=`.
            let fuse = flag
                .split_once("fuse-ld=")
                .and_then(|(_, rest)| rest.split([' ', ',']).next());
            flag.starts_with("-Clinker=")
                || flag.starts_with("linker=")
                || fuse.is_some_and(|linker| !matches!(linker, "lld" | "bfd"))
        })
        .map(|flag| format!("the linker chosen by `{flag}`"))
}
