//! Validation of names that end up in URLs, CLI output and audit targets.

use crate::error::StoreError;
use crate::roles::ALL_ENVIRONMENTS;

const MAX_NAME: usize = 64;
const MAX_LABEL: usize = 200;

/// User and environment names: 1–64 characters of `A-Z a-z 0-9 . _ @ -`, starting with a
/// letter or digit. Restrictive on purpose: they are shown in terminals and logs, and
/// a control character or a leading `-` there is a footgun.
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(StoreError::invalid(
            what,
            format!("{name:?} must be 1 to {MAX_NAME} characters"),
        ));
    }
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'));
    if !first_ok || !rest_ok {
        return Err(StoreError::invalid(
            what,
            format!(
                "{name:?} may only hold letters, digits and . _ @ - and must start with a letter or digit"
            ),
        ));
    }
    Ok(())
}

/// An environment in a grant: a name, or `"*"` for all.
pub(crate) fn check_environment(env: &str) -> Result<(), StoreError> {
    if env == ALL_ENVIRONMENTS {
        return Ok(());
    }
    check_name("environment", env)
}

/// Free text such as a token label: bounded, no control characters.
pub(crate) fn check_label(what: &'static str, text: &str) -> Result<(), StoreError> {
    if text.len() > MAX_LABEL {
        return Err(StoreError::invalid(
            what,
            format!("longer than {MAX_LABEL} bytes"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(StoreError::invalid(what, "contains control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("user name", "alice").is_ok());
        assert!(check_name("user name", "ci-bot@example.com").is_ok());
        assert!(check_name("user name", "").is_err());
        assert!(check_name("user name", "-rf").is_err());
        assert!(check_name("user name", "a b").is_err());
        assert!(check_name("user name", &"a".repeat(65)).is_err());
        assert!(check_environment("*").is_ok());
        assert!(check_environment("prod*").is_err());
        assert!(check_label("label", "laptop\n").is_err());
        assert!(check_label("label", &"a".repeat(200)).is_ok());
        assert!(check_label("label", &"a".repeat(201)).is_err());
    }
}
