//! Control-plane commands: each one is a call to the admin API.

pub mod access;
pub mod apps;
pub mod audit;
pub mod login;

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
