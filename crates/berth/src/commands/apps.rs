//! `berth deploy`, `berth ps`, `berth logs`, `berth releases`, `berth deploys`.

use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

use berth_config::app::APP_SPEC_FILE;
use hyper::Method;

use super::{encode, field, list, print, progress, query_string, time_text};
use crate::client::{Client, exit, fail};

/// The environment commands act on when `--env` is not given.
pub const DEFAULT_ENV: &str = "production";
/// The CLI refuses to upload more than the server accepts.
const MAX_UPLOAD_BYTES: u64 = 1 << 30;
/// A `berth.toml` larger than this is not an app spec.
const MAX_SPEC_BYTES: u64 = 1 << 20;

#[derive(clap::Args, Debug)]
pub struct DeployArgs {
    /// The app's directory (with berth.toml at its root) or a .tar.gz of it
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Environment to deploy to
    #[arg(long, default_value = DEFAULT_ENV)]
    pub env: String,
    /// rolling, blue-green or canary: overrides [deploy] strategy for this deploy
    #[arg(long)]
    pub strategy: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct AppArgs {
    /// The app's name (as in its berth.toml)
    pub app: String,
    #[arg(long, default_value = DEFAULT_ENV)]
    pub env: String,
}

#[derive(clap::Args, Debug)]
pub struct DeploysArgs {
    #[command(flatten)]
    pub app: AppArgs,
    /// The deployment to follow (default: the one in progress, else the next to start)
    #[arg(requires = "follow")]
    pub id: Option<i64>,
    /// Print the deployment's steps as they are recorded, until it ends
    #[arg(long, short)]
    pub follow: bool,
}

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    #[command(flatten)]
    pub app: AppArgs,
    /// Keep printing new lines as they are written
    #[arg(long, short)]
    pub follow: bool,
    /// Only this process type (web, worker, …)
    #[arg(long)]
    pub process: Option<String>,
    /// Only this release
    #[arg(long)]
    pub release: Option<String>,
    /// Only lines newer than this long ago (30s, 10m, 2h) or than an RFC 3339 time
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many lines before following (default 200)
    #[arg(long)]
    pub tail: Option<usize>,
}

pub(super) fn app_path(a: &AppArgs, tail: &str) -> String {
    super::app_path(&a.env, &a.app, tail)
}

/// The spec's app name, checked locally so a broken spec never leaves the machine.
fn local_spec_name(text: &str, shown_as: &Path) -> anyhow::Result<String> {
    match berth_config::app::parse(text, shown_as) {
        Ok(spec) => Ok(spec.name),
        Err(e) => Err(fail(exit::BAD_INPUT, format!("{e}\nnothing was deployed"))),
    }
}

/// A release archive ready to upload: open at its start, read as it is sent.
struct Archive {
    file: std::fs::File,
    len: u64,
}

impl Archive {
    fn open(file: std::fs::File, path: &Path) -> anyhow::Result<Archive> {
        let len = file
            .metadata()
            .map_err(|e| fail(exit::FAILED, format!("{}: {e}", path.display())))?
            .len();
        Ok(Archive { file, len })
    }
}

