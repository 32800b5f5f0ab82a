//! Routes whose bodies are read or produced over time: echo, SSE, trailers and
//! the raw upgrade echo used to test upgrade pass-through.

use std::future::poll_fn;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{CACHE_CONTROL, CONNECTION, HeaderMap, HeaderValue, TRAILER, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::body::DemoBody;
use crate::respond;

/// Describes the request as JSON. The body is counted, not buffered, so large
/// uploads through a proxy cost the demo no memory.
pub async fn echo(release: &str, req: Request<Incoming>) -> Response<DemoBody> {
    let (parts, mut body) = req.into_parts();
    let mut body_bytes: u64 = 0;
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    body_bytes += data.len() as u64;
                }
            }
            Err(e) => {
                return respond::text(
                    StatusCode::BAD_REQUEST,
                    format!("could not read request body: {e}\n"),
                );
            }
        }
    }
    let doc = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers_json(&parts.headers),
        "body_bytes": body_bytes,
        "release": release,
    });
    respond::json(StatusCode::OK, doc.to_string())
}

fn headers_json(headers: &HeaderMap) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for name in headers.keys() {
        let values = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned().into())
            .collect();
        map.insert(name.as_str().to_string(), serde_json::Value::Array(values));
    }
    serde_json::Value::Object(map)
}

/// `n` events, the first at once and then one per `interval`, each sent as it
/// is produced so a buffering proxy shows up as late events.
pub fn sse(n: u64, interval: Duration) -> Response<DemoBody> {
    let (tx, body) = DemoBody::channel();
    tokio::spawn(async move {
        for i in 0..n {
            if i > 0 {
                tokio::time::sleep(interval).await;
            }
            let event = Bytes::from(format!("data: {i}\n\n"));
            if tx.send(Frame::data(event)).await.is_err() {
                return; // client went away
            }
        }
    });
    let mut res = respond::with(
        StatusCode::OK,
        HeaderValue::from_static("text/event-stream"),
        body,
    );
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

/// "hello" then the trailer `x-checksum: abc123`. hyper only writes trailers that
/// the `Trailer` header announces, and only when the request said `TE: trailers`.
pub fn trailers() -> Response<DemoBody> {
    let (tx, body) = DemoBody::channel();
    tokio::spawn(async move {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", HeaderValue::from_static("abc123"));
        // A send error only means the client left; nothing to clean up.
        let _ = tx.send(Frame::data(Bytes::from_static(b"hello"))).await;
        let _ = tx.send(Frame::trailers(trailers)).await;
    });
    let mut res = respond::with(StatusCode::OK, respond::text_type(), body);
    res.headers_mut()
        .insert(TRAILER, HeaderValue::from_static("x-checksum"));
    res
}

/// 101 with the client's own `Upgrade` value, then echoes raw bytes: enough to
/// prove a proxy passes upgrades through, without any WebSocket framing.
pub fn upgrade_echo(mut req: Request<Incoming>) -> Response<DemoBody> {
    let Some(protocol) = req.headers().get(UPGRADE).cloned() else {
        let mut res = respond::text(
            StatusCode::UPGRADE_REQUIRED,
            "send an Upgrade header to get a raw echo\n",
        );
        res.headers_mut()
            .insert(UPGRADE, HeaderValue::from_static("websocket"));
        return res;
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut io = TokioIo::new(upgraded);
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = io.shutdown().await;
    });
    let mut res = respond::empty(StatusCode::SWITCHING_PROTOCOLS);
    res.headers_mut().insert(UPGRADE, protocol);
    res.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("upgrade"));
    res
}
