//! `[deploy]`'s rollout settings: the strategy, canary steps, the analysis that can roll a
//! release back, the pre-deploy hook, smoke checks and notifications.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::de::DeValue;

use super::read::{Reader, Table, Value};
use crate::path::index;

/// Canary steps when `[deploy] steps` is not given: 10 % then 50 %, ten minutes each.
pub const DEFAULT_CANARY_STEPS: [(u32, Duration); 2] = [
    (10, Duration::from_secs(10 * 60)),
    (50, Duration::from_secs(10 * 60)),
];
/// A step's pause when it names a weight only.
pub const DEFAULT_STEP_PAUSE: Duration = Duration::from_secs(10 * 60);
pub const DEFAULT_ANALYSIS_INTERVAL: Duration = Duration::from_secs(30);
/// Share of 5xx responses a canary may have in a window.
pub const DEFAULT_MAX_ERROR_RATE: f64 = 0.01;
/// A canary's p99 may be at most this many times the stable release's.
pub const DEFAULT_MAX_P99_VS_STABLE: f64 = 1.5;
/// Fewer requests than this in a window tell nothing: the window is inconclusive.
pub const DEFAULT_MIN_REQUESTS: u64 = 20;
/// Failed windows before a rollback.
pub const DEFAULT_FAILURE_LIMIT: u32 = 1;
/// Inconclusive windows in a row before a rollback (not enough traffic to judge).
pub const DEFAULT_INCONCLUSIVE_LIMIT: u32 = 10;
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(10 * 60);
pub const DEFAULT_SMOKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_SMOKE_STATUS: u16 = 200;
/// How long a blue-green deploy keeps the replaced release running (other strategies keep it
/// only when `keep_warm` is set).
pub const DEFAULT_BLUE_GREEN_KEEP_WARM: Duration = Duration::from_secs(5 * 60);
/// How long a deploy waits for `berth approve` before it is cancelled: a forgotten approval
/// must not hold the app (rollback and restart wait behind it) for good.
pub const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// Synthetic probe requests per analysis window when `[[deploy.probe]]` gives no `count`.
pub const DEFAULT_PROBE_COUNT: u32 = 20;

const STEP_KEYS: &[&str] = &["weight", "pause"];
const HOOK_KEYS: &[&str] = &["command", "timeout", "maintenance"];
const ANALYSIS_KEYS: &[&str] = &[
    "interval",
    "max_error_rate",
    "max_p99",
    "max_p99_vs_stable",
    "min_requests",
    "failure_limit",
    "inconclusive_limit",
];
const PROBE_KEYS: &[&str] = &["path", "count"];
const SMOKE_KEYS: &[&str] = &["path", "status", "body_contains", "timeout"];
const NOTIFY_KEYS: &[&str] = &["url", "format"];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Start, health-gate, switch all traffic, drain the old release.
    #[default]
    Rolling,
    /// The new release runs beside the old one, reachable by preview only, until promoted.
    BlueGreen,
    /// Traffic moves to the new release in weighted steps while analysis watches it.
    Canary,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Rolling => "rolling",
            Strategy::BlueGreen => "blue-green",
            Strategy::Canary => "canary",
        }
    }

    pub fn from_name(name: &str) -> Option<Strategy> {
        [Strategy::Rolling, Strategy::BlueGreen, Strategy::Canary]
            .into_iter()
            .find(|s| s.as_str() == name.to_ascii_lowercase().replace('_', "-"))
    }
}

/// One canary step: this share of traffic for this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryStep {
    /// Percent of traffic on the new release, 1 to 99.
    pub weight: u32,
    /// `None`: hold until `berth promote`.
    pub pause: Option<Duration>,
}

/// Limits a new release is judged by, each analysis interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisSpec {
    pub interval: Duration,
    /// Share of 5xx, 0 to 1.
    pub max_error_rate: f64,
    pub max_p99: Option<Duration>,
    /// Relative to the stable release's p99 in the same window.
    pub max_p99_vs_stable: Option<f64>,
    pub min_requests: u64,
    pub failure_limit: u32,
    pub inconclusive_limit: u32,
}

