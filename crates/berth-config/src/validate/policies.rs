//! A route's policies: client address lists, rate limits, compression and static files; and
//! the server's trusted proxies, which decide what "client address" means for all of them.

use std::time::Duration;

use berth_edge::spec::{
    CompressionSpec, Encoding, IpAccess, Rate, RateKey, RateLimitKind, RateLimitSpec,
    RoutePolicies, StaticSpec, TrustedProxies, defaults,
};
use http::HeaderName;
use ipnet::IpNet;

use super::Checker;
use crate::file::{
    AuthRateLimitFile, CompressionFile, Int, RateLimitFile, RouteFile, ServerFile, StaticFile,
    Text, Toggle,
};
use crate::path::{index, key};

/// Fewer keys than shards would leave shards with no room at all.
const MIN_MAX_KEYS: i64 = 16;
const MAX_MAX_KEYS: i64 = 10_000_000;
const RATE_HINT: &str = "write a count per unit: \"10/s\", \"300/m\", \"1000/h\" or \"10000/d\"";
const KEY_HINT: &str =
    "write \"ip\" (the client's address) or \"header:NAME\", e.g. \"header:X-Api-Key\"";

/// The policy keys of a route, wherever they are written: a route of the server's config, an
/// app's `[edge]` table or one of its paths.
pub(crate) struct PolicyKeys<'a> {
    pub allow: Option<&'a [Text]>,
    pub deny: Option<&'a [Text]>,
    pub rate_limit: Option<&'a RateLimitFile>,
    pub auth_rate_limit: Option<&'a AuthRateLimitFile>,
    pub compression: Option<&'a Toggle<CompressionFile>>,
}

pub(super) fn check_route(
    c: &mut Checker<'_>,
    route: &RouteFile,
    field: &str,
    path_prefix: &str,
) -> RoutePolicies {
    let keys = PolicyKeys {
        allow: route.allow.as_deref(),
        deny: route.deny.as_deref(),
        rate_limit: route.rate_limit.as_ref(),
        auth_rate_limit: route.auth_rate_limit.as_ref(),
        compression: route.compression.as_ref(),
    };
    RoutePolicies {
        static_files: route
            .static_files
            .as_ref()
            .and_then(|s| static_files(c, s.get_ref(), &key(field, "static"))),
        ..check_policies(c, &keys, field, path_prefix)
    }
}

/// Everything but static files, which an app resolves against each release.
pub(crate) fn check_policies(
    c: &mut Checker<'_>,
    keys: &PolicyKeys<'_>,
    field: &str,
    path_prefix: &str,
) -> RoutePolicies {
    let at = |name| key(field, name);
    let allow = networks(c, keys.allow, &at("allow"));
    let deny = networks(c, keys.deny, &at("deny"));
    let access = (keys.allow.is_some() || keys.deny.is_some()).then_some(IpAccess { allow, deny });
    let mut rate_limits = Vec::new();
    if let Some(limit) = keys.rate_limit {
        rate_limits.extend(rate_limit(c, limit, &at("rate_limit")));
    }
    if let Some(limit) = keys.auth_rate_limit {
        rate_limits.extend(auth_rate_limit(
            c,
            limit,
            &at("auth_rate_limit"),
            path_prefix,
        ));
    }
    RoutePolicies {
        access,
        rate_limits,
        compression: compression(c, keys.compression, &at("compression")),
        static_files: None,
    }
}

pub(super) fn check_trusted_proxies(c: &mut Checker<'_>, server: &ServerFile) -> TrustedProxies {
    let networks = networks(
        c,
        server.trusted_proxies.as_deref(),
        "server.trusted_proxies",
    );
    let proxy_protocol = server.proxy_protocol.as_ref().filter(|p| *p.get_ref());
    if let Some(flag) = proxy_protocol
        && server.trusted_proxies.as_ref().is_none_or(Vec::is_empty)
    {
        c.error(
            flag.span(),
            "server.proxy_protocol",
            "PROXY protocol headers are only accepted from trusted_proxies, and there are none",
        )
        .hint(
            "list your load balancers' addresses in server.trusted_proxies, e.g. [\"10.0.0.0/8\"]",
        );
    }
    TrustedProxies {
        networks,
        proxy_protocol: proxy_protocol.is_some(),
    }
}

