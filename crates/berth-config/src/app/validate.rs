//! The app spec's rules: from the spanned TOML tree to an [`AppSpec`], every problem reported.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Component, Path};

use berth_edge::spec::HostPattern;
use toml::de::{DeTable, DeValue};

use super::read::{Reader, Table, Value};
use super::*;
use crate::diagnostic::{ConfigError, Source};
use crate::locate;
use crate::path::{index, key};
use crate::validate::{health, host};

const ROOT_KEYS: &[&str] = &[
    "name",
    "hosts",
    "build",
    "release",
    "deploy",
    // Read with serde by edge.rs.
    "edge",
    "env",
    "processes",
    "environments",
];
const ENVIRONMENT_KEYS: &[&str] = &["hosts", "env", "deploy", "processes"];
const PROCESS_OVERRIDE_KEYS: &[&str] = &["instances", "env", "limits"];
const BUILD_KEYS: &[&str] = &["command", "timeout"];
const RELEASE_KEYS: &[&str] = &["keep"];
/// What `[environments.<name>.deploy]` may change: the rest of `[deploy]` (steps, analysis,
/// hooks, checks) is the app's, the same in every environment.
const ENVIRONMENT_DEPLOY_KEYS: &[&str] =
    &["timeout", "drain_timeout", "strategy", "requires_approval"];
/// `[deploy]`: the timeouts here, the rollout keys in [`super::rollout`].
const DEPLOY_KEYS: &[&str] = &[
    "timeout",
    "drain_timeout",
    "strategy",
    "requires_approval",
    "approval_timeout",
    "steps",
    "promote_after",
    "preview_hosts",
    "keep_warm",
    "pre_deploy",
    "analysis",
    "probe",
    "smoke",
    "notify",
];
pub(super) const PROCESS_KEYS: &[&str] = &[
    "command",
    "instances",
    "workdir",
    "env",
    "http",
    "health",
    "stop_signal",
    "stop_timeout",
    "limits",
    "restart",
];
const HEALTH_KEYS: &[&str] = &[
    "path",
    "interval",
    "timeout",
    "start_timeout",
    "healthy_threshold",
    "unhealthy_threshold",
];
const LIMITS_KEYS: &[&str] = &["memory", "cpu", "open_files", "processes"];
const RESTART_KEYS: &[&str] = &[
    "backoff_base",
    "backoff_cap",
    "crash_loop_exits",
    "crash_loop_window",
];

const NAME_HINT: &str = "names are 1 to 63 lower-case letters, digits and `-`, starting with a letter and not ending in `-`";

/// For a host written with a port: an app does not choose the edge's ports.
const PORT_HINT: &str = "hosts are matched by name alone; berth's edge decides the ports";

const PROCESSES_HINT: &str =
    "add a [processes.web] table with the command that starts the app's web server";

