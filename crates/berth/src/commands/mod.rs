//! Control-plane commands: each one is a call to the admin API.

pub mod access;
pub mod apps;
pub mod audit;
pub mod config;
pub mod locks;
pub mod login;
pub mod progress;
pub mod rollouts;
pub mod secrets;

/// Prints a value as JSON (`--json`) or through `human`.
pub fn print(json: bool, value: &serde_json::Value, human: impl FnOnce(&serde_json::Value)) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        human(value);
    }
}

/// A field as display text ("-" when absent).
/// `/api/v1/envs/{env}/apps/{app}/{tail}`, the names percent-encoded.
pub fn app_path(env: &str, app: &str, tail: &str) -> String {
    format!("/api/v1/envs/{}/apps/{}/{tail}", encode(env), encode(app))
}

pub fn field(v: &serde_json::Value, name: &str) -> String {
    match &v[name] {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

/// The list in an answer that is either a bare array or `{ "<key>": [...] }`.
pub fn list<'a>(v: &'a serde_json::Value, key: &str) -> Vec<&'a serde_json::Value> {
    v.as_array()
        .or_else(|| v[key].as_array())
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

/// A query-string value, percent-encoded (everything but RFC 3986's unreserved characters).
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `?a=1&b=2` from name/value pairs (values encoded here), or "" when there are none.
pub fn query_string(pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    format!("?{}", parts.join("&"))
}

/// The API's times (milliseconds since the epoch) as RFC 3339, "-" when absent.
pub fn time_text(v: &serde_json::Value) -> String {
    v.as_u64().map_or_else(
        || "-".to_owned(),
        |ms| {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
            )
            .to_string()
        },
    )
}
