//! Phase 5: the response as the client sees it, and the answers the edge writes itself.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::Shared;
use super::forward::Sent;
use crate::body::{BoxBody, ResponseBody};
use crate::compress;
use crate::error::ProxyError;
use crate::exchange::Completion;
use crate::headers;
use crate::metrics::EdgeMetrics;
use crate::select::ReleasePick;
use crate::static_files::FileBody;
use crate::table::Route;

/// Phase 5: the upstream's response as the client sees it.
pub(super) fn respond(
    shared: &Shared,
    route: &Route,
    pick: &ReleasePick,
    sent: Sent,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    compression: Option<compress::Plan>,
    mut done: Box<Completion>,
) -> Response<ResponseBody> {
    let Sent {
        mut response,
        inflight,
        sender,
        ..
    } = sent;
    done.status = response.status().as_u16();
    let upgrade = if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        headers::upgrade_token(response.headers())
    } else {
        None
    };
    if let (Some(_), Some(client_side)) = (&upgrade, client_upgrade) {
        let upstream_side = hyper::upgrade::on(&mut response);
        tunnel(shared.metrics.clone(), client_side, upstream_side);
    }
    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, upgrade.as_ref());
    finish_headers(&mut parts.headers, route, &done);
    if let Some((cohort, true)) = pick.cohort
        && let Some(sticky) = &route.group.spec.sticky
        && let Ok(v) = HeaderValue::from_str(&format!(
            "{}={cohort}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax",
            sticky.cookie,
            sticky.ttl.as_secs()
        ))
    {
        parts.headers.append(header::SET_COOKIE, v);
    }
    done.upstream = Some(inflight);
    // An upgraded connection belongs to the tunnel, never to the pool.
    done.sender = upgrade.is_none().then_some(sender);
    if let Some(plan) = compression
        && upgrade.is_none()
        && let Some(encoder) = compressor(route, &plan, &mut parts)
    {
        let body = Box::pin(compress::Compressed::new(body, encoder));
        return Response::from_parts(parts, ResponseBody::boxed(body, done));
    }
    Response::from_parts(parts, ResponseBody::upstream(body, done))
}

/// A file from the route's static directory, as the client sees it.
pub(super) fn respond_static(
    route: &Route,
    compression: Option<compress::Plan>,
    file: Response<FileBody>,
    mut done: Box<Completion>,
) -> Response<ResponseBody> {
    let (mut parts, body) = file.into_parts();
    done.status = parts.status.as_u16();
    finish_headers(&mut parts.headers, route, &done);
    let body: BoxBody = match compression.and_then(|plan| compressor(route, &plan, &mut parts)) {
        Some(encoder) => Box::pin(compress::Compressed::new(body, encoder)),
        None => Box::pin(body),
    };
    Response::from_parts(parts, ResponseBody::boxed(body, done))
}

/// An encoder when the route compresses this response (its head is then marked for it).
fn compressor(
    route: &Route,
    plan: &compress::Plan,
    parts: &mut http::response::Parts,
) -> Option<compress::Encoder> {
    let spec = route.spec.policies.compression.as_ref()?;
    let encoding = compress::prepare(plan, spec, parts.status, &mut parts.headers)?;
    match compress::Encoder::new(encoding) {
        Ok(encoder) => {
            compress::mark(&mut parts.headers, encoding);
            if let Some((_, counter)) = route.compressed.iter().find(|(e, _)| *e == encoding) {
                counter.inc();
            }
            Some(encoder)
        }
        Err(e) => {
            // Sent as it is: uncompressed is still a correct answer.
            tracing::warn!(error = %e, "cannot start a compressor");
            None
        }
    }
}

/// The edge's answer to a request it refuses after admission (static files): counted by
/// reason, except a plain missing file, which is an answer like any app's 404.
pub(super) fn refuse(
    shared: &Shared,
    route: &Route,
    e: ProxyError,
    mut done: Box<Completion>,
) -> Response<ResponseBody> {
    if !matches!(e, ProxyError::NotFound) {
        shared.metrics.reject(&route.name, e.reason());
        done.set_error(e.reason());
    }
    let body = client_message(&e, &done.request_id);
    let mut resp = edge_response(done, e.status(), body, Some(route));
    let h = resp.headers_mut();
    match e {
        ProxyError::MethodNotAllowed => {
            h.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        ProxyError::RangeNotSatisfiable { len } => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                h.insert(header::CONTENT_RANGE, v);
            }
        }
        _ => {}
    }
    resp
}