pub(super) fn validate(source: &Source<'_>) -> Result<AppSpec, ConfigError> {
    let root = DeTable::parse(source.text).map_err(|err| ConfigError {
        diagnostics: vec![locate::toml_error(source, &err)],
    })?;
    let mut r = Reader::new(source);
    let t = r.root(&root, ROOT_KEYS);

    let name = match r.string(&t, "name") {
        Some(name) => {
            check_name(&mut r, name.get_ref(), name.span(), "name", "app name");
            name.into_inner()
        }
        None => {
            if t.get("name").is_none()
                && let Some(missing) = r.missing(&t, "name")
            {
                missing
                    .hint("e.g. name = \"my-app\"; it names the app in berth's commands and logs");
            }
            String::new()
        }
    };
    let hosts = check_hosts(&mut r, &t, "hosts");
    let build = r.sub_table(&t, "build", BUILD_KEYS).map(|b| BuildSpec {
        command: check_command(&mut r, &b),
        timeout: r.duration(&b, "timeout", DEFAULT_BUILD_TIMEOUT),
    });
    let keep_releases = match r.sub_table(&t, "release", RELEASE_KEYS) {
        Some(release) => r.int(&release, "keep", 1, None, DEFAULT_KEEP_RELEASES),
        None => DEFAULT_KEEP_RELEASES,
    };
    let (deploy_timeout, drain_timeout, rollout) = match r.sub_table(&t, "deploy", DEPLOY_KEYS) {
        Some(deploy) => {
            let rollout = super::rollout::check_rollout(&mut r, &deploy);
            if let Some(shared) = rollout.preview_hosts.iter().find(|h| hosts.contains(h))
                && let Some(span) = deploy.span_of("preview_hosts")
            {
                r.error(
                    span,
                    &deploy.at("preview_hosts"),
                    format!("`{shared}` is in hosts too"),
                )
                .hint("a preview host reaches the new release only; give it a name of its own");
            }
            (
                r.duration(&deploy, "timeout", DEFAULT_DEPLOY_TIMEOUT),
                // Zero is allowed: old instances are stopped as soon as traffic has moved.
                r.duration_or_zero(&deploy, "drain_timeout", DEFAULT_DRAIN_TIMEOUT),
                rollout,
            )
        }
        None => (
            DEFAULT_DEPLOY_TIMEOUT,
            DEFAULT_DRAIN_TIMEOUT,
            RolloutSpec::default(),
        ),
    };
    let env = match t.get("env") {
        Some(value) => check_env(&mut r, value, "env".to_owned()),
        None => BTreeMap::new(),
    };
    let processes = check_processes(&mut r, &t, &hosts);
    let environments = check_environments(&mut r, &t, &processes);
    let edge = super::edge::check_edge(&mut r.c, source);
    if let Some(span) = t.span_of("edge")
        && hosts.is_empty()
    {
        r.c.error(span, "edge", "[edge] is given but the app has no hosts")
            .hint("add hosts = [\"app.example.com\"]: edge policies apply to the app's hosts");
    }

    r.c.finish(AppSpec {
        name,
        hosts,
        build,
        keep_releases,
        deploy_timeout,
        drain_timeout,
        rollout,
        edge,
        env,
        processes,
        environments,
    })
}

/// Environment names as the deployer uses them in paths: 1 to 63 lower-case letters, digits,
/// `-` and `_`, starting with a letter or digit.
fn environment_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Some("must be 1 to 63 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Some("must start with a lower-case letter or a digit");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Some("may only hold lower-case letters, digits, `-` and `_`");
    }
    None
}

