//! API tokens: anyone manages their own; admin@* manages everyone's.

use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::response::Response;
use axum::routing::on;
use berth_store::{Role, TokenInfo};
use http::{Method, StatusCode, Uri};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Endpoint, JsonBody, QueryParam, json_of, listing, no_content, query_pairs};
use crate::auth::{Attempt, Ctx};
use crate::error::ApiError;
use crate::openapi::{list_of, schema_ref};
use crate::policy::Need;

/// The `user` value that means the caller (as does leaving it out, or the caller's name).
const SELF: &str = "self";
/// The `user` value that lists every user's tokens.
const ALL_USERS: &str = "*";

/// How attempts at this endpoint are named in the audit log.
const TOKEN_CREATE: &str = "token.create";
/// How attempts at this endpoint are named in the audit log.
const TOKEN_REVOKE: &str = "token.revoke";

pub(super) fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint {
            method: Method::GET,
            path: "/api/v1/tokens",
            operation_id: "listTokens",
            audit: None,
            summary: "Tokens (revoked ones included), oldest first; never their secrets",
            access: "any valid token for your own; admin@* for another user's (`?user=NAME`) or everyone's (`?user=*`)",
            token_only: false,
            query: &[QueryParam {
                name: "user",
                kind: "string",
                description: "whose tokens: `self` (the default), a user name, or `*` for all",
            }],
            body: None,
            success: (
                StatusCode::OK,
                "the tokens",
                Some(|| list_of("tokens", "Token")),
            ),
            errors: &[StatusCode::BAD_REQUEST],
            handler: |m| on(m, list),
        },
        Endpoint {
            method: Method::POST,
            path: "/api/v1/tokens",
            operation_id: "createToken",
            audit: Some(TOKEN_CREATE),
            summary: "Create a token; the answer holds it, and it is shown only this once",
            access: "any valid token for yourself; admin@* for another user",
            token_only: false,
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
            audit: Some(TOKEN_REVOKE),
            summary: "Revoke a token (revoking a revoked one changes nothing)",
            access: "the token's owner; admin@* for any token",
            token_only: false,
            query: &[],
            body: None,
            success: (StatusCode::NO_CONTENT, "revoked", None),
            errors: &[StatusCode::BAD_REQUEST, StatusCode::NOT_FOUND],
            handler: |m| on(m, revoke),
        },
    ]
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
    let tokens: Vec<TokenInfo> = if ctx.is_self(user) {
        ctx.allow(&Need::Token)?;
        let mine = ctx.store().list_tokens(Some(&ctx.user().name)).await?;
        mine.into_iter().filter(|t| ctx.owns(t)).collect()
    } else {
        ctx.allow(&Need::everywhere(Role::Admin))?;
        let who = user.filter(|u| *u != ALL_USERS);
        ctx.store().list_tokens(who).await?
    };
    listing("tokens", &tokens)
}

/// The answer to a token's creation: the token as listed, plus the token itself (the
/// `NewToken` schema).
#[derive(Serialize)]
struct NewToken<'a> {
    #[serde(flatten)]
    info: &'a TokenInfo,
    token: &'a str,
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
    let attempt = Attempt::new(TOKEN_CREATE, &user, json!({ "label": body.label }));
    ctx.mutate(attempt, need, async |actor| {
        let (info, secret) = ctx
            .store()
            .create_token(&actor, &user, &body.label)
            .await
            .map_err(|e| ApiError::from_store_naming(e, &[("token label", "label")]))?;
        json_of(
            StatusCode::CREATED,
            &NewToken {
                info: &info,
                token: &secret,
            },
        )
    })
    .await
}

async fn revoke(ctx: Ctx, id: Result<Path<i64>, PathRejection>) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::bad_request("id", e.body_text()))?;
    let token = ctx.store().get_token(id).await?;
    // An unknown id needs admin@* like someone else's token: a non-admin learns nothing
    // about which ids exist.
    let need = match &token {
        Some(t) if ctx.owns(t) => Need::Token,
        _ => Need::everywhere(Role::Admin),
    };
    let target = token.map_or_else(|| format!("#{id}"), |t| t.user);
    let attempt = Attempt::new(TOKEN_REVOKE, target, json!({ "token_id": id }));
    ctx.mutate(attempt, need, async |actor| {
        ctx.store().revoke_token(&actor, id).await?;
        Ok(no_content())
    })
    .await
}