impl Default for AnalysisSpec {
    fn default() -> Self {
        AnalysisSpec {
            interval: DEFAULT_ANALYSIS_INTERVAL,
            max_error_rate: DEFAULT_MAX_ERROR_RATE,
            max_p99: None,
            max_p99_vs_stable: Some(DEFAULT_MAX_P99_VS_STABLE),
            min_requests: DEFAULT_MIN_REQUESTS,
            failure_limit: DEFAULT_FAILURE_LIMIT,
            inconclusive_limit: DEFAULT_INCONCLUSIVE_LIMIT,
        }
    }
}

/// `[deploy.pre_deploy]`: run once with the new release's environment before traffic moves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookSpec {
    pub command: String,
    pub timeout: Duration,
    /// Serve the maintenance page on the app's hosts while the hook runs.
    pub maintenance: bool,
}

/// `[[deploy.probe]]`: requests berth sends to the new release itself each analysis window,
/// so a quiet app still gives the analysis something to judge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeSpec {
    pub path: String,
    pub count: u32,
}

/// `[[deploy.smoke]]`: a request after the switch; a wrong answer rolls back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmokeCheck {
    pub path: String,
    pub status: u16,
    pub body_contains: Option<String>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyFormat {
    /// `{"text": "..."}`, which Slack, Mattermost and Teams' Slack-compatible hooks accept.
    #[default]
    Slack,
    /// The whole event as JSON.
    Json,
}

/// `[[deploy.notify]]`: a webhook told of starts, promotions, successes, failures, rollbacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifySpec {
    pub url: String,
    pub format: NotifyFormat,
}

/// Everything about how a release replaces the one serving.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutSpec {
    pub strategy: Strategy,
    /// A deploy waits for `berth approve` before anything starts.
    #[serde(default)]
    pub requires_approval: bool,
    /// How long a deploy waits for approval before it is cancelled.
    #[serde(default = "default_approval_timeout")]
    pub approval_timeout: Duration,
    /// Canary steps; 100 % follows the last.
    pub steps: Vec<CanaryStep>,
    /// Blue-green: promote on its own once analysis has passed for this long; `None` waits
    /// for `berth promote`.
    pub promote_after: Option<Duration>,
    /// Host names that reach the newest release alone: during a rollout the new one, so a
    /// blue-green release can be tried in a browser before it takes any traffic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preview_hosts: Vec<String>,
    /// How long the replaced release keeps running after the switch, so a rollback to it
    /// takes no start; `None` is the strategy's default ([`RolloutSpec::keep_warm_for`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_warm: Option<Duration>,
    pub pre_deploy: Option<HookSpec>,
    pub analysis: AnalysisSpec,
    pub probes: Vec<ProbeSpec>,
    pub smoke: Vec<SmokeCheck>,
    pub notify: Vec<NotifySpec>,
}

fn default_approval_timeout() -> Duration {
    DEFAULT_APPROVAL_TIMEOUT
}

impl RolloutSpec {
    /// How long a deploy with `strategy` keeps the replaced release running.
    pub fn keep_warm_for(&self, strategy: Strategy) -> Duration {
        match (self.keep_warm, strategy) {
            (Some(d), _) => d,
            (None, Strategy::BlueGreen) => DEFAULT_BLUE_GREEN_KEEP_WARM,
            (None, _) => Duration::ZERO,
        }
    }
}

impl Default for RolloutSpec {
    fn default() -> Self {
        RolloutSpec {
            strategy: Strategy::default(),
            requires_approval: false,
            approval_timeout: DEFAULT_APPROVAL_TIMEOUT,
            steps: DEFAULT_CANARY_STEPS
                .iter()
                .map(|&(weight, pause)| CanaryStep {
                    weight,
                    pause: Some(pause),
                })
                .collect(),
            promote_after: None,
            preview_hosts: Vec::new(),
            keep_warm: None,
            pre_deploy: None,
            analysis: AnalysisSpec::default(),
            probes: Vec::new(),
            smoke: Vec::new(),
            notify: Vec::new(),
        }
    }
}