/// `[environments.<name>]` tables.
fn check_environments(
    r: &mut Reader<'_>,
    t: &Table<'_, '_>,
    processes: &BTreeMap<String, ProcessSpec>,
) -> BTreeMap<String, EnvironmentSpec> {
    let mut out = BTreeMap::new();
    let Some(value) = t.get("environments") else {
        return out;
    };
    let Some(table) = r.open_table(value, "environments".to_owned()) else {
        return out;
    };
    for (name, value) in table.entries() {
        let field = table.at(name.get_ref());
        if let Some(problem) = environment_name_problem(name.get_ref()) {
            r.error(
                name.span(),
                &field,
                format!("environment name `{}` {problem}", name.get_ref()),
            )
            .hint("environments are named like `production`, `staging`, `dev`, `uat`");
        }
        let Some(env) = r.table(value, field, ENVIRONMENT_KEYS) else {
            continue;
        };
        let mut spec = EnvironmentSpec::default();
        if env.get("hosts").is_some() {
            let hosts = check_hosts(r, &env, "hosts");
            if !hosts.is_empty()
                && !processes.is_empty()
                && processes.values().all(|p| !p.http)
                && let Some(span) = env.span_of("hosts")
            {
                r.error(
                    span,
                    &env.at("hosts"),
                    "hosts are given but no process serves HTTP",
                )
                .hint("name the process that serves HTTP `web`, or set http = true on it");
            }
            spec.hosts = Some(hosts);
        }
        if let Some(value) = env.get("env") {
            spec.env = check_env(r, value, env.at("env"));
        }
        if let Some(deploy) = r.sub_table(&env, "deploy", ENVIRONMENT_DEPLOY_KEYS) {
            if let Some(name) = r.string(&deploy, "strategy") {
                match Strategy::from_name(name.get_ref()) {
                    Some(s) => spec.strategy = Some(s),
                    None => {
                        r.error(
                            name.span(),
                            &deploy.at("strategy"),
                            format!("unknown strategy `{}`", name.get_ref()),
                        )
                        .hint("choose rolling, blue-green or canary");
                    }
                }
            }
            if let Some(b) = r.bool(&deploy, "requires_approval") {
                spec.requires_approval = Some(*b.get_ref());
            }
            if deploy.get("timeout").is_some() {
                spec.deploy_timeout = Some(r.duration(&deploy, "timeout", DEFAULT_DEPLOY_TIMEOUT));
            }
            if deploy.get("drain_timeout").is_some() {
                spec.drain_timeout =
                    Some(r.duration_or_zero(&deploy, "drain_timeout", DEFAULT_DRAIN_TIMEOUT));
            }
        }
        if let Some(value) = env.get("processes")
            && let Some(procs) = r.open_table(value, env.at("processes"))
        {
            let known: Vec<&str> = processes.keys().map(String::as_str).collect();
            for (pname, pvalue) in procs.entries() {
                let pfield = procs.at(pname.get_ref());
                if !processes.contains_key(pname.get_ref().as_ref()) {
                    let hint = match super::suggest::closest(pname.get_ref(), &known) {
                        Some(c) => format!("did you mean `{c}`?"),
                        None => format!(
                            "an environment can only change processes the base spec defines: {}",
                            known.join(", ")
                        ),
                    };
                    r.error(
                        pname.span(),
                        &pfield,
                        format!("no process `{}` in [processes]", pname.get_ref()),
                    )
                    .hint(hint);
                    continue;
                }
                let Some(p) = r.table(pvalue, pfield, PROCESS_OVERRIDE_KEYS) else {
                    continue;
                };
                let over = ProcessOverride {
                    instances: r.optional_int(&p, "instances", 0, Some(MAX_INSTANCES.into())),
                    env: match p.get("env") {
                        Some(v) => check_env(r, v, p.at("env")),
                        None => BTreeMap::new(),
                    },
                    limits: match r.sub_table(&p, "limits", LIMITS_KEYS) {
                        Some(limits) => check_limits(r, &limits),
                        None => ResourceLimits::default(),
                    },
                };
                spec.processes.insert(pname.get_ref().to_string(), over);
            }
        }
        out.insert(name.get_ref().to_string(), spec);
    }
    out
}

/// What is wrong with an app or process name, if anything.
fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".to_owned());
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Some(format!("is longer than {MAX_NAME_LEN} characters"));
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let mut bad: Vec<String> = Vec::new();
    for c in name.chars().filter(|&c| !allowed(c)) {
        let quoted = format!("`{c}`");
        if !bad.contains(&quoted) {
            bad.push(quoted);
        }
    }
    if let Some((last, rest)) = bad.split_last() {
        return Some(if rest.is_empty() {
            format!("contains {last}, which is not allowed")
        } else {
            format!(
                "contains {} and {last}, which are not allowed",
                rest.join(", ")
            )
        });
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Some("must start with a letter".to_owned());
    }
    if name.ends_with('-') {
        return Some("must not end with `-`".to_owned());
    }
    None
}

fn check_name(r: &mut Reader<'_>, name: &str, span: Range<usize>, field: &str, what: &str) {
    let Some(problem) = name_problem(name) else {
        return;
    };
    let lower = name.to_ascii_lowercase();
    let hint = if lower != name && name_problem(&lower).is_none() {
        format!("names are lower-case: write `{lower}`")
    } else {
        NAME_HINT.to_owned()
    };
    r.error(span, field, format!("{what} `{name}` {problem}"))
        .hint(hint);
}

