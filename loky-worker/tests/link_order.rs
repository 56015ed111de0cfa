//! The stock worker's layout: with the feature `link-order` and a linker
//! that takes `link/hot-text.ld` (see the build script), the functions a
//! worker runs are gathered before the rest of its text.

use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

/// The section the script gathers the functions in.
const HOT: &str = ".text.worker_hot";

/// The script's patterns, one per line `*(.text.PATTERN ...)`.
fn patterns() -> Vec<String> {
    let script = include_str!("../link/hot-text.ld");
    script
        .lines()
        .filter_map(|line| line.trim().strip_prefix("*(.text."))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Whether `text` matches the glob `pattern`, whose only wildcard is `*`.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let mut parts: Vec<&str> = parts.collect();
    let Some(last) = parts.pop() else {
        return rest.is_empty();
    };
    for part in parts {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[test]
fn the_glob_matches_what_the_script_means() {
    assert!(glob("_RNvCs*_3foo3bar", "_RNvCs1aZ_3foo3bar"));
    assert!(glob("_RNvCs*_3foo3bar", "_RNvCs_3foo3bar"));
    assert!(!glob("_RNvCs*_3foo3bar", "_RNvCs1aZ_3foo3baz"));
    assert!(!glob("_RNvCs*_3foo3bar", "_RNvCs1aZ_3foo3bar4more"));
    assert!(glob("a*b*c", "aXbYbZc"));
    assert!(!glob("ab*ba", "aba"));
    assert!(glob("main", "main"));
}

#[test]
fn the_script_is_written_and_names_the_serving_loop() {
    let patterns = patterns();
    assert!(patterns.len() > 50, "{} patterns", patterns.len());
    assert!(
        patterns
            .iter()
            .any(|p| p.contains("11loky_worker5serve3run")),
        "the script does not name loky_worker::serve::run"
    );
}

#[test]
fn the_functions_a_worker_runs_come_first() {
    let program = std::fs::read(env!("CARGO_BIN_EXE_loky-worker")).expect("the stock worker");
    let elf = object::File::parse(&*program).expect("an ELF program");
    let hot = elf.section_by_name(HOT);
    if !cfg!(link_order) {
        assert!(hot.is_none(), "{HOT} without the script");
        return;
    }
    let hot = hot.expect("the script gathers its functions in .text.worker_hot");
    let text = elf.section_by_name(".text").expect("a .text section");
    assert!(
        hot.address() + hot.size() <= text.address(),
        "{HOT} comes after .text"
    );
    let within = |address: u64| (hot.address()..hot.address() + hot.size()).contains(&address);
    let functions: Vec<_> = elf
        .symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0)
        .filter_map(|s| Some((s.name().ok()?, s.address(), s.size())))
        .collect();
    let serve = functions
        .iter()
        .find(|(name, ..)| {
            // Legacy (`...3run17h<hash>E`) or v0 (`...3run`) mangling.
            name.contains("11loky_worker5serve3run17h") || name.ends_with("11loky_worker5serve3run")
        })
        .expect("loky_worker::serve::run");
    assert!(within(serve.1), "serve::run is not in {HOT}");
    // The rest of the program, such as the symbolizer of panic backtraces
    // (std's `addr2line` and `gimli`), stays out of the way.
    let (inside, outside): (Vec<_>, Vec<_>) = functions.iter().partition(|(_, a, _)| within(*a));
    let bytes = |fs: &[&(&str, u64, u64)]| fs.iter().map(|f| f.2).sum::<u64>();
    assert!(
        bytes(&inside) * 2 < bytes(&outside),
        "most of the program is in {HOT}"
    );
    // A script written for older code gathers little: most patterns must
    // still name a function (run `cargo xtask link-order` otherwise).
    let patterns = patterns();
    let stale: Vec<&String> = patterns
        .iter()
        .filter(|p| !functions.iter().any(|(name, ..)| glob(p, name)))
        .collect();
    assert!(
        stale.len() * 10 <= patterns.len(),
        "{} of the {} patterns of link/hot-text.ld name no function of the stock worker; \
         run `cargo xtask link-order`: {stale:#?}",
        stale.len(),
        patterns.len()
    );
}
