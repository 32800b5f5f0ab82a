//! `berth config show`: every setting of an app as it applies in one environment, and where
//! its value came from: the environment's `[environments.<name>]` table, the base spec, or
//! berth's default.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{AppSpec, parse};
use crate::diagnostic::ConfigError;

/// Where a setting's value came from.
pub const FROM_ENVIRONMENT: &str = "environment";
pub const FROM_BASE: &str = "base";
pub const FROM_DEFAULT: &str = "default";

/// One setting: its dotted key, its value as text, and where the value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigEntry {
    pub key: String,
    pub value: String,
    pub source: String,
}

/// A duration as the spec would write it: `500ms`, `30s`, `2m`, `1h`, `90s`.
pub fn duration_text(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    if s != 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s != 0 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// What the file says, to tell a written value from a default.
struct Written {
    raw: toml::Table,
    environment: String,
}

impl Written {
    fn lookup(mut table: &toml::Table, path: &[&str]) -> bool {
        for (i, key) in path.iter().enumerate() {
            match table.get(*key) {
                Some(toml::Value::Table(t)) => table = t,
                Some(_) => return i + 1 == path.len(),
                None => return false,
            }
        }
        true
    }

    fn in_base(&self, path: &[&str]) -> bool {
        Self::lookup(&self.raw, path)
    }

    fn in_environment(&self, path: &[&str]) -> bool {
        let mut full = vec!["environments", self.environment.as_str()];
        full.extend_from_slice(path);
        Self::lookup(&self.raw, &full)
    }

    /// The source of the setting at `path` in the base spec and `env_path` in the
    /// environment's table (the same path, for most settings).
    fn source(&self, path: &[&str], env_path: Option<&[&str]>) -> &'static str {
        if env_path.is_some_and(|p| self.in_environment(p)) {
            FROM_ENVIRONMENT
        } else if self.in_base(path) {
            FROM_BASE
        } else {
            FROM_DEFAULT
        }
    }
}

/// Every setting of the spec in `text` as it applies in `environment`, with its source.
pub fn explain(
    text: &str,
    path: &Path,
    environment: &str,
) -> Result<Vec<ConfigEntry>, ConfigError> {
    let spec = parse(text, path)?;
    // The text parsed as a spec, so it parses as TOML.
    let raw: toml::Table = text.parse().unwrap_or_default();
    let w = Written {
        raw,
        environment: environment.to_owned(),
    };
    Ok(entries(&spec.for_environment(environment), &w))
}

