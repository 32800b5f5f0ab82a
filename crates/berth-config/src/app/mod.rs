//! An app's `berth.toml`: what to build, which processes to run and which hosts the app serves.
//!
//! The file lives in the app's source directory and travels with every release. [`parse`] checks
//! it completely and reports every problem at once, as [`ConfigError`]: unknown keys (with a
//! "did you mean" hint), wrong types, missing keys and values out of range alike. The format is
//! documented in `docs/app-spec.md`.
//!
//! The validated [`AppSpec`] is plain data with every default filled in, and it is
//! `Serialize`/`Deserialize` so a release can keep the spec it was deployed with.

mod edge;
mod explain;
mod read;
mod rollout;
mod suggest;
mod validate;

pub use edge::{AppEdge, AppPath, AppStatic};
pub use rollout::*;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::diagnostic::{ConfigError, Source};

pub use explain::{ConfigEntry, FROM_BASE, FROM_DEFAULT, FROM_ENVIRONMENT, duration_text, explain};

/// The app spec's file name inside an app's source directory.
pub const APP_SPEC_FILE: &str = "berth.toml";

/// Releases kept on disk (the active one included) when `[release] keep` is not given.
pub const DEFAULT_KEEP_RELEASES: usize = 5;
/// How long the build command may run.
pub const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// How long a deploy waits for the new instances to become healthy.
pub const DEFAULT_DEPLOY_TIMEOUT: Duration = Duration::from_secs(2 * 60);
/// How long old instances keep serving in-flight requests after traffic has moved away.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an instance has after its stop signal before it is killed.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Path probed on an http process when `health.path` is not given.
pub const DEFAULT_HEALTH_PATH: &str = "/health";
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a new instance has to pass its first check.
pub const DEFAULT_HEALTH_START_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 1;
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;

/// Instances of a process when `instances` is not given.
pub const DEFAULT_INSTANCES: u32 = 1;
/// The most instances one process may ask for.
pub const MAX_INSTANCES: u32 = 64;
/// A process's working directory, relative to the release root, when `workdir` is not given.
pub const DEFAULT_WORKDIR: &str = ".";
/// The process that serves HTTP unless another one says `http = true`.
pub const DEFAULT_HTTP_PROCESS: &str = "web";

/// The same defaults as berth-supervisor's restart policy.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(1);
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(60);
pub const DEFAULT_CRASH_LOOP_EXITS: u32 = 5;
pub const DEFAULT_CRASH_LOOP_WINDOW: Duration = Duration::from_secs(60);

/// Smallest `limits.memory`: below this a limit is almost certainly a missing unit.
pub const MIN_MEMORY_BYTES: u64 = 1 << 20;
/// Smallest `limits.open_files`: stdin, stdout, stderr and a listening socket need some room.
pub const MIN_OPEN_FILES: u64 = 16;

/// Longest app or process name (a DNS label).
pub const MAX_NAME_LEN: usize = 63;

/// A validated `berth.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppSpec {
    /// 1 to 63 characters of `[a-z0-9-]`, starting with a letter, not ending in `-`.
    pub name: String,
    /// Lower-cased host names (`app.example.com`) and wildcards (`*.example.com`) the http
    /// process serves. May be empty.
    pub hosts: Vec<String>,
    pub build: Option<BuildSpec>,
    /// `[release] keep`: releases kept on disk, at least 1.
    pub keep_releases: usize,
    /// `[deploy] timeout`.
    pub deploy_timeout: Duration,
    /// `[deploy] drain_timeout`; zero means old instances are stopped at once.
    pub drain_timeout: Duration,
    /// `[deploy]`'s strategy, analysis, hooks and checks. Specs stored before it existed
    /// read as the defaults (a rolling deploy).
    #[serde(default)]
    pub rollout: RolloutSpec,
    /// `[edge]`: access lists, rate limits, compression and static paths on the app's hosts.
    /// Specs stored before it existed read as none.
    #[serde(default)]
    pub edge: AppEdge,
    /// `[env]`: variables for every process.
    pub env: BTreeMap<String, String>,
    /// `[processes.<name>]`: at least one.
    pub processes: BTreeMap<String, ProcessSpec>,
    /// `[environments.<name>]`: what changes in one environment (`staging`, `production`).
    /// Empty in a spec returned by [`AppSpec::for_environment`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environments: BTreeMap<String, EnvironmentSpec>,
}

