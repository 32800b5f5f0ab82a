//! Steering a deploy in progress (`berth promote`, `abort`, `pause`, `resume`) and going back
//! to a retained release (`berth rollback`).

use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::response::Response;
use axum::routing::on;
use berth_deploy::AppKey;
use berth_deploy::rollout::Command;
use berth_store::Role;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::deploys::{deployer, detached};
use super::{Endpoint, JsonBody, json_of, one_environment};
use crate::auth::{Attempt, Ctx};
use crate::error::ApiError;
use crate::openapi::any_object;
use crate::policy::Need;

/// How attempts at these endpoints are named in the audit log.
const ROLLOUT_CONTROL: &str = "deploy.control";
const ROLLBACK: &str = "deploy.rollback";

const ACTIONS: [&str; 4] = ["promote", "abort", "pause", "resume"];

pub(super) fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint {
            method: Method::POST,
            path: "/api/v1/envs/{env}/apps/{name}/rollout/{action}",
            operation_id: "controlRollout",
            audit: Some(ROLLOUT_CONTROL),
            summary: "Steer the canary or blue-green deploy in progress: `promote` (next step now), `abort` (roll back now), `pause`, `resume`",
            access: "deployer@{env}",
            token_only: false,
            query: &[],
            body: None,
            success: (
                StatusCode::ACCEPTED,
                "the command was handed to the rollout",
                Some(any_object),
            ),
            errors: &[
                StatusCode::BAD_REQUEST,
                StatusCode::CONFLICT,
                StatusCode::SERVICE_UNAVAILABLE,
            ],
            handler: |m| on(m, control),
        },
        Endpoint {
            method: Method::POST,
            path: "/api/v1/envs/{env}/apps/{name}/rollback",
            operation_id: "rollback",
            audit: Some(ROLLBACK),
            summary: "Serve a retained release again (the previous one unless `release` is given), with the steps of a rolling deploy",
            access: "deployer@{env}",
            token_only: false,
            query: &[],
            body: Some(rollback_schema),
            success: (
                StatusCode::CREATED,
                "what the rollback did",
                Some(any_object),
            ),
            errors: &[
                StatusCode::BAD_REQUEST,
                StatusCode::NOT_FOUND,
                StatusCode::CONFLICT,
                StatusCode::UNPROCESSABLE_ENTITY,
                StatusCode::SERVICE_UNAVAILABLE,
            ],
            handler: |m| on(m, rollback),
        },
    ]
}

fn rollback_schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "release": { "type": "string", "description": "the release id; the previous release when left out" },
        },
    })
}

async fn control(
    ctx: Ctx,
    path: Result<Path<(String, String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((env, name, action)) =
        path.map_err(|e| ApiError::bad_request("path", e.body_text()))?;
    let key = AppKey::new(one_environment(env)?, name);
    let attempt = Attempt::new(
        ROLLOUT_CONTROL,
        key.to_string(),
        json!({ "action": action }),
    );
    let env = key.env.clone();
    ctx.mutate(attempt, Need::on(Role::Deployer, &env), async |actor| {
        let command = match action.as_str() {
            "promote" => Command::Promote,
            "abort" => Command::Abort(actor.name.clone()),
            "pause" => Command::Pause,
            "resume" => Command::Resume,
            other => {
                return Err(ApiError::bad_request(
                    "action",
                    format!(
                        "unknown action {other:?}: use one of {}",
                        ACTIONS.join(", ")
                    ),
                ));
            }
        };
        deployer(&ctx)?.control(&key, command)?;
        json_of(
            StatusCode::ACCEPTED,
            &json!({ "app": key.app, "environment": key.env, "sent": action }),
        )
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    release: Option<String>,
}

async fn rollback(
    ctx: Ctx,
    path: Result<Path<(String, String)>, PathRejection>,
    JsonBody(body): JsonBody<RollbackBody>,
) -> Result<Response, ApiError> {
    let key = super::app_of(path)?;
    let attempt = Attempt::new(
        ROLLBACK,
        key.to_string(),
        json!({ "release": body.release }),
    );
    let env = key.env.clone();
    ctx.mutate(attempt, Need::on(Role::Deployer, &env), async |actor| {
        let deployer = deployer(&ctx)?;
        let report =
            detached(async move { deployer.rollback(key, body.release, actor).await }).await?;
        json_of(StatusCode::CREATED, &report)
    })
    .await
}
