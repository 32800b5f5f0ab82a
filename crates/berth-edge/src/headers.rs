//! Header rewriting between client and upstream: hop-by-hop removal, forwarding headers,
//! request ids and the per-route header policies.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use rand::Rng;

use crate::spec::{HeaderRules, SecurityHeaders};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// RFC 9110 §7.6.1 hop-by-hop fields plus the legacy ones clients still send. `Trailer` is
/// end-to-end: hyper only forwards trailers that it declares.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
];

/// The comma-separated tokens of every `name` header, trimmed (RFC 9110 §5.6.1 lists).
pub(crate) fn tokens(headers: &HeaderMap, name: HeaderName) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// The `Upgrade` token of a request or response that asks to switch protocols.
pub fn upgrade_token(headers: &HeaderMap) -> Option<HeaderValue> {
    let connection_upgrade =
        tokens(headers, header::CONNECTION).any(|t| t.eq_ignore_ascii_case("upgrade"));
    if connection_upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name == header::UPGRADE
}

/// Removes hop-by-hop headers, including any named in `Connection`. When `upgrade` is given the
/// upgrade handshake headers are put back, since the proxy passes the upgrade through.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: Option<&HeaderValue>) {
    // Most messages carry none: one pass of cheap name comparisons instead of eight hashed
    // removals on the hot path.
    if upgrade.is_none() && !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let wants_trailers = tokens(headers, header::TE).any(|t| t.eq_ignore_ascii_case("trailers"));
    let named: Vec<HeaderName> = tokens(headers, header::CONNECTION)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
    if let Some(token) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, token.clone());
    }
    // Trailers only reach the client if every hop agreed to them.
    if wants_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Accepts a client's request id when it is short printable ASCII; anything else could break
/// log parsing downstream, so a fresh one replaces it.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
            return v.clone();
        }
    }
    new_request_id()
}

fn new_request_id() -> HeaderValue {
    let n: u128 = rand::rng().random();
    let mut buf = [0u8; 32];
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte = HEX[((n >> (i * 4)) & 0xf) as usize];
    }
    // 32 lower-case hex digits are always a valid header value.
    HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("0"))
}

/// Client-supplied forwarding headers are replaced, not appended to: the app gets one address,
/// the client's, as berth settled it (the peer's, or the one trusted proxies named), and never
/// what an untrusted client wrote there.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client_ip: &HeaderValue,
    proto: &'static str,
    host: Option<HeaderValue>,
) {
    headers.insert(X_FORWARDED_FOR, client_ip.clone());
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    match host {
        Some(h) => headers.insert(X_FORWARDED_HOST, h),
        None => headers.remove(X_FORWARDED_HOST),
    };
}

pub fn apply_rules(headers: &mut HeaderMap, rules: &HeaderRules) {
    for name in &rules.remove {
        headers.remove(name);
    }
    for (name, value) in &rules.set {
        headers.insert(name.clone(), value.clone());
    }
}

/// Security headers are defaults: an app that sets its own keeps them. HSTS is only added on
/// TLS connections (RFC 6797 §7.2: a host must not send it over plain HTTP).
pub fn apply_security(headers: &mut HeaderMap, policy: &SecurityHeaders, tls: bool) {
    fn default(headers: &mut HeaderMap, name: HeaderName, value: &Option<HeaderValue>) {
        if let Some(v) = value {
            headers.entry(name).or_insert_with(|| v.clone());
        }
    }
    if tls {
        default(headers, header::STRICT_TRANSPORT_SECURITY, &policy.hsts);
    }
    if policy.nosniff {
        headers
            .entry(header::X_CONTENT_TYPE_OPTIONS)
            .or_insert(HeaderValue::from_static("nosniff"));
    }
    default(headers, header::X_FRAME_OPTIONS, &policy.frame_options);
    default(headers, header::REFERRER_POLICY, &policy.referrer_policy);
    default(headers, header::CONTENT_SECURITY_POLICY, &policy.csp);
}

/// Value of one cookie in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(KEEP_ALIVE, HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, None);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn keeps_upgrade_when_passing_it_through() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        let token = upgrade_token(&h);
        assert_eq!(token, Some(HeaderValue::from_static("websocket")));
        strip_hop_by_hop(&mut h, token.as_ref());
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
    }

    #[test]
    fn te_trailers_survives() {
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("gzip, trailers"));
        strip_hop_by_hop(&mut h, None);
        assert_eq!(h[header::TE], "trailers");
    }

    #[test]
    fn request_id_propagates_valid_and_replaces_bad() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(X_REQUEST_ID, HeaderValue::from_static("has space"));
        let id = request_id(&h);
        assert_eq!(id.len(), 32);
        assert_ne!(request_id(&HeaderMap::new()), request_id(&HeaderMap::new()));
    }

    #[test]
    fn security_headers_do_not_override_app() {
        let mut h = HeaderMap::new();
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        let policy = SecurityHeaders {
            nosniff: true,
            frame_options: Some(HeaderValue::from_static("SAMEORIGIN")),
            ..Default::default()
        };
        apply_security(&mut h, &policy, false);
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }

    #[test]
    fn hsts_only_on_tls() {
        let policy = SecurityHeaders::recommended();
        let mut plain = HeaderMap::new();
        apply_security(&mut plain, &policy, false);
        assert!(!plain.contains_key(header::STRICT_TRANSPORT_SECURITY));
        let mut tls = HeaderMap::new();
        apply_security(&mut tls, &policy, true);
        assert_eq!(
            tls[header::STRICT_TRANSPORT_SECURITY],
            crate::spec::defaults::HSTS
        );
    }

    #[test]
    fn cookie_lookup() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; berth_cohort=42"),
        );
        assert_eq!(cookie(&h, "berth_cohort"), Some("42"));
        assert_eq!(cookie(&h, "b"), None);
    }
}