/// The host names in `t.name` (`hosts`, `preview_hosts`), lower-cased.
pub(super) fn check_hosts(r: &mut Reader<'_>, t: &Table<'_, '_>, name: &str) -> Vec<String> {
    let Some(value) = t.get(name) else {
        return Vec::new();
    };
    let field = &t.at(name);
    let DeValue::Array(items) = value.get_ref() else {
        let raw = r.raw(value.span());
        let quoted = matches!(value.get_ref(), DeValue::String(_));
        let diagnostic = r.type_error(value, field, "an array of strings");
        if quoted {
            diagnostic.hint(format!("write {field} = [{raw}]"));
        }
        return Vec::new();
    };
    let mut hosts: Vec<String> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let field = index(field, i);
        let DeValue::String(text) = item.get_ref() else {
            r.type_error(item, &field, "a string");
            continue;
        };
        let host = match host::parse(text, PORT_HINT) {
            Ok(HostPattern::Any) => {
                r.error(item.span(), &field, "`*` would claim every host")
                    .hint("list the app's host names, or a wildcard such as \"*.example.com\"");
                continue;
            }
            Ok(pattern) => pattern.to_string(),
            Err(err) => {
                err.report(&mut r.c, item.span(), &field);
                continue;
            }
        };
        if hosts.contains(&host) {
            r.error(
                item.span(),
                &field,
                format!("host `{host}` is listed twice"),
            );
            continue;
        }
        hosts.push(host);
    }
    hosts
}

/// A required, non-empty shell command.
pub(super) fn check_command(r: &mut Reader<'_>, t: &Table<'_, '_>) -> String {
    let Some(command) = r.string(t, "command") else {
        if t.get("command").is_none()
            && let Some(missing) = r.missing(t, "command")
        {
            missing.hint("the command is run with /bin/sh -c in the release directory");
        }
        return String::new();
    };
    if command.get_ref().trim().is_empty() {
        r.error(command.span(), &t.at("command"), "the command is empty")
            .hint("write the shell command to run, e.g. command = \"./server\"");
    } else if command.get_ref().contains('\0') {
        r.error(
            command.span(),
            &t.at("command"),
            "the command contains a NUL character",
        );
    }
    command.into_inner()
}

/// `[env]` or `[processes.<name>.env]`.
fn check_env(r: &mut Reader<'_>, value: &Value<'_>, field: String) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let Some(table) = r.open_table(value, field) else {
        return env;
    };
    for (name, value) in table.entries() {
        let field = table.at(name.get_ref());
        check_env_name(r, name.get_ref(), name.span(), &field);
        match value.get_ref() {
            DeValue::String(text) if text.contains('\0') => {
                r.error(value.span(), &field, "the value contains a NUL character")
                    .hint("environment variables cannot hold NUL characters");
            }
            DeValue::String(text) => {
                env.insert(name.get_ref().to_string(), text.to_string());
            }
            DeValue::Table(_) => {
                r.type_error(value, &field, "a string").hint(
                    "variables are NAME = \"value\"; per-environment variables go in \
                     [environments.<name>.env]",
                );
            }
            DeValue::Array(_) => {
                r.type_error(value, &field, "a string")
                    .hint("an environment variable holds one string; join the items into it");
            }
            _ => {
                r.type_error(value, &field, "a string");
            }
        }
    }
    env
}

fn check_env_name(r: &mut Reader<'_>, name: &str, span: Range<usize>, field: &str) {
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        r.error(
            span,
            field,
            format!("`{name}` is not a valid environment variable name"),
        )
        .hint("names are letters, digits and `_`, not starting with a digit");
    } else if name == "PORT" {
        r.error(span, field, "PORT is set by berth").hint(
            "berth gives each instance of the http process its own port in $PORT; listen on that",
        );
    } else if name.starts_with("BERTH_") {
        r.error(span, field, format!("`{name}` is reserved"))
            .hint("names starting with BERTH_ are reserved for the variables berth sets");
    }
}

