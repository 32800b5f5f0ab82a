//! The request lifecycle, one function per phase:
//!
//! 1. [`identify`]: request id, host, what gets logged.
//! 2. route: host and path to a [`Route`] (404 when none).
//! 3. [`admit`]: limits (431, 413), maintenance (503) and the route's concurrency (503).
//! 4. [`forward`]: pick a release and an instance, send, retry when it is safe.
//! 5. [`respond`]: response headers (hop-by-hop, security, request id, cohort cookie) and a
//!    body that finishes the exchange when its last byte is sent.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;

use crate::access_log::AccessLog;
use crate::body::{RequestBody, ResponseBody};
use crate::error::ProxyError;
use crate::exchange::{Completion, ConnInfo, RoutePermit, edge_release};
use crate::headers;
use crate::health::Outcome;
use crate::metrics::{EdgeMetrics, GroupLabels, RouteLabels};
use crate::select::{self, ReleasePick};
use crate::spec::ClientLimits;
use crate::table::{Route, Table};
use crate::upstream::{InFlight, Sender};

/// State shared by every connection.
pub struct Shared {
    pub table: ArcSwap<Table>,
    pub limits: ArcSwap<ClientLimits>,
    pub metrics: Arc<EdgeMetrics>,
    pub log: AccessLog,
}

pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    mut req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let mut done = identify(&shared, &conn, &req);
    let table = shared.table.load();
    let Some(route) = table.lookup(&done.host, req.uri().path()) else {
        shared.metrics.reject("-", "no_route");
        let msg = format!("no site is configured for host '{}'\n", done.host);
        return Ok(edge_response(done, StatusCode::NOT_FOUND, msg, None));
    };
    done.route = route.name.clone();
    done.metrics = Some(route.edge_metrics.clone());
    if let Err(rejection) = admit(&shared, route, &req, &mut done) {
        return Ok(rejection_response(&shared, route, rejection, done));
    }
    let pick = select::release_pick(&route.group, req.headers());
    let client_upgrade =
        headers::upgrade_token(req.headers()).map(|t| (t, hyper::upgrade::on(&mut req)));
    match forward(&shared, route, &pick, req, &mut done).await {
        Ok(sent) => Ok(respond(&shared, route, &pick, sent, client_upgrade, done)),
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
fn identify(shared: &Shared, conn: &Arc<ConnInfo>, req: &Request<Incoming>) -> Box<Completion> {
    let host = request_host(req);
    let logging = shared.log.enabled();
    Box::new(Completion {
        start: Instant::now(),
        time: if logging {
            SystemTime::now()
        } else {
            SystemTime::UNIX_EPOCH
        },
        conn: conn.clone(),
        _active: conn.activity.begin(),
        request_id: headers::request_id(req.headers()),
        method: req.method().clone(),
        host,
        // Only the access log needs an owned copy of the path.
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
        log: shared.log.clone(),
    })
}

/// Lower-case host without port, from the URI authority (HTTP/2) or the Host header.
fn request_host(req: &Request<Incoming>) -> String {
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
        raw.to_ascii_lowercase()
    } else {
        raw.to_owned()
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

/// Why phase 3 refused a request.
enum Rejection {
    Limit(ProxyError),
    Maintenance,
}

/// Phase 3: refuse what the route will not take, before touching an upstream.
fn admit(
    shared: &Shared,
    route: &Route,
    req: &Request<Incoming>,
    done: &mut Completion,
) -> Result<(), Rejection> {
    let limits = shared.limits.load();
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
            return Err(Rejection::Maintenance);
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

fn rejection_response(
    shared: &Shared,
    route: &Route,
    rejection: Rejection,
    mut done: Box<Completion>,
) -> Response<ResponseBody> {
    match rejection {
        Rejection::Maintenance => {
            shared.metrics.reject(&route.name, "maintenance");
            done.set_error("maintenance");
            let page = route
                .spec
                .maintenance
                .as_ref()
                .map(|m| (m.page.clone(), m.retry_after.as_secs()))
                .unwrap_or_default();
            let mut resp =
                edge_response(done, StatusCode::SERVICE_UNAVAILABLE, page.0, Some(route));
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            h.insert(header::RETRY_AFTER, HeaderValue::from(page.1));
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

/// A response from the upstream, and what is needed to finish the exchange.
pub struct Sent {
    pub response: Response<Incoming>,
    pub inflight: InFlight,
    pub sender: Sender,
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Phase 4: send upstream, retrying only where it cannot apply the request twice.
async fn forward(
    shared: &Shared,
    route: &Route,
    pick: &ReleasePick,
    req: Request<Incoming>,
    done: &mut Completion,
) -> Result<Sent, ProxyError> {
    let spec = &route.spec;
    let group = &route.group;
    let started = Instant::now();
    done.deadline = Some(tokio::time::Instant::from_std(
        started + spec.timeouts.total,
    ));
    let (parts, body) = req.into_parts();
    let bodyless = http_body::Body::is_end_stream(&body);
    let replayable = is_idempotent(&parts.method) && bodyless;
    let (body, client_body) = if bodyless {
        (RequestBody::Empty, Default::default())
    } else {
        RequestBody::limited(body, spec.max_body_bytes)
    };
    let mut pending = Some(upstream_request(parts, body, route, done)?);
    let mut tried: Vec<Arc<crate::upstream::Upstream>> = Vec::new();
    let mut last_err = ProxyError::NoUpstream;
    let attempts = spec.retry.attempts.max(1);
    for attempt in 1..=attempts {
        if attempt > 1 {
            if started.elapsed() >= spec.retry.budget {
                break;
            }
            shared
                .metrics
                .retries
                .get_or_create(&RouteLabels {
                    route: route.name.to_string(),
                })
                .inc();
        }
        let Some(req) = pending.take() else { break };
        let now = Instant::now();
        let Some(choice) = select::choose(group, pick, &tried, now) else {
            return Err(ProxyError::NoUpstream);
        };
        if choice.fail_open {
            shared
                .metrics
                .fail_open
                .get_or_create(&GroupLabels {
                    group: group.name.to_string(),
                })
                .inc();
        }
        done.attempts = attempt;
        done.release = group.pools[choice.pool].release.clone();
        done.metrics = Some(route.metrics[choice.pool].clone());
        let upstream = choice.upstream;
        let inflight = upstream.begin();
        tried.push(upstream.clone());
        done.upstream = None;
        let mut conn = match upstream.checkout(spec.timeouts.connect).await {
            Ok(c) => c,
            Err(e) => {
                upstream.record(Outcome::Failure, Instant::now());
                shared.metrics.upstream_error(&route.name, e.reason());
                last_err = e;
                pending = Some(req);
                done.upstream = Some(inflight);
                continue;
            }
        };
        let backup = (conn.reused && replayable).then(|| replay_of(&req));
        let remaining = spec.timeouts.total.saturating_sub(started.elapsed());
        let wait = spec.timeouts.response_header.min(remaining);
        match tokio::time::timeout(wait, conn.sender.try_send_request(req)).await {
            Ok(Ok(response)) => {
                let outcome = if response.status().is_server_error() {
                    Outcome::Failure
                } else {
                    Outcome::Success
                };
                upstream.record(outcome, Instant::now());
                return Ok(Sent {
                    response,
                    inflight,
                    sender: conn.sender,
                });
            }
            Ok(Err(mut e)) => {
                done.upstream = Some(inflight);
                if client_body.too_large() {
                    return Err(ProxyError::BodyTooLarge {
                        limit: spec.max_body_bytes,
                    });
                }
                if client_body.malformed() {
                    return Err(ProxyError::BadRequestBody);
                }
                let reason = e.error().to_string();
                if let Some(unsent) = e.take_message() {
                    // Never written: safe to send anywhere, whatever the method.
                    pending = Some(unsent);
                } else if let Some(again) = backup {
                    // A kept-alive connection the upstream had already closed.
                    pending = Some(again);
                } else {
                    upstream.record(Outcome::Failure, Instant::now());
                    shared.metrics.upstream_error(&route.name, "upstream");
                    return Err(ProxyError::Upstream {
                        upstream: upstream.label.to_string(),
                        reason,
                        retry_safe: false,
                    });
                }
                shared
                    .metrics
                    .upstream_error(&route.name, "dead_connection");
                last_err = ProxyError::Upstream {
                    upstream: upstream.label.to_string(),
                    reason,
                    retry_safe: true,
                };
            }
            Err(_) => {
                upstream.record(Outcome::Failure, Instant::now());
                shared.metrics.upstream_error(&route.name, "timeout");
                done.upstream = Some(inflight);
                return Err(ProxyError::ResponseTimeout {
                    upstream: upstream.label.to_string(),
                    secs: wait.as_secs_f64(),
                });
            }
        }
    }
    Err(last_err)
}

/// The request as the upstream sees it: origin-form URI (prefix stripped if asked), HTTP/1.1,
/// Host kept, hop-by-hop removed, forwarding headers and request id set, route rules applied.
fn upstream_request(
    mut parts: http::request::Parts,
    body: RequestBody,
    route: &Route,
    done: &Completion,
) -> Result<Request<RequestBody>, ProxyError> {
    let original_host = match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => parts.headers.get(header::HOST).cloned(),
    };
    let path_and_query = match parts.uri.path_and_query().cloned() {
        Some(pq) if route.spec.strip_prefix && route.spec.path_prefix != "/" => {
            let prefix = route.spec.path_prefix.trim_end_matches('/');
            let rest = pq.as_str().strip_prefix(prefix).unwrap_or(pq.as_str());
            let rewritten = if rest.is_empty() || rest.starts_with('?') {
                format!("/{rest}")
            } else {
                rest.to_owned()
            };
            rewritten
                .parse::<http::uri::PathAndQuery>()
                .map_err(|e| ProxyError::Internal(format!("rewritten path: {e}")))?
        }
        Some(pq) => pq,
        None => http::uri::PathAndQuery::from_static("/"),
    };
    let mut uri = http::uri::Parts::default();
    uri.path_and_query = Some(path_and_query);
    parts.uri =
        Uri::from_parts(uri).map_err(|e| ProxyError::Internal(format!("rewritten URI: {e}")))?;
    parts.version = Version::HTTP_11;
    let upgrade = headers::upgrade_token(&parts.headers);
    headers::strip_hop_by_hop(&mut parts.headers, upgrade.as_ref());
    if let Some(h) = &original_host {
        parts.headers.insert(header::HOST, h.clone());
    }
    headers::set_forwarded(
        &mut parts.headers,
        &done.conn.peer_ip,
        done.conn.proto,
        original_host,
    );
    parts
        .headers
        .insert(headers::X_REQUEST_ID, done.request_id.clone());
    headers::apply_rules(&mut parts.headers, &route.spec.request_headers);
    Ok(Request::from_parts(parts, body))
}

fn replay_of(req: &Request<RequestBody>) -> Request<RequestBody> {
    let mut again = Request::new(RequestBody::Empty);
    *again.method_mut() = req.method().clone();
    *again.uri_mut() = req.uri().clone();
    *again.version_mut() = req.version();
    *again.headers_mut() = req.headers().clone();
    again
}

/// Phase 5: the upstream's response as the client sees it.
fn respond(
    shared: &Shared,
    route: &Route,
    pick: &ReleasePick,
    sent: Sent,
    client_upgrade: Option<(HeaderValue, hyper::upgrade::OnUpgrade)>,
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
    if let (Some(_), Some((_, client_side))) = (&upgrade, client_upgrade) {
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
    Response::from_parts(parts, ResponseBody::upstream(body, done))
}

fn finish_headers(h: &mut http::HeaderMap, route: &Route, done: &Completion) {
    headers::apply_security(h, &route.spec.security);
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
fn client_message(e: &ProxyError, request_id: &HeaderValue) -> String {
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
fn edge_response(
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
