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
    /// The client end of the connection: the TCP peer, or the source a trusted PROXY
    /// protocol header named.
    pub peer: SocketAddr,
    /// The peer's IP as a header value, formatted once per connection for X-Forwarded-For.
    pub peer_ip: HeaderValue,
    /// `"http"` or `"https"`, for X-Forwarded-Proto.
    pub proto: &'static str,
    pub activity: Arc<ConnActivity>,
    /// Held per connection, so a request does not clone the log's handles.
    pub log: AccessLog,
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

/// How a response body ended, which decides what happens to the upstream connection and
/// whether the upstream's health pays for it.
pub enum End {
    /// The last byte went out: the connection may serve another request.
    Clean,
    /// The upstream failed mid-body, or the total timeout passed: the access-log error label.
    UpstreamFault(&'static str),
    /// The client went away first; not the upstream's fault.
    ClientGone,
}

pub struct Completion {
    pub start: Instant,
    pub time: SystemTime,
    pub conn: Arc<ConnInfo>,
    /// The client's address: the peer's, or the one trusted proxies forwarded.
    pub client: std::net::IpAddr,
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
}

impl Completion {
    pub fn set_error(&mut self, e: &'static str) {
        self.error.get_or_insert(e);
    }

    pub fn finish(mut self, bytes: u64, end: End) {
        let elapsed = self.start.elapsed();
        let up = self.upstream.as_ref().map(InFlight::upstream);
        match end {
            End::Clean => {
                if let (Some(up), Some(s)) = (up, self.sender.take()) {
                    up.checkin(s);
                }
            }
            End::UpstreamFault(error) => {
                self.error.get_or_insert(error);
                if let Some(up) = up {
                    up.record(Outcome::Failure);
                }
            }
            End::ClientGone => {
                self.error.get_or_insert("client_closed");
            }
        }
        if let Some(m) = &self.metrics {
            m.observe(self.status, elapsed.as_secs_f64());
        }
        let log = &self.conn.log;
        if log.enabled() {
            log.log(AccessRecord {
                time: self.time,
                request_id: String::from_utf8_lossy(self.request_id.as_bytes()).into_owned(),
                client: self.client,
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
