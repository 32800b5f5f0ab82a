//! The fake upstream's accept loop and request handling.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::scripted_body::{ScriptedBody, Step};
use crate::seen_request::SeenRequest;
use crate::special_routes;
use crate::upstream::{Shared, lock};

/// Gives hyper time to flush the partial body before the abort closes the
/// socket; hyper drops unflushed bytes when a body fails.
const FLUSH_BEFORE_ABORT: Duration = Duration::from_millis(50);

/// Returned by the service to make hyper close the connection without writing
/// a response.
#[derive(Debug)]
struct DropOnPurpose;

impl fmt::Display for DropOnPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("fake upstream dropped the connection on purpose")
    }
}

impl std::error::Error for DropOnPurpose {}

pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let id = shared.connections.fetch_add(1, Ordering::SeqCst);
                    connections.spawn(serve(stream, peer, id, shared.clone(), stop.clone()));
                }
                // Out of descriptors or similar: back off rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    connection: usize,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let service =
        service_fn(move |req| handle(req, peer, connection, shared.clone(), stop.clone()));
    // Errors here are the client going away or a drop we asked for.
    let _ = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
}

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    connection: usize,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) -> Result<Response<ScriptedBody>, DropOnPurpose> {
    let (parts, body) = req.into_parts();
    let collected = body.collect().await.map_err(|_| DropOnPurpose)?;
    let trailers = collected.trailers().cloned();
    let seen = SeenRequest {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        version: parts.version,
        headers: parts.headers.clone(),
        body: collected.to_bytes(),
        trailers,
        peer,
        connection,
    };

    let mut res = if seen.path() == shared.health_path {
        lock(&shared.health_requests).push(seen);
        health(&shared)
    } else if special_routes::is_special(seen.path()) {
        lock(&shared.requests).push(seen.clone());
        let mut req = Request::from_parts(parts, ());
        special_routes::respond(&shared.name, &seen, &mut req, stop)
    } else {
        lock(&shared.requests).push(seen);
        normal(&shared).await?
    };
    res.headers_mut()
        .insert("x-upstream", shared.name_header.clone());
    Ok(res)
}

fn health(shared: &Shared) -> Response<ScriptedBody> {
    let (status, text): (_, &'static [u8]) = if shared.healthy.load(Ordering::SeqCst) {
        (StatusCode::OK, b"ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, b"unhealthy")
    };
    let mut res = Response::new(ScriptedBody::full(Bytes::from_static(text)));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    res
}

async fn normal(shared: &Shared) -> Result<Response<ScriptedBody>, DropOnPurpose> {
    let nth = shared.normal_requests.fetch_add(1, Ordering::SeqCst) + 1;
    if shared.drop_every != 0 && nth.is_multiple_of(shared.drop_every) {
        return Err(DropOnPurpose);
    }
    if !shared.latency.is_zero() {
        tokio::time::sleep(shared.latency).await;
    }
    let status = match shared.status_override.load(Ordering::SeqCst) {
        0 => lock(&shared.mix).next(),
        code => StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
    };
    let mut res = Response::new(normal_body(shared));
    *res.status_mut() = status;
    for (name, value) in &shared.headers {
        res.headers_mut().insert(name.clone(), value.clone());
    }
    Ok(res)
}

fn normal_body(shared: &Shared) -> ScriptedBody {
    let mut body = shared.body.clone();
    let cut = shared.drop_mid_body;
    if let Some(after) = cut
        && body.len() <= after
    {
        let mut padded = BytesMut::from(&body[..]);
        padded.resize(after + 1, b'x');
        body = padded.freeze();
    }
    let length = body.len() as u64;
    let sent = match cut {
        Some(after) => body.slice(..after),
        None => body,
    };
    let mut steps = match shared.slow_body {
        Some((chunks, delay)) => paced(sent, chunks, delay),
        None => vec![Step::Data(sent)],
    };
    if cut.is_some() {
        steps.push(Step::Pause(FLUSH_BEFORE_ABORT));
        steps.push(Step::Abort);
    }
    ScriptedBody::new(steps, Some(length))
}

/// Splits `body` into `chunks` near-equal pieces with `delay` between them.
fn paced(body: Bytes, chunks: usize, delay: Duration) -> Vec<Step> {
    let size = body.len().div_ceil(chunks).max(1);
    let mut steps = Vec::new();
    let mut offset = 0;
    while offset < body.len() {
        if offset > 0 {
            steps.push(Step::Pause(delay));
        }
        let end = (offset + size).min(body.len());
        steps.push(Step::Data(body.slice(offset..end)));
        offset = end;
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_lens(steps: &[Step]) -> Vec<usize> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Data(b) => Some(b.len()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn paced_splits_evenly() {
        let steps = paced(
            Bytes::from_static(b"0123456789"),
            3,
            Duration::from_millis(1),
        );
        assert_eq!(data_lens(&steps), [4, 4, 2]);
        let pauses = steps.iter().filter(|s| matches!(s, Step::Pause(_))).count();
        assert_eq!(pauses, 2);
    }

    #[test]
    fn paced_with_more_chunks_than_bytes() {
        let steps = paced(Bytes::from_static(b"ab"), 5, Duration::from_millis(1));
        assert_eq!(data_lens(&steps), [1, 1]);
    }
}
