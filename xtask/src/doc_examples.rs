//! `cargo xtask doc-examples`: fails if a code example on the rendered
//! pages of `loky` (what `cargo doc` wrote to `target/doc/loky`) names one
//! of the inner crates. Users depend on `loky` alone, so an example that
//! says `loky_core::` does not compile when pasted into their code; the
//! inner crates' items are documented (and their examples shown) on
//! `loky`'s pages through its re-exports, so their examples must be written
//! against `loky::` too.
//!
//! The rendered HTML is what a user reads, re-exports inlined; hidden lines
//! (`# ...`) are not in it, and they are compiled by the doctests anyway.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::runner::Workspace;

/// The crates that `loky` re-exports, which a user does not depend on.
const INNER_CRATES: &[&str] = &["loky_core", "loky_proto", "loky_worker"];

/// Opens a rendered example (rustdoc's class for a doc example's code).
const EXAMPLE_START: &str = "<pre class=\"rust rust-example-rendered\"><code>";

/// Closes it.
const EXAMPLE_END: &str = "</code></pre>";

/// Fewer rendered examples than this means the docs were not built, or not
/// with the re-exports inlined: the check would pass on nothing.
const MIN_EXAMPLES: usize = 20;

/// One rendered example that names an inner crate.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Offence {
    /// The page it is on, relative to the doc root of `loky`.
    page: PathBuf,
    /// The first line of the example that names an inner crate.
    line: String,
}

/// Runs the check on the workspace's `target/doc/loky`.
pub(crate) fn run(workspace: &Workspace) -> ExitCode {
    let root = workspace.target_dir().join("doc").join("loky");
    match check(&root) {
        Ok(count) => {
            println!("{count} rendered examples of loky, none names an inner crate");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

/// Checks every page under `root`: the number of examples seen, or what is
/// wrong.
fn check(root: &Path) -> Result<usize, String> {
    let mut pages = Vec::new();
    collect_pages(root, &mut pages).map_err(|err| {
        format!(
            "cannot read {} ({err}): run `cargo doc` first",
            root.display()
        )
    })?;
    let mut count = 0;
    let mut offences = Vec::new();
    for page in pages {
        let html = fs::read_to_string(&page)
            .map_err(|err| format!("cannot read {}: {err}", page.display()))?;
        let relative = page.strip_prefix(root).unwrap_or(&page);
        count += scan_page(relative, &html, &mut offences);
    }
    if !offences.is_empty() {
        let mut message = format!(
            "{} rendered examples of loky name an inner crate ({}); write them against `loky::`:",
            offences.len(),
            INNER_CRATES.join(", ")
        );
        for offence in &offences {
            message.push_str(&format!("\n  {}: {}", offence.page.display(), offence.line));
        }
        return Err(message);
    }
    if count < MIN_EXAMPLES {
        return Err(format!(
            "only {count} rendered examples under {} (expected at least {MIN_EXAMPLES}): \
             were the docs built with `cargo doc`?",
            root.display()
        ));
    }
    Ok(count)
}

/// Every `.html` file under `dir`, recursively.
fn collect_pages(dir: &Path, pages: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_pages(&path, pages)?;
        } else if path.extension().is_some_and(|ext| ext == "html") {
            pages.push(path);
        }
    }
    Ok(())
}

/// Adds to `offences` the examples of one page that name an inner crate;
/// returns how many examples the page has.
fn scan_page(page: &Path, html: &str, offences: &mut Vec<Offence>) -> usize {
    let mut count = 0;
    let mut rest = html;
    while let Some(start) = rest.find(EXAMPLE_START) {
        let body = &rest[start + EXAMPLE_START.len()..];
        let end = body.find(EXAMPLE_END).unwrap_or(body.len());
        count += 1;
        let code = text_of(&body[..end]);
        if let Some(line) = code.lines().find(|line| names_inner_crate(line)) {
            offences.push(Offence {
                page: page.to_owned(),
                line: line.trim().to_owned(),
            });
        }
        rest = &body[end..];
    }
    count
}

/// The text of highlighted HTML: tags dropped, the entities rustdoc writes
/// decoded.
fn text_of(html: &str) -> String {
    let mut text = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// Whether `line` names an inner crate as a whole word (not, say,
/// `my_loky_core`).
fn names_inner_crate(line: &str) -> bool {
    INNER_CRATES.iter().any(|name| {
        line.match_indices(name).any(|(at, _)| {
            let before = line[..at].chars().next_back();
            let after = line[at + name.len()..].chars().next();
            !before.is_some_and(is_ident_char) && !after.is_some_and(is_ident_char)
        })
    })
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(code: &str) -> String {
        format!("<p>text loky_core</p>{EXAMPLE_START}{code}{EXAMPLE_END}")
    }

    #[test]
    fn an_example_naming_an_inner_crate_is_reported_with_its_line() {
        let html = example(
            "<span class=\"kw\">use </span>loky_core::{ProcessPoolExecutor};\n\
             <span class=\"kw\">let </span>x = <span class=\"number\">1</span>;",
        );
        let mut offences = Vec::new();
        assert_eq!(scan_page(Path::new("a.html"), &html, &mut offences), 1);
        assert_eq!(
            offences,
            vec![Offence {
                page: PathBuf::from("a.html"),
                line: "use loky_core::{ProcessPoolExecutor};".to_owned(),
            }]
        );
    }

    #[test]
    fn examples_against_loky_and_prose_naming_a_crate_pass() {
        let html = format!(
            "{}{}",
            example("<span class=\"kw\">use </span>loky::Task;"),
            example("my_loky_core::f(); <span>loky_worker_x</span>")
        );
        let mut offences = Vec::new();
        assert_eq!(scan_page(Path::new("a.html"), &html, &mut offences), 2);
        assert!(offences.is_empty(), "{offences:?}");
    }

    #[test]
    fn entities_and_tags_are_read_as_text() {
        assert_eq!(
            text_of("<span>Vec&lt;loky_proto::Task&gt;</span> &amp;&amp;"),
            "Vec<loky_proto::Task> &&"
        );
        assert!(names_inner_crate("Vec<loky_proto::Task>"));
    }

    #[test]
    fn too_few_examples_fail_rather_than_pass_on_nothing() {
        let dir = std::env::temp_dir().join(format!("xtask-doc-examples-{}", std::process::id()));
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("sub").join("p.html"), example("loky::init();")).unwrap();
        let result = check(&dir);
        fs::remove_dir_all(&dir).unwrap();
        let message = result.unwrap_err();
        assert!(message.contains("only 1 rendered examples"), "{message}");
    }
}
