//! `[group.<name>]` tables: upstream pools and how traffic is spread and health-checked.

use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};

use berth_edge::spec::{
    ActiveHealthSpec, Balance, ForceSpec, GroupSpec, PassiveHealthSpec, PoolSpec, StatusMatch,
    StickySpec, defaults,
};
use http::{HeaderName, StatusCode};
use http::uri::PathAndQuery;
use toml::Spanned;

use super::path::{index, key};
use super::{Checker, NAME_HINT, is_name};
use crate::file::{
    ForceFile, GroupFile, HealthFile, PassiveFile, PoolFile, StickyFile, Text, Toggle,
};

/// The release name `upstreams = [...]` shorthand gives its single pool.
const DEFAULT_RELEASE: &str = "default";
const DEFAULT_WEIGHT: u32 = 100;
const MAX_WEIGHT: i64 = 1_000_000;

const BALANCE_P2C: &str = "p2c";
const BALANCE_ROUND_ROBIN: &str = "round_robin";

pub(super) fn check_all(
    c: &mut Checker<'_>,
    groups: &BTreeMap<Text, Spanned<GroupFile>>,
) -> Vec<GroupSpec> {
    // The map is sorted by name; file order keeps the spec and the diagnostics in step with it.
    let mut groups: Vec<_> = groups.iter().collect();
    groups.sort_by_key(|(name, _)| name.span().start);
    groups
        .into_iter()
        .map(|(name, group)| check(c, name, group))
        .collect()
}

fn check(c: &mut Checker<'_>, name: &Text, group: &Spanned<GroupFile>) -> GroupSpec {
    let field = key("group", name.get_ref());
    let at = |name| key(&field, name);
    if !is_name(name.get_ref()) {
        c.error(
            name.span(),
            &field,
            format!("`{}` is not a valid group name", name.get_ref()),
        )
        .hint(NAME_HINT);
    }
    let file = group.get_ref();
    GroupSpec {
        name: name.get_ref().clone(),
        balance: check_balance(c, file.balance.as_ref(), &at("balance")),
        sticky: check_sticky(c, file.sticky.as_ref(), &at("sticky")),
        force: check_force(c, file.force.as_ref(), &at("force")),
        health: check_health(c, file.health.as_ref(), &at("health")),
        passive: check_passive(c, file.passive.as_ref(), &at("passive")),
        upstream_idle_timeout: c.duration(
            &file.upstream_idle_timeout,
            &at("upstream_idle_timeout"),
            defaults::UPSTREAM_IDLE_TIMEOUT,
        ),
        pools: check_pools(c, group, &field),
    }
}

fn check_balance(c: &mut Checker<'_>, balance: Option<&Text>, field: &str) -> Balance {
    let Some(balance) = balance else {
        return Balance::default();
    };
    match balance.get_ref().as_str() {
        BALANCE_P2C => Balance::P2cLeastOutstanding,
        BALANCE_ROUND_ROBIN => Balance::RoundRobin,
        other => {
            c.error(
                balance.span(),
                field,
                format!("unknown balance `{other}`"),
            )
            .hint(format!("use \"{BALANCE_P2C}\" or \"{BALANCE_ROUND_ROBIN}\""));
            Balance::default()
        }
    }
}

fn check_sticky(
    c: &mut Checker<'_>,
    sticky: Option<&Toggle<StickyFile>>,
    field: &str,
) -> Option<StickySpec> {
    let file = match sticky? {
        Toggle::Bool(false) => return None,
        Toggle::Bool(true) => None,
        Toggle::Table(file) => Some(file),
    };
    let cookie = file.and_then(|file| file.cookie.as_ref());
    let no_ttl = None;
    let ttl = file.map_or(&no_ttl, |file| &file.ttl);
    Some(StickySpec {
        cookie: cookie_name(c, cookie, &key(field, "cookie"), defaults::STICKY_COOKIE),
        ttl: c.duration(ttl, &key(field, "ttl"), defaults::STICKY_TTL),
    })
}