/// CIDRs or single addresses. Unlike the older lists, host bits are an error here: in an
/// allow or trust list, `10.1.2.3/8` is more likely a typo for `/32` than a wish for all of
/// `10.0.0.0/8`.
fn networks(c: &mut Checker<'_>, list: Option<&[Text]>, field: &str) -> Vec<IpNet> {
    let mut nets = Vec::new();
    for (i, text) in list.unwrap_or_default().iter().enumerate() {
        let field = index(field, i);
        let raw = text.get_ref().trim();
        if raw.contains('/') {
            match raw.parse::<IpNet>() {
                Ok(net) if net.trunc() == net => nets.push(net),
                Ok(net) => {
                    c.error(text.span(), &field, format!("`{raw}` has host bits set"))
                        .hint(format!(
                            "write the network, \"{}\", or the single address, \"{}\"",
                            net.trunc(),
                            net.addr()
                        ));
                }
                Err(_) => {
                    c.error(
                        text.span(),
                        &field,
                        format!("`{raw}` is not a CIDR network"),
                    )
                    .hint("e.g. \"10.0.0.0/8\" or \"2001:db8::/32\"");
                }
            }
        } else {
            match raw.parse::<std::net::IpAddr>() {
                Ok(ip) => nets.push(IpNet::from(ip)),
                Err(_) => {
                    c.error(
                        text.span(),
                        &field,
                        format!("`{raw}` is not an IP address or network"),
                    )
                    .hint("write a CIDR such as \"192.168.0.0/16\" or an address such as \"192.0.2.7\"; host names are not resolved");
                }
            }
        }
    }
    nets
}

/// The keys both kinds of limit share.
struct LimitFields<'f> {
    rate: &'f Text,
    burst: &'f Option<Int>,
    key: Option<&'f Text>,
    max_keys: &'f Option<Int>,
}

fn rate_limit(c: &mut Checker<'_>, file: &RateLimitFile, field: &str) -> Option<RateLimitSpec> {
    let fields = LimitFields {
        rate: &file.rate,
        burst: &file.burst,
        key: file.key.as_ref(),
        max_keys: &file.max_keys,
    };
    limit(c, field, RateLimitKind::Route, Vec::new(), fields)
}

fn auth_rate_limit(
    c: &mut Checker<'_>,
    file: &AuthRateLimitFile,
    field: &str,
    path_prefix: &str,
) -> Option<RateLimitSpec> {
    let paths_field = key(field, "paths");
    if file.paths.get_ref().is_empty() {
        c.error(
            file.paths.span(),
            &paths_field,
            "list at least one path, such as \"/login\"",
        )
        .hint("an auth limit applies to the paths listed; use rate_limit for the whole route");
    }
    let mut paths = Vec::new();
    for (i, p) in file.paths.get_ref().iter().enumerate() {
        let text = p.get_ref();
        let f = index(&paths_field, i);
        if !text.starts_with('/') || text.contains(['?', '#']) {
            c.error(p.span(), &f, format!("`{text}` is not a URL path"))
                .hint("a path starts with `/` and has no query string, e.g. \"/login\"");
            continue;
        }
        if !berth_edge::prefix_matches(path_prefix, text) {
            c.error(
                p.span(),
                &f,
                format!("`{text}` is outside this route's path_prefix `{path_prefix}`"),
            )
            .hint(format!(
                "write the full path as clients send it, e.g. \"{}{}\"",
                path_prefix.trim_end_matches('/'),
                text
            ));
            continue;
        }
        paths.push(text.clone());
    }
    let fields = LimitFields {
        rate: &file.rate,
        burst: &file.burst,
        key: file.key.as_ref(),
        max_keys: &file.max_keys,
    };
    limit(c, field, RateLimitKind::Auth, paths, fields)
}

fn limit(
    c: &mut Checker<'_>,
    field: &str,
    kind: RateLimitKind,
    paths: Vec<String>,
    fields: LimitFields<'_>,
) -> Option<RateLimitSpec> {
    let LimitFields {
        rate,
        burst,
        key: key_text,
        max_keys,
    } = fields;
    let parsed = match parse_rate(rate.get_ref()) {
        Ok(r) => Some(r),
        Err(message) => {
            c.error(rate.span(), &key(field, "rate"), message)
                .hint(RATE_HINT);
            None
        }
    };
    let burst = c.checked_int::<u32>(burst, &key(field, "burst"), 1, Some(1_000_000));
    let rate_key = match key_text {
        None => Some(RateKey::ClientIp),
        Some(t) => match parse_key(t.get_ref()) {
            Ok(k) => Some(k),
            Err(message) => {
                c.error(t.span(), &key(field, "key"), message)
                    .hint(KEY_HINT);
                None
            }
        },
    };
    let max_keys = c.int(
        max_keys,
        &key(field, "max_keys"),
        MIN_MAX_KEYS,
        Some(MAX_MAX_KEYS),
        defaults::RATE_LIMIT_MAX_KEYS,
    );
    let rate = parsed?;
    Some(RateLimitSpec {
        kind,
        paths,
        rate,
        // A burst of one period's worth unless told otherwise.
        burst: burst.unwrap_or(rate.count),
        key: rate_key?,
        max_keys,
    })
}

/// `"10/s"`, `"5/m"`, `"100/h"`, `"1000/d"`.
fn parse_rate(text: &str) -> Result<Rate, String> {
    let Some((count, unit)) = text.trim().split_once('/') else {
        return Err(format!("`{text}` is not a rate"));
    };
    let count: u32 = match count.trim().parse() {
        Ok(n) if n >= 1 => n,
        _ => {
            return Err(format!(
                "`{text}`: the count must be a whole number of at least 1"
            ));
        }
    };
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        "d" => Duration::from_secs(86_400),
        other => return Err(format!("`{text}`: unknown unit `{other}`")),
    };
    Ok(Rate { count, per })
}

