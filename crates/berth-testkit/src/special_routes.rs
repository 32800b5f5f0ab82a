//! Paths every fake upstream serves the same way whatever its fault settings:
//! `/echo`, `/sse`, `/ws` and `/trailers`, matching the berth-demo app.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, HeaderValue, TRAILER, UPGRADE};
use http::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::scripted_body::{ScriptedBody, Step};
use crate::seen_request::SeenRequest;

pub(crate) fn is_special(path: &str) -> bool {
    matches!(path, "/echo" | "/sse" | "/ws" | "/trailers")
}

/// `req` still carries the upgrade handle in its extensions, which `/ws` needs.
pub(crate) fn respond(
    name: &str,
    seen: &SeenRequest,
    req: &mut Request<()>,
    stop: watch::Receiver<bool>,
) -> Response<ScriptedBody> {
    match seen.path() {
        "/echo" => echo(name, seen),
        "/sse" => sse(seen.query()),
        "/ws" => upgrade_echo(req, stop),
        _ => trailers(),
    }
}

fn echo(name: &str, seen: &SeenRequest) -> Response<ScriptedBody> {
    let mut headers = serde_json::Map::new();
    for key in seen.headers.keys() {
        let values = seen
            .headers
            .get_all(key)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned().into())
            .collect();
        headers.insert(key.as_str().to_string(), serde_json::Value::Array(values));
    }
    let doc = serde_json::json!({
        "upstream": name,
        "method": seen.method.as_str(),
        "path": seen.path(),
        "query": seen.query(),
        "version": format!("{:?}", seen.version),
        "headers": headers,
        "body_bytes": seen.body.len(),
        "body": String::from_utf8_lossy(&seen.body),
    });
    let mut res = Response::new(ScriptedBody::full(Bytes::from(doc.to_string())));
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

fn query_number(query: Option<&str>, name: &str, default: u64) -> u64 {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn sse(query: Option<&str>) -> Response<ScriptedBody> {
    let n = query_number(query, "n", 5);
    let interval = Duration::from_millis(query_number(query, "interval_ms", 100));
    let mut steps = Vec::new();
    for i in 0..n {
        if i > 0 {
            steps.push(Step::Pause(interval));
        }
        steps.push(Step::Data(Bytes::from(format!("data: {i}\n\n"))));
    }
    // No length: the events must go out chunked, one by one.
    let mut res = Response::new(ScriptedBody::new(steps, None));
    let headers = res.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    res
}

/// hyper writes trailers only when the `Trailer` header announces them and the
/// request carried `TE: trailers`.
fn trailers() -> Response<ScriptedBody> {
    let mut trailer_map = HeaderMap::new();
    trailer_map.insert("x-checksum", HeaderValue::from_static("abc123"));
    let steps = [
        Step::Data(Bytes::from_static(b"hello")),
        Step::Trailers(trailer_map),
    ];
    let mut res = Response::new(ScriptedBody::new(steps, None));
    res.headers_mut()
        .insert(TRAILER, HeaderValue::from_static("x-checksum"));
    res
}

fn upgrade_echo(req: &mut Request<()>, mut stop: watch::Receiver<bool>) -> Response<ScriptedBody> {
    let Some(protocol) = req.headers().get(UPGRADE).cloned() else {
        let mut res = Response::new(ScriptedBody::full(Bytes::from_static(
            b"send an Upgrade header to get a raw echo\n",
        )));
        *res.status_mut() = StatusCode::UPGRADE_REQUIRED;
        res.headers_mut()
            .insert(UPGRADE, HeaderValue::from_static("websocket"));
        return res;
    };
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut io = TokioIo::new(upgraded);
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            tokio::select! {
                read = io.read(&mut buf) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                },
                // Upgraded connections have left hyper, so stop() reaches them here.
                _ = stop.changed() => return,
            }
        }
        let _ = io.shutdown().await;
    });
    let mut res = Response::new(ScriptedBody::empty());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    res.headers_mut().insert(UPGRADE, protocol);
    res.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("upgrade"));
    res
}
