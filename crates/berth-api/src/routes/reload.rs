//! Reloading the configuration file: admin@*.

use axum::response::Response;
use axum::routing::on;
use berth_store::{NewAuditEntry, Role};
use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Endpoint, json};
use crate::auth::{Attempt, Ctx};
use crate::error::ApiError;
use crate::policy::Need;

/// How attempts at this endpoint are named in the audit log.
const CONFIG_RELOAD: &str = "config.reload";

pub(super) fn endpoints() -> Vec<Endpoint> {
    vec![Endpoint {
        method: Method::POST,
        path: "/api/v1/reload",
        operation_id: "reload",
        audit: Some(CONFIG_RELOAD),
        summary: "Re-read and apply the configuration file; an invalid file is refused (422) and the old configuration keeps serving",
        access: "admin@*",
        token_only: false,
        query: &[],
        body: None,
        success: (
            StatusCode::OK,
            "applied, with any warnings",
            Some(reloaded_schema),
        ),
        errors: &[StatusCode::UNPROCESSABLE_ENTITY],
        handler: |m| on(m, reload),
    }]
}

fn reloaded_schema() -> Value {
    json!({
        "type": "object",
        "required": ["warnings"],
        "properties": { "warnings": { "type": "array", "items": { "type": "string" } } },
    })
}

async fn reload(ctx: Ctx) -> Result<Response, ApiError> {
    let attempt = Attempt::new(CONFIG_RELOAD, "config", json!({}));
    let need = Need::everywhere(Role::Admin);
    ctx.mutate(attempt, need, async |actor| {
        let warnings = ctx
            .shared
            .api
            .control
            .reload()
            .await
            .map_err(ApiError::InvalidConfig)?;
        // A reload changes nothing in the store, so there is no transaction to append to:
        // it is recorded on its own once applied.
        let entry = NewAuditEntry::new(
            &actor,
            "config.reload",
            "config",
            json!({ "warnings": warnings.len() }),
        );
        if let Err(e) = ctx.store().audit_record(entry).await {
            // The new configuration is serving already; say so rather than pretend the
            // reload failed, and make the missing record loud in the log.
            tracing::error!(error = %e, "configuration reloaded but recording it in the audit log failed");
        }
        Ok(json(StatusCode::OK, json!({ "warnings": warnings })))
    })
    .await
}
