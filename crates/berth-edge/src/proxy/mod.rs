//! The request lifecycle, one function per phase:
//!
//! 1. [`identify`]: request id, host, what gets logged.
//! 2. route: host and path to a [`Route`] (404 when none); a plain-HTTP request for a host
//!    that has a certificate is redirected to HTTPS (308) unless the route says otherwise.
//! 3. [`admit`]: limits (431, 413), client address lists (403), maintenance (503), rate
//!    limits (429) and the route's concurrency (503). The client's address is settled just
//!    before, from trusted proxies' X-Forwarded-For.
//! 4. [`forward`]: pick a release and an instance, send, retry when it is safe. A route with
//!    static files answers from them first (`static_files`), and forwards only what it falls
//!    back on.
//! 5. [`respond`]: response headers (hop-by-hop, security, request id, cohort cookie),
//!    compression when the route asks for it, and a body that finishes the exchange when its
//!    last byte is sent.
mod admit;
mod forward;
mod respond;

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use http::header;
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use crate::access_log::AccessLog;
use crate::body::ResponseBody;
use crate::compress;
use crate::error::ProxyError;
use crate::exchange::{Completion, ConnInfo, edge_release};
use crate::headers;
use crate::metrics::EdgeMetrics;
use crate::select;
use crate::static_files;
use crate::table::Table;

use admit::{admit, rejection_response};
use forward::forward;
use respond::{
    client_message, crl_response, edge_response, redirect_to_https, refuse, respond, respond_static,
};

/// State shared by every connection.
pub struct Shared {
    pub table: ArcSwap<Table>,
    pub metrics: Arc<EdgeMetrics>,
    pub log: AccessLog,
    pub tls: Arc<crate::tls::Tls>,
}

pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    mut req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let host = request_host(&req);
    let mut done = identify(&conn, &req, &host);
    // ACME HTTP-01 validation of a pending order, before any route (or redirect) applies.
    if !conn.is_tls()
        && let Some(token) = req
            .uri()
            .path()
            .strip_prefix(crate::tls::acme::HTTP01_PREFIX)
        && let Some(answer) = shared.tls.http01(token)
    {
        return Ok(edge_response(done, StatusCode::OK, answer, None));
    }
    // The development CA's CRL, named in its certificates; before routing so that it is
    // reachable over plain HTTP (a CRL is not fetched over the TLS it vouches for).
    if req.uri().path() == crate::tls::CRL_PATH
        && matches!(*req.method(), http::Method::GET | http::Method::HEAD)
        && let Some(der) = shared.tls.dev_crl(&host)
    {
        return Ok(crl_response(done, der));
    }
    let table = shared.table.load();
    if !table.proxies.networks.is_empty() {
        done.client = crate::client_ip::resolve(conn.peer.ip(), req.headers(), &table.proxies);
    }
    let Some(route) = table.lookup(&host, req.uri().path()) else {
        shared.metrics.reject("-", ProxyError::NoRoute.reason());
        let msg = format!("no site is configured for host '{host}'\n");
        return Ok(edge_response(done, StatusCode::NOT_FOUND, msg, None));
    };
    done.route = route.name.clone();
    done.metrics = Some(route.edge_metrics.clone());
    if !conn.is_tls()
        && route.spec.https_redirect
        && let Some(port) = shared.tls.redirect_port(&host)
    {
        return Ok(redirect_to_https(done, route, port, &host, &req));
    }
    if let Err(rejection) = admit(&table.limits, route, &req, &mut done) {
        return Ok(rejection_response(&shared, route, rejection, done));
    }
    // Taken now: forwarding consumes the request.
    let compression = route
        .spec
        .policies
        .compression
        .as_ref()
        .map(|c| compress::plan(c, req.method(), req.headers()));
    if let Some(files) = &route.spec.policies.static_files {
        let served = static_files::serve(
            files,
            &route.spec.path_prefix,
            req.method(),
            req.uri().path(),
            req.headers(),
        )
        .await;
        match served {
            static_files::Outcome::Serve(resp) => {
                return Ok(respond_static(route, compression, resp, done));
            }
            static_files::Outcome::Refused(e) => return Ok(refuse(&shared, route, e, done)),
            static_files::Outcome::Fallback => {}
        }
    }
    let pick = select::release_pick(&route.group, req.headers());
    let upgrade = headers::upgrade_token(req.headers());
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    match forward(&shared, route, &pick, req, upgrade.as_ref(), &mut done).await {
        Ok(sent) => Ok(respond(
            &shared,
            route,
            &pick,
            sent,
            client_upgrade,
            compression,
            done,
        )),
        Err(e) => {
            // Upstream faults were counted per attempt in `forward`.
            if e.fault() != crate::error::Fault::Upstream {
                shared.metrics.reject(&route.name, e.reason());
            } else if matches!(e, ProxyError::NoUpstream) {
                shared.metrics.upstream_error(&route.name, e.reason());
            }
            done.set_error(e.reason());
            tracing::debug!(request_id = ?done.request_id, error = %e, "request failed");
            let status = e.status();
            let body = client_message(&e, &done.request_id);
            Ok(edge_response(done, status, body, Some(route)))
        }
    }
}

/// Phase 1: what the exchange is, before anything can fail.
fn identify(conn: &Arc<ConnInfo>, req: &Request<Incoming>, host: &str) -> Box<Completion> {
    let logging = conn.log.enabled();
    Box::new(Completion {
        start: Instant::now(),
        time: if logging {
            SystemTime::now()
        } else {
            SystemTime::UNIX_EPOCH
        },
        conn: conn.clone(),
        client: conn.peer.ip(),
        _active: conn.activity.begin(),
        request_id: headers::request_id(req.headers()),
        method: req.method().clone(),
        // Only the access log needs owned copies of the host and path.
        host: if logging {
            host.to_owned()
        } else {
            String::new()
        },
        path: if logging {
            req.uri()
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned())
        } else {
            String::new()
        },
        protocol: match req.version() {
            Version::HTTP_2 => "HTTP/2",
            Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        },
        status: 0,
        route: edge_release(),
        release: edge_release(),
        metrics: None,
        permit: None,
        attempts: 0,
        upstream: None,
        sender: None,
        deadline: None,
        error: None,
    })
}

/// Lower-case host without port, from the URI authority (HTTP/2) or the Host header. Borrowed
/// unless it has upper-case letters: most requests need no copy.
fn request_host(req: &Request<Incoming>) -> Cow<'_, str> {
    let raw = req
        .uri()
        .authority()
        .map(|a| a.host())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(strip_port)
        })
        .unwrap_or("");
    if raw.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(raw.to_ascii_lowercase())
    } else {
        Cow::Borrowed(raw)
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [::1]:8080 keeps its brackets.
        return host
            .split_once(']')
            .map(|(h, _)| &host[..=h.len()])
            .unwrap_or(host);
    }
    host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::strip_port;

    #[test]
    fn host_port_is_stripped() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
    }
}
