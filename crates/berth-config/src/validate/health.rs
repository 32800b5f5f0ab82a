//! A group's health checking: active probes and passive ejection.

use berth_edge::spec::{ActiveHealthSpec, PassiveHealthSpec, StatusMatch, defaults};
use http::StatusCode;
use http::uri::PathAndQuery;
use toml::Spanned;

use super::Checker;
use crate::file::{HealthFile, PassiveFile, Text, Toggle};
use crate::path::{index, key};

/// Why a health check's timeout may not outlast its interval; the app spec shares it.
pub(crate) const OVERLAP_HINT: &str =
    "a check still running when the next one is due would overlap it";

pub(super) fn check_health(
    c: &mut Checker<'_>,
    health: Option<&Toggle<HealthFile>>,
    field: &str,
) -> Option<ActiveHealthSpec> {
    let file = match health? {
        Toggle::Bool(false) => return None,
        Toggle::Bool(true) => return Some(ActiveHealthSpec::default()),
        Toggle::Table(file) => file,
    };
    let at = |name| key(field, name);
    let path = check_path(c, file.path.as_ref(), &at("path"), defaults::HEALTH_PATH);
    let interval = c.duration(&file.interval, &at("interval"), defaults::HEALTH_INTERVAL);
    let timeout = c.duration(&file.timeout, &at("timeout"), defaults::HEALTH_TIMEOUT);
    if timeout >= interval {
        c.conflict(
            field,
            [
                ("timeout", file.timeout.as_ref().map(Spanned::span)),
                ("interval", file.interval.as_ref().map(Spanned::span)),
            ],
            format!("the timeout ({timeout:?}) must be shorter than the interval ({interval:?})"),
            OVERLAP_HINT,
        );
    }
    Some(ActiveHealthSpec {
        path,
        interval,
        timeout,
        healthy_threshold: c.int(
            &file.healthy_threshold,
            &at("healthy_threshold"),
            1,
            None,
            defaults::HEALTHY_THRESHOLD,
        ),
        unhealthy_threshold: c.int(
            &file.unhealthy_threshold,
            &at("unhealthy_threshold"),
            1,
            None,
            defaults::UNHEALTHY_THRESHOLD,
        ),
        expect: check_expect(c, file.expect.as_ref(), &at("expect")),
    })
}

/// A health check's `path`, shared with the app spec: it starts with `/` and parses as a path
/// and query. `default` when absent or reported.
pub(crate) fn check_path(
    c: &mut Checker<'_>,
    path: Option<&Text>,
    field: &str,
    default: &str,
) -> String {
    let Some(path) = path else {
        return default.to_owned();
    };
    if path.get_ref().starts_with('/') && path.get_ref().parse::<PathAndQuery>().is_ok() {
        return path.get_ref().clone();
    }
    c.error(
        path.span(),
        field,
        format!("`{}` is not a URL path", path.get_ref()),
    )
    .hint("a health check path starts with `/`, e.g. \"/health\"");
    default.to_owned()
}

fn check_expect(
    c: &mut Checker<'_>,
    expect: Option<&Spanned<Vec<Spanned<i64>>>>,
    field: &str,
) -> StatusMatch {
    let Some(expect) = expect else {
        return StatusMatch::Success;
    };
    if expect.get_ref().is_empty() {
        c.error(expect.span(), field, "an empty list matches no status")
            .hint("leave `expect` out to accept any 2xx status");
        return StatusMatch::Success;
    }
    let mut statuses = Vec::new();
    for (i, code) in expect.get_ref().iter().enumerate() {
        let status = u16::try_from(*code.get_ref())
            .ok()
            .and_then(|n| StatusCode::from_u16(n).ok());
        match status {
            Some(status) => statuses.push(status),
            None => {
                c.error(
                    code.span(),
                    &index(field, i),
                    format!("{} is not an HTTP status code", code.get_ref()),
                )
                .hint("status codes are between 100 and 999");
            }
        }
    }
    StatusMatch::Exact(statuses)
}

pub(super) fn check_passive(
    c: &mut Checker<'_>,
    passive: Option<&PassiveFile>,
    field: &str,
) -> PassiveHealthSpec {
    let Some(file) = passive else {
        return PassiveHealthSpec::default();
    };
    let at = |name| key(field, name);
    let spec = PassiveHealthSpec {
        consecutive_failures: c.int(
            &file.consecutive_failures,
            &at("consecutive_failures"),
            0,
            None,
            defaults::PASSIVE_CONSECUTIVE_FAILURES,
        ),
        window_failures: c.int(
            &file.window_failures,
            &at("window_failures"),
            0,
            None,
            defaults::PASSIVE_WINDOW_FAILURES,
        ),
        window: c.duration(&file.window, &at("window"), defaults::PASSIVE_WINDOW),
        cool_off: c.duration(&file.cool_off, &at("cool_off"), defaults::PASSIVE_COOL_OFF),
        max_cool_off: c.duration(
            &file.max_cool_off,
            &at("max_cool_off"),
            defaults::PASSIVE_MAX_COOL_OFF,
        ),
    };
    if spec.max_cool_off < spec.cool_off {
        c.conflict(
            field,
            [
                (
                    "max_cool_off",
                    file.max_cool_off.as_ref().map(Spanned::span),
                ),
                ("cool_off", file.cool_off.as_ref().map(Spanned::span)),
            ],
            format!(
                "max_cool_off ({:?}) is shorter than cool_off ({:?})",
                spec.max_cool_off, spec.cool_off
            ),
            "max_cool_off caps the doubling ejection time, so it must be at least cool_off",
        );
    }
    spec
}