/// Reads the rollout keys of `[deploy]`.
pub(super) fn check_rollout(r: &mut Reader<'_>, t: &Table<'_, '_>) -> RolloutSpec {
    let mut spec = RolloutSpec::default();
    if let Some(name) = r.string(t, "strategy") {
        match Strategy::from_name(name.get_ref()) {
            Some(s) => spec.strategy = s,
            None => {
                r.error(
                    name.span(),
                    &t.at("strategy"),
                    format!("unknown strategy `{}`", name.get_ref()),
                )
                .hint("choose rolling (the default), blue-green or canary");
            }
        }
    }
    if let Some(b) = r.bool(t, "requires_approval") {
        spec.requires_approval = *b.get_ref();
    }
    spec.approval_timeout = r.duration(t, "approval_timeout", DEFAULT_APPROVAL_TIMEOUT);
    if let Some(value) = t.get("steps") {
        spec.steps = check_steps(r, value, t.at("steps"));
    }
    if t.get("promote_after").is_some() {
        spec.promote_after = Some(r.duration(t, "promote_after", DEFAULT_ANALYSIS_INTERVAL));
    }
    spec.preview_hosts = super::validate::check_hosts(r, t, "preview_hosts");
    if t.get("keep_warm").is_some() {
        spec.keep_warm = Some(r.duration_or_zero(t, "keep_warm", Duration::ZERO));
    }
    if let Some(hook) = r.sub_table(t, "pre_deploy", HOOK_KEYS) {
        spec.pre_deploy = Some(HookSpec {
            command: super::validate::check_command(r, &hook),
            timeout: r.duration(&hook, "timeout", DEFAULT_HOOK_TIMEOUT),
            maintenance: r.bool(&hook, "maintenance").is_some_and(|b| *b.get_ref()),
        });
    }
    if let Some(a) = r.sub_table(t, "analysis", ANALYSIS_KEYS) {
        spec.analysis = check_analysis(r, &a);
    }
    spec.probes = tables(r, t, "probe", PROBE_KEYS, |r, p| {
        Some(ProbeSpec {
            path: check_path(r, p)?,
            count: r.int(p, "count", 1, Some(1000), DEFAULT_PROBE_COUNT),
        })
    });
    spec.smoke = tables(r, t, "smoke", SMOKE_KEYS, |r, s| {
        Some(SmokeCheck {
            path: check_path(r, s)?,
            status: r.int(s, "status", 100, Some(599), DEFAULT_SMOKE_STATUS),
            body_contains: r.string(s, "body_contains").map(|b| b.into_inner()),
            timeout: r.duration(s, "timeout", DEFAULT_SMOKE_TIMEOUT),
        })
    });
    spec.notify = tables(r, t, "notify", NOTIFY_KEYS, check_notify);
    spec
}

fn check_steps(r: &mut Reader<'_>, value: &Value<'_>, field: String) -> Vec<CanaryStep> {
    let DeValue::Array(items) = value.get_ref() else {
        r.type_error(value, &field, "an array of tables").hint(
            "e.g. steps = [{ weight = 10, pause = \"10m\" }, { weight = 50, pause = \"10m\" }]",
        );
        return Vec::new();
    };
    if items.is_empty() {
        r.error(value.span(), &field, "no steps").hint(
            "give at least one step, e.g. [{ weight = 10, pause = \"10m\" }]; 100% follows the last",
        );
    }
    let mut steps: Vec<CanaryStep> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(step) = r.table(item, index(&field, i), STEP_KEYS) else {
            continue;
        };
        let Some(weight) = r.optional_int::<u32>(&step, "weight", 1, Some(99)) else {
            if step.get("weight").is_none()
                && let Some(m) = r.missing(&step, "weight")
            {
                m.hint("the percent of traffic on the new release in this step, 1 to 99");
            }
            continue;
        };
        if let Some(prev) = steps.last()
            && weight <= prev.weight
        {
            let span = step.span_of("weight").unwrap_or(step.span.clone());
            r.error(
                span,
                &step.at("weight"),
                format!(
                    "weight {weight} is not above the previous step's {}",
                    prev.weight
                ),
            )
            .hint("steps only move traffic towards the new release; 100% follows the last step");
        }
        let pause = match step.get("pause").map(|v| v.get_ref()) {
            Some(DeValue::String(s)) if s.as_ref() == "manual" => None,
            _ => Some(r.duration(&step, "pause", DEFAULT_STEP_PAUSE)),
        };
        steps.push(CanaryStep { weight, pause });
    }
    steps
}