fn check_force(c: &mut Checker<'_>, force: Option<&ForceFile>, field: &str) -> ForceSpec {
    let Some(force) = force else {
        return ForceSpec::default();
    };
    let header = match &force.header {
        None => ForceSpec::default().header,
        Some(text) => HeaderName::from_bytes(text.get_ref().as_bytes()).unwrap_or_else(|_| {
            c.error(
                text.span(),
                &key(field, "header"),
                format!("`{}` is not a valid header name", text.get_ref()),
            );
            ForceSpec::default().header
        }),
    };
    ForceSpec {
        header,
        cookie: cookie_name(
            c,
            force.cookie.as_ref(),
            &key(field, "cookie"),
            defaults::FORCE_COOKIE,
        ),
    }
}

fn cookie_name(c: &mut Checker<'_>, name: Option<&Text>, field: &str, default: &str) -> String {
    let Some(name) = name else {
        return default.to_owned();
    };
    // RFC 6265: a cookie name is an HTTP token.
    let is_token = !name.get_ref().is_empty()
        && name
            .get_ref()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !is_token {
        c.error(
            name.span(),
            field,
            format!("`{}` is not a valid cookie name", name.get_ref()),
        )
        .hint("cookie names are letters, digits and !#$%&'*+-.^_`|~");
        return default.to_owned();
    }
    name.get_ref().clone()
}

fn check_health(
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
    let path = match &file.path {
        None => defaults::HEALTH_PATH.to_owned(),
        Some(path) if path.get_ref().starts_with('/') && path.get_ref().parse::<PathAndQuery>().is_ok() => {
            path.get_ref().clone()
        }
        Some(path) => {
            c.error(
                path.span(),
                &at("path"),
                format!("`{}` is not a URL path", path.get_ref()),
            )
            .hint("a health check path starts with `/`, e.g. \"/health\"");
            defaults::HEALTH_PATH.to_owned()
        }
    };
    let interval = c.duration(&file.interval, &at("interval"), defaults::HEALTH_INTERVAL);
    let timeout = c.duration(&file.timeout, &at("timeout"), defaults::HEALTH_TIMEOUT);
    // The defaults satisfy this, so one of the two was given and is the one to point at.
    let given = (file.timeout.as_ref().map(|v| (v.span(), "timeout")))
        .or_else(|| file.interval.as_ref().map(|v| (v.span(), "interval")));
    if timeout >= interval
        && let Some((span, name)) = given
    {
        c.error(
            span,
            &at(name),
            format!("the timeout ({timeout:?}) must be shorter than the interval ({interval:?})"),
        )
        .hint("a check still running when the next one is due would overlap it");
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

fn check_expect(c: &mut Checker<'_>, expect: Option<&Spanned<Vec<Spanned<i64>>>>, field: &str) -> StatusMatch {
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

fn check_passive(c: &mut Checker<'_>, passive: Option<&PassiveFile>, field: &str) -> PassiveHealthSpec {
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
        max_cool_off: c.duration(&file.max_cool_off, &at("max_cool_off"), defaults::PASSIVE_MAX_COOL_OFF),
    };
    // The defaults satisfy this, so one of the two was given and is the one to point at.
    let given = (file.max_cool_off.as_ref().map(|v| (v.span(), "max_cool_off")))
        .or_else(|| file.cool_off.as_ref().map(|v| (v.span(), "cool_off")));
    if spec.max_cool_off < spec.cool_off
        && let Some((span, name)) = given
    {
        c.error(
            span,
            &at(name),
            format!(
                "max_cool_off ({:?}) is shorter than cool_off ({:?})",
                spec.max_cool_off, spec.cool_off
            ),
        )
        .hint("max_cool_off caps the doubling ejection time, so it must be at least cool_off");
    }
    spec
}

fn check_pools(c: &mut Checker<'_>, group: &Spanned<GroupFile>, field: &str) -> Vec<PoolSpec> {
    let file = group.get_ref();
    match (&file.upstreams, &file.pool) {
        (Some(upstreams), Some(_)) => {
            c.error(
                upstreams.span(),
                &key(field, "upstreams"),
                format!("give either `upstreams` or [[{field}.pool]] tables, not both"),
            )
            .hint("`upstreams` is shorthand for a single pool with release \"default\"");
            Vec::new()
        }
        (None, None) => {
            c.error(group.span(), field, "the group has no upstreams")
                .hint(format!(
                    "add `upstreams = [\"127.0.0.1:9001\"]` or one or more [[{field}.pool]] tables"
                ));
            Vec::new()
        }
        (Some(upstreams), None) => vec![PoolSpec {
            release: DEFAULT_RELEASE.to_owned(),
            weight: DEFAULT_WEIGHT,
            upstreams: check_upstreams(c, upstreams.get_ref(), &key(field, "upstreams")),
        }],
        (None, Some(pools)) => check_explicit_pools(c, pools, &key(field, "pool")),
    }
}

fn check_explicit_pools(
    c: &mut Checker<'_>,
    pools: &Spanned<Vec<Spanned<PoolFile>>>,
    field: &str,
) -> Vec<PoolSpec> {
    let mut releases = HashSet::new();
    let mut specs = Vec::new();
    for (i, pool) in pools.get_ref().iter().enumerate() {
        let field = index(field, i);
        let pool = pool.get_ref();
        let release = pool.release.get_ref();
        let is_release = !release.is_empty()
            && release.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
            });
        if !is_release {
            c.error(
                pool.release.span(),
                &key(&field, "release"),
                format!("`{release}` is not a valid release name"),
            )
            .hint("use lower-case letters, digits, `.`, `_` and `-`");
        } else if !releases.insert(release.as_str()) {
            c.error(
                pool.release.span(),
                &key(&field, "release"),
                format!("release `{release}` already has a pool in this group"),
            );
        }
        specs.push(PoolSpec {
            release: release.clone(),
            weight: c.int(&pool.weight, &key(&field, "weight"), 0, Some(MAX_WEIGHT), DEFAULT_WEIGHT),
            upstreams: check_upstreams(c, &pool.upstreams, &key(&field, "upstreams")),
        });
    }
    if specs.iter().all(|pool| pool.weight == 0) {
        // Point at the first explicit weight: with none given, pools default to a positive one.
        let first_weight = pools.get_ref().iter().enumerate().find_map(|(i, pool)| {
            let weight = pool.get_ref().weight.as_ref()?;
            Some((weight.span(), key(&index(field, i), "weight")))
        });
        let (span, field) = first_weight.unwrap_or((pools.span(), field.to_owned()));
        c.error(span, &field, "every pool has weight 0, so the group takes no traffic")
            .hint("give at least one pool a weight above 0; weight-0 pools only serve forced requests");
    }
    specs
}

