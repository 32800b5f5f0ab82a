//! `berth config show`, `berth config diff` (drift between environments) and
//! `berth promote-release`.

use std::collections::BTreeMap;

use hyper::Method;
use serde_json::{Value, json};

use super::apps::DEFAULT_ENV;
use super::{field, list, print};
use crate::client::{Client, exit, fail};

#[derive(clap::Subcommand)]
pub enum ConfigCommand {
    /// The app's effective config in an environment, each value with where it came from
    #[command(after_help = "Examples:
  berth config show shop --env staging

SOURCE is `environment` ([environments.<env>] in berth.toml), `base` (the rest of
berth.toml), `default` (berth's), or `secret` (set with berth secrets; value hidden).
The config is the one of the release running there (else its newest release).")]
    Show {
        app: String,
        #[arg(long, default_value = DEFAULT_ENV)]
        env: String,
    },
    /// What differs between two environments' configs (drift detection)
    #[command(after_help = "Examples:
  berth config diff shop staging production

Exit status: 0 the same, 1 they differ (like diff(1)), 3 not allowed on one of them.
Secret values are never compared or shown, only which secrets each environment has.")]
    Diff { app: String, a: String, b: String },
}

#[derive(clap::Args, Debug)]
pub struct PromoteArgs {
    pub app: String,
    /// The environment the release was verified in
    #[arg(long)]
    pub from: String,
    /// The environment to deploy it to
    #[arg(long, default_value = DEFAULT_ENV)]
    pub to: String,
    /// A release of --from other than the one running there (r-…)
    #[arg(long)]
    pub release: Option<String>,
}

async fn fetch(c: &Client, app: &str, env: &str) -> anyhow::Result<Value> {
    c.call(Method::GET, &super::app_path(env, app, "config"), None)
        .await
}

/// key → (value, source), from an answer of `GET …/config`.
fn entries(v: &Value) -> BTreeMap<String, (String, String)> {
    list(v, "entries")
        .into_iter()
        .map(|e| (field(e, "key"), (field(e, "value"), field(e, "source"))))
        .collect()
}

pub async fn run(c: &Client, cmd: ConfigCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Show { app, env } => {
            let v = fetch(c, &app, &env).await?;
            print(json, &v, |v| {
                println!(
                    "{app} in {env}, release {}{}",
                    field(v, "release"),
                    if v["active"].as_bool() == Some(true) {
                        " (running)"
                    } else {
                        " (not running)"
                    }
                );
                let all = entries(v);
                let width = all.keys().map(|k| k.len()).max().unwrap_or(3).max(3);
                println!("{:<width$}  {:<12} VALUE", "KEY", "SOURCE");
                for (key, (value, source)) in &all {
                    println!("{key:<width$}  {source:<12} {value}");
                }
            });
            Ok(())
        }
        ConfigCommand::Diff { app, a, b } => {
            let va = fetch(c, &app, &a).await?;
            let vb = fetch(c, &app, &b).await?;
            let (ea, eb) = (entries(&va), entries(&vb));
            let mut keys: Vec<&String> = ea.keys().chain(eb.keys()).collect();
            keys.sort();
            keys.dedup();
            let mut diffs = Vec::new();
            for key in keys {
                let (x, y) = (ea.get(key), eb.get(key));
                // Secret versions count per environment: only presence is comparable.
                let same = if key.starts_with("secrets.") {
                    x.is_some() == y.is_some()
                } else {
                    x.map(|e| &e.0) == y.map(|e| &e.0)
                };
                if !same {
                    let show = |e: Option<&(String, String)>| match e {
                        Some((_, source)) if key.starts_with("secrets.") => {
                            json!({ "value": "(set)", "source": source })
                        }
                        Some((value, source)) => json!({ "value": value, "source": source }),
                        None => Value::Null,
                    };
                    diffs.push(json!({ "key": key, a.as_str(): show(x), b.as_str(): show(y) }));
                }
            }
            let releases = (field(&va, "release"), field(&vb, "release"));
            let out = json!({
                "app": app,
                "a": { "environment": a, "release": releases.0 },
                "b": { "environment": b, "release": releases.1 },
                "differences": diffs,
            });
            print(json, &out, |_| {
                if releases.0 != releases.1 {
                    println!("release: {a} runs {}, {b} runs {}", releases.0, releases.1);
                }
                if diffs.is_empty() {
                    println!("no differences in config between {a} and {b}");
                }
                for d in &diffs {
                    let side = |env: &str| match &d[env] {
                        Value::Null => "(not set)".to_owned(),
                        v => format!("{} ({})", field(v, "value"), field(v, "source")),
                    };
                    println!("{}", field(d, "key"));
                    println!("  {a}: {}", side(&a));
                    println!("  {b}: {}", side(&b));
                }
            });
            if diffs.is_empty() && releases.0 == releases.1 {
                Ok(())
            } else {
                // Like diff(1): differences are not a failure to run, but scripts need to know.
                Err(fail(exit::FAILED, format!("{a} and {b} differ")))
            }
        }
    }
}

pub async fn promote(c: &Client, p: &PromoteArgs, json: bool) -> anyhow::Result<()> {
    if !json {
        eprintln!("promoting {} from {} to {}…", p.app, p.from, p.to);
    }
    let mut body = json!({ "from": p.from });
    if let Some(r) = &p.release {
        body["release"] = json!(r);
    }
    let report = c
        .call(
            Method::POST,
            &super::app_path(&p.to, &p.app, "promote"),
            Some(body),
        )
        .await?;
    print(json, &report, |r| {
        for s in list(r, "steps") {
            println!("  {}", s.as_str().unwrap_or_default());
        }
        if r["unchanged"].as_bool() == Some(true) {
            println!(
                "{} already runs release {} in {}",
                p.app,
                field(r, "release"),
                p.to
            );
        } else {
            println!(
                "promoted {} release {} from {} to {}",
                p.app,
                field(r, "release"),
                p.from,
                p.to
            );
        }
    });
    Ok(())
}