fn check_analysis(r: &mut Reader<'_>, a: &Table<'_, '_>) -> AnalysisSpec {
    let mut spec = AnalysisSpec {
        interval: r.duration(a, "interval", DEFAULT_ANALYSIS_INTERVAL),
        ..AnalysisSpec::default()
    };
    if let Some(rate) = r.number(a, "max_error_rate") {
        if (0.0..=1.0).contains(rate.get_ref()) {
            spec.max_error_rate = *rate.get_ref();
        } else {
            r.error(
                rate.span(),
                &a.at("max_error_rate"),
                format!("{} is not a share between 0 and 1", rate.get_ref()),
            )
            .hint("write 0.01 for 1%");
        }
    }
    if a.get("max_p99").is_some() {
        spec.max_p99 = Some(r.duration(a, "max_p99", Duration::from_millis(500)));
    }
    if let Some(ratio) = r.number(a, "max_p99_vs_stable") {
        if *ratio.get_ref() >= 1.0 {
            spec.max_p99_vs_stable = Some(*ratio.get_ref());
        } else if *ratio.get_ref() == 0.0 {
            spec.max_p99_vs_stable = None;
        } else {
            r.error(
                ratio.span(),
                &a.at("max_p99_vs_stable"),
                format!("{} would fail a canary as fast as stable", ratio.get_ref()),
            )
            .hint("a ratio of at least 1, e.g. 1.5; 0 turns the comparison off");
        }
    }
    spec.min_requests = r.int(a, "min_requests", 1, None, DEFAULT_MIN_REQUESTS);
    spec.failure_limit = r.int(a, "failure_limit", 1, Some(100), DEFAULT_FAILURE_LIMIT);
    spec.inconclusive_limit = r.int(
        a,
        "inconclusive_limit",
        1,
        Some(10_000),
        DEFAULT_INCONCLUSIVE_LIMIT,
    );
    spec
}

fn check_path(r: &mut Reader<'_>, t: &Table<'_, '_>) -> Option<String> {
    let Some(path) = r.string(t, "path") else {
        if t.get("path").is_none()
            && let Some(m) = r.missing(t, "path")
        {
            m.hint("the request path, e.g. path = \"/health\"");
        }
        return None;
    };
    if !path.get_ref().starts_with('/') || path.get_ref().chars().any(char::is_whitespace) {
        r.error(
            path.span(),
            &t.at("path"),
            format!("`{}` is not a request path", path.get_ref()),
        )
        .hint("a path starts with `/` and has no spaces, e.g. \"/health?full=1\"");
        return None;
    }
    Some(path.into_inner())
}

fn check_notify(r: &mut Reader<'_>, t: &Table<'_, '_>) -> Option<NotifySpec> {
    let format = match r.string(t, "format") {
        None => NotifyFormat::default(),
        Some(f) => match f.get_ref().as_str() {
            "slack" => NotifyFormat::Slack,
            "json" => NotifyFormat::Json,
            other => {
                r.error(
                    f.span(),
                    &t.at("format"),
                    format!("unknown format `{other}`"),
                )
                .hint("slack (a text message; Mattermost and Teams accept it too) or json");
                NotifyFormat::default()
            }
        },
    };
    let Some(url) = r.string(t, "url") else {
        if t.get("url").is_none()
            && let Some(m) = r.missing(t, "url")
        {
            m.hint("the webhook's address, e.g. url = \"https://hooks.slack.com/services/...\"");
        }
        return None;
    };
    let text = url.get_ref();
    if !(text.starts_with("http://") || text.starts_with("https://"))
        || text.parse::<http::Uri>().is_err()
    {
        r.error(
            url.span(),
            &t.at("url"),
            "not an http:// or https:// address",
        )
        .hint("write the webhook's full address, e.g. \"https://hooks.slack.com/services/...\"");
        return None;
    }
    Some(NotifySpec {
        url: url.into_inner(),
        format,
    })
}

/// `[[<parent>.<name>]]`: each table read by `read`.
fn tables<T>(
    r: &mut Reader<'_>,
    t: &Table<'_, '_>,
    name: &str,
    known: &'static [&'static str],
    mut read: impl FnMut(&mut Reader<'_>, &Table<'_, '_>) -> Option<T>,
) -> Vec<T> {
    let Some(value) = t.get(name) else {
        return Vec::new();
    };
    let field = t.at(name);
    let DeValue::Array(items) = value.get_ref() else {
        r.type_error(value, &field, "an array of tables")
            .hint(format!("write [[{field}]] for each one"));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if let Some(table) = r.table(item, index(&field, i), known)
            && let Some(v) = read(r, &table)
        {
            out.push(v);
        }
    }
    out
}
