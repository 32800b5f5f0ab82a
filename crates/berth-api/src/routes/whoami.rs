//! Who am I, and what can I call: answers for any valid token.

use axum::response::Response;
use axum::routing::on;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::users::grant_names;
use super::{Endpoint, json};
use crate::auth::Ctx;
use crate::openapi::{self, any_object, schema_ref};

pub(super) fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint {
            method: Method::GET,
            path: "/api/v1/whoami",
            operation_id: "whoami",
            audit: None,
            summary: "The token's user, its grants and the token's id",
            access: "any valid token",
            token_only: true,
            query: &[],
            body: None,
            success: (StatusCode::OK, "the caller", Some(whoami_schema)),
            errors: &[],
            handler: |m| on(m, whoami),
        },
        Endpoint {
            method: Method::GET,
            path: "/api/v1/openapi.json",
            operation_id: "openapi",
            audit: None,
            summary: "This API's OpenAPI 3 document",
            access: "any valid token",
            token_only: true,
            query: &[],
            body: None,
            success: (StatusCode::OK, "the OpenAPI document", Some(any_object)),
            errors: &[],
            handler: |m| on(m, openapi_document),
        },
    ]
}

fn whoami_schema() -> Value {
    json!({
        "type": "object",
        "required": ["user", "grants", "token_id"],
        "properties": {
            "user": { "type": "string" },
            "grants": { "type": "array", "items": schema_ref("Grant") },
            "token_id": { "type": "integer" },
        },
    })
}

async fn whoami(ctx: Ctx) -> Response {
    let user = ctx.user();
    json(
        StatusCode::OK,
        json!({ "user": user.name, "grants": grant_names(user), "token_id": ctx.caller.token.id }),
    )
}

async fn openapi_document(_: Ctx) -> Response {
    json(StatusCode::OK, openapi::openapi())
}
