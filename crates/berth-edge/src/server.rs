//! Listeners and client connections: HTTP/1.1 and h2c on one port (h2 and HTTP/1.1 by ALPN
//! on TLS ports), the idle watch, and graceful drain. Listeners are bound once;
//! reconfiguration never touches them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

use crate::conn_watch::{self, ConnActivity, Verdict, WatchedIo};
use crate::exchange::ConnInfo;
use crate::metrics::KindLabels;
use crate::proxy::{self, Shared};
use crate::proxy_protocol::{self, Header, ReadError, Rewind};
use crate::spec::ClientLimits;

/// Room above the configured header limit so the edge, not hyper, answers most oversized
/// heads (with a body that says what happened); hyper's own 431 remains the backstop.
const HEAD_BUFFER_FACTOR: usize = 4;
const MIN_READ_BUFFER: usize = 64 * 1024;
const H2_MAX_STREAMS: u32 = 256;

/// Live connections, so shutdown can wait for the last one.
#[derive(Default)]
pub struct Connections {
    live: AtomicUsize,
    all_closed: Notify,
}

impl Connections {
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    pub async fn wait_closed(&self) {
        loop {
            let notified = self.all_closed.notified();
            if self.live() == 0 {
                return;
            }
            notified.await;
        }
    }
}

struct Tracked(Arc<Connections>);

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.all_closed.notify_waiters();
        }
    }
}

pub async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    conns: Arc<Connections>,
    mut shutdown: watch::Receiver<bool>,
    tls: bool,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    conns.live.fetch_add(1, Ordering::AcqRel);
                    let tracked = Tracked(conns.clone());
                    let shared = shared.clone();
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        let opened = Instant::now();
                        let _ = stream.set_nodelay(true);
                        if let Some((stream, peer)) = proxy_header(stream, peer, &shared).await {
                            if tls {
                                serve_tls(stream, peer, opened, shared, shutdown).await;
                            } else {
                                serve(stream, peer, opened, "http", shared, shutdown).await;
                            }
                        }
                        drop(tracked);
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

fn builder(limits: &ClientLimits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    // berth's watchdog enforces the head and idle limits; hyper's timer (which also runs
    // while idle) is only a backstop that must never fire first.
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout + limits.idle_timeout)
        .max_buf_size((limits.max_header_bytes * HEAD_BUFFER_FACTOR).max(MIN_READ_BUFFER));
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(H2_MAX_STREAMS);
    b
}

/// The handshake gets what is left of `header_timeout` from the moment of accepting, and so
/// does the first request head after it: a silent client is cut at the same point as on a
/// plain port.
async fn serve_tls(
    stream: Rewind<TcpStream>,
    peer: std::net::SocketAddr,
    opened: Instant,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let timeout = shared.table.load().limits.header_timeout;
    let tls = shared.tls.clone();
    let stream = tokio::select! {
        s = tls.handshake(stream, timeout, opened) => s,
        _ = shutdown.changed() => None,
    };
    if let Some(stream) = stream {
        serve(stream, peer, opened, "https", shared, shutdown).await;
    }
}

async fn serve<I>(
    stream: I,
    peer: std::net::SocketAddr,
    opened: Instant,
    proto: &'static str,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    shared.metrics.connections.inc();
    shared.metrics.open_connections.inc();
    // Fixed for the connection's life: hyper's builder and the watchdog are set up once.
    let limits = shared.table.load().limits.clone();
    let activity = Arc::new(ConnActivity::new(opened));
    let info = Arc::new(ConnInfo {
        peer,
        peer_ip: http::HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or(http::HeaderValue::from_static("unknown")),
        proto,
        activity: activity.clone(),
        log: shared.log.clone(),
    });
    let svc_shared = shared.clone();
    let service = service_fn(move |req| proxy::handle(svc_shared.clone(), info.clone(), req));
    let builder = builder(&limits);
    let io = TokioIo::new(WatchedIo::new(stream, activity.clone()));
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut watch = tokio::time::interval(conn_watch::tick(&limits));
    watch.tick().await;
    let mut closing = false;
    let result = loop {
        tokio::select! {
            res = conn.as_mut() => break res,
            _ = shutdown.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = watch.tick(), if !closing => match conn_watch::verdict(activity.snapshot(), &limits) {
                Verdict::Keep => {}
                Verdict::Idle => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                Verdict::SlowHead => {
                    // Nothing is in flight: dropping the connection closes the socket.
                    shared.metrics.connection_errors.get_or_create(&KindLabels { kind: "header_timeout" }).inc();
                    tracing::debug!(%peer, "closing a connection whose request head is too slow");
                    break Ok(());
                }
            }
        }
    };
    if let Err(e) = result {
        let kind = classify(&*e);
        tracing::debug!(%peer, error = %e, kind, "client connection error");
        shared
            .metrics
            .connection_errors
            .get_or_create(&KindLabels { kind })
            .inc();
    }
    shared.metrics.open_connections.dec();
}

/// With the PROXY protocol on, reads the header a load balancer puts before the connection's
/// first byte, within `header_timeout` of connecting (the rest of the head shares that time).
/// A trusted peer's header names the client; a header from anyone else, or a malformed one,
/// closes the connection and is counted. A connection without a header is served as is: its
/// peer is its client, so nothing is taken on trust. `None` means closed.
async fn proxy_header(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
) -> Option<(Rewind<TcpStream>, SocketAddr)> {
    let (trusted, timeout) = {
        let table = shared.table.load();
        if !table.proxies.proxy_protocol {
            return Some((Rewind::new(stream, Bytes::new()), peer));
        }
        (table.proxies.trusts(peer.ip()), table.limits.header_timeout)
    };
    let kind = match tokio::time::timeout(timeout, proxy_protocol::read_header(stream)).await {
        Ok(Ok((None, stream))) => return Some((stream, peer)),
        Ok(Ok((Some(Header { source }), stream))) if trusted => {
            return Some((stream, source.unwrap_or(peer)));
        }
        Ok(Ok((Some(_), _))) => "proxy_protocol_untrusted",
        Ok(Err(ReadError::Malformed(e))) => {
            tracing::debug!(%peer, error = %e, "closing a connection");
            "proxy_protocol_malformed"
        }
        // Gone before saying anything: nothing to count.
        Ok(Err(ReadError::Closed)) => return None,
        Ok(Err(ReadError::Io(_))) => "io",
        Err(_) => "header_timeout",
    };
    tracing::debug!(%peer, kind, "PROXY protocol header refused");
    shared
        .metrics
        .connection_errors
        .get_or_create(&KindLabels { kind })
        .inc();
    None
}

fn classify(e: &(dyn std::error::Error + 'static)) -> &'static str {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                return "header_timeout";
            }
            if h.is_parse_too_large() {
                return "header_too_large";
            }
            if h.is_parse() {
                return "bad_request";
            }
            if h.is_incomplete_message() {
                return "incomplete";
            }
        }
        if err.downcast_ref::<std::io::Error>().is_some() {
            return "io";
        }
        cur = err.source();
    }
    "other"
}
