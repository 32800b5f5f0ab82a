//! Deploy locks (`berth lock`, `berth unlock`) and approving a deploy that waits for it
//! (`berth approve`). Locking is a deployer's act: whoever may deploy an app may hold its
//! deploys back.

use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::response::Response;
use axum::routing::on;
use berth_store::Role;
use http::{Method, StatusCode, Uri};
use serde::Deserialize;
use serde_json::{Value, json};

use super::deploys::deployer;
use super::{Endpoint, JsonBody, app_of, json_of, query_pairs};
use crate::auth::{Attempt, Ctx};
use crate::error::ApiError;
use crate::openapi::any_object;
use crate::policy::Need;

/// How attempts at these endpoints are named in the audit log.
const DEPLOY_LOCK: &str = "deploy.lock";
const DEPLOY_UNLOCK: &str = "deploy.unlock";
const DEPLOY_APPROVE: &str = "deploy.approve";

const LOCK_PATH: &str = "/api/v1/envs/{env}/apps/{name}/lock";

pub(super) fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint {
            method: Method::GET,
            path: LOCK_PATH,
            operation_id: "getLock",
            audit: None,
            summary: "The app's deploy lock in the environment: `locked`, and the `lock` (owner, reason, since) when held",
            access: "viewer@{env}",
            token_only: false,
            query: &[],
            body: None,
            success: (StatusCode::OK, "{locked, lock}", Some(any_object)),
            errors: &[StatusCode::BAD_REQUEST],
            handler: |m| on(m, show),
        },
        Endpoint {
            method: Method::PUT,
            path: LOCK_PATH,
            operation_id: "lock",
            audit: Some(DEPLOY_LOCK),
            summary: "Lock the app's deploys in the environment: deploy, rollback, promote-release and restart are refused until unlocked",
            access: "deployer@{env}",
            token_only: false,
            query: &[],
            body: Some(|| {
                json!({ "type": "object", "required": ["reason"], "additionalProperties": false,
                        "properties": { "reason": { "type": "string", "maxLength": berth_store::MAX_LOCK_REASON } } })
            }),
            success: (StatusCode::CREATED, "the lock", Some(any_object)),
            errors: &[StatusCode::BAD_REQUEST, StatusCode::CONFLICT],
            handler: |m| on(m, take),
        },
        Endpoint {
            method: Method::DELETE,
            path: LOCK_PATH,
            operation_id: "unlock",
            audit: Some(DEPLOY_UNLOCK),
            summary: "Remove the app's deploy lock; someone else's only with `force=true` (audited as forced)",
            access: "deployer@{env}",
            token_only: false,
            query: &[super::QueryParam {
                name: "force",
                kind: "string",
                description: "`true`: remove the lock even when another user holds it",
            }],
            body: None,
            success: (StatusCode::OK, "the lock removed", Some(any_object)),
            errors: &[
                StatusCode::BAD_REQUEST,
                StatusCode::NOT_FOUND,
                StatusCode::CONFLICT,
            ],
            handler: |m| on(m, release),
        },
        Endpoint {
            method: Method::POST,
            path: "/api/v1/envs/{env}/apps/{name}/approve",
            operation_id: "approve",
            audit: Some(DEPLOY_APPROVE),
            summary: "Let the deploy waiting for approval (`requires_approval`) start; by another user than the deployer once users exist",
            access: "deployer@{env}",
            token_only: false,
            query: &[],
            body: Some(|| {
                json!({ "type": "object", "additionalProperties": false,
                        "properties": { "deployment": { "type": "integer", "description": "the deployment waiting; any when left out" } } })
            }),
            success: (
                StatusCode::ACCEPTED,
                "{app, environment, deployment, approved_by}",
                Some(any_object),
            ),
            errors: &[
                StatusCode::BAD_REQUEST,
                StatusCode::CONFLICT,
                StatusCode::SERVICE_UNAVAILABLE,
            ],
            handler: |m| on(m, approve),
        },
    ]
}

fn lock_answer(lock: Option<&berth_store::DeployLock>) -> Result<Value, ApiError> {
    let lock = serde_json::to_value(lock)
        .map_err(|e| ApiError::Internal(format!("encoding the lock: {e}")))?;
    Ok(json!({ "locked": !lock.is_null(), "lock": lock }))
}

async fn show(
    ctx: Ctx,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let key = app_of(path)?;
    ctx.allow(&Need::on(Role::Viewer, &key.env))?;
    let lock = ctx.store().deploy_lock(&key.env, &key.app).await?;
    json_of(StatusCode::OK, &lock_answer(lock.as_ref())?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LockBody {
    reason: String,
}

async fn take(
    ctx: Ctx,
    path: Result<Path<(String, String)>, PathRejection>,
    JsonBody(body): JsonBody<LockBody>,
) -> Result<Response, ApiError> {
    let key = app_of(path)?;
    let attempt = Attempt::new(
        DEPLOY_LOCK,
        key.to_string(),
        json!({ "reason": body.reason }),
    );
    let env = key.env.clone();
    ctx.mutate(attempt, Need::on(Role::Deployer, &env), async |actor| {
        let mut tx = ctx.store().transaction().await?;
        let lock = tx
            .lock_deploys(&actor, &key.env, &key.app, &body.reason)
            .await?;
        tx.commit().await?;
        json_of(StatusCode::CREATED, &lock_answer(Some(&lock))?)
    })
    .await
}

async fn release(
    ctx: Ctx,
    path: Result<Path<(String, String)>, PathRejection>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let key = app_of(path)?;
    let mut force = false;
    for (_, value) in query_pairs(&uri, &["force"])? {
        force = match value.as_str() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err(ApiError::bad_request("force", "expected true or false")),
        };
    }
    let attempt = Attempt::new(DEPLOY_UNLOCK, key.to_string(), json!({ "force": force }));
    let env = key.env.clone();
    ctx.mutate(attempt, Need::on(Role::Deployer, &env), async |actor| {
        let mut tx = ctx.store().transaction().await?;
        let lock = tx.unlock_deploys(&actor, &key.env, &key.app, force).await?;
        tx.commit().await?;
        let forced = lock.owner != actor.name;
        json_of(
            StatusCode::OK,
            &json!({ "unlocked": lock, "forced": forced }),
        )
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    deployment: Option<i64>,
}

async fn approve(
    ctx: Ctx,
    path: Result<Path<(String, String)>, PathRejection>,
    JsonBody(body): JsonBody<ApproveBody>,
) -> Result<Response, ApiError> {
    let key = app_of(path)?;
    let attempt = Attempt::new(
        DEPLOY_APPROVE,
        key.to_string(),
        json!({ "deployment": body.deployment }),
    );
    let env = key.env.clone();
    ctx.mutate(attempt, Need::on(Role::Deployer, &env), async |actor| {
        let id = deployer(&ctx)?
            .approve(&key, body.deployment, &actor)
            .await?;
        json_of(
            StatusCode::ACCEPTED,
            &json!({ "app": key.app, "environment": key.env, "deployment": id, "approved_by": actor.name }),
        )
    })
    .await
}
