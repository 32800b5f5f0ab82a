//! API tokens: anyone manages their own; admin@* manages everyone's.

use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::response::Response;
use axum::routing::on;
use berth_store::{Role, TokenInfo};
use http::{Method, StatusCode, Uri};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Endpoint, JsonBody, QueryParam, epoch_ms, json, no_content, query_pairs};
use crate::auth::{Attempt, Ctx};
use crate::error::ApiError;
use crate::openapi::schema_ref;
use crate::policy::Need;

/// The `user` value that means the caller (as does leaving it out, or the caller's name).
const SELF: &str = "self";
/// The `user` value that lists every user's tokens.
const ALL_USERS: &str = "*";

pub(super) fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint {
            method: Method::GET,
            path: "/api/v1/tokens",
            operation_id: "listTokens",
            summary: "Tokens (revoked ones included), oldest first; never their secrets",
            access: "any valid token for your own; admin@* for another user's (`?user=NAME`) or everyone's (`?user=*`)",
            token_only: false,
            mutating: false,
            query: &[QueryParam {
                name: "user",
                kind: "string",
                description: "whose tokens: `self` (the default), a user name, or `*` for all",
            }],
            body: None,
            success: (StatusCode::OK, "the tokens", Some(tokens_schema)),
            errors: &[StatusCode::BAD_REQUEST],
            handler: |m| on(m, list),
        },
        Endpoint {
            method: Method::POST,
            path: "/api/v1/tokens",
            operation_id: "createToken",
            summary: "Create a token; the answer holds it, and it is shown only this once",
            access: "any valid token for yourself; admin@* for another user",
            token_only: false,
            mutating: true,
            query: &[],
            body: Some(create_schema),
            success: (
                StatusCode::CREATED,
                "the new token, with its secret",
                Some(|| schema_ref("NewToken")),
            ),
            errors: &[StatusCode::BAD_REQUEST, StatusCode::NOT_FOUND],
            handler: |m| on(m, create),
        },
        Endpoint {
            method: Method::DELETE,
            path: "/api/v1/tokens/{id}",
            operation_id: "revokeToken",
            summary: "Revoke a token (revoking a revoked one changes nothing)",
            access: "the token's owner; admin@* for any token",
            token_only: false,
            mutating: true,
            query: &[],
            body: None,
            success: (StatusCode::NO_CONTENT, "revoked", None),
            errors: &[StatusCode::BAD_REQUEST, StatusCode::NOT_FOUND],
            handler: |m| on(m, revoke),
        },
    ]
}

fn tokens_schema() -> Value {
    json!({
        "type": "object",
        "required": ["tokens"],
        "properties": { "tokens": { "type": "array", "items": schema_ref("Token") } },
    })
}

fn create_schema() -> Value {
    json!({
        "type": "object",
        "required": ["label"],
        "additionalProperties": false,
        "properties": {
            "user": { "type": "string", "description": "whose token; yourself when left out" },
            "label": { "type": "string", "description": "what it is for, e.g. `laptop` or `ci` (at most 200 bytes)" },
        },
    })
}

impl Ctx {
    /// True when `user` (a query or body value) means the caller.
    fn is_self(&self, user: Option<&str>) -> bool {
        user.is_none_or(|u| u == SELF || u == self.user().name)
    }

    /// True when `token` belongs to the caller. Tokens are listed by user *name*, and a
    /// removed user's name can be given to a new user: a token made before the caller's
    /// user existed was a former namesake's.
    fn owns(&self, token: &TokenInfo) -> bool {
        token.user == self.user().name && token.created >= self.user().created
    }
}

async fn list(ctx: Ctx, uri: Uri) -> Result<Response, ApiError> {
    let query = query_pairs(&uri, &["user"])?;
    let user = query.first().map(|(_, v)| v.as_str());
    let tokens = if ctx.is_self(user) {
        ctx.allow(&Need::Token)?;
        let mine = ctx.store().list_tokens(Some(&ctx.user().name)).await?;
        mine.into_iter().filter(|t| ctx.owns(t)).collect()
    } else {
        ctx.allow(&Need::everywhere(Role::Admin))?;
        let who = user.filter(|u| *u != ALL_USERS);
        ctx.store().list_tokens(who).await?
    };
    let tokens: Vec<Value> = tokens.iter().map(token_json).collect();
    Ok(json(StatusCode::OK, json!({ "tokens": tokens })))
}

fn token_json(t: &TokenInfo) -> Value {
    json!({
        "id": t.id,
        "user": t.user,
        "label": t.label,
        "prefix": t.prefix,
        "created": epoch_ms(t.created),
        "last_used": t.last_used.map(epoch_ms),
        "revoked": t.revoked.map(epoch_ms),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    user: Option<String>,
    label: String,
}

async fn create(ctx: Ctx, JsonBody(body): JsonBody<CreateToken>) -> Result<Response, ApiError> {
    let (user, need) = if ctx.is_self(body.user.as_deref()) {
        (ctx.user().name.clone(), Need::Token)
    } else {
        let user = body.user.clone().unwrap_or_default();
        (user, Need::everywhere(Role::Admin))
    };
    // The secret is not known yet, and is never put in an audit entry: only the label.
    let attempt = Attempt::new("token.create", &user, json!({ "label": body.label }));
    ctx.mutate(attempt, need, async |actor| {
        let (info, secret) = ctx
            .store()
            .create_token(&actor, &user, &body.label)
            .await
            .map_err(|e| ApiError::from_store_naming(e, &[("token label", "label")]))?;
        let mut answer = token_json(&info);
        answer["token"] = json!(secret);
        Ok(json(StatusCode::CREATED, answer))
    })
    .await
}

async fn revoke(ctx: Ctx, id: Result<Path<i64>, PathRejection>) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::bad_request("id", e.body_text()))?;
    let token = ctx
        .store()
        .list_tokens(None)
        .await?
        .into_iter()
        .find(|t| t.id == id);
    // An unknown id needs admin@* like someone else's token: a non-admin learns nothing
    // about which ids exist.
    let need = match &token {
        Some(t) if ctx.owns(t) => Need::Token,
        _ => Need::everywhere(Role::Admin),
    };
    let target = token.map_or_else(|| format!("#{id}"), |t| t.user);
    let attempt = Attempt::new("token.revoke", target, json!({ "token_id": id }));
    ctx.mutate(attempt, need, async |actor| {
        ctx.store().revoke_token(&actor, id).await?;
        Ok(no_content())
    })
    .await
}