fn entries(spec: &AppSpec, w: &Written) -> Vec<ConfigEntry> {
    let mut out = Vec::new();
    let mut add = |key: String, value: String, source: &str| {
        out.push(ConfigEntry {
            key,
            value,
            source: source.to_owned(),
        })
    };
    add("name".into(), spec.name.clone(), FROM_BASE);
    add(
        "hosts".into(),
        spec.hosts.join(", "),
        w.source(&["hosts"], Some(&["hosts"])),
    );
    if let Some(b) = &spec.build {
        add("build.command".into(), b.command.clone(), FROM_BASE);
        add(
            "build.timeout".into(),
            duration_text(b.timeout),
            w.source(&["build", "timeout"], None),
        );
    }
    add(
        "release.keep".into(),
        spec.keep_releases.to_string(),
        w.source(&["release", "keep"], None),
    );
    for (key, value) in [
        ("timeout", spec.deploy_timeout),
        ("drain_timeout", spec.drain_timeout),
    ] {
        add(
            format!("deploy.{key}"),
            duration_text(value),
            w.source(&["deploy", key], Some(&["deploy", key])),
        );
    }
    add(
        "deploy.strategy".into(),
        spec.rollout.strategy.as_str().to_owned(),
        w.source(&["deploy", "strategy"], Some(&["deploy", "strategy"])),
    );
    add(
        "deploy.requires_approval".into(),
        spec.rollout.requires_approval.to_string(),
        w.source(
            &["deploy", "requires_approval"],
            Some(&["deploy", "requires_approval"]),
        ),
    );
    if spec.rollout.requires_approval {
        add(
            "deploy.approval_timeout".into(),
            duration_text(spec.rollout.approval_timeout),
            w.source(&["deploy", "approval_timeout"], None),
        );
    }
    for (name, value) in &spec.env {
        add(
            format!("env.{name}"),
            value.clone(),
            w.source(&["env", name], Some(&["env", name])),
        );
    }
    for (pname, p) in &spec.processes {
        let at = |key: &str| format!("processes.{pname}.{key}");
        // The source of `processes.<pname>.<rest>`; `overridable`: an environment may set it.
        let src = |rest: &[&str], overridable: bool| -> &'static str {
            let mut path = vec!["processes", pname.as_str()];
            path.extend_from_slice(rest);
            w.source(&path, overridable.then_some(&path[..]))
        };
        add(at("command"), p.command.clone(), FROM_BASE);
        add(
            at("instances"),
            p.instances.to_string(),
            src(&["instances"], true),
        );
        add(at("workdir"), p.workdir.clone(), src(&["workdir"], false));
        add(at("http"), p.http.to_string(), src(&["http"], false));
        if let Some(h) = &p.health {
            add(
                at("health.path"),
                h.path.clone(),
                src(&["health", "path"], false),
            );
            add(
                at("health.interval"),
                duration_text(h.interval),
                src(&["health", "interval"], false),
            );
        }
        add(
            at("stop_signal"),
            p.stop_signal.to_string(),
            src(&["stop_signal"], false),
        );
        add(
            at("stop_timeout"),
            duration_text(p.stop_timeout),
            src(&["stop_timeout"], false),
        );
        let l = &p.limits;
        for (key, value) in [
            ("memory", l.memory_bytes.map(|b| b.to_string())),
            ("cpu", l.cpu.map(|c| c.to_string())),
            ("open_files", l.open_files.map(|n| n.to_string())),
            ("processes", l.processes.map(|n| n.to_string())),
        ] {
            if let Some(value) = value {
                add(
                    at(&format!("limits.{key}")),
                    value,
                    src(&["limits", key], true),
                );
            }
        }
        for (name, value) in &p.env {
            add(
                at(&format!("env.{name}")),
                value.clone(),
                src(&["env", name], true),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_written() {
        assert_eq!(duration_text(Duration::from_millis(500)), "500ms");
        assert_eq!(duration_text(Duration::from_secs(30)), "30s");
        assert_eq!(duration_text(Duration::from_secs(90)), "90s");
        assert_eq!(duration_text(Duration::from_secs(120)), "2m");
        assert_eq!(duration_text(Duration::from_secs(7200)), "2h");
        assert_eq!(duration_text(Duration::ZERO), "0s");
    }

    #[test]
    fn every_value_says_where_it_came_from() {
        let text = "name = \"shop\"\nhosts = [\"shop.test\"]\n[env]\nA = \"1\"\nB = \"2\"\n\
                    [processes.web]\ncommand = \"./s\"\ninstances = 3\n\
                    [environments.staging]\nhosts = [\"staging.shop.test\"]\nenv = { B = \"3\" }\n\
                    [environments.staging.processes.web]\ninstances = 1\nlimits = { memory = \"64MiB\" }\n";
        let find = |entries: &[ConfigEntry], key: &str| -> (String, String) {
            let e = entries
                .iter()
                .find(|e| e.key == key)
                .unwrap_or_else(|| panic!("no {key} in {entries:?}"));
            (e.value.clone(), e.source.clone())
        };
        let s = explain(text, Path::new("berth.toml"), "staging").unwrap();
        let p = explain(text, Path::new("berth.toml"), "production").unwrap();
        let pair = |v: &str, s: &str| (v.to_owned(), s.to_owned());
        assert_eq!(
            find(&s, "hosts"),
            pair("staging.shop.test", FROM_ENVIRONMENT)
        );
        assert_eq!(find(&p, "hosts"), pair("shop.test", FROM_BASE));
        assert_eq!(find(&s, "env.A"), pair("1", FROM_BASE));
        assert_eq!(find(&s, "env.B"), pair("3", FROM_ENVIRONMENT));
        assert_eq!(find(&p, "env.B"), pair("2", FROM_BASE));
        assert_eq!(
            find(&s, "processes.web.instances"),
            pair("1", FROM_ENVIRONMENT)
        );
        assert_eq!(find(&p, "processes.web.instances"), pair("3", FROM_BASE));
        assert_eq!(
            find(&s, "processes.web.limits.memory"),
            pair(&(64u64 << 20).to_string(), FROM_ENVIRONMENT)
        );
        assert!(p.iter().all(|e| e.key != "processes.web.limits.memory"));
        assert_eq!(find(&p, "deploy.timeout"), pair("2m", FROM_DEFAULT));
        assert_eq!(
            find(&p, "processes.web.stop_signal"),
            pair("TERM", FROM_DEFAULT)
        );
        assert!(explain("name = 1", Path::new("berth.toml"), "x").is_err());
    }
}