/// What the cross-process checks need to know about a process.
struct Seen<'t> {
    name: &'t str,
    key_span: Range<usize>,
    /// Where `http = ...` was written, if it was.
    http_span: Option<Range<usize>>,
}

fn check_processes(
    r: &mut Reader<'_>,
    t: &Table<'_, '_>,
    hosts: &[String],
) -> BTreeMap<String, ProcessSpec> {
    let mut processes = BTreeMap::new();
    let Some(value) = t.get("processes") else {
        if let Some(missing) = r.missing(t, "processes") {
            missing.hint(PROCESSES_HINT);
        }
        return processes;
    };
    if let DeValue::Array(items) = value.get_ref() {
        let diagnostic = r.type_error(value, "processes", "a table");
        if items.iter().all(|item| item.get_ref().is_table()) {
            diagnostic.hint("processes are named: write [processes.web], not [[processes]]");
        }
        return processes;
    }
    let Some(table) = r.open_table(value, "processes".to_owned()) else {
        return processes;
    };
    if table.is_empty() {
        r.error(
            table.span.clone(),
            "processes",
            "at least one process is required",
        )
        .hint(PROCESSES_HINT);
        return processes;
    }
    let mut http = Vec::new();
    for (name, value) in table.entries() {
        let field = table.at(name.get_ref());
        check_name(r, name.get_ref(), name.span(), &field, "process name");
        if let DeValue::String(_) = value.get_ref() {
            r.type_error(value, &field, "a table")
                .hint(format!("write [{field}] and, under it, command = \"...\""));
            continue;
        }
        let Some(process) = r.table(value, field, PROCESS_KEYS) else {
            continue;
        };
        let (spec, http_span) = check_process(r, &process, name.get_ref());
        if spec.http {
            http.push(Seen {
                name: name.get_ref(),
                key_span: name.span(),
                http_span,
            });
        }
        processes.insert(name.get_ref().to_string(), spec);
    }
    http.sort_by_key(|seen| {
        seen.http_span
            .clone()
            .unwrap_or(seen.key_span.clone())
            .start
    });
    if let Some((first, others)) = http.split_first() {
        for other in others {
            let span = other.http_span.clone().unwrap_or(other.key_span.clone());
            let implicit = first.http_span.is_none() || other.http_span.is_none();
            let hint = if implicit {
                "a process named `web` serves HTTP unless it says http = false; \
                 set http = false on all but the one the edge should route to"
            } else {
                "set http = false on all but the process the edge should route to"
            };
            r.error(
                span,
                &key(&table.at(other.name), "http"),
                format!(
                    "`{}` and `{}` both serve HTTP; at most one process may",
                    first.name, other.name
                ),
            )
            .hint(hint);
        }
    }
    if http.is_empty()
        && !processes.is_empty()
        && let (Some(value), false) = (t.get("hosts"), hosts.is_empty())
    {
        r.error(
            value.span(),
            "hosts",
            "hosts are given but no process serves HTTP",
        )
        .hint("name the process that serves HTTP `web`, or set http = true on it");
    }
    processes
}

