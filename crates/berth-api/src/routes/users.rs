//! Users and their grants: admin@* only.

use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::response::Response;
use axum::routing::on;
use berth_store::{Grant, Role, User};
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Endpoint, JsonBody, epoch_ms, json, listing, no_content};
use crate::auth::{Attempt, Ctx};
use crate::error::ApiError;
use crate::openapi::{list_of, name_property, schema_ref};
use crate::policy::Need;

/// How attempts at this endpoint are named in the audit log.
const USER_ADD: &str = "user.add";
/// How attempts at this endpoint are named in the audit log.
const USER_REMOVE: &str = "user.remove";

pub(super) fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint {
            method: Method::GET,
            path: "/api/v1/users",
            operation_id: "listUsers",
            audit: None,
            summary: "Current users and their grants",
            access: "admin@*",
            token_only: false,
            query: &[],
            body: None,
            success: (
                StatusCode::OK,
                "the users, by name",
                Some(|| list_of("users", "User")),
            ),
            errors: &[],
            handler: |m| on(m, list),
        },
        Endpoint {
            method: Method::POST,
            path: "/api/v1/users",
            operation_id: "addUser",
            audit: Some(USER_ADD),
            summary: "Add a user with grants such as `deployer@staging` or `viewer@*`",
            access: "admin@*",
            token_only: false,
            query: &[],
            body: Some(add_schema),
            success: (
                StatusCode::CREATED,
                "the new user",
                Some(|| schema_ref("User")),
            ),
            errors: &[StatusCode::BAD_REQUEST, StatusCode::CONFLICT],
            handler: |m| on(m, add),
        },
        Endpoint {
            method: Method::DELETE,
            path: "/api/v1/users/{name}",
            operation_id: "removeUser",
            audit: Some(USER_REMOVE),
            summary: "Remove a user and revoke all its tokens (not the last admin@*)",
            access: "admin@*",
            token_only: false,
            query: &[],
            body: None,
            success: (StatusCode::NO_CONTENT, "removed", None),
            errors: &[StatusCode::NOT_FOUND, StatusCode::CONFLICT],
            handler: |m| on(m, remove),
        },
    ]
}

fn add_schema() -> Value {
    json!({
        "type": "object",
        "required": ["name"],
        "additionalProperties": false,
        "properties": {
            "name": name_property(),
            "grants": { "type": "array", "items": schema_ref("Grant"), "default": [] },
        },
    })
}

/// Grants as `role@environment` strings, the form they are given in.
pub(super) fn grant_names(user: &User) -> Vec<String> {
    user.grants.iter().map(Grant::to_string).collect()
}

/// A user as the API shows it.
fn user_json(user: &User) -> Value {
    json!({
        "name": user.name,
        "grants": grant_names(user),
        "created": epoch_ms(user.created),
    })
}

async fn list(ctx: Ctx) -> Result<Response, ApiError> {
    ctx.allow(&Need::everywhere(Role::Admin))?;
    let users = ctx.store().list_users().await?;
    let users: Vec<Value> = users.iter().map(user_json).collect();
    listing("users", &users)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddUser {
    name: String,
    #[serde(default)]
    grants: Vec<String>,
}

async fn add(ctx: Ctx, JsonBody(body): JsonBody<AddUser>) -> Result<Response, ApiError> {
    let attempt = Attempt::new(USER_ADD, &body.name, json!({ "grants": body.grants }));
    ctx.mutate(attempt, Need::everywhere(Role::Admin), async |actor| {
        let grants = parse_grants(&body.grants)?;
        let user = ctx
            .store()
            .add_user(&actor, &body.name, &grants)
            .await
            .map_err(|e| {
                ApiError::from_store_naming(e, &[("user name", "name"), ("environment", "grants")])
            })?;
        Ok(json(StatusCode::CREATED, user_json(&user)))
    })
    .await
}

fn parse_grants(grants: &[String]) -> Result<Vec<Grant>, ApiError> {
    grants
        .iter()
        .enumerate()
        .map(|(i, g)| {
            g.parse::<Grant>()
                .map_err(|e| ApiError::bad_request(format!("grants[{i}]"), e.to_string()))
        })
        .collect()
}

async fn remove(ctx: Ctx, name: Result<Path<String>, PathRejection>) -> Result<Response, ApiError> {
    let Path(name) = name.map_err(|e| ApiError::bad_request("name", e.body_text()))?;
    let attempt = Attempt::new(USER_REMOVE, &name, json!({}));
    ctx.mutate(attempt, Need::everywhere(Role::Admin), async |actor| {
        ctx.store().remove_user(&actor, &name).await?;
        Ok(no_content())
    })
    .await
}
