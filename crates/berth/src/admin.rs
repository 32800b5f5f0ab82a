//! The admin listener's routes (loopback and the Unix socket): liveness and readiness without
//! a token, everything else through the admin API with its tokens, roles and audit.

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures_util::future::BoxFuture;

use crate::serve::{ReloadOutcome, Server};

pub fn router(api: Router) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        // The proxy listeners are bound before this listener starts, so answering means ready.
        .route("/ready", get(|| async { "ready\n" }))
        .merge(api)
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "application/json")],
                r#"{"code":"not_found","message":"unknown admin endpoint; see /api/v1/openapi.json (with a token), /health or /ready"}"#,
            )
                .into_response()
        })
}

/// What the admin API may ask of the running server.
pub struct Control(pub Arc<Server>);

impl berth_api::Control for Control {
    fn reload(&self) -> BoxFuture<'static, Result<Vec<String>, String>> {
        let server = self.0.clone();
        Box::pin(async move {
            match server.reload().await {
                ReloadOutcome::Applied { warnings } => Ok(warnings),
                ReloadOutcome::Refused(errors) => Err(errors),
            }
        })
    }

    fn metrics(&self) -> String {
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.0.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        text
    }
}
