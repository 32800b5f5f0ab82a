//! Host patterns a route answers for: `example.com`, `*.example.com`, `*`.

use std::net::Ipv6Addr;

use berth_edge::spec::HostPattern;

const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// What is wrong with a host pattern, with a hint when the fix is not obvious.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct HostError {
    pub message: String,
    pub hint: Option<&'static str>,
}

impl HostError {
    /// Reports the error at `span` as a problem of `field`, with its hint.
    pub(crate) fn report(
        self,
        c: &mut super::Checker<'_>,
        span: std::ops::Range<usize>,
        field: &str,
    ) {
        let diagnostic = c.error(span, field, self.message);
        if let Some(hint) = self.hint {
            diagnostic.hint(hint);
        }
    }
}

fn error(message: String, hint: Option<&'static str>) -> HostError {
    HostError { message, hint }
}

/// Parses a pattern, lower-casing it because host names match case-insensitively. A pattern
/// with a port is refused with `port_hint`, which says where the ports come from in the file at
/// hand.
pub(crate) fn parse(raw: &str, port_hint: &'static str) -> Result<HostPattern, HostError> {
    let pattern = raw.to_ascii_lowercase();
    if pattern == "*" {
        return Ok(HostPattern::Any);
    }
    if let Some(suffix) = pattern.strip_prefix("*.") {
        if suffix.contains('*') {
            return Err(misplaced_star(raw));
        }
        check_name(raw, suffix)?;
        return Ok(HostPattern::Wildcard(format!(".{suffix}")));
    }
    if pattern.contains('*') {
        return Err(misplaced_star(raw));
    }
    if let Some(inside) = pattern
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        && inside.parse::<Ipv6Addr>().is_ok()
    {
        return Ok(HostPattern::Exact(pattern));
    }
    if pattern.parse::<Ipv6Addr>().is_ok() {
        return Err(error(
            format!("IPv6 address `{raw}` must be written in brackets"),
            Some("write it as it appears in a Host header, e.g. \"[::1]\""),
        ));
    }
    if pattern.contains(':') {
        return Err(error(
            format!("host pattern `{raw}` has a port"),
            Some(port_hint),
        ));
    }
    check_name(raw, &pattern)?;
    Ok(HostPattern::Exact(pattern))
}

fn misplaced_star(raw: &str) -> HostError {
    error(
        format!("`*` in `{raw}` is not allowed there"),
        Some("use `*` alone for any host, or as the whole first label, as in \"*.example.com\""),
    )
}

fn check_name(raw: &str, name: &str) -> Result<(), HostError> {
    if name.is_empty() {
        return Err(error("empty host name".to_owned(), None));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(error(
            format!("host name `{raw}` is longer than {MAX_NAME_LEN} characters"),
            None,
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(error(format!("host name `{raw}` has an empty label"), None));
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(error(
                format!("label `{label}` in `{raw}` is longer than {MAX_LABEL_LEN} characters"),
                None,
            ));
        }
        // Underscores are not valid in host names, but they appear in real DNS names and
        // refusing them would only push people to `*`.
        let valid = label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid || label.starts_with('-') || label.ends_with('-') {
            return Err(error(
                format!("`{raw}` is not a valid host name"),
                Some("host names are letters, digits and `-`, separated by dots"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<HostPattern, HostError> {
        super::parse(raw, "the port hint")
    }

    #[test]
    fn patterns_are_recognised_and_lower_cased() {
        assert_eq!(parse("*"), Ok(HostPattern::Any));
        assert_eq!(
            parse("App.Example.COM"),
            Ok(HostPattern::Exact("app.example.com".into()))
        );
        assert_eq!(
            parse("*.Example.com"),
            Ok(HostPattern::Wildcard(".example.com".into()))
        );
        assert_eq!(
            parse("localhost"),
            Ok(HostPattern::Exact("localhost".into()))
        );
        assert_eq!(parse("10.0.0.1"), Ok(HostPattern::Exact("10.0.0.1".into())));
        assert_eq!(parse("[::1]"), Ok(HostPattern::Exact("[::1]".into())));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in [
            "",
            "*.",
            "a*.example.com",
            "*.*.example.com",
            "app.*.com",
            "**",
            "example.com:8080",
            "[::1]:8080",
            "::1",
            "exa mple.com",
            "example..com",
            "example.com.",
            "-example.com",
            "ex/ample.com",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_port_gets_its_own_message() {
        let err = parse("example.com:8080").unwrap_err();
        assert!(err.message.contains("port"), "{}", err.message);
        assert_eq!(err.hint, Some("the port hint"));
    }

    #[test]
    fn pattern_text_is_the_lower_cased_pattern() {
        for text in ["app.example.com", "*.example.com", "*", "[::1]"] {
            let pattern = parse(&text.to_ascii_uppercase()).expect("valid");
            assert_eq!(pattern.to_string(), text);
        }
    }

    #[test]
    fn long_labels_are_refused() {
        let label = "a".repeat(MAX_LABEL_LEN + 1);
        assert!(parse(&format!("{label}.com")).is_err());
        assert!(parse(&format!("{}.com", "a".repeat(MAX_LABEL_LEN))).is_ok());
    }
}