/// Packs (into an unnamed temporary file) or opens the release, returning the app name, the
/// archive and the commit. Nothing is held in memory but the spec.
fn prepare(path: &Path) -> anyhow::Result<(String, Archive, Option<String>)> {
    let meta = std::fs::metadata(path)
        .map_err(|e| fail(exit::BAD_INPUT, format!("{}: {e}", path.display())))?;
    if meta.is_dir() {
        let spec_path = path.join(APP_SPEC_FILE);
        let text = std::fs::read_to_string(&spec_path).map_err(|e| {
            fail(
                exit::BAD_INPUT,
                format!(
                    "{}: {e}; an app needs a {APP_SPEC_FILE} at its root (see docs/app-spec.md)",
                    spec_path.display()
                ),
            )
        })?;
        let name = local_spec_name(&text, &spec_path)?;
        // Unnamed: the kernel removes it however the CLI ends.
        let mut file = tempfile::tempfile()
            .map_err(|e| fail(exit::FAILED, format!("cannot create a temporary file: {e}")))?;
        let mut out = std::io::BufWriter::new(&mut file);
        berth_release::pack_dir(path, &mut out).map_err(|e| {
            fail(
                exit::BAD_INPUT,
                format!("cannot pack {}: {e}", path.display()),
            )
        })?;
        out.flush()
            .map_err(|e| fail(exit::FAILED, format!("temporary archive: {e}")))?;
        drop(out);
        file.seek(std::io::SeekFrom::Start(0))
            .map_err(|e| fail(exit::FAILED, format!("temporary archive: {e}")))?;
        let commit = berth_release::git::head_commit(path);
        return Ok((name, Archive::open(file, path)?, commit));
    }
    if !path.to_string_lossy().ends_with(".tar.gz") && !path.to_string_lossy().ends_with(".tgz") {
        return Err(fail(
            exit::BAD_INPUT,
            format!("{}: expected a directory or a .tar.gz", path.display()),
        ));
    }
    if meta.len() > MAX_UPLOAD_BYTES {
        return Err(fail(
            exit::BAD_INPUT,
            format!(
                "{}: larger than the {MAX_UPLOAD_BYTES}-byte upload limit",
                path.display()
            ),
        ));
    }
    let text = berth_release::read_root_file(path, APP_SPEC_FILE, MAX_SPEC_BYTES)
        .map_err(|e| fail(exit::BAD_INPUT, e.to_string()))?
        .ok_or_else(|| {
            fail(
                exit::BAD_INPUT,
                format!(
                    "{}: no {APP_SPEC_FILE} at the archive's root",
                    path.display()
                ),
            )
        })?;
    let text = String::from_utf8(text).map_err(|_| {
        fail(
            exit::BAD_INPUT,
            format!("{APP_SPEC_FILE} in the archive is not UTF-8"),
        )
    })?;
    let shown = PathBuf::from(format!("{}:{APP_SPEC_FILE}", path.display()));
    let name = local_spec_name(&text, &shown)?;
    let file = std::fs::File::open(path)
        .map_err(|e| fail(exit::FAILED, format!("{}: {e}", path.display())))?;
    Ok((name, Archive::open(file, path)?, None))
}

pub async fn deploy(c: &Client, args: &DeployArgs, json: bool) -> anyhow::Result<()> {
    let (app, archive, commit) = prepare(&args.path)?;
    if !json {
        eprintln!(
            "deploying {app} to {} from {} ({} KiB)…",
            args.env,
            args.path.display(),
            archive.len.div_ceil(1024)
        );
    }
    let source = std::fs::canonicalize(&args.path)
        .unwrap_or_else(|_| args.path.clone())
        .to_string_lossy()
        .into_owned();
    let mut headers = vec![
        ("x-berth-source", source),
        ("content-length", archive.len.to_string()),
    ];
    if let Some(c) = commit {
        headers.push(("x-berth-git-commit", c));
    }
    let target = AppArgs {
        app: app.clone(),
        env: args.env.clone(),
    };
    let mut path = app_path(&target, "deploys");
    if let Some(s) = &args.strategy {
        path.push_str(&format!("?strategy={}", encode(s)));
    }
    let deploys_path = app_path(&target, "deploys");
    // Read before the upload: the deployment it records is the first one after this.
    let mut printed = progress::newest(c, &deploys_path).await;
    let body = crate::client::file_payload(archive.file);
    let upload = c.upload(&path, "application/gzip", &headers, body);
    let report = if json {
        upload.await
    } else {
        let answer = tokio::select! {
            r = upload => r,
            () = progress::follow_deploy(c, &deploys_path, &mut printed) => unreachable!("follow_deploy never ends"),
        };
        // A success's report lists every step; a failure's steps may still be on their way.
        if answer.is_err() {
            progress::catch_up(c, &deploys_path, &mut printed).await;
        }
        answer
    }?;
    print(json, &report, |r| {
        for s in list(r, "steps").iter().filter_map(|s| s.as_str()) {
            if !printed.reasons.iter().any(|p| p == s) {
                println!("  {s}");
            }
        }
        if r["unchanged"].as_bool() == Some(true) {
            println!(
                "{app} is already running release {} in {}",
                field(r, "release"),
                args.env
            );
        } else {
            println!(
                "deployed {app} release {} to {}",
                field(r, "release"),
                args.env
            );
        }
        print_instances(list(r, "instances"));
    });
    Ok(())
}