/// Resolves `host:port` entries once, at load time, so a typo fails the load rather than every
/// request.
fn check_upstreams(c: &mut Checker<'_>, upstreams: &[Text], field: &str) -> Vec<SocketAddr> {
    let mut addrs = Vec::new();
    for (i, text) in upstreams.iter().enumerate() {
        let field = index(field, i);
        match resolve(text.get_ref()) {
            Ok(addr) if addrs.contains(&addr) => {
                let resolved = if addr.to_string() == *text.get_ref() {
                    String::new()
                } else {
                    format!(" (resolved to {addr})")
                };
                c.error(
                    text.span(),
                    &field,
                    format!("`{}`{resolved} is already in this pool", text.get_ref()),
                );
            }
            Ok(addr) => addrs.push(addr),
            Err(message) => {
                c.error(text.span(), &field, message)
                    .hint("write host:port, e.g. \"127.0.0.1:9001\" or \"localhost:9001\"");
            }
        }
    }
    addrs
}

/// The first address `host:port` resolves to, IPv4 first because `localhost` backends usually
/// listen on 127.0.0.1 only.
fn resolve(text: &str) -> Result<SocketAddr, String> {
    // The resolver's own message for a missing port is "invalid socket address", which does
    // not say what is missing.
    let has_port = text
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok());
    if !has_port {
        return Err(format!("`{text}` has no port"));
    }
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve `{text}`: {err}"))?
        .collect();
    addrs
        .iter()
        .find(|addr| addr.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("`{text}` resolves to no address"))
}
