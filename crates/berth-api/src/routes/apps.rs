//! Apps, per environment: the first environment-scoped endpoints (viewer reads, deployer
//! creates, admin removes, each on that environment). Deploys, logs and secrets join them
//! with the supervisor and deployer work.

use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::response::Response;
use axum::routing::on;
use berth_store::{App, Role};
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Endpoint, JsonBody, epoch_ms, json, no_content};
use crate::auth::{Attempt, Ctx};
use crate::error::ApiError;
use crate::openapi::schema_ref;
use crate::policy::Need;

pub(super) fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint {
            method: Method::GET,
            path: "/api/v1/envs/{env}/apps",
            operation_id: "listApps",
            summary: "The apps of an environment, by name",
            access: "viewer@{env}",
            token_only: false,
            mutating: false,
            query: &[],
            body: None,
            success: (StatusCode::OK, "the apps", Some(apps_schema)),
            errors: &[StatusCode::BAD_REQUEST],
            handler: |m| on(m, list),
        },
        Endpoint {
            method: Method::POST,
            path: "/api/v1/envs/{env}/apps",
            operation_id: "createApp",
            summary: "Create an app in an environment (the environment is created on first use)",
            access: "deployer@{env}",
            token_only: false,
            mutating: true,
            query: &[],
            body: Some(create_schema),
            success: (
                StatusCode::CREATED,
                "the new app",
                Some(|| schema_ref("App")),
            ),
            errors: &[StatusCode::BAD_REQUEST, StatusCode::CONFLICT],
            handler: |m| on(m, create),
        },
        Endpoint {
            method: Method::DELETE,
            path: "/api/v1/envs/{env}/apps/{name}",
            operation_id: "removeApp",
            summary: "Remove an app from an environment",
            access: "admin@{env}",
            token_only: false,
            mutating: true,
            query: &[],
            body: None,
            success: (StatusCode::NO_CONTENT, "removed", None),
            errors: &[StatusCode::BAD_REQUEST, StatusCode::NOT_FOUND],
            handler: |m| on(m, remove),
        },
    ]
}

fn apps_schema() -> Value {
    json!({
        "type": "object",
        "required": ["apps"],
        "properties": { "apps": { "type": "array", "items": schema_ref("App") } },
    })
}

fn create_schema() -> Value {
    json!({
        "type": "object",
        "required": ["name"],
        "additionalProperties": false,
        "properties": {
            "name": { "type": "string", "description": "1-64 of A-Z a-z 0-9 . _ @ -, starting with a letter or digit" },
        },
    })
}

fn app_json(app: &App) -> Value {
    json!({
        "id": app.id,
        "environment": app.environment,
        "name": app.name,
        "spec": app.spec,
        "created": epoch_ms(app.created),
        "updated": epoch_ms(app.updated),
    })
}

/// Store errors about names, attributed to the request's fields.
const FIELDS: &[(&str, &str)] = &[("environment", "env"), ("app name", "name")];

/// `*` is a grant wildcard, not an environment: asking for it would otherwise read as
/// "needs the role on every environment" and then fail on the name.
fn check_env(env: &str) -> Result<(), ApiError> {
    if env == berth_store::ALL_ENVIRONMENTS {
        return Err(ApiError::bad_request(
            "env",
            "name one environment; `*` is only for grants",
        ));
    }
    Ok(())
}

async fn list(ctx: Ctx, env: Result<Path<String>, PathRejection>) -> Result<Response, ApiError> {
    let Path(env) = env.map_err(|e| ApiError::bad_request("env", e.body_text()))?;
    check_env(&env)?;
    ctx.allow(&Need::on(Role::Viewer, &env))?;
    let apps = ctx.store().list_apps(&env).await?;
    let apps: Vec<Value> = apps.iter().map(app_json).collect();
    Ok(json(StatusCode::OK, json!({ "apps": apps })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateApp {
    name: String,
}

async fn create(
    ctx: Ctx,
    env: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<CreateApp>,
) -> Result<Response, ApiError> {
    let Path(env) = env.map_err(|e| ApiError::bad_request("env", e.body_text()))?;
    check_env(&env)?;
    let attempt = Attempt::new("app.create", format!("{}/{env}", body.name), json!({}));
    ctx.mutate(attempt, Need::on(Role::Deployer, &env), async |actor| {
        let app = ctx
            .store()
            .create_app(&actor, &env, &body.name)
            .await
            .map_err(|e| ApiError::from_store_naming(e, FIELDS))?;
        Ok(json(StatusCode::CREATED, app_json(&app)))
    })
    .await
}

async fn remove(
    ctx: Ctx,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((env, name)) = path.map_err(|e| ApiError::bad_request("path", e.body_text()))?;
    check_env(&env)?;
    let attempt = Attempt::new("app.remove", format!("{name}/{env}"), json!({}));
    ctx.mutate(attempt, Need::on(Role::Admin, &env), async |actor| {
        ctx.store()
            .delete_app(&actor, &env, &name)
            .await
            .map_err(|e| ApiError::from_store_naming(e, FIELDS))?;
        Ok(no_content())
    })
    .await
}
