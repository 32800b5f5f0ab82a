//! What one request carries from its first phase to its last byte, and the bookkeeping done
//! exactly once when it ends: metrics, access log, passive health, connection reuse.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime};

use http::{HeaderValue, Method};

use crate::access_log::{AccessLog, AccessRecord};
use crate::conn_watch::{ActiveGuard, ConnActivity};
use crate::health::Outcome;
use crate::metrics::RouteMetrics;
use crate::table::EDGE_RELEASE;
use crate::upstream::{InFlight, Sender};

/// A client connection as the request phases see it.
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The peer's IP as a header value, formatted once per connection for X-Forwarded-For.
    pub peer_ip: HeaderValue,
    /// `"http"` or `"https"`, for X-Forwarded-Proto.
    pub proto: &'static str,
    pub activity: Arc<ConnActivity>,
}

impl ConnInfo {
    pub fn is_tls(&self) -> bool {
        self.proto == "https"
    }
}

/// Decrements a route's concurrency counter when the exchange ends.
pub struct RoutePermit(pub Arc<AtomicUsize>);

impl Drop for RoutePermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct Completion {
    pub start: Instant,
    pub time: SystemTime,
    pub conn: Arc<ConnInfo>,
    pub _active: ActiveGuard,
    pub request_id: HeaderValue,
    pub method: Method,
    pub host: String,
    pub path: String,
    pub protocol: &'static str,
    pub status: u16,
    pub route: Arc<str>,
    pub release: Arc<str>,
    pub metrics: Option<RouteMetrics>,
    pub permit: Option<RoutePermit>,
    pub attempts: u32,
    pub upstream: Option<InFlight>,
    /// The upstream connection, returned to its pool if the body ends cleanly.
    pub sender: Option<Sender>,
    pub deadline: Option<tokio::time::Instant>,
    pub error: Option<&'static str>,
    pub log: AccessLog,
}

impl Completion {
    pub fn deadline(&self) -> Option<tokio::time::Instant> {
        self.deadline
    }

    pub fn set_error(&mut self, e: &'static str) {
        self.error.get_or_insert(e);
    }

    pub fn finish(mut self, bytes: u64, clean: bool) {
        let elapsed = self.start.elapsed();
        if let Some(inflight) = &self.upstream {
            let up = inflight.upstream();
            if clean {
                if let Some(s) = self.sender.take() {
                    up.checkin(s);
                }
            } else if self.error == Some("upstream_body") || self.error == Some("total_timeout") {
                up.record(Outcome::Failure, Instant::now());
            }
        }
        if let Some(m) = &self.metrics {
            m.observe(self.status, elapsed.as_secs_f64());
        }
        if self.log.enabled() {
            self.log.log(AccessRecord {
                time: self.time,
                request_id: String::from_utf8_lossy(self.request_id.as_bytes()).into_owned(),
                client: self.conn.peer.ip(),
                host: std::mem::take(&mut self.host),
                method: self.method.to_string(),
                path: std::mem::take(&mut self.path),
                protocol: self.protocol,
                status: self.status,
                bytes,
                duration_ms: elapsed.as_secs_f64() * 1000.0,
                route: self.route.clone(),
                release: self.release.clone(),
                upstream: self.upstream.as_ref().map(|u| u.upstream().label.clone()),
                attempts: self.attempts,
                error: self.error,
            });
        }
    }
}

pub fn edge_release() -> Arc<str> {
    thread_local! {
        static EDGE: Arc<str> = Arc::from(EDGE_RELEASE);
    }
    EDGE.with(Arc::clone)
}