fn finish_headers(h: &mut http::HeaderMap, route: &Route, done: &Completion) {
    headers::apply_security(h, &route.spec.security, done.conn.is_tls());
    headers::apply_rules(h, &route.spec.response_headers);
    h.insert(headers::X_REQUEST_ID, done.request_id.clone());
}

fn tunnel(
    metrics: Arc<EdgeMetrics>,
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
) {
    tokio::spawn(async move {
        let (Ok(c), Ok(u)) = tokio::join!(client, upstream) else {
            return;
        };
        metrics.open_upgrades.inc();
        let mut c = hyper_util::rt::TokioIo::new(c);
        let mut u = hyper_util::rt::TokioIo::new(u);
        let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
        metrics.open_upgrades.dec();
    });
}

/// What a client is told. Upstream faults stay vague on purpose: addresses and error details
/// go to the log, keyed by the request id shown here.
pub(super) fn client_message(e: &ProxyError, request_id: &HeaderValue) -> String {
    let id = String::from_utf8_lossy(request_id.as_bytes());
    let what = match e {
        ProxyError::Connect { .. } | ProxyError::Upstream { .. } => {
            "the application could not be reached or failed to answer".to_owned()
        }
        ProxyError::ResponseTimeout { .. } => "the application did not answer in time".to_owned(),
        ProxyError::NoUpstream => "no instance of the application is running".to_owned(),
        other => other.to_string(),
    };
    format!(
        "{} {}: {what}\nrequest id: {id}\n",
        e.status().as_u16(),
        e.status().canonical_reason().unwrap_or("")
    )
}

/// A response the edge writes itself (404, 413, 431, 502, 503, 504...).
pub(super) fn edge_response(
    mut done: Box<Completion>,
    status: StatusCode,
    body: String,
    route: Option<&Route>,
) -> Response<ResponseBody> {
    done.status = status.as_u16();
    let mut headers = http::HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    match route {
        Some(r) => finish_headers(&mut headers, r, &done),
        None => {
            headers.insert(headers::X_REQUEST_ID, done.request_id.clone());
        }
    }
    let mut resp = Response::new(ResponseBody::full(Bytes::from(body), done));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// The development CRL. Clients may cache it for an hour: it is re-signed days before its
/// nextUpdate, and revoking nothing, a stale copy changes no answer.
pub(super) fn crl_response(mut done: Box<Completion>, der: Bytes) -> Response<ResponseBody> {
    done.status = StatusCode::OK.as_u16();
    let request_id = done.request_id.clone();
    let mut resp = Response::new(ResponseBody::full(der, done));
    let headers = resp.headers_mut();
    headers.insert(headers::X_REQUEST_ID, request_id);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::tls::CRL_CONTENT_TYPE),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    resp
}

/// 308 to the same host and path over HTTPS. Only called for hosts a certificate covers, so
/// the host is a checked DNS name and the redirect cannot point anywhere else.
pub(super) fn redirect_to_https<B>(
    done: Box<Completion>,
    route: &Route,
    port: u16,
    host: &str,
    req: &http::Request<B>,
) -> Response<ResponseBody> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = https_location(host, port, path);
    let value = HeaderValue::from_str(&location);
    let mut resp = edge_response(
        done,
        StatusCode::PERMANENT_REDIRECT,
        format!("308 Permanent Redirect: {location}\n"),
        Some(route),
    );
    if let Ok(v) = value {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

const HTTPS_DEFAULT_PORT: u16 = 443;

/// `https://host[:port]/path?query`, the port left out when it is 443.
fn https_location(host: &str, port: u16, path: &str) -> String {
    if port == HTTPS_DEFAULT_PORT {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::https_location;

    #[test]
    fn the_https_port_is_written_only_when_it_is_not_443() {
        assert_eq!(
            https_location("example.com", 443, "/a?b=1"),
            "https://example.com/a?b=1"
        );
        assert_eq!(
            https_location("example.com", 8443, "/"),
            "https://example.com:8443/"
        );
    }
}
