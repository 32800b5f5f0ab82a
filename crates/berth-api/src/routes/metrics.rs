//! Prometheus metrics of the whole server: any valid token (a scraper gets a viewer token).

use axum::response::{IntoResponse, Response};
use axum::routing::on;
use http::{Method, StatusCode, header};
use serde_json::{Value, json};

use super::Endpoint;
use crate::auth::Ctx;

/// The OpenMetrics text format prometheus-client writes.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub(super) fn endpoints() -> Vec<Endpoint> {
    vec![Endpoint {
        method: Method::GET,
        path: "/api/v1/metrics",
        operation_id: "metrics",
        audit: None,
        summary: "Prometheus metrics (OpenMetrics text) of the edge, the API and the server",
        access: "any valid token",
        token_only: true,
        query: &[],
        body: None,
        success: (StatusCode::OK, "OpenMetrics text", Some(text)),
        errors: &[],
        handler: |m| on(m, metrics),
    }]
}

fn text() -> Value {
    json!({ "type": "string" })
}

async fn metrics(ctx: Ctx) -> Response {
    let body = ctx.shared.api.control.metrics();
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}