/// One `[processes.<name>]` table, and where its `http` key was written.
fn check_process(
    r: &mut Reader<'_>,
    t: &Table<'_, '_>,
    name: &str,
) -> (ProcessSpec, Option<Range<usize>>) {
    let command = check_command(r, t);
    let instances = r.int(
        t,
        "instances",
        0,
        Some(MAX_INSTANCES.into()),
        DEFAULT_INSTANCES,
    );
    let workdir = check_workdir(r, t);
    let env = match t.get("env") {
        Some(value) => check_env(r, value, t.at("env")),
        None => BTreeMap::new(),
    };
    let http_value = r.bool(t, "http");
    let http = http_value
        .as_ref()
        .map_or(name == DEFAULT_HTTP_PROCESS, |value| *value.get_ref());
    let health = check_health(r, t, name, http);
    let stop_signal = check_stop_signal(r, t);
    let stop_timeout = r.duration(t, "stop_timeout", DEFAULT_STOP_TIMEOUT);
    let limits = match r.sub_table(t, "limits", LIMITS_KEYS) {
        Some(limits) => check_limits(r, &limits),
        None => ResourceLimits::default(),
    };
    let restart = match r.sub_table(t, "restart", RESTART_KEYS) {
        Some(restart) => check_restart(r, &restart),
        None => RestartSpec::default(),
    };
    let spec = ProcessSpec {
        command,
        instances,
        workdir,
        env,
        http,
        health,
        stop_signal,
        stop_timeout,
        limits,
        restart,
    };
    (spec, http_value.map(|value| value.span()))
}

fn check_workdir(r: &mut Reader<'_>, t: &Table<'_, '_>) -> String {
    let Some(workdir) = r.string(t, "workdir") else {
        return DEFAULT_WORKDIR.to_owned();
    };
    let field = t.at("workdir");
    let text = workdir.get_ref();
    let problem = if text.is_empty() {
        Some("the working directory is empty")
    } else if text.contains('\0') {
        Some("the working directory contains a NUL character")
    } else if text.starts_with('/') {
        Some("the working directory must be relative to the release")
    } else if Path::new(text)
        .components()
        .any(|c| c == Component::ParentDir)
    {
        Some("the working directory must not contain `..`")
    } else {
        None
    };
    match problem {
        Some(message) => {
            r.error(workdir.span(), &field, message).hint(
                "workdir is a directory inside the release, e.g. \".\" (the default) or \"backend\"",
            );
            DEFAULT_WORKDIR.to_owned()
        }
        None => workdir.into_inner(),
    }
}

fn check_health(
    r: &mut Reader<'_>,
    t: &Table<'_, '_>,
    name: &str,
    http: bool,
) -> Option<HealthSpec> {
    let field = t.at("health");
    let Some(value) = t.get("health") else {
        return http.then(HealthSpec::default);
    };
    let on = match value.get_ref() {
        DeValue::Boolean(on) => *on,
        DeValue::Table(_) => true,
        _ => {
            r.type_error(value, &field, "true, false or a table");
            return http.then(HealthSpec::default);
        }
    };
    if !http {
        // Still read the table, so its unknown keys are reported too.
        if let DeValue::Table(_) = value.get_ref() {
            let _ = r.table(value, field.clone(), HEALTH_KEYS);
        }
        if on {
            r.error(
                value.span(),
                &field,
                format!("`{name}` does not serve HTTP, so it has no health check"),
            )
            .hint("set http = true if it serves HTTP on $PORT; otherwise remove `health`");
        }
        return None;
    }
    match value.get_ref() {
        DeValue::Table(_) => {
            let health = r.table(value, field, HEALTH_KEYS)?;
            Some(check_health_table(r, &health))
        }
        _ => on.then(HealthSpec::default),
    }
}

fn check_health_table(r: &mut Reader<'_>, t: &Table<'_, '_>) -> HealthSpec {
    let path = r.string(t, "path");
    let path = health::check_path(&mut r.c, path.as_ref(), &t.at("path"), DEFAULT_HEALTH_PATH);
    let interval = r.duration(t, "interval", DEFAULT_HEALTH_INTERVAL);
    let timeout = r.duration(t, "timeout", DEFAULT_HEALTH_TIMEOUT);
    if timeout > interval {
        r.c.conflict(
            &t.field,
            [
                ("timeout", t.span_of("timeout")),
                ("interval", t.span_of("interval")),
            ],
            format!("the timeout ({timeout:?}) is longer than the interval ({interval:?})"),
            health::OVERLAP_HINT,
        );
    }
    HealthSpec {
        path,
        interval,
        timeout,
        start_timeout: r.duration(t, "start_timeout", DEFAULT_HEALTH_START_TIMEOUT),
        healthy_threshold: r.int(t, "healthy_threshold", 1, None, DEFAULT_HEALTHY_THRESHOLD),
        unhealthy_threshold: r.int(
            t,
            "unhealthy_threshold",
            1,
            None,
            DEFAULT_UNHEALTHY_THRESHOLD,
        ),
    }
}

