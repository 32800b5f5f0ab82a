//! The audit log: read and verified by anyone with a role on every environment, pruned by
//! admin@* only.

use std::time::{Duration, SystemTime};

use axum::response::Response;
use axum::routing::on;
use berth_store::{AuditFilter, Role};
use http::{Method, StatusCode, Uri};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Endpoint, JsonBody, QueryParam, json, listing, query_pairs};
use crate::auth::{Attempt, Ctx};
use crate::error::ApiError;
use crate::openapi::{list_of, schema_ref};
use crate::policy::Need;

/// Entries returned when the request names no `limit`.
const DEFAULT_LIMIT: u32 = 100;
/// The most entries one request may ask for; page with `until` for more.
const MAX_LIMIT: u32 = 10_000;
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// How attempts at this endpoint are named in the audit log.
const AUDIT_PRUNE: &str = "audit.prune";

pub(super) fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint {
            method: Method::GET,
            path: "/api/v1/audit",
            operation_id: "listAudit",
            audit: None,
            summary: "Audit entries, newest first",
            access: "viewer@* (any role granted on *)",
            token_only: false,
            query: &[
                QueryParam {
                    name: "actor",
                    kind: "string",
                    description: "only this actor (a user name, or `system`)",
                },
                QueryParam {
                    name: "action",
                    kind: "string",
                    description: "only actions starting with this, e.g. `user.` or `token.create`",
                },
                QueryParam {
                    name: "target",
                    kind: "string",
                    description: "only this target",
                },
                QueryParam {
                    name: "env",
                    kind: "string",
                    description: "only entries about this environment (targets `APP/ENV`): its audit stream, readable with viewer@{env}",
                },
                QueryParam {
                    name: "since",
                    kind: "integer",
                    description: "at or after this time (ms since the Unix epoch)",
                },
                QueryParam {
                    name: "until",
                    kind: "integer",
                    description: "strictly before this time (ms since the Unix epoch)",
                },
                QueryParam {
                    name: "limit",
                    kind: "integer",
                    description: "at most this many, 1 to 10000 (default 100)",
                },
            ],
            body: None,
            success: (
                StatusCode::OK,
                "the entries",
                Some(|| list_of("entries", "AuditEntry")),
            ),
            errors: &[StatusCode::BAD_REQUEST],
            handler: |m| on(m, list),
        },
        Endpoint {
            method: Method::GET,
            path: "/api/v1/audit/verify",
            operation_id: "verifyAudit",
            audit: None,
            summary: "Verify the hash chain; 200 with `valid: false` and the first bad entry when it is broken",
            access: "viewer@* (any role granted on *)",
            token_only: false,
            query: &[],
            body: None,
            success: (
                StatusCode::OK,
                "the verification report",
                Some(|| schema_ref("VerifyReport")),
            ),
            errors: &[],
            handler: |m| on(m, verify),
        },
        Endpoint {
            method: Method::POST,
            path: "/api/v1/audit/prune",
            operation_id: "pruneAudit",
            audit: Some(AUDIT_PRUNE),
            summary: "Remove entries older than N days, leaving a signed checkpoint (refused when the chain is broken)",
            access: "admin@*",
            token_only: false,
            query: &[],
            body: Some(prune_schema),
            success: (
                StatusCode::OK,
                "how many entries were removed",
                Some(pruned_schema),
            ),
            errors: &[StatusCode::BAD_REQUEST, StatusCode::CONFLICT],
            handler: |m| on(m, prune),
        },
    ]
}

fn prune_schema() -> Value {
    json!({
        "type": "object",
        "required": ["older_than_days"],
        "additionalProperties": false,
        "properties": { "older_than_days": { "type": "integer", "minimum": 1 } },
    })
}

fn pruned_schema() -> Value {
    json!({
        "type": "object",
        "required": ["removed"],
        "properties": { "removed": { "type": "integer" } },
    })
}

fn filter_from(uri: &Uri) -> Result<AuditFilter, ApiError> {
    let mut filter = AuditFilter {
        limit: Some(DEFAULT_LIMIT),
        ..Default::default()
    };
    let ms = |name: &str, v: &str| {
        v.parse::<i64>()
            .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0).unsigned_abs()))
            .map_err(|_| ApiError::bad_request(name, "expected milliseconds since the Unix epoch"))
    };
    let params = [
        "actor", "action", "target", "env", "since", "until", "limit",
    ];
    for (name, value) in query_pairs(uri, &params)? {
        match name.as_str() {
            "actor" => filter.actor = Some(value),
            "action" => filter.action_prefix = Some(value),
            "target" => filter.target = Some(value),
            "env" => filter.environment = Some(super::one_environment(value)?),
            "since" => filter.since = Some(ms("since", &value)?),
            "until" => filter.until = Some(ms("until", &value)?),
            "limit" => match value.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => filter.limit = Some(n),
                _ => {
                    return Err(ApiError::bad_request(
                        "limit",
                        format!("expected a number from 1 to {MAX_LIMIT}"),
                    ));
                }
            },
            // query_pairs refused every other name.
            _ => {}
        }
    }
    Ok(filter)
}

async fn list(ctx: Ctx, uri: Uri) -> Result<Response, ApiError> {
    let filter = filter_from(&uri)?;
    // One environment's stream is readable by its viewers; the whole log needs `*`.
    match &filter.environment {
        Some(env) => ctx.allow(&Need::on(Role::Viewer, env))?,
        None => ctx.allow(&Need::everywhere(Role::Viewer))?,
    }
    let entries = ctx.store().audit_list(&filter).await?;
    listing("entries", &entries)
}

async fn verify(ctx: Ctx) -> Result<Response, ApiError> {
    ctx.allow(&Need::everywhere(Role::Viewer))?;
    let report = ctx
        .store()
        .audit_verify(&ctx.shared.api.checkpoint_key)
        .await?;
    let mut answer = json!(report);
    answer["valid"] = json!(report.is_valid());
    if let Some(bad) = &report.first_bad {
        // The defect's explanation in words, beside its machine-readable name.
        answer["first_bad"]["message"] = json!(bad.to_string());
    }
    Ok(json(StatusCode::OK, answer))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Prune {
    older_than_days: u32,
}

async fn prune(ctx: Ctx, JsonBody(body): JsonBody<Prune>) -> Result<Response, ApiError> {
    let days = body.older_than_days;
    let attempt = Attempt::new(AUDIT_PRUNE, "audit", json!({ "older_than_days": days }));
    ctx.mutate(attempt, Need::everywhere(Role::Admin), async |actor| {
        // At least a day: 0 would cut the whole log, which is never what retention means.
        if days == 0 {
            return Err(ApiError::bad_request(
                "older_than_days",
                "must be at least 1",
            ));
        }
        let older_than = SystemTime::now()
            .checked_sub(DAY * days)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let removed = ctx
            .store()
            .audit_prune(&actor, older_than, &ctx.shared.api.checkpoint_key)
            .await?;
        Ok(json(StatusCode::OK, json!({ "removed": removed })))
    })
    .await
}
