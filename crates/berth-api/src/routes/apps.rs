//! Apps, per environment: the first environment-scoped endpoints (viewer reads, deployer
//! creates, admin removes, each on that environment). Deploys, logs and secrets join them
//! with the supervisor and deployer work.

use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::response::Response;
use axum::routing::on;
use berth_store::Role;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Endpoint, JsonBody, app_of, env_of, json_of, listing, no_content};
use crate::auth::{Attempt, Ctx};
use crate::error::ApiError;
use crate::openapi::{list_of, name_property, schema_ref};
use crate::policy::Need;

/// How attempts at this endpoint are named in the audit log.
const APP_CREATE: &str = "app.create";
/// How attempts at this endpoint are named in the audit log.
const APP_REMOVE: &str = "app.remove";

pub(super) fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint {
            method: Method::GET,
            path: "/api/v1/envs/{env}/apps",
            operation_id: "listApps",
            audit: None,
            summary: "The apps of an environment, by name",
            access: "viewer@{env}",
            token_only: false,
            query: &[],
            body: None,
            success: (StatusCode::OK, "the apps", Some(|| list_of("apps", "App"))),
            errors: &[StatusCode::BAD_REQUEST],
            handler: |m| on(m, list),
        },
        Endpoint {
            method: Method::POST,
            path: "/api/v1/envs/{env}/apps",
            operation_id: "createApp",
            audit: Some(APP_CREATE),
            summary: "Create an app in an environment (the environment is created on first use)",
            access: "deployer@{env}",
            token_only: false,
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
            audit: Some(APP_REMOVE),
            summary: "Remove an app from an environment",
            access: "admin@{env}",
            token_only: false,
            query: &[],
            body: None,
            success: (StatusCode::NO_CONTENT, "removed", None),
            errors: &[StatusCode::BAD_REQUEST, StatusCode::NOT_FOUND],
            handler: |m| on(m, remove),
        },
    ]
}

fn create_schema() -> Value {
    json!({
        "type": "object",
        "required": ["name"],
        "additionalProperties": false,
        "properties": { "name": name_property() },
    })
}

/// Store errors about names, attributed to the request's fields.
const FIELDS: &[(&str, &str)] = &[("environment", "env"), ("app name", "name")];

async fn list(ctx: Ctx, env: Result<Path<String>, PathRejection>) -> Result<Response, ApiError> {
    let env = env_of(env)?;
    ctx.allow(&Need::on(Role::Viewer, &env))?;
    let apps = ctx.store().list_apps(&env).await?;
    listing("apps", &apps)
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
    let env = env_of(env)?;
    let attempt = Attempt::new(APP_CREATE, format!("{}/{env}", body.name), json!({}));
    ctx.mutate(attempt, Need::on(Role::Deployer, &env), async |actor| {
        let app = ctx
            .store()
            .create_app(&actor, &env, &body.name)
            .await
            .map_err(|e| ApiError::from_store_naming(e, FIELDS))?;
        json_of(StatusCode::CREATED, &app)
    })
    .await
}

async fn remove(
    ctx: Ctx,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let key = app_of(path)?;
    let attempt = Attempt::new(APP_REMOVE, key.to_string(), json!({}));
    ctx.mutate(attempt, Need::on(Role::Admin, &key.env), async |actor| {
        ctx.store()
            .delete_app(&actor, &key.env, &key.app)
            .await
            .map_err(|e| ApiError::from_store_naming(e, FIELDS))?;
        Ok(no_content())
    })
    .await
}
