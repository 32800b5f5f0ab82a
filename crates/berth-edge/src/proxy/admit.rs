//! Phase 3: refuse what a route will not take, before any upstream is touched. The order is
//! cheapest and least stateful first: sizes, then the client's address (a denied client
//! takes no rate-limit token), maintenance, rate limits, and concurrency last, since a
//! permit is only taken by requests that will be served.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::Shared;
use super::respond::{client_message, edge_response};
use crate::body::ResponseBody;
use crate::error::ProxyError;
use crate::exchange::{Completion, RoutePermit};
use crate::rate_limit::{Decision, Key, retry_after_secs};
use crate::spec::{ClientLimits, Maintenance, RateKey};
use crate::table::{Route, prefix_matches};
use percent_encoding::percent_decode_str;

/// Why phase 3 refused a request.
pub(super) enum Rejection<'r> {
    Limit(ProxyError),
    Maintenance(&'r Maintenance),
}

/// Phase 3: refuse what the route will not take, before touching an upstream.
pub(super) fn admit<'r>(
    limits: &ClientLimits,
    route: &'r Route,
    req: &Request<Incoming>,
    done: &mut Completion,
) -> Result<(), Rejection<'r>> {
    let head_bytes: usize = req.uri().path_and_query().map_or(1, |p| p.as_str().len())
        + req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if head_bytes > limits.max_header_bytes {
        return Err(Rejection::Limit(ProxyError::HeadersTooLarge {
            limit: limits.max_header_bytes,
        }));
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > route.spec.max_body_bytes) {
        return Err(Rejection::Limit(ProxyError::BodyTooLarge {
            limit: route.spec.max_body_bytes,
        }));
    }
    let policies = &route.spec.policies;
    if let Some(access) = &policies.access
        && !access.permits(done.client)
    {
        return Err(Rejection::Limit(ProxyError::IpDenied(done.client)));
    }
    if let Some(m) = &route.spec.maintenance {
        let ip = done.client;
        if !m.allow.iter().any(|net| net.contains(&ip)) {
            return Err(Rejection::Maintenance(m));
        }
    }
    if !route.limiters.is_empty() {
        rate_limit(route, req, done.client, done.start)?;
    }
    let previous = route.in_flight.fetch_add(1, Ordering::Relaxed);
    let permit = RoutePermit(route.in_flight.clone());
    if previous >= route.spec.max_concurrent {
        return Err(Rejection::Limit(ProxyError::Overloaded {
            limit: route.spec.max_concurrent,
        }));
    }
    done.permit = Some(permit);
    Ok(())
}

/// Every limit whose paths match must have a token for the request's key. A request refused
/// by one limit takes no token from the ones after it.
fn rate_limit<'r>(
    route: &'r Route,
    req: &Request<Incoming>,
    client: IpAddr,
    now: Instant,
) -> Result<(), Rejection<'r>> {
    // Paths are compared decoded, so `/%6Cogin` is counted as the `/login` the app will see.
    let mut decoded: Option<Cow<'_, str>> = None;
    for limiter in &route.limiters {
        let spec = &limiter.spec;
        if !spec.paths.is_empty() {
            let path = decoded
                .get_or_insert_with(|| percent_decode_str(req.uri().path()).decode_utf8_lossy());
            if !spec.paths.iter().any(|p| prefix_matches(p, path)) {
                continue;
            }
        }
        let key = match &spec.key {
            RateKey::Header(name) => req
                .headers()
                .get(name)
                .map_or(Key::Ip(client), |v| Key::Header(v.as_bytes())),
            RateKey::ClientIp => Key::Ip(client),
        };
        if let Decision::Deny { retry_after } = limiter.check(key, now) {
            return Err(Rejection::Limit(ProxyError::RateLimited {
                kind: spec.kind,
                retry_after_secs: retry_after_secs(retry_after),
            }));
        }
    }
    Ok(())
}

pub(super) fn rejection_response(
    shared: &Shared,
    route: &Route,
    rejection: Rejection<'_>,
    mut done: Box<Completion>,
) -> Response<ResponseBody> {
    match rejection {
        Rejection::Maintenance(m) => {
            shared.metrics.reject(&route.name, "maintenance");
            done.set_error("maintenance");
            let mut resp = edge_response(
                done,
                StatusCode::SERVICE_UNAVAILABLE,
                m.page.clone(),
                Some(route),
            );
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            h.insert(
                header::RETRY_AFTER,
                HeaderValue::from(m.retry_after.as_secs()),
            );
            resp
        }
        Rejection::Limit(e) => {
            shared.metrics.reject(&route.name, e.reason());
            done.set_error(e.reason());
            let body = client_message(&e, &done.request_id);
            let retry_after = match e {
                ProxyError::Overloaded { .. } => Some(1),
                ProxyError::RateLimited {
                    retry_after_secs, ..
                } => Some(retry_after_secs),
                _ => None,
            };
            let mut resp = edge_response(done, e.status(), body, Some(route));
            if let Some(secs) = retry_after {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            resp
        }
    }
}
