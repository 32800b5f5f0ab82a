//! The deployer's own requests: synthetic probes and smoke checks straight to a release's
//! instances (not through the edge, so they reach the release being judged whatever the
//! weights). Webhooks go through `notify.rs`, which needs HTTPS.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Bodies read back for a smoke check's `body_contains` are cut here.
const MAX_BODY: usize = 1 << 20;

/// A response as the deployer needs it.
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
    pub took: Duration,
}

/// Sends `req` to `addr` over a fresh HTTP/1.1 connection, all within `timeout`.
pub async fn send(
    addr: SocketAddr,
    req: Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<Answer, String> {
    let started = Instant::now();
    let exchange = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {addr}: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("request to {addr} failed: {e}"))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok(Answer {
            status,
            body,
            took: started.elapsed(),
        })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer from {addr} within {}",
            humantime::format_duration(timeout)
        )),
    }
}

/// `GET path` to an instance, with the app's host (or `localhost`) as `Host`.
pub async fn get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    timeout: Duration,
) -> Result<Answer, String> {
    let req = Request::get(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "berth-deploy")
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("bad request {path}: {e}"))?;
    send(addr, req, timeout).await
}
