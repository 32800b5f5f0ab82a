//! `[group.<name>]` tables: upstream pools and how traffic is spread and health-checked.

use std::collections::BTreeMap;

use berth_edge::spec::{Balance, ForceSpec, GroupSpec, StickySpec, defaults};
use http::HeaderName;
use toml::Spanned;

use super::{Checker, NAME_HINT, health, is_name, pool};
use crate::file::{ForceFile, GroupFile, StickyFile, Text, Toggle};
use crate::path::key;

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
        health: health::check_health(c, file.health.as_ref(), &at("health")),
        passive: health::check_passive(c, file.passive.as_ref(), &at("passive")),
        upstream_idle_timeout: c.duration(
            &file.upstream_idle_timeout,
            &at("upstream_idle_timeout"),
            defaults::UPSTREAM_IDLE_TIMEOUT,
        ),
        pools: pool::check_pools(c, group, &field),
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
            c.error(balance.span(), field, format!("unknown balance `{other}`"))
                .hint(format!(
                    "use \"{BALANCE_P2C}\" or \"{BALANCE_ROUND_ROBIN}\""
                ));
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
