//! Minimal HTTP and raw-TCP clients, each on a fresh connection so tests see
//! exactly what one connection does (no pooling).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};

/// Upper bound on one helper call, so a hung server fails the test instead of
/// hanging it.
const CALL_LIMIT: Duration = Duration::from_secs(10);

/// `GET path` with `Host: host` over a fresh HTTP/1.1 connection.
///
/// # Panics
/// When the exchange fails (connection refused, reset, or no full response
/// within 10 s); use [`try_http_get`] to inspect failures.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let up = berth_testkit::FakeUpstream::start_named("a").await;
/// let (status, _headers, body) = berth_testkit::http_get(up.addr(), "/health", "a.test").await;
/// assert_eq!((status.as_u16(), &body[..]), (200, &b"ok"[..]));
/// # }
/// ```
pub async fn http_get(addr: SocketAddr, path: &str, host: &str) -> (StatusCode, HeaderMap, Bytes) {
    match try_http_get(addr, path, host).await {
        Ok(res) => res,
        Err(e) => panic!("GET http://{addr}{path} (Host: {host}) failed: {e}"),
    }
}

/// [`http_get`] returning errors instead of panicking.
pub async fn try_http_get(
    addr: SocketAddr,
    path: &str,
    host: &str,
) -> io::Result<(StatusCode, HeaderMap, Bytes)> {
    let req = Request::get(path)
        .header(HOST, host)
        .body(Bytes::new())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let res = send_request(addr, req).await?;
    let (parts, body) = res.into_parts();
    Ok((parts.status, parts.headers, body))
}

/// Sends any request over a fresh HTTP/1.1 connection and reads the whole
/// response. A missing `Host` header is filled in with `addr`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use bytes::Bytes;
/// let up = berth_testkit::FakeUpstream::start_named("a").await;
/// let req = http::Request::post("/echo").body(Bytes::from("hi")).unwrap();
/// let res = berth_testkit::send_request(up.addr(), req).await.unwrap();
/// assert_eq!(up.requests()[0].body, "hi");
/// assert_eq!(res.status(), 200);
/// # }
/// ```
pub async fn send_request(addr: SocketAddr, req: Request<Bytes>) -> io::Result<Response<Bytes>> {
    match timeout(CALL_LIMIT, exchange(addr, req)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no complete response from {addr} within {CALL_LIMIT:?}"),
        )),
    }
}

async fn exchange(addr: SocketAddr, req: Request<Bytes>) -> io::Result<Response<Bytes>> {
    let (mut parts, body) = req.into_parts();
    if !parts.headers.contains_key(HOST) {
        let host = HeaderValue::from_str(&addr.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        parts.headers.insert(HOST, host);
    }
    let req = Request::from_parts(parts, Full::new(body));

    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    let conn = tokio::spawn(conn);
    let res = sender.send_request(req).await.map_err(io::Error::other)?;
    let (parts, body) = res.into_parts();
    let body = body.collect().await.map_err(io::Error::other)?.to_bytes();
    conn.abort();
    Ok(Response::from_parts(parts, body))
}

/// Writes `bytes` on a fresh TCP connection, then reads until the server
/// closes it or `read_timeout` (counted from the end of the write) passes, and
/// returns everything read. Meant for malformed or ambiguous requests (e.g.
/// smuggling attempts) that a real client would refuse to send.
///
/// A reset or a write refused half-way is not an error: what was read is returned.
///
/// # Panics
/// If the connection cannot be made; see [`try_raw_exchange`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// let up = berth_testkit::FakeUpstream::start_named("a").await;
/// let reply = berth_testkit::raw_exchange(
///     up.addr(),
///     b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
///     Duration::from_secs(2),
/// )
/// .await;
/// assert!(reply.starts_with(b"HTTP/1.1 200 OK\r\n"));
/// # }
/// ```
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], read_timeout: Duration) -> Vec<u8> {
    match try_raw_exchange(addr, bytes, read_timeout).await {
        Ok(reply) => reply,
        Err(e) => panic!("raw exchange with {addr} failed: {e}"),
    }
}

/// [`raw_exchange`] returning a connect failure instead of panicking.
pub async fn try_raw_exchange(
    addr: SocketAddr,
    bytes: &[u8],
    read_timeout: Duration,
) -> io::Result<Vec<u8>> {
    let mut stream = timeout(CALL_LIMIT, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    // The server may answer and close before taking everything; reading still
    // tells the test what it said.
    let _ = stream.write_all(bytes).await;
    let deadline = Instant::now() + read_timeout;
    let mut reply = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(Ok(n)) = timeout_at(deadline, stream.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    Ok(reply)
}
