//! Header rules and security headers on a route.

use std::collections::HashSet;

use berth_edge::spec::{HeaderRules, SecurityHeaders, defaults};
use http::{HeaderName, HeaderValue};
use toml::Spanned;

use super::Checker;
use crate::file::{HeaderRulesFile, SecurityFile, Text};
use crate::path::{index, key};

/// Headers that describe one connection rather than the message. The proxy manages them on each
/// side itself, so a rule touching them would either be overridden or break framing.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
];

/// A security header value that switches the header off.
const OFF: &str = "off";

const DEFAULT_NOSNIFF: bool = true;
const DEFAULT_FRAME_OPTIONS: &str = defaults::FRAME_OPTIONS;
const DEFAULT_REFERRER_POLICY: &str = defaults::REFERRER_POLICY;
/// Only ever sent on TLS connections.
const DEFAULT_HSTS: &str = defaults::HSTS;

const NAME_HINT: &str = "header names are letters, digits and !#$%&'*+-.^_`|~";
const VALUE_HINT: &str = "header values are visible ASCII characters, spaces and tabs";

/// Secure by default: the headers that cannot break a site are on unless switched off.
pub(super) fn check_security(
    c: &mut Checker<'_>,
    file: Option<&SecurityFile>,
    field: &str,
) -> SecurityHeaders {
    let value =
        |c: &mut Checker<'_>, v: Option<&Text>, name: &str, default: Option<&'static str>| {
            security_value(c, v, &key(field, name), default)
        };
    let Some(file) = file else {
        return SecurityHeaders::recommended();
    };
    SecurityHeaders {
        hsts: value(c, file.hsts.as_ref(), "hsts", Some(DEFAULT_HSTS)),
        nosniff: file.nosniff.unwrap_or(DEFAULT_NOSNIFF),
        frame_options: value(
            c,
            file.frame_options.as_ref(),
            "frame_options",
            Some(DEFAULT_FRAME_OPTIONS),
        ),
        referrer_policy: value(
            c,
            file.referrer_policy.as_ref(),
            "referrer_policy",
            Some(DEFAULT_REFERRER_POLICY),
        ),
        csp: value(c, file.csp.as_ref(), "csp", None),
    }
}

fn security_value(
    c: &mut Checker<'_>,
    value: Option<&Text>,
    field: &str,
    default: Option<&'static str>,
) -> Option<HeaderValue> {
    let Some(value) = value else {
        return default.map(HeaderValue::from_static);
    };
    if value.get_ref() == OFF {
        return None;
    }
    header_value(c, value, field)
}

pub(super) fn check_rules(
    c: &mut Checker<'_>,
    file: Option<&HeaderRulesFile>,
    field: &str,
) -> HeaderRules {
    let Some(file) = file else {
        return HeaderRules::default();
    };
    let mut rules = HeaderRules::default();
    // Keys are visited in file order so diagnostics and the resulting rules follow the file.
    let mut set: Vec<_> = file.set.iter().collect();
    set.sort_by_key(|(name, _)| name.span().start);
    let mut named = Vec::new();
    for (name, value) in set {
        let field = key(&key(field, "set"), name.get_ref());
        let parsed = header_name(c, name, &field);
        let value = header_value(c, value, &field);
        if let Some(parsed) = parsed {
            named.push((parsed.clone(), name, field));
            if let Some(value) = value {
                rules.set.push((parsed, value));
            }
        }
    }
    for (i, name) in file.remove.iter().enumerate() {
        let field = index(&key(field, "remove"), i);
        if let Some(parsed) = header_name(c, name, &field) {
            named.push((parsed.clone(), name, field));
            rules.remove.push(parsed);
        }
    }
    // Names differing only in case are the same header; a repeat is almost certainly an edit
    // that forgot an earlier line, and which of the two wins would be arbitrary.
    named.sort_by_key(|(_, name, _)| name.span().start);
    let mut seen = HashSet::new();
    for (parsed, name, field) in named {
        if !seen.insert(parsed) {
            c.error(
                name.span(),
                &field,
                format!(
                    "header `{}` appears more than once in these rules",
                    name.get_ref()
                ),
            )
            .hint("header names are case-insensitive; keep one rule per header");
        }
    }
    rules
}

/// A header name a rule may touch, or `None` after reporting why not.
fn header_name(c: &mut Checker<'_>, name: &Text, field: &str) -> Option<HeaderName> {
    let Ok(parsed) = HeaderName::from_bytes(name.get_ref().as_bytes()) else {
        c.error(
            name.span(),
            field,
            format!("`{}` is not a valid header name", name.get_ref()),
        )
        .hint(NAME_HINT);
        return None;
    };
    if HOP_BY_HOP.contains(&parsed.as_str()) {
        c.error(
            name.span(),
            field,
            format!("`{}` is a hop-by-hop header", name.get_ref()),
        )
        .hint("it describes a single connection, so the proxy manages it itself on each side");
        return None;
    }
    if parsed == http::header::HOST {
        c.error(name.span(), field, "the Host header cannot be changed")
            .hint("routes are chosen by the Host header, so header rules may not set or remove it");
        return None;
    }
    Some(parsed)
}

pub(super) fn header_value(
    c: &mut Checker<'_>,
    value: &Spanned<String>,
    field: &str,
) -> Option<HeaderValue> {
    match HeaderValue::from_str(value.get_ref()) {
        Ok(parsed) => Some(parsed),
        Err(_) => {
            c.error(
                value.span(),
                field,
                format!("{:?} is not a valid header value", value.get_ref()),
            )
            .hint(VALUE_HINT);
            None
        }
    }
}