fn check_stop_signal(r: &mut Reader<'_>, t: &Table<'_, '_>) -> StopSignal {
    let Some(name) = r.string(t, "stop_signal") else {
        return StopSignal::default();
    };
    if let Some(signal) = StopSignal::from_name(name.get_ref()) {
        return signal;
    }
    let known: Vec<&str> = StopSignal::ALL.iter().map(|s| s.as_str()).collect();
    let mut hint = format!(
        "use one of {} (with or without SIG, in any case)",
        known.join(", ")
    );
    if bare_signal_name(name.get_ref()) == "KILL" {
        hint.push_str("; berth sends KILL itself when stop_timeout runs out");
    }
    r.error(
        name.span(),
        &t.at("stop_signal"),
        format!(
            "`{}` is not a signal berth can stop a process with",
            name.get_ref()
        ),
    )
    .hint(hint);
    StopSignal::default()
}

fn check_limits(r: &mut Reader<'_>, t: &Table<'_, '_>) -> ResourceLimits {
    let memory_bytes = r.size(t, "memory").and_then(|bytes| {
        if *bytes.get_ref() >= MIN_MEMORY_BYTES {
            return Some(*bytes.get_ref());
        }
        r.error(
            bytes.span(),
            &t.at("memory"),
            format!(
                "{} bytes is below the minimum of {MIN_MEMORY_BYTES} (1MiB)",
                bytes.get_ref()
            ),
        )
        .hint("a number without a unit is bytes; write e.g. \"512MiB\"");
        None
    });
    let cpu = r.number(t, "cpu").and_then(|cpu| {
        let cores = *cpu.get_ref();
        if cores.is_finite() && cores > 0.0 {
            return Some(cores);
        }
        r.error(
            cpu.span(),
            &t.at("cpu"),
            format!("{cores} is not a number of CPU cores above zero"),
        )
        .hint("e.g. cpu = 0.5 for half a core, cpu = 2 for two");
        None
    });
    ResourceLimits {
        memory_bytes,
        cpu,
        open_files: r.optional_int(t, "open_files", MIN_OPEN_FILES as i64, None),
        processes: r.optional_int(t, "processes", 1, None),
    }
}

fn check_restart(r: &mut Reader<'_>, t: &Table<'_, '_>) -> RestartSpec {
    let backoff_base = r.duration(t, "backoff_base", DEFAULT_BACKOFF_BASE);
    let backoff_cap = r.duration(t, "backoff_cap", DEFAULT_BACKOFF_CAP);
    if backoff_cap < backoff_base {
        r.c.conflict(
            &t.field,
            [
                ("backoff_cap", t.span_of("backoff_cap")),
                ("backoff_base", t.span_of("backoff_base")),
            ],
            format!(
                "backoff_cap ({backoff_cap:?}) is shorter than backoff_base ({backoff_base:?})"
            ),
            "backoff_cap caps the doubling restart delay, so it must be at least backoff_base",
        );
    }
    RestartSpec {
        backoff_base,
        backoff_cap,
        crash_loop_exits: r.int(t, "crash_loop_exits", 1, None, DEFAULT_CRASH_LOOP_EXITS),
        crash_loop_window: r.duration(t, "crash_loop_window", DEFAULT_CRASH_LOOP_WINDOW),
    }
}
