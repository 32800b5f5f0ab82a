//! `berth audit list|export|verify`.

use hyper::Method;

use super::{field, list, print, query_string};
use crate::client::{Client, exit, fail};

#[derive(clap::Args, Debug, Default)]
pub struct Filter {
    /// Only entries by this user
    #[arg(long)]
    pub actor: Option<String>,
    /// Only actions starting with this (e.g. `users.`)
    #[arg(long)]
    pub action: Option<String>,
    /// Only entries about this target
    #[arg(long)]
    pub target: Option<String>,
    /// Only entries about apps in this environment (its audit stream; viewer@ENV may read it)
    #[arg(long)]
    pub env: Option<String>,
    /// Only entries newer than this long ago (e.g. 10m, 24h, 7d)
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many entries
    #[arg(long)]
    pub limit: Option<u32>,
}

fn query(f: &Filter) -> anyhow::Result<String> {
    let mut q = Vec::new();
    for (k, v) in [
        ("actor", &f.actor),
        ("action", &f.action),
        ("target", &f.target),
        ("env", &f.env),
    ] {
        if let Some(v) = v {
            q.push((k, v.clone()));
        }
    }
    if let Some(since) = &f.since {
        let ago = parse_ago(since).ok_or_else(|| {
            fail(
                exit::BAD_INPUT,
                format!("--since `{since}`: use a duration like 30s, 10m, 24h or 7d"),
            )
        })?;
        let t = std::time::SystemTime::now() - ago;
        let ms = t
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        q.push(("since", ms.to_string()));
    }
    if let Some(l) = f.limit {
        q.push(("limit", l.to_string()));
    }
    Ok(query_string(&q))
}

/// `30s`, `10m`, `24h`, `7d` (humantime's syntax, which also takes `1h 30m`).
fn parse_ago(s: &str) -> Option<std::time::Duration> {
    humantime::parse_duration(s).ok()
}

pub async fn list_entries(c: &Client, f: &Filter, json: bool) -> anyhow::Result<()> {
    let v = c
        .call(Method::GET, &format!("/api/v1/audit{}", query(f)?), None)
        .await?;
    print(json, &v, |v| {
        for e in list(v, "entries") {
            let time = e["time"].as_u64().map_or_else(
                || field(e, "time"),
                |ms| {
                    humantime::format_rfc3339_millis(
                        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
                    )
                    .to_string()
                },
            );
            println!(
                "{:>6} {} {:<12} {:<8} {:<16} {:<24} {:<20} {}",
                field(e, "seq"),
                time,
                field(e, "actor"),
                field(e, "role"),
                field(e, "source"),
                field(e, "action"),
                field(e, "target"),
                field(e, "outcome")
            );
        }
    });
    Ok(())
}

/// One JSON object per line, oldest first, for archiving and other tools.
pub async fn export(c: &Client, f: &Filter) -> anyhow::Result<()> {
    let v = c
        .call(Method::GET, &format!("/api/v1/audit{}", query(f)?), None)
        .await?;
    let mut entries = list(&v, "entries");
    entries.sort_by_key(|e| e["seq"].as_i64().unwrap_or_default());
    for e in entries {
        println!("{e}");
    }
    Ok(())
}

pub async fn verify(c: &Client, json: bool) -> anyhow::Result<()> {
    let v = c.call(Method::GET, "/api/v1/audit/verify", None).await?;
    let valid = v["valid"].as_bool().unwrap_or(false);
    print(json, &v, |v| {
        if valid {
            println!(
                "audit log intact: {} entries verified",
                field(v, "entries_checked")
            );
        } else {
            println!(
                "audit log BROKEN at entry {}: {}",
                field(&v["first_bad"], "seq"),
                field(&v["first_bad"], "reason")
            );
        }
    });
    if valid {
        Ok(())
    } else {
        Err(fail(exit::FAILED, "the audit log does not verify"))
    }
}

pub async fn prune(c: &Client, older_than_days: u32, json: bool) -> anyhow::Result<()> {
    let body = serde_json::json!({ "older_than_days": older_than_days });
    let v = c
        .call(Method::POST, "/api/v1/audit/prune", Some(body))
        .await?;
    print(json, &v, |v| {
        println!(
            "removed {} entries older than {older_than_days} days",
            field(v, "removed")
        )
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_encoding() {
        assert_eq!(parse_ago("10m"), Some(std::time::Duration::from_secs(600)));
        assert_eq!(
            parse_ago("7d"),
            Some(std::time::Duration::from_secs(604_800))
        );
        assert_eq!(parse_ago("10"), None);
        assert_eq!(parse_ago("m"), None);
        assert_eq!(super::super::encode("users.add x"), "users.add%20x");
    }
}
