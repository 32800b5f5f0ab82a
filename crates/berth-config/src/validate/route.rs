//! `[[route]]` tables: which requests go to which group, and how they are handled on the way.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use berth_edge::spec::{
    GroupSpec, HostPattern, RetryPolicy, RouteSpec, UpstreamTimeouts, defaults,
};
use http::uri::PathAndQuery;
use toml::Spanned;

use super::{Checker, NAME_HINT, headers, host, is_name, maintenance, policies};
use crate::file::{RetryFile, RouteFile, Text, TimeoutsFile};
use crate::path::{index, key};

const DEFAULT_PATH_PREFIX: &str = "/";

/// For a host pattern written with a port.
const PORT_HINT: &str = "routes match the host name alone; the ports are those in server.listen";

/// What earlier routes have claimed, to refuse a second claim on the same names and requests.
#[derive(Default)]
struct Claims {
    names: HashMap<String, usize>,
    /// (host pattern, path prefix) to the index of the route holding it.
    requests: HashMap<(String, String), usize>,
}

pub(super) fn check_all(
    c: &mut Checker<'_>,
    routes: &[Spanned<RouteFile>],
    groups: &[GroupSpec],
) -> Vec<RouteSpec> {
    let mut claims = Claims::default();
    routes
        .iter()
        .enumerate()
        .map(|(i, route)| check(c, i, route, groups, &mut claims))
        .collect()
}

fn check(
    c: &mut Checker<'_>,
    i: usize,
    spanned: &Spanned<RouteFile>,
    groups: &[GroupSpec],
    claims: &mut Claims,
) -> RouteSpec {
    let route = spanned.get_ref();
    let field = index("route", i);
    let at = |name| key(&field, name);
    check_name(c, &route.name, &at("name"), i, claims);
    let path_prefix = check_path_prefix(c, route.path_prefix.as_ref(), &at("path_prefix"));
    let hosts = check_hosts(c, route, &at("hosts"), &path_prefix, i, claims);
    let policies = policies::check_route(c, route, &field, &path_prefix);
    let group = match (&route.group, &route.static_files) {
        (Some(group), _) => {
            check_group(c, group, &at("group"), groups);
            group.get_ref().clone()
        }
        (None, Some(files)) => {
            if files.get_ref().fallback == Some(true) {
                c.error(
                    files.span(),
                    &at("static"),
                    "`fallback = true` sends missing files to the route's group, and the route has none",
                )
                .hint("add `group = \"...\"` to the route, or drop `fallback`");
            }
            // Served from files alone.
            String::new()
        }
        (None, None) => {
            c.error(spanned.span(), &field, "missing field `group`")
                .hint("every route sends its requests to a group, unless it serves static files: add `group = \"...\"` or `static = { dir = \"...\" }`");
            String::new()
        }
    };
    RouteSpec {
        name: route.name.get_ref().clone(),
        hosts,
        path_prefix,
        strip_prefix: route.strip_prefix.unwrap_or(false),
        group,
        max_body_bytes: c.size(
            &route.max_body,
            &at("max_body"),
            defaults::MAX_BODY_BYTES,
            0,
        ),
        max_concurrent: c.int(
            &route.max_concurrent,
            &at("max_concurrent"),
            1,
            None,
            defaults::MAX_CONCURRENT,
        ),
        timeouts: check_timeouts(c, route.timeouts.as_ref(), &at("timeouts")),
        retry: check_retry(c, route.retry.as_ref(), &at("retry")),
        security: headers::check_security(
            c,
            route.security_headers.as_ref(),
            &at("security_headers"),
        ),
        request_headers: headers::check_rules(
            c,
            route.request_headers.as_ref(),
            &at("request_headers"),
        ),
        response_headers: headers::check_rules(
            c,
            route.response_headers.as_ref(),
            &at("response_headers"),
        ),
        maintenance: maintenance::check(c, route.maintenance.as_ref(), &at("maintenance")),
        https_redirect: route.https_redirect.unwrap_or(defaults::HTTPS_REDIRECT),
        policies,
    }
}

fn check_name(c: &mut Checker<'_>, name: &Text, field: &str, i: usize, claims: &mut Claims) {
    if !is_name(name.get_ref()) {
        c.error(
            name.span(),
            field,
            format!("`{}` is not a valid route name", name.get_ref()),
        )
        .hint(NAME_HINT);
    } else {
        match claims.names.entry(name.get_ref().clone()) {
            Entry::Occupied(first) => {
                c.error(
                    name.span(),
                    field,
                    format!(
                        "route name `{}` is already used by route[{}]",
                        name.get_ref(),
                        first.get()
                    ),
                );
            }
            Entry::Vacant(slot) => {
                slot.insert(i);
            }
        }
    }
}

