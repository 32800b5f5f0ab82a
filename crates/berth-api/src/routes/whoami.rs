//! Who am I, and what can I call: answers for any valid token.

use axum::response::Response;
use axum::routing::on;
use berth_store::Grant;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Endpoint, json};
use crate::auth::Ctx;
use crate::openapi::{self, schema_ref};

pub(super) fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint {
            method: Method::GET,
            path: "/api/v1/whoami",
            operation_id: "whoami",
            summary: "The token's user, its grants and the token's id",
            access: "any valid token",
            token_only: true,
            mutating: false,
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
            summary: "This API's OpenAPI 3 document",
            access: "any valid token",
            token_only: true,
            mutating: false,
            query: &[],
            body: None,
            success: (StatusCode::OK, "the OpenAPI document", Some(object)),
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

fn object() -> Value {
    json!({ "type": "object" })
}

async fn whoami(ctx: Ctx) -> Response {
    let user = ctx.user();
    let grants: Vec<String> = user.grants.iter().map(Grant::to_string).collect();
    json(
        StatusCode::OK,
        json!({ "user": user.name, "grants": grants, "token_id": ctx.caller.token.id }),
    )
}

async fn openapi_document(_: Ctx) -> Response {
    json(StatusCode::OK, openapi::openapi())
}
