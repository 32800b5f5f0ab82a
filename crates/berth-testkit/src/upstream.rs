//! [`FakeUpstream`]: a real HTTP/1.1 server on loopback whose misbehaviour is
//! scripted, for testing a proxy against upstreams that fail in known ways.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::seen_request::SeenRequest;
use crate::status_mix::StatusMix;
use crate::upstream_server;

/// A fake upstream HTTP/1.1 server on 127.0.0.1.
///
/// Requests to the *health path* (default `/health`) answer `200 ok`, or
/// `503 unhealthy` while unhealthy, and are counted by
/// [`health_checks`](Self::health_checks) rather than
/// [`request_count`](Self::request_count).
///
/// `/echo`, `/sse`, `/ws` and `/trailers` behave like the berth-demo app's
/// routes and ignore every fault setting:
/// - `/echo` answers JSON with `upstream`, `method`, `path`, `query`,
///   `version`, `headers` (name → list of values), `body_bytes` and `body`;
/// - `/sse?n=5&interval_ms=100` streams `data: i\n\n` events chunked, one per interval;
/// - `/ws` with an `Upgrade` header answers 101 and then echoes raw bytes;
/// - `/trailers` sends `hello` and the trailer `x-checksum: abc123` (hyper
///   only sends trailers when the request has `TE: trailers`).
///
/// Every other path is a *normal* path, where the builder's faults apply: the
/// status comes from the mix (or [`set_status`](Self::set_status)), the body is
/// the configured body or the upstream's name, and every response carries
/// `x-upstream: <name>`.
///
/// Every request is recorded, body included, before it is answered or dropped.
///
/// Dropping the handle stops the server too; [`stop`](Self::stop) does it and
/// waits until every connection is closed.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use berth_testkit::{FakeUpstream, http_get};
///
/// let up = FakeUpstream::builder()
///     .name("a")
///     .status_mix(&[(200, 1), (503, 1)])
///     .start()
///     .await;
/// let (status, headers, body) = http_get(up.addr(), "/", "example.test").await;
/// assert_eq!(status, 200);
/// assert_eq!(headers["x-upstream"], "a");
/// assert_eq!(body, "a");
/// let (status, _, _) = http_get(up.addr(), "/again", "example.test").await;
/// assert_eq!(status, 503);
/// assert_eq!(up.request_count(), 2);
/// assert_eq!(up.requests()[0].header("host"), Some("example.test"));
/// up.stop().await;
/// # }
/// ```
#[derive(Debug)]
pub struct FakeUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop_tx: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

/// Configures a [`FakeUpstream`]; see [`FakeUpstream::builder`].
#[derive(Debug, Clone)]
#[must_use = "call .start().await to run the upstream"]
pub struct FakeUpstreamBuilder {
    name: Option<String>,
    bind: Option<SocketAddr>,
    latency: Duration,
    status_mix: Vec<(u16, u32)>,
    drop_every: u64,
    drop_mid_body: Option<usize>,
    slow_body: Option<(usize, Duration)>,
    body: Option<Bytes>,
    headers: Vec<(HeaderName, HeaderValue)>,
    health_path: String,
    unhealthy: bool,
}

/// The fixed plan plus the live state shared with the connection tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) name_header: HeaderValue,
    pub(crate) latency: Duration,
    pub(crate) drop_every: u64,
    pub(crate) drop_mid_body: Option<usize>,
    pub(crate) slow_body: Option<(usize, Duration)>,
    pub(crate) body: Bytes,
    /// Added to every normal response.
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) health_path: String,
    pub(crate) healthy: AtomicBool,
    /// 0 means "use the mix".
    pub(crate) status_override: AtomicU16,
    pub(crate) mix: Mutex<StatusMix>,
    pub(crate) requests: Mutex<Vec<SeenRequest>>,
    pub(crate) health_requests: Mutex<Vec<SeenRequest>>,
    pub(crate) normal_requests: AtomicU64,
    pub(crate) connections: AtomicUsize,
}

/// A panic in one test thread must not hide what was recorded from the others.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FakeUpstream {
    /// A builder with no faults: every normal request gets `200` and the name as body.
    pub fn builder() -> FakeUpstreamBuilder {
        FakeUpstreamBuilder {
            name: None,
            bind: None,
            latency: Duration::ZERO,
            status_mix: Vec::new(),
            drop_every: 0,
            drop_mid_body: None,
            slow_body: None,
            body: None,
            headers: Vec::new(),
            health_path: "/health".to_string(),
            unhealthy: false,
        }
    }

    /// Shorthand for `FakeUpstream::builder().name(name).start().await`.
    pub async fn start_named(name: &str) -> FakeUpstream {
        FakeUpstream::builder().name(name).start().await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Every recorded request except health checks, in arrival order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        lock(&self.shared.requests).clone()
    }

    pub fn last_request(&self) -> Option<SeenRequest> {
        lock(&self.shared.requests).last().cloned()
    }

    /// Requests seen, health checks excluded; dropped requests included.
    pub fn request_count(&self) -> usize {
        lock(&self.shared.requests).len()
    }

    /// Requests to the health path, recorded like any other.
    pub fn health_requests(&self) -> Vec<SeenRequest> {
        lock(&self.shared.health_requests).clone()
    }

    pub fn health_checks(&self) -> usize {
        lock(&self.shared.health_requests).len()
    }

    /// Forgets recorded requests and health checks (counters of connections and
    /// the position in the status mix and drop cycle are kept).
    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
        lock(&self.shared.health_requests).clear();
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.shared.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Answers every normal request with `status` until [`clear_status`](Self::clear_status).
    ///
    /// # Panics
    /// If `status` is not 100-999.
    pub fn set_status(&self, status: u16) {
        assert!(
            StatusCode::from_u16(status).is_ok(),
            "set_status: {status} is not an HTTP status"
        );
        self.shared.status_override.store(status, Ordering::SeqCst);
    }

    /// Goes back to the status mix.
    pub fn clear_status(&self) {
        self.shared.status_override.store(0, Ordering::SeqCst);
    }

    /// TCP connections accepted so far.
    pub fn connections_accepted(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Closes the listener and every open connection (upgraded ones too), and
    /// waits for that to be done: afterwards connecting is refused.
    pub async fn stop(mut self) {
        let _ = self.stop_tx.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        let _ = self.stop_tx.send(true);
        if let Some(task) = self.task.take() {
            // Aborting drops the task's connection set, which aborts them all.
            task.abort();
        }
    }
}

