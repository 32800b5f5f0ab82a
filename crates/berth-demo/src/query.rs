//! Just enough query-string handling for the demo's numeric and boolean knobs.

/// The raw value of the first `name=value` pair in `query`; a bare `name` yields "".
pub fn param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

/// Parses a parameter, falling back to `default` when absent; `Err` carries a
/// message for a 400 response.
pub fn number<T: std::str::FromStr>(
    query: Option<&str>,
    name: &str,
    default: T,
) -> Result<T, String> {
    match param(query, name) {
        None => Ok(default),
        Some(raw) => raw
            .parse()
            .map_err(|_| format!("query parameter {name}={raw:?} is not a valid number\n")),
    }
}

pub fn boolean(query: Option<&str>, name: &str, default: bool) -> Result<bool, String> {
    match param(query, name) {
        None => Ok(default),
        Some("1" | "true" | "on" | "yes" | "") => Ok(true),
        Some("0" | "false" | "off" | "no") => Ok(false),
        Some(raw) => Err(format!(
            "query parameter {name}={raw:?} must be true or false\n"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_params() {
        let q = Some("n=5&interval_ms=10&flag");
        assert_eq!(param(q, "n"), Some("5"));
        assert_eq!(param(q, "interval_ms"), Some("10"));
        assert_eq!(param(q, "flag"), Some(""));
        assert_eq!(param(q, "missing"), None);
        assert_eq!(param(None, "n"), None);
    }

    #[test]
    fn parses_numbers_and_booleans() {
        assert_eq!(number(Some("n=12"), "n", 0u64), Ok(12));
        assert_eq!(number(None, "n", 7u64), Ok(7));
        assert!(number(Some("n=x"), "n", 0u64).is_err());
        assert_eq!(boolean(Some("on=false"), "on", true), Ok(false));
        assert_eq!(boolean(Some("on=true"), "on", false), Ok(true));
        assert_eq!(boolean(None, "on", true), Ok(true));
        assert!(boolean(Some("on=maybe"), "on", true).is_err());
    }
}
