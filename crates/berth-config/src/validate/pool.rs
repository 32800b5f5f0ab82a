//! A group's pools: releases, weights and their upstream instances.

use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};

use berth_edge::spec::{PoolSpec, defaults};
use toml::Spanned;

use super::Checker;
use crate::file::{GroupFile, PoolFile, Text};
use crate::path::{index, key};

/// The release name `upstreams = [...]` shorthand gives its single pool.
const DEFAULT_RELEASE: &str = defaults::RELEASE;
const DEFAULT_WEIGHT: u32 = defaults::POOL_WEIGHT;
const MAX_WEIGHT: i64 = defaults::MAX_POOL_WEIGHT as i64;

pub(super) fn check_pools(
    c: &mut Checker<'_>,
    group: &Spanned<GroupFile>,
    field: &str,
) -> Vec<PoolSpec> {
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
            && release
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
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
            weight: c.int(
                &pool.weight,
                &key(&field, "weight"),
                0,
                Some(MAX_WEIGHT),
                DEFAULT_WEIGHT,
            ),
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
        c.error(
            span,
            &field,
            "every pool has weight 0, so the group takes no traffic",
        )
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
