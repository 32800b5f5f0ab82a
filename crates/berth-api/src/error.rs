//! The one error type of the API and its single JSON shape:
//! `{"code": "...", "message": "..."}` (plus `"field"` on 400), with the status that says
//! what went wrong.

use std::time::Duration;

use axum::Json;
use axum::response::{IntoResponse, Response};
use berth_store::StoreError;
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// Bad input; `field` names it (`name`, `grants[1]`, `limit`, `body`, …).
    #[error("{field}: {message}")]
    BadRequest { field: String, message: String },

    #[error("the request body is larger than {limit} bytes")]
    TooLarge { limit: usize },

    #[error("no token: send `Authorization: Bearer <token>`")]
    MissingToken,

    /// Malformed, unknown, revoked, or its user removed: one answer for all, so a guesser
    /// learns nothing about which.
    #[error("invalid token")]
    InvalidToken,

    /// The caller's grants do not allow this (role too weak, or wrong environment).
    #[error("this needs {needed}")]
    Forbidden { needed: String },

    /// The caller has the role, but admin and deployer actions are restricted to some
    /// networks and the client address is outside them.
    #[error(
        "{needed} actions are not allowed from {client}: it is outside the restricted networks"
    )]
    NetworkDenied { needed: String, client: String },

    #[error("{0}")]
    NotFound(String),

    /// No route: the path is not one of the API's (see the OpenAPI document).
    #[error("no endpoint {method} {path}; GET /api/v1/openapi.json lists them")]
    UnknownEndpoint { method: String, path: String },

    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },

    /// The request contradicts the current state: `code` says how (`already_exists`,
    /// `last_admin`, `audit_chain_broken`).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },

    /// A reload was refused; the message holds the `file:line:col` diagnostics.
    #[error("{0}")]
    InvalidConfig(String),

    #[error(
        "too many failed authentications from this address; retry in {} s",
        retry_after_secs(*.retry_after)
    )]
    Throttled { retry_after: Duration },

    /// The server does not offer this (e.g. it runs no apps).
    #[error("{0}")]
    Unavailable(String),

    /// A deploy was refused or failed: `code` says how (`invalid_release`, `build_failed`,
    /// `unhealthy`); the message is what the person deploying reads.
    #[error("{message}")]
    Deploy {
        status: StatusCode,
        code: &'static str,
        message: String,
    },

    /// Anything the client cannot fix. The detail goes to the log, not to the client.
    #[error("internal error; the server log has the details")]
    Internal(String),
}

/// Whole seconds, rounded up and at least 1, so a client that waits that long is through.
fn retry_after_secs(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

impl ApiError {
    pub(crate) fn bad_request(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MissingToken | ApiError::InvalidToken => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } | ApiError::NetworkDenied { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) | ApiError::UnknownEndpoint { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::InvalidConfig(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Deploy { status, .. } => *status,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable, machine-readable `code` (docs/api.md lists them).
    pub(crate) fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "bad_request",
            ApiError::TooLarge { .. } => "too_large",
            ApiError::MissingToken => "missing_token",
            ApiError::InvalidToken => "invalid_token",
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::NetworkDenied { .. } => "network_denied",
            ApiError::NotFound(_) => "not_found",
            ApiError::UnknownEndpoint { .. } => "unknown_endpoint",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Conflict { code, .. } => code,
            ApiError::InvalidConfig(_) => "invalid_config",
            ApiError::Throttled { .. } => "throttled",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Deploy { code, .. } => code,
            ApiError::Internal(_) => "internal",
        }
    }

    /// True for refusals by policy (403), which the audit log records as `denied`.
    pub(crate) fn is_denial(&self) -> bool {
        matches!(
            self,
            ApiError::Forbidden { .. } | ApiError::NetworkDenied { .. }
        )
    }

    /// Maps a store error, naming the request field that an `Invalid { what }` came from:
    /// `fields` pairs the store's `what` (e.g. `"user name"`) with the field (`"name"`).
    pub(crate) fn from_store_naming(e: StoreError, fields: &[(&str, &str)]) -> Self {
        match e {
            StoreError::Invalid { what, reason } => {
                let field = fields
                    .iter()
                    .find(|(w, _)| *w == what)
                    .map_or(what, |(_, f)| *f);
                ApiError::bad_request(field, reason)
            }
            other => other.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            StoreError::AlreadyExists { .. } => ApiError::Conflict {
                code: "already_exists",
                message: e.to_string(),
            },
            StoreError::Invalid { what, reason } => ApiError::bad_request(what, reason),
            StoreError::LastAdmin { .. } => ApiError::Conflict {
                code: "last_admin",
                message: e.to_string(),
            },
            StoreError::Locked(_) => ApiError::Conflict {
                code: "locked",
                message: e.to_string(),
            },
            StoreError::NotLockOwner(_) => ApiError::Conflict {
                code: "not_lock_owner",
                message: e.to_string(),
            },
            StoreError::NotLocked { .. } => ApiError::NotFound(e.to_string()),
            StoreError::AuditChainBroken(_) => ApiError::Conflict {
                code: "audit_chain_broken",
                message: e.to_string(),
            },
            StoreError::Database(_)
            | StoreError::Migrate(_)
            | StoreError::Corrupt { .. }
            | StoreError::UnsupportedUrl(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(error = %detail, "admin API request failed");
        }
        let mut body = json!({ "code": self.code(), "message": self.to_string() });
        if let ApiError::BadRequest { field, message } = &self {
            body["field"] = json!(field);
            body["message"] = json!(format!("{field}: {message}"));
        }
        let mut response = (self.status(), Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::MissingToken | ApiError::InvalidToken => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"berth\""),
                );
            }
            ApiError::Throttled { retry_after } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after_secs(*retry_after)),
                );
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(59_001)), 60);
        assert_eq!(retry_after_secs(Duration::from_secs(60)), 60);
    }

    #[test]
    fn store_errors_map_to_statuses() {
        let e = ApiError::from_store_naming(
            StoreError::Invalid {
                what: "user name",
                reason: "bad".into(),
            },
            &[("user name", "name")],
        );
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.to_string(), "name: bad");
        let e: ApiError = StoreError::AlreadyExists {
            kind: "user",
            name: "alice".into(),
        }
        .into();
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::CONFLICT, "already_exists")
        );
        let e: ApiError = StoreError::Corrupt {
            what: "x",
            reason: "secret detail".into(),
        }
        .into();
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.to_string().contains("secret detail"));
    }
}