/// Whether `text` can be a route's path prefix: a URL path. `?` and `#` would parse, but a
/// prefix compared against request paths never contains them.
pub(crate) fn is_path_prefix(text: &str) -> bool {
    text.starts_with('/') && !text.contains(['?', '#']) && text.parse::<PathAndQuery>().is_ok()
}

fn check_path_prefix(c: &mut Checker<'_>, prefix: Option<&Text>, field: &str) -> String {
    let Some(prefix) = prefix else {
        return DEFAULT_PATH_PREFIX.to_owned();
    };
    let text = prefix.get_ref();
    if !is_path_prefix(text) {
        c.error(prefix.span(), field, format!("`{text}` is not a URL path"))
            .hint("a path prefix starts with `/` and has no query string, e.g. \"/api\"");
        return DEFAULT_PATH_PREFIX.to_owned();
    }
    text.clone()
}

fn check_hosts(
    c: &mut Checker<'_>,
    route: &RouteFile,
    field: &str,
    path_prefix: &str,
    i: usize,
    claims: &mut Claims,
) -> Vec<HostPattern> {
    if route.hosts.get_ref().is_empty() {
        c.error(
            route.hosts.span(),
            field,
            "a route needs at least one host pattern",
        )
        .hint("use [\"*\"] to match any host");
    }
    let mut hosts = Vec::new();
    for (h, text) in route.hosts.get_ref().iter().enumerate() {
        let field = index(field, h);
        let pattern = match host::parse(text.get_ref(), PORT_HINT) {
            Ok(pattern) => pattern,
            Err(err) => {
                err.report(c, text.span(), &field);
                continue;
            }
        };
        let claim = (pattern.to_string(), path_prefix.to_owned());
        match claims.requests.get(&claim) {
            Some(&owner) if owner == i => {
                c.error(
                    text.span(),
                    &field,
                    format!("host `{}` is listed twice in this route", text.get_ref()),
                );
            }
            Some(&owner) => {
                c.error(
                    text.span(),
                    &field,
                    format!(
                        "host `{}` with path_prefix `{path_prefix}` is already routed by route[{owner}]",
                        text.get_ref()
                    ),
                )
                .hint("each host and path_prefix pair may belong to one route only");
            }
            None => {
                claims.requests.insert(claim, i);
            }
        }
        hosts.push(pattern);
    }
    hosts
}

fn check_group(c: &mut Checker<'_>, group: &Text, field: &str, groups: &[GroupSpec]) {
    if groups.iter().any(|known| known.name == *group.get_ref()) {
        return;
    }
    let hint = if groups.is_empty() {
        format!(
            "no groups are defined; add a [group.{}] table",
            group.get_ref()
        )
    } else {
        let names: Vec<&str> = groups.iter().map(|known| known.name.as_str()).collect();
        format!("known groups: {}", names.join(", "))
    };
    c.error(
        group.span(),
        field,
        format!("unknown group `{}`", group.get_ref()),
    )
    .hint(hint);
}

fn check_timeouts(
    c: &mut Checker<'_>,
    file: Option<&TimeoutsFile>,
    field: &str,
) -> UpstreamTimeouts {
    let Some(file) = file else {
        return UpstreamTimeouts::default();
    };
    UpstreamTimeouts {
        connect: c.duration(
            &file.connect,
            &key(field, "connect"),
            defaults::CONNECT_TIMEOUT,
        ),
        response_header: c.duration(
            &file.response_header,
            &key(field, "response_header"),
            defaults::RESPONSE_HEADER_TIMEOUT,
        ),
        total: c.duration(&file.total, &key(field, "total"), defaults::TOTAL_TIMEOUT),
    }
}

fn check_retry(c: &mut Checker<'_>, file: Option<&RetryFile>, field: &str) -> RetryPolicy {
    let Some(file) = file else {
        return RetryPolicy::default();
    };
    RetryPolicy {
        attempts: c.int(
            &file.attempts,
            &key(field, "attempts"),
            1,
            None,
            defaults::RETRY_ATTEMPTS,
        ),
        budget: c.duration(&file.budget, &key(field, "budget"), defaults::RETRY_BUDGET),
    }
}