impl FakeUpstreamBuilder {
    /// Sent as `x-upstream: <name>`, used as the default body and in `/echo`.
    /// Defaults to `upstream-<port>`.
    ///
    /// # Panics
    /// At start, if the name cannot be a header value.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Binds this address instead of `127.0.0.1:0`, e.g. to bring an upstream
    /// back on the port a stopped one had.
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = Some(addr);
        self
    }

    /// Waits this long before sending the response head of a normal request.
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Statuses for normal requests, with weights, handed out by smooth weighted
    /// round robin: with `&[(200, 90), (500, 10)]` every run of 100 answered
    /// requests has exactly 90 × 200 and 10 × 500, spread out. Empty means 200.
    ///
    /// # Panics
    /// At start, on a status outside 100-999 or a zero weight.
    pub fn status_mix(mut self, mix: &[(u16, u32)]) -> Self {
        self.status_mix = mix.to_vec();
        self
    }

    /// Every normal request gets this status.
    pub fn status(self, status: u16) -> Self {
        self.status_mix(&[(status, 1)])
    }

    /// Every `n`th normal request (the `n`th, `2n`th, ...) is read in full and
    /// recorded, then its connection is closed without any response. Dropped
    /// requests take no turn in the status mix. 0 turns this off.
    pub fn drop_connections_every(mut self, n: u64) -> Self {
        self.drop_every = n;
        self
    }

    /// Normal responses announce their full `Content-Length`, send only
    /// `after_bytes` of the body, then close the connection. A body not longer
    /// than `after_bytes` is padded with `x` to `after_bytes + 1` bytes so the
    /// cut is always short.
    pub fn drop_mid_body(mut self, after_bytes: usize) -> Self {
        self.drop_mid_body = Some(after_bytes);
        self
    }

    /// Normal response bodies go out in `chunks` pieces with `chunk_delay`
    /// between them (still with a `Content-Length`).
    pub fn slow_body(mut self, chunks: usize, chunk_delay: Duration) -> Self {
        self.slow_body = Some((chunks.max(1), chunk_delay));
        self
    }

    /// Body of normal responses; defaults to the name.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Adds a header to every normal response, e.g. `Content-Type` or `Content-Encoding`.
    ///
    /// # Panics
    /// If the name or value is invalid.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes())
            .unwrap_or_else(|_| panic!("FakeUpstream header name {name:?} is invalid"));
        let value = HeaderValue::from_str(value)
            .unwrap_or_else(|_| panic!("FakeUpstream header value {value:?} is invalid"));
        self.headers.push((name, value));
        self
    }

    /// Defaults to `/health`.
    pub fn health_path(mut self, path: impl Into<String>) -> Self {
        self.health_path = path.into();
        self
    }

    /// Starts with the health path answering 503.
    pub fn unhealthy(mut self, unhealthy: bool) -> Self {
        self.unhealthy = unhealthy;
        self
    }

    /// Binds and starts serving on the current tokio runtime.
    ///
    /// # Panics
    /// If the address cannot be bound (see [`try_start`](Self::try_start)), or
    /// on an invalid name or status mix.
    pub async fn start(self) -> FakeUpstream {
        let bind = self.bind;
        self.try_start()
            .await
            .unwrap_or_else(|e| panic!("FakeUpstream cannot bind {bind:?}: {e}"))
    }

    /// Like [`start`](Self::start), returning bind errors instead of panicking.
    pub async fn try_start(self) -> io::Result<FakeUpstream> {
        let bind = self
            .bind
            .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let name = self
            .name
            .unwrap_or_else(|| format!("upstream-{}", addr.port()));
        let name_header = HeaderValue::from_str(&name)
            .unwrap_or_else(|_| panic!("FakeUpstream name {name:?} is not a valid header value"));
        let shared = Arc::new(Shared {
            body: self.body.unwrap_or_else(|| Bytes::from(name.clone())),
            headers: self.headers,
            name,
            name_header,
            latency: self.latency,
            drop_every: self.drop_every,
            drop_mid_body: self.drop_mid_body,
            slow_body: self.slow_body,
            health_path: self.health_path,
            healthy: AtomicBool::new(!self.unhealthy),
            status_override: AtomicU16::new(0),
            mix: Mutex::new(StatusMix::new(&self.status_mix)),
            requests: Mutex::new(Vec::new()),
            health_requests: Mutex::new(Vec::new()),
            normal_requests: AtomicU64::new(0),
            connections: AtomicUsize::new(0),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(upstream_server::accept_loop(
            listener,
            shared.clone(),
            stop_rx,
        ));
        Ok(FakeUpstream {
            addr,
            shared,
            stop_tx,
            task: Some(task),
        })
    }
}
