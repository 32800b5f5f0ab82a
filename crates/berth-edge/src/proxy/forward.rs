//! Phase 4: choose an instance and send, retrying only where the request cannot be applied
//! twice.

use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, Uri, Version};
use hyper::body::Incoming;

use super::Shared;
use crate::body::RequestBody;
use crate::error::ProxyError;
use crate::exchange::Completion;
use crate::headers;
use crate::health::Outcome;
use crate::metrics::{GroupLabels, RouteLabels};
use crate::select::{self, ReleasePick};
use crate::table::Route;
use crate::upstream::{InFlight, Sender, Upstream};

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
pub(super) async fn forward(
    shared: &Shared,
    route: &Route,
    pick: &ReleasePick,
    req: Request<Incoming>,
    upgrade: Option<&HeaderValue>,
    done: &mut Completion,
) -> Result<Sent, ProxyError> {
    let spec = &route.spec;
    let group = &route.group;
    // The exchange's clock, started in `identify`: a few microseconds earlier than a fresh
    // read, and one clock read fewer per request.
    let started = done.start;
    let deadline = tokio::time::Instant::from_std(started + spec.timeouts.total);
    done.deadline = Some(deadline);
    let (parts, body) = req.into_parts();
    let bodyless = http_body::Body::is_end_stream(&body);
    let replayable = is_idempotent(&parts.method) && bodyless;
    let (body, client_body) = if bodyless {
        (RequestBody::Empty, Default::default())
    } else {
        RequestBody::limited(body, spec.max_body_bytes)
    };
    let mut pending = Some(upstream_request(parts, body, route, upgrade, done)?);
    // Instances that failed this request; filled only on a retry, so a request that succeeds
    // first time allocates nothing here.
    let mut tried: Vec<&Arc<Upstream>> = Vec::new();
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
        let now = if attempt == 1 {
            started
        } else {
            Instant::now()
        };
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
        // Releases the previous attempt's in-flight count, if any.
        done.upstream = None;
        let mut conn = match upstream.checkout(spec.timeouts.connect).await {
            Ok(c) => c,
            Err(e) => {
                upstream.record(Outcome::Failure);
                shared.metrics.upstream_error(&route.name, e.reason());
                // Connecting failed: nothing reached the application (retry_safe).
                if !e.retry_safe() {
                    return Err(e);
                }
                last_err = e;
                pending = Some(req);
                done.upstream = Some(inflight);
                tried.push(upstream);
                continue;
            }
        };
        let backup = (conn.reused && replayable).then(|| replay_of(&req));
        let sent_at = tokio::time::Instant::now();
        let answer_by = (sent_at + spec.timeouts.response_header).min(deadline);
        match tokio::time::timeout_at(answer_by, conn.sender.try_send_request(req)).await {
            Ok(Ok(response)) => {
                let outcome = if response.status().is_server_error() {
                    Outcome::Failure
                } else {
                    Outcome::Success
                };
                upstream.record(outcome);
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
                // Sendable again when it was never written (whatever the method), or when
                // it went to a kept-alive connection the upstream had already closed and is
                // replayable; the error records which, and that alone decides the retry.
                pending = e.take_message().or(backup);
                let err = ProxyError::Upstream {
                    upstream: upstream.label.to_string(),
                    reason: e.error().to_string(),
                    retry_safe: pending.is_some(),
                };
                if !err.retry_safe() {
                    upstream.record(Outcome::Failure);
                    shared.metrics.upstream_error(&route.name, "upstream");
                    return Err(err);
                }
                shared
                    .metrics
                    .upstream_error(&route.name, "dead_connection");
                last_err = err;
                tried.push(upstream);
            }
            Err(_) => {
                upstream.record(Outcome::Failure);
                shared.metrics.upstream_error(&route.name, "timeout");
                done.upstream = Some(inflight);
                return Err(ProxyError::ResponseTimeout {
                    upstream: upstream.label.to_string(),
                    secs: answer_by.saturating_duration_since(sent_at).as_secs_f64(),
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
    upgrade: Option<&HeaderValue>,
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
    headers::strip_hop_by_hop(&mut parts.headers, upgrade);
    if let Some(h) = &original_host {
        parts.headers.insert(header::HOST, h.clone());
    }
    // The client a trusted proxy named is formatted here; everyone else's address was
    // formatted once for the connection.
    let named;
    let client_ip = if done.client == done.conn.peer.ip() {
        &done.conn.peer_ip
    } else {
        named = HeaderValue::from_str(&done.client.to_string())
            .map_err(|e| ProxyError::Internal(format!("client address: {e}")))?;
        &named
    };
    headers::set_forwarded(
        &mut parts.headers,
        client_ip,
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