/// `[environments.<name>]`: overrides of the base spec in one environment. A key left out
/// keeps the base value; `env` tables are laid over the base ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentSpec {
    pub hosts: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub deploy_timeout: Option<Duration>,
    pub drain_timeout: Option<Duration>,
    /// `[environments.<name>.deploy] strategy`: e.g. canary in production only.
    #[serde(default)]
    pub strategy: Option<Strategy>,
    /// `[environments.<name>.deploy] requires_approval`: e.g. approval in production only.
    #[serde(default)]
    pub requires_approval: Option<bool>,
    /// Overrides of processes the base spec defines.
    pub processes: BTreeMap<String, ProcessOverride>,
}

/// `[environments.<name>.processes.<process>]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessOverride {
    pub instances: Option<u32>,
    pub env: BTreeMap<String, String>,
    /// Each limit given replaces the base one; the others stay.
    pub limits: ResourceLimits,
}

impl AppSpec {
    /// The spec as it applies in `environment`: its `[environments.<environment>]` laid over
    /// the base (the base alone for an environment the spec does not name).
    pub fn for_environment(&self, environment: &str) -> AppSpec {
        let mut out = self.clone();
        out.environments.clear();
        let Some(o) = self.environments.get(environment) else {
            return out;
        };
        if let Some(hosts) = &o.hosts {
            out.hosts = hosts.clone();
        }
        out.env.extend(o.env.clone());
        if let Some(t) = o.deploy_timeout {
            out.deploy_timeout = t;
        }
        if let Some(t) = o.drain_timeout {
            out.drain_timeout = t;
        }
        if let Some(strategy) = o.strategy {
            out.rollout.strategy = strategy;
        }
        if let Some(required) = o.requires_approval {
            out.rollout.requires_approval = required;
        }
        for (name, po) in &o.processes {
            let Some(p) = out.processes.get_mut(name) else {
                continue;
            };
            if let Some(n) = po.instances {
                p.instances = n;
            }
            p.env.extend(po.env.clone());
            let l = &po.limits;
            p.limits.memory_bytes = l.memory_bytes.or(p.limits.memory_bytes);
            p.limits.cpu = l.cpu.or(p.limits.cpu);
            p.limits.open_files = l.open_files.or(p.limits.open_files);
            p.limits.processes = l.processes.or(p.limits.processes);
        }
        out
    }

    /// The one process that serves HTTP, if any.
    pub fn http_process(&self) -> Option<(&str, &ProcessSpec)> {
        self.processes
            .iter()
            .find(|(_, process)| process.http)
            .map(|(name, process)| (name.as_str(), process))
    }
}

/// `[build]`: run once per release, in the release directory, before any process starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildSpec {
    /// Run with `/bin/sh -c`.
    pub command: String,
    pub timeout: Duration,
}

/// `[processes.<name>]`: one kind of process and how many of it to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// Run with `/bin/sh -c`; never empty.
    pub command: String,
    /// 0 to [`MAX_INSTANCES`].
    pub instances: u32,
    /// Relative to the release root; never absolute and never containing `..`.
    pub workdir: String,
    /// Overlaid on the app's `env`; see [`ProcessSpec::environment`].
    pub env: BTreeMap<String, String>,
    /// Listens on `$PORT` and is routed by the edge. At most one process has this.
    pub http: bool,
    /// Only ever `Some` for an http process.
    pub health: Option<HealthSpec>,
    pub stop_signal: StopSignal,
    pub stop_timeout: Duration,
    pub limits: ResourceLimits,
    pub restart: RestartSpec,
}

impl ProcessSpec {
    /// The app's environment with this process's own variables laid over it.
    pub fn environment(&self, app: &AppSpec) -> BTreeMap<String, String> {
        let mut env = app.env.clone();
        env.extend(self.env.clone());
        env
    }
}

/// Health checks of an http process's instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSpec {
    /// Starts with `/`.
    pub path: String,
    pub interval: Duration,
    /// At most `interval`.
    pub timeout: Duration,
    /// How long a new instance has to pass `healthy_threshold` checks in a row.
    pub start_timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

