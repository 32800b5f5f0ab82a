//! The request lifecycle, one function per phase:
//!
//! 1. [`identify`]: request id, host, what gets logged; [`check_host`]: a Host header that is
//!    missing (HTTP/1.1), repeated or malformed is a 400.
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
    if let Err(e) = check_host(&req) {
        shared.metrics.reject("-", e.reason());
        done.set_error(e.reason());
        let body = client_message(&e, &done.request_id);
        return Ok(edge_response(done, e.status(), body, None));
    }
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

/// The checks RFC 9112 §3.2 and RFC 9113 §8.3.1 ask of a server, so that nothing on a
/// request's path (a cache or proxy in front, the edge, the app) can read another host than
/// the edge routed on: more than one Host header, an HTTP/1.1 request without one, a value
/// that is not a host with an optional port, or an HTTP/2 Host that disagrees with
/// `:authority`.
fn check_host<B>(req: &Request<B>) -> Result<(), ProxyError> {
    let mut all = req.headers().get_all(header::HOST).iter();
    let (host, another) = (all.next(), all.next());
    if another.is_some() {
        return Err(ProxyError::BadHost("more than one Host header"));
    }
    let Some(host) = host else {
        return match req.version() {
            Version::HTTP_11 => Err(ProxyError::BadHost(
                "an HTTP/1.1 request must have a Host header",
            )),
            _ => Ok(()),
        };
    };
    // An empty value is how a client says the target has no authority.
    let host = host.as_bytes();
    if host.is_empty() {
        return Ok(());
    }
    if !host.iter().all(|&b| host_byte(b)) {
        return Err(ProxyError::BadHost("not a host name with an optional port"));
    }
    if req.version() == Version::HTTP_2
        && let Some(authority) = req.uri().authority()
        && !authority.as_str().as_bytes().eq_ignore_ascii_case(host)
    {
        return Err(ProxyError::BadHost("it names another host than :authority"));
    }
    Ok(())
}

/// A byte of RFC 3986's `host [ ":" port ]`: a name, an IPv4 address or a bracketed IP
/// literal, then digits. Not `@` (user info), `/`, `?`, `#` or spaces. Checked by hand, not by
/// parsing an `http::uri::Authority`, which would copy every request's Host.
fn host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%:[]".contains(&b)
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
    use super::{check_host, strip_port};
    use http::{Request, Version};

    fn host_check(version: Version, uri: &str, hosts: &[&str]) -> Result<(), String> {
        let mut req = Request::builder().version(version).uri(uri);
        for h in hosts {
            req = req.header("host", *h);
        }
        check_host(&req.body(()).expect("request")).map_err(|e| e.to_string())
    }

    #[test]
    fn host_headers_are_checked_as_the_rfcs_ask() {
        const HTTP_10: Version = Version::HTTP_10;
        const HTTP_11: Version = Version::HTTP_11;
        const HTTP_2: Version = Version::HTTP_2;
        assert!(host_check(HTTP_11, "/", &["app.test"]).is_ok());
        assert!(host_check(HTTP_11, "/", &["app.test:8080"]).is_ok());
        assert!(host_check(HTTP_11, "/", &["[::1]:8080"]).is_ok());
        assert!(host_check(HTTP_11, "/", &[""]).is_ok());
        assert!(host_check(HTTP_10, "/", &[]).is_ok());
        assert!(host_check(HTTP_2, "https://app.test/", &[]).is_ok());
        assert!(host_check(HTTP_2, "https://app.test/", &["APP.test"]).is_ok());
        for (version, uri, hosts, why) in [
            (HTTP_11, "/", &["a.test", "b.test"][..], "more than one"),
            (HTTP_10, "/", &["a.test", "a.test"][..], "more than one"),
            (HTTP_11, "/", &[][..], "must have a Host"),
            (HTTP_11, "/", &["u@a.test"][..], "not a host name"),
            (HTTP_11, "/", &["a.test/x"][..], "not a host name"),
            (HTTP_11, "/", &["a test"][..], "not a host name"),
            (HTTP_2, "https://a.test/", &["b.test"][..], "another host"),
        ] {
            let got = host_check(version, uri, hosts).expect_err(why);
            assert!(got.contains(why), "{hosts:?}: {got}");
        }
    }

    #[test]
    fn host_port_is_stripped() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
    }
}