fn parse_key(text: &str) -> Result<RateKey, String> {
    if text == "ip" {
        return Ok(RateKey::ClientIp);
    }
    let Some(name) = text.strip_prefix("header:") else {
        return Err(format!("unknown key `{text}`"));
    };
    HeaderName::from_bytes(name.trim().as_bytes())
        .map(RateKey::Header)
        .map_err(|_| format!("`{name}` is not a header name"))
}

fn compression(
    c: &mut Checker<'_>,
    file: Option<&Toggle<CompressionFile>>,
    field: &str,
) -> Option<CompressionSpec> {
    let table = match file? {
        Toggle::Bool(false) => return None,
        Toggle::Bool(true) => return Some(CompressionSpec::default()),
        Toggle::Table(t) => t,
    };
    let mut spec = CompressionSpec::default();
    if let Some(list) = &table.algorithms {
        let f = key(field, "algorithms");
        if list.get_ref().is_empty() {
            c.error(list.span(), &f, "list at least one algorithm")
                .hint("use `compression = false` to turn compression off");
        }
        let mut algorithms = Vec::new();
        for (i, name) in list.get_ref().iter().enumerate() {
            let encoding = match name.get_ref().as_str() {
                "br" | "brotli" => Encoding::Brotli,
                "gzip" => Encoding::Gzip,
                "zstd" => Encoding::Zstd,
                other => {
                    c.error(
                        name.span(),
                        &index(&f, i),
                        format!("unknown algorithm `{other}`"),
                    )
                    .hint("known algorithms: br, gzip, zstd");
                    continue;
                }
            };
            if algorithms.contains(&encoding) {
                c.error(
                    name.span(),
                    &index(&f, i),
                    format!("`{}` is listed twice", name.get_ref()),
                );
                continue;
            }
            algorithms.push(encoding);
        }
        if !algorithms.is_empty() {
            spec.algorithms = algorithms;
        }
    }
    spec.min_size = c.size(
        &table.min_size,
        &key(field, "min_size"),
        defaults::COMPRESSION_MIN_SIZE,
        0,
    );
    Some(spec)
}

fn static_files(c: &mut Checker<'_>, file: &StaticFile, field: &str) -> Option<StaticSpec> {
    let dir_field = key(field, "dir");
    let given = file.dir.get_ref();
    let joined = c.dir().join(given);
    let root = match std::fs::canonicalize(&joined) {
        Ok(root) if root.is_dir() => Some(root),
        Ok(root) => {
            c.error(
                file.dir.span(),
                &dir_field,
                format!("{} is not a directory", root.display()),
            )
            .hint("give the directory the files are in, e.g. the one collectstatic writes");
            None
        }
        Err(err) => {
            c.error(
                file.dir.span(),
                &dir_field,
                format!("cannot open static directory {}: {err}", joined.display()),
            )
            .hint("relative paths start from the config file's directory");
            None
        }
    };
    let (index, max_age) = static_options(c, file, field);
    Some(StaticSpec {
        roots: vec![root?],
        index,
        fallback: file.fallback.unwrap_or(false),
        max_age,
    })
}

/// The index file and max-age of a static directory, as a route or an app gives them.
pub(crate) fn static_options(
    c: &mut Checker<'_>,
    file: &StaticFile,
    field: &str,
) -> (Option<String>, Duration) {
    let index = match &file.index {
        None => Some(defaults::STATIC_INDEX.to_owned()),
        Some(t) if t.get_ref().is_empty() || t.get_ref() == "off" => None,
        Some(t) => {
            let name = t.get_ref();
            if name.contains('/') || name.starts_with('.') {
                c.error(
                    t.span(),
                    &key(field, "index"),
                    format!("`{name}` is not a plain file name"),
                )
                .hint("e.g. \"index.html\", or \"off\" to answer directories with 404");
            }
            Some(name.clone())
        }
    };
    let max_age = c.duration_or_zero(
        &file.max_age,
        &key(field, "max_age"),
        defaults::STATIC_MAX_AGE,
    );
    (index, max_age)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        let r = parse_rate("10/s").expect("rate");
        assert_eq!((r.count, r.per), (10, Duration::from_secs(1)));
        assert_eq!(
            parse_rate("5/m").expect("rate").per,
            Duration::from_secs(60)
        );
        assert_eq!(parse_rate(" 100 / h ").expect("rate").count, 100);
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("10/w").is_err());
        assert!(parse_rate("10").is_err());
        assert!(parse_rate("-1/s").is_err());
    }

    #[test]
    fn keys() {
        assert_eq!(parse_key("ip"), Ok(RateKey::ClientIp));
        assert_eq!(
            parse_key("header:X-Api-Key"),
            Ok(RateKey::Header(HeaderName::from_static("x-api-key")))
        );
        assert!(parse_key("header:bad name").is_err());
        assert!(parse_key("cookie:session").is_err());
    }
}
