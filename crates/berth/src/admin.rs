//! The admin listener (loopback by default): liveness, readiness, Prometheus metrics and
//! live reload. The full control API (tokens, RBAC, audit) builds on this listener.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::serve::{ReloadOutcome, Server};

pub async fn serve(listener: TcpListener, server: Arc<Server>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let server = server.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(server.clone(), req));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    reply(status, "application/json", value.to_string())
}

async fn handle(
    server: Arc<Server>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let resp = match (req.method(), req.uri().path()) {
        (&Method::GET, "/health") => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        // The listeners are bound before this listener starts, so answering means ready.
        (&Method::GET, "/ready") => reply(StatusCode::OK, "text/plain", "ready\n".into()),
        (&Method::GET, "/metrics") => {
            let mut text = String::new();
            match prometheus_client::encoding::text::encode(&mut text, &server.registry) {
                Ok(()) => reply(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    text,
                ),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("{e}\n"),
                ),
            }
        }
        (&Method::POST, "/-/reload") => match server.reload().await {
            ReloadOutcome::Applied { warnings } => json(
                StatusCode::OK,
                serde_json::json!({"status": "applied", "warnings": warnings}),
            ),
            ReloadOutcome::Refused(errors) => json(
                StatusCode::UNPROCESSABLE_ENTITY,
                serde_json::json!({"status": "refused", "errors": errors}),
            ),
        },
        _ => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"code": "not_found", "message": "unknown admin endpoint; try /health, /ready, /metrics or POST /-/reload"}),
        ),
    };
    Ok(resp)
}
