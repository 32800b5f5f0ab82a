//! What the config test files share: a base file with one route, and assertions on where a
//! problem is reported. Each test file uses part of it.
#![allow(dead_code)]

use std::path::Path;

use berth_config::{Diagnostic, parse};

/// Lines 1-6; a route appended to it starts on line 7.
pub const BASE: &str = "[server]
listen = [\"127.0.0.1:8080\"]

[group.web]
upstreams = [\"127.0.0.1:9001\"]

";

/// Lines 7-10 when appended to `BASE`; keys added after it start on line 11.
pub const ROUTE: &str = "[[route]]
name = \"web\"
hosts = [\"example.com\"]
group = \"web\"
";

/// `BASE` and `ROUTE` followed by `extra` (which starts on line 11).
pub fn route_with(extra: &str) -> String {
    format!("{BASE}{ROUTE}{extra}")
}

/// Every diagnostic of `src`, which must not parse.
pub fn diagnostics(src: &str) -> Vec<Diagnostic> {
    match parse(src, Path::new("berth.toml")) {
        Ok(config) => panic!("expected an error, got {config:#?}"),
        Err(err) => err.diagnostics,
    }
}

/// The one diagnostic `src` produces.
#[track_caller]
pub fn only(src: &str) -> Diagnostic {
    let mut all = diagnostics(src);
    assert_eq!(all.len(), 1, "expected one diagnostic, got {all:#?}");
    all.remove(0)
}

#[track_caller]
pub fn assert_at(d: &Diagnostic, line: usize, column: usize, field: &str) {
    assert_eq!(
        (d.line, d.column, d.field.as_str()),
        (line, column, field),
        "{d}"
    );
}