pub(super) fn print_instances(instances: Vec<&serde_json::Value>) {
    if instances.is_empty() {
        println!("no instances");
        return;
    }
    println!(
        "{:<14} {:<12} {:<10} {:>7} {:>6} {:>8} {:>8}  NOTE",
        "INSTANCE", "RELEASE", "STATE", "PID", "PORT", "RESTARTS", "UPTIME"
    );
    for i in instances {
        let uptime = i["uptime_s"]
            .as_u64()
            .map(|s| humantime::format_duration(std::time::Duration::from_secs(s)).to_string())
            .unwrap_or_else(|| "-".into());
        let note = [&i["error"], &i["last_exit"], &i["limits_note"]]
            .iter()
            .find_map(|v| v.as_str())
            .unwrap_or("")
            .lines()
            .next()
            .unwrap_or("")
            .to_owned();
        println!(
            "{:<14} {:<12} {:<10} {:>7} {:>6} {:>8} {:>8}  {}",
            field(i, "instance"),
            field(i, "release"),
            field(i, "phase"),
            field(i, "pid"),
            field(i, "port"),
            field(i, "restarts"),
            uptime,
            note
        );
    }
}

pub async fn ps(c: &Client, a: &AppArgs, json: bool) -> anyhow::Result<()> {
    let v = c.call(Method::GET, &app_path(a, "ps"), None).await?;
    print(json, &v, |v| {
        let deploying = if v["deploying"].as_bool() == Some(true) {
            " (deploy in progress)"
        } else {
            ""
        };
        println!(
            "{} in {}: release {}{deploying}",
            a.app,
            a.env,
            field(v, "release")
        );
        if let Some(id) = v["awaiting_approval"].as_i64() {
            println!(
                "deployment {id} is waiting for approval: berth approve {} --env {} {id}",
                a.app, a.env
            );
        }
        if v["lock"].is_object() {
            println!(
                "deploys are {} (berth unlock {} --env {})",
                super::locks::describe(&v["lock"]),
                a.app,
                a.env
            );
        }
        print_instances(list(v, "instances"));
    });
    Ok(())
}

pub async fn releases(c: &Client, a: &AppArgs, json: bool) -> anyhow::Result<()> {
    let v = c.call(Method::GET, &app_path(a, "releases"), None).await?;
    print(json, &v, |v| {
        println!("  {:<16} {:<24} {:<10} SOURCE", "RELEASE", "CREATED", "BY");
        for r in list(v, "releases") {
            let created = time_text(&r["created"]);
            let mark = if r["active"].as_bool() == Some(true) {
                "* "
            } else {
                "  "
            };
            println!(
                "{mark}{:<16} {:<24} {:<10} {}",
                field(r, "release"),
                created,
                field(r, "created_by"),
                field(r, "source")
            );
        }
    });
    Ok(())
}

pub async fn deploys(c: &Client, d: &DeploysArgs, json: bool) -> anyhow::Result<()> {
    let a = &d.app;
    if d.follow {
        return progress::follow_command(c, a, d.id, json).await;
    }
    let v = c.call(Method::GET, &app_path(a, "deploys"), None).await?;
    print(json, &v, |v| {
        for d in list(v, "deployments") {
            println!(
                "#{} {} → {} ({}) {} by {}: {}",
                field(d, "id"),
                field(d, "previous_release"),
                field(d, "release"),
                field(d, "strategy"),
                field(d, "state"),
                field(d, "requested_by"),
                field(d, "detail"),
            );
            if d["approved_by"].is_string() {
                println!("    approved by {}", field(d, "approved_by"));
            }
            for s in list(d, "steps") {
                println!(
                    "    {:<16} {:<8} {}",
                    field(s, "step"),
                    field(s, "decision"),
                    field(s, "reason")
                );
            }
        }
    });
    Ok(())
}

pub async fn logs(c: &Client, l: &LogsArgs) -> anyhow::Result<()> {
    let mut q = Vec::new();
    for (name, value) in [
        ("process", &l.process),
        ("release", &l.release),
        ("since", &l.since),
    ] {
        if let Some(v) = value {
            q.push((name, v.clone()));
        }
    }
    if let Some(t) = l.tail {
        q.push(("tail", t.to_string()));
    }
    if l.follow {
        q.push(("follow", "true".to_owned()));
    }
    let path = format!("{}{}", app_path(&l.app, "logs"), query_string(&q));
    let mut out = std::io::stdout().lock();
    c.stream(&path, |chunk| {
        // A closed pipe (`berth logs | head`) ends the command quietly.
        if out.write_all(chunk).and_then(|()| out.flush()).is_err() {
            std::process::exit(0);
        }
    })
    .await
}