impl Default for HealthSpec {
    fn default() -> Self {
        HealthSpec {
            path: DEFAULT_HEALTH_PATH.to_owned(),
            interval: DEFAULT_HEALTH_INTERVAL,
            timeout: DEFAULT_HEALTH_TIMEOUT,
            start_timeout: DEFAULT_HEALTH_START_TIMEOUT,
            healthy_threshold: DEFAULT_HEALTHY_THRESHOLD,
            unhealthy_threshold: DEFAULT_UNHEALTHY_THRESHOLD,
        }
    }
}

/// The signal that asks an instance to stop; `KILL` follows after `stop_timeout`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum StopSignal {
    #[default]
    Term,
    Int,
    Quit,
    Hup,
    Usr1,
    Usr2,
    Winch,
}

impl StopSignal {
    pub const ALL: [StopSignal; 7] = [
        StopSignal::Term,
        StopSignal::Int,
        StopSignal::Quit,
        StopSignal::Hup,
        StopSignal::Usr1,
        StopSignal::Usr2,
        StopSignal::Winch,
    ];

    /// The name without `SIG`: `"TERM"`.
    pub fn as_str(self) -> &'static str {
        match self {
            StopSignal::Term => "TERM",
            StopSignal::Int => "INT",
            StopSignal::Quit => "QUIT",
            StopSignal::Hup => "HUP",
            StopSignal::Usr1 => "USR1",
            StopSignal::Usr2 => "USR2",
            StopSignal::Winch => "WINCH",
        }
    }

    /// `TERM`, `SIGTERM`, `term` and `SigTerm` all name [`StopSignal::Term`].
    pub fn from_name(name: &str) -> Option<StopSignal> {
        let bare = bare_signal_name(name);
        StopSignal::ALL.into_iter().find(|s| s.as_str() == bare)
    }
}

/// A signal's name upper-cased and without `SIG`, as [`StopSignal::as_str`] spells it.
fn bare_signal_name(name: &str) -> String {
    let upper = name.to_ascii_uppercase();
    match upper.strip_prefix("SIG") {
        Some(bare) => bare.to_owned(),
        None => upper,
    }
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[processes.<name>.limits]`: applied to each instance; `None` means no limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceLimits {
    /// At least [`MIN_MEMORY_BYTES`].
    pub memory_bytes: Option<u64>,
    /// CPU cores, above zero; `0.5` is half a core.
    pub cpu: Option<f64>,
    /// At least [`MIN_OPEN_FILES`].
    pub open_files: Option<u64>,
    /// At least 1.
    pub processes: Option<u64>,
}

/// `[processes.<name>.restart]`: restart backoff and crash-loop detection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartSpec {
    pub backoff_base: Duration,
    /// At least `backoff_base`.
    pub backoff_cap: Duration,
    /// This many exits within `crash_loop_window` mean the process is failing.
    pub crash_loop_exits: u32,
    pub crash_loop_window: Duration,
}

impl Default for RestartSpec {
    fn default() -> Self {
        RestartSpec {
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_cap: DEFAULT_BACKOFF_CAP,
            crash_loop_exits: DEFAULT_CRASH_LOOP_EXITS,
            crash_loop_window: DEFAULT_CRASH_LOOP_WINDOW,
        }
    }
}

/// Reads and checks the app spec at `path`.
pub fn load(path: &Path) -> Result<AppSpec, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        let source = Source { path, text: "" };
        let mut diagnostic = source.whole_file(format!("cannot read app spec: {err}"));
        if err.kind() == std::io::ErrorKind::NotFound {
            diagnostic.hint(format!(
                "every app needs a {APP_SPEC_FILE} in its source directory (see docs/app-spec.md)"
            ));
        }
        ConfigError {
            diagnostics: vec![diagnostic],
        }
    })?;
    parse(&text, path)
}

/// Checks app spec text; `path` names the file in diagnostics.
pub fn parse(text: &str, path: &Path) -> Result<AppSpec, ConfigError> {
    let source = Source { path, text };
    validate::validate(&source)
}
