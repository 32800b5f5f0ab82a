//! Phase 3: refuse what a route will not take, before any upstream is touched.

use std::sync::atomic::Ordering;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::Shared;
use super::respond::{client_message, edge_response};
use crate::body::ResponseBody;
use crate::error::ProxyError;
use crate::exchange::{Completion, RoutePermit};
use crate::spec::{ClientLimits, Maintenance};
use crate::table::Route;

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
    if let Some(m) = &route.spec.maintenance {
        let ip = done.conn.peer.ip();
        if !m.allow.iter().any(|net| net.contains(&ip)) {
            return Err(Rejection::Maintenance(m));
        }
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
            let overloaded = matches!(e, ProxyError::Overloaded { .. });
            let mut resp = edge_response(done, e.status(), body, Some(route));
            if overloaded {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(1));
            }
            resp
        }
    }
}
