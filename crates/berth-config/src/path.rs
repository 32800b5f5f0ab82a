//! Dotted field paths as diagnostics print them: `route[1].group`, `group.web.pool[0].weight`.

/// `prefix.name`, quoting `name` the way TOML would when it is not a bare key.
pub(crate) fn key(prefix: &str, name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let segment = if bare {
        name.to_owned()
    } else {
        format!("{name:?}")
    };
    if prefix.is_empty() {
        segment
    } else {
        format!("{prefix}.{segment}")
    }
}

/// `path[i]`, 0-based like the array it indexes.
pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_join_with_dots_and_quote_when_needed() {
        assert_eq!(key("", "server"), "server");
        assert_eq!(key("group", "web"), "group.web");
        assert_eq!(key("set", "X-Env"), "set.X-Env");
        assert_eq!(key("group", "a.b"), "group.\"a.b\"");
        assert_eq!(index("route", 1), "route[1]");
    }
}
