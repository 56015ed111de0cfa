//! Type names as two programs can compare them.
//!
//! `std::any::type_name` starts each path with the name of the crate that
//! defines the type: a module compiled into two binaries by path
//! (`#[path = "tasks.rs"] mod tasks;`) gives `app::tasks::Point` in one and
//! `app_worker::tasks::Point` in the other. Task signatures are compared
//! without that first segment of each path, generic arguments included, so
//! such a module matches itself; any other difference still shows.

use std::borrow::Cow;

/// `name` with the first segment of every path removed:
/// `alloc::vec::Vec<app::tasks::Point>` becomes `vec::Vec<tasks::Point>`,
/// `app::Point` becomes `Point`. Names without paths (`u32`, `&str`,
/// `(i64, bool)`) are returned as they are.
pub fn without_crate_names(name: &str) -> Cow<'_, str> {
    drop_segments(name, |first| first)
}

/// `name` with only the last segment of every path, for messages:
/// `fn(alloc::vec::Vec<app::tasks::Point>) -> core::option::Option<f64>`
/// becomes `fn(Vec<Point>) -> Option<f64>`.
pub fn short_type_name(name: &str) -> Cow<'_, str> {
    drop_segments(name, |_| true)
}

/// `name` without the path segments (each followed by `::`) for which
/// `drop(first)` is true, `first` telling whether the segment starts its
/// path.
fn drop_segments(name: &str, drop: impl Fn(bool) -> bool) -> Cow<'_, str> {
    if !name.contains("::") {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    // Whether the next identifier continues a path (a `::` came before it).
    let mut in_path = false;
    while let Some(c) = rest.chars().next() {
        if !starts_identifier(c) {
            out.push(c);
            rest = &rest[c.len_utf8()..];
            in_path = false;
            continue;
        }
        let len = rest
            .find(|c: char| !continues_identifier(c))
            .unwrap_or(rest.len());
        let (ident, after) = rest.split_at(len);
        match after.strip_prefix("::") {
            Some(tail) if drop(!in_path) => rest = tail,
            Some(tail) => {
                out.push_str(ident);
                out.push_str("::");
                rest = tail;
            }
            None => {
                out.push_str(ident);
                rest = after;
            }
        }
        in_path = after.starts_with("::");
    }
    Cow::Owned(out)
}

/// Whether two type names name the same type once crate names are left
/// out (see [`without_crate_names`]).
pub fn same_type_name(a: &str, b: &str) -> bool {
    a == b || without_crate_names(a) == without_crate_names(b)
}

fn starts_identifier(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn continues_identifier(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_examples_hold() {
        assert_eq!(
            without_crate_names("(alloc::string::String, my_app::tasks::Point)"),
            "(string::String, tasks::Point)"
        );
        assert_eq!(without_crate_names("u32"), "u32");
        assert_eq!(short_type_name("fn(core::time::Duration)"), "fn(Duration)");
    }

    #[test]
    fn the_first_segment_of_each_path_goes() {
        let cases = [
            ("alloc::string::String", "string::String"),
            ("app::Point", "Point"),
            (
                "alloc::vec::Vec<app::tasks::Point>",
                "vec::Vec<tasks::Point>",
            ),
            (
                "core::option::Option<(alloc::string::String, u32)>",
                "option::Option<(string::String, u32)>",
            ),
            (
                "std::collections::hash::map::HashMap<alloc::string::String, app_worker::m::Row>",
                "collections::hash::map::HashMap<string::String, m::Row>",
            ),
            ("&'static str", "&'static str"),
            ("[u8; 4]", "[u8; 4]"),
            ("fn(i64) -> i64", "fn(i64) -> i64"),
            ("fn(app::A) -> app::B", "fn(A) -> B"),
            (
                "dyn core::fmt::Debug + core::marker::Send",
                "dyn fmt::Debug + marker::Send",
            ),
            ("app::main::{{closure}}", "main::{{closure}}"),
            ("(i64, bool)", "(i64, bool)"),
            ("()", "()"),
        ];
        for (name, expected) in cases {
            assert_eq!(without_crate_names(name), expected, "{name}");
        }
    }

    #[test]
    fn short_names_keep_the_last_segment_of_each_path() {
        let cases = [
            (
                "fn((alloc::string::String, u32)) -> alloc::string::String",
                "fn((String, u32)) -> String",
            ),
            (
                "fn(alloc::vec::Vec<app::tasks::Point>) -> core::option::Option<f64>",
                "fn(Vec<Point>) -> Option<f64>",
            ),
            ("fn(i64) -> i64", "fn(i64) -> i64"),
            ("app::main::{{closure}}", "{{closure}}"),
        ];
        for (name, expected) in cases {
            assert_eq!(short_type_name(name), expected, "{name}");
        }
    }

    #[test]
    fn a_module_shared_by_two_crates_matches_and_other_types_do_not() {
        assert!(same_type_name(
            "app::tasks::Point",
            "app_worker::tasks::Point"
        ));
        assert!(same_type_name(
            "alloc::vec::Vec<app::tasks::Point>",
            "alloc::vec::Vec<worker::tasks::Point>"
        ));
        assert!(!same_type_name("app::tasks::Point", "app::tasks::Line"));
        assert!(!same_type_name("app::tasks::Point", "app::shapes::Point"));
        assert!(!same_type_name("u32", "u64"));
        assert!(!same_type_name(
            "core::option::Option<i64>",
            "core::result::Result<i64, i64>"
        ));
    }
}
