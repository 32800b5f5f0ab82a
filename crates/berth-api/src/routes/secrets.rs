//! An app's secrets in one environment: list (names, versions, who, when), set, unset,
//! import, reveal (admin, audited), and the rotation of the master key.
//!
//! Values travel only in the bodies of `PUT …/secrets/{key}`, `POST …/secrets` (import) and
//! the answer to `POST …/secrets/{key}/reveal`. They are read by hand from the JSON body, so
//! no parse error can quote one, and they never reach an audit entry, an error or a log line.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::response::Response;
use axum::routing::on;
use berth_deploy::{AppKey, SecretsError, Vault};
use berth_store::Role;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::deploys::deployer;
use super::{Endpoint, MAX_BODY, app_of, epoch_ms, json, json_of, listing, one_environment};
use crate::auth::{Attempt, Ctx};
use crate::error::ApiError;
use crate::openapi::any_object;
use crate::policy::Need;

const SECRET_SET: &str = "secret.set";
const SECRET_UNSET: &str = "secret.unset";
const SECRET_IMPORT: &str = "secret.import";
const SECRET_REVEAL: &str = "secret.reveal";
const SECRET_ROTATE: &str = "secret.rotate_key";

pub(super) fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint {
            method: Method::GET,
            path: "/api/v1/envs/{env}/apps/{name}/secrets",
            operation_id: "listSecrets",
            audit: None,
            summary: "The app's secrets in the environment: names, versions (and the version the running release has), who set them and when; never values",
            access: "viewer@{env}",
            token_only: false,
            query: &[],
            body: None,
            success: (StatusCode::OK, "the secrets", Some(any_object)),
            errors: &[StatusCode::BAD_REQUEST],
            handler: |m| on(m, list),
        },
        Endpoint {
            method: Method::PUT,
            path: "/api/v1/envs/{env}/apps/{name}/secrets/{key}",
            operation_id: "setSecret",
            audit: Some(SECRET_SET),
            summary: "Set a secret (a new version); it reaches instances at the next deploy or restart",
            access: "deployer@{env}",
            token_only: false,
            query: &[],
            body: Some(|| {
                json!({ "type": "object", "required": ["value"], "additionalProperties": false,
                        "properties": { "value": { "type": "string" } } })
            }),
            success: (StatusCode::OK, "{name, version}", Some(any_object)),
            errors: &[StatusCode::BAD_REQUEST, StatusCode::SERVICE_UNAVAILABLE],
            handler: |m| on(m, set),
        },
        Endpoint {
            method: Method::DELETE,
            path: "/api/v1/envs/{env}/apps/{name}/secrets/{key}",
            operation_id: "unsetSecret",
            audit: Some(SECRET_UNSET),
            summary: "Remove a secret (its history stays)",
            access: "deployer@{env}",
            token_only: false,
            query: &[],
            body: None,
            success: (StatusCode::OK, "{name, version}", Some(any_object)),
            errors: &[StatusCode::BAD_REQUEST, StatusCode::NOT_FOUND],
            handler: |m| on(m, unset),
        },
        Endpoint {
            method: Method::POST,
            path: "/api/v1/envs/{env}/apps/{name}/secrets",
            operation_id: "importSecrets",
            audit: Some(SECRET_IMPORT),
            summary: "Set several secrets at once (from a .env file), in one transaction",
            access: "deployer@{env}",
            token_only: false,
            query: &[],
            body: Some(|| {
                json!({ "type": "object", "required": ["values"], "additionalProperties": false,
                        "properties": { "values": { "type": "object", "additionalProperties": { "type": "string" } } } })
            }),
            success: (StatusCode::OK, "{set: [{name, version}]}", Some(any_object)),
            errors: &[StatusCode::BAD_REQUEST, StatusCode::SERVICE_UNAVAILABLE],
            handler: |m| on(m, import),
        },
        Endpoint {
            method: Method::POST,
            path: "/api/v1/envs/{env}/apps/{name}/secrets/{key}/reveal",
            operation_id: "revealSecret",
            audit: Some(SECRET_REVEAL),
            summary: "A secret's current value (audited)",
            access: "admin@{env}",
            token_only: false,
            query: &[],
            body: None,
            success: (StatusCode::OK, "{name, version, value}", Some(any_object)),
            errors: &[
                StatusCode::BAD_REQUEST,
                StatusCode::NOT_FOUND,
                StatusCode::SERVICE_UNAVAILABLE,
            ],
            handler: |m| on(m, reveal),
        },
        Endpoint {
            method: Method::POST,
            path: "/api/v1/secrets/rotate-key",
            operation_id: "rotateMasterKey",
            audit: Some(SECRET_ROTATE),
            summary: "Re-seal every secret under a new master key, in one transaction; instances keep running",
            access: "admin@*",
            token_only: false,
            query: &[],
            body: None,
            success: (
                StatusCode::OK,
                "{key_id, previous_key_id, resealed, key_file, new_key, note}",
                Some(any_object),
            ),
            errors: &[StatusCode::SERVICE_UNAVAILABLE],
            handler: |m| on(m, rotate),
        },
    ]
}

impl From<SecretsError> for ApiError {
    fn from(e: SecretsError) -> Self {
        match e {
            SecretsError::Unavailable(m) => ApiError::Deploy {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "secrets_unavailable",
                message: m,
            },
            SecretsError::Corrupt(m) => ApiError::Deploy {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                code: "secret_corrupt",
                message: m,
            },
            SecretsError::NotFound(m) => ApiError::NotFound(m),
            SecretsError::BadInput(m) => ApiError::bad_request("secret", m),
            SecretsError::Store(s) => s.into(),
        }
    }
}

fn vault(ctx: &Ctx) -> Result<Arc<Vault>, ApiError> {
    Ok(deployer(ctx)?.secrets().clone())
}

/// The app (`{env}`, `{name}`) and the secret's name (`{key}`) of a secret's path.
fn secret_of(
    path: Result<Path<(String, String, String)>, PathRejection>,
) -> Result<(AppKey, String), ApiError> {
    let Path((env, app, name)) = path.map_err(|e| ApiError::bad_request("path", e.body_text()))?;
    Ok((AppKey::new(one_environment(env)?, app), name))
}

/// An attempt on one secret, audited with its name (never its value).
fn attempt(action: &'static str, key: &AppKey, name: &str) -> Attempt {
    Attempt::new(action, key.to_string(), json!({ "name": name }))
}

/// The body as a JSON object whose only key is `field`, read without serde's messages
/// (which quote values they dislike).
fn body_field(bytes: &[u8], field: &'static str) -> Result<Value, ApiError> {
    let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(bytes) else {
        return Err(ApiError::bad_request(
            "body",
            format!("expected a JSON object with `{field}`"),
        ));
    };
    if let Some(other) = map.keys().find(|k| k.as_str() != field) {
        return Err(ApiError::bad_request(
            other.clone(),
            format!("unknown field (expected only `{field}`)"),
        ));
    }
    map.remove(field)
        .ok_or_else(|| ApiError::bad_request(field, format!("missing field `{field}`")))
}

fn too_large(bytes: &Bytes) -> Result<(), ApiError> {
    if bytes.len() > MAX_BODY {
        return Err(ApiError::TooLarge { limit: MAX_BODY });
    }
    Ok(())
}

async fn list(
    ctx: Ctx,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let key = app_of(path)?;
    ctx.allow(&Need::on(Role::Viewer, &key.env))?;
    let list = vault(&ctx)?.list(&key.env, &key.app).await?;
    // The versions the running release started with: a difference is a pending restart.
    let releases = ctx.store().list_releases(&key.env, &key.app).await?;
    let running: std::collections::BTreeMap<String, i64> = match releases.iter().find(|r| r.active)
    {
        Some(r) => ctx
            .store()
            .release_secrets(r.id)
            .await?
            .into_iter()
            .collect(),
        None => Default::default(),
    };
    let items: Vec<Value> = list
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "version": s.version,
                "running_version": running.get(&s.name),
                "updated_by": s.updated_by,
                "updated": epoch_ms(s.updated),
            })
        })
        .collect();
    listing("secrets", &items)
}

async fn set(
    ctx: Ctx,
    path: Result<Path<(String, String, String)>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (key, name) = secret_of(path)?;
    too_large(&body)?;
    let Value::String(value) = body_field(&body, "value")? else {
        return Err(ApiError::bad_request("value", "expected a string"));
    };
    let value = zeroize::Zeroizing::new(value);
    let attempt = attempt(SECRET_SET, &key, &name);
    ctx.mutate(attempt, Need::on(Role::Deployer, &key.env), async |actor| {
        let version = vault(&ctx)?
            .set(&actor, &key.env, &key.app, &name, &value)
            .await?;
        Ok(json(
            StatusCode::OK,
            json!({ "name": name, "version": version }),
        ))
    })
    .await
}

async fn unset(
    ctx: Ctx,
    path: Result<Path<(String, String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let (key, name) = secret_of(path)?;
    let attempt = attempt(SECRET_UNSET, &key, &name);
    ctx.mutate(attempt, Need::on(Role::Deployer, &key.env), async |actor| {
        let version = vault(&ctx)?
            .unset(&actor, &key.env, &key.app, &name)
            .await?;
        Ok(json(
            StatusCode::OK,
            json!({ "name": name, "version": version }),
        ))
    })
    .await
}

async fn import(
    ctx: Ctx,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = app_of(path)?;
    too_large(&body)?;
    let Value::Object(values) = body_field(&body, "values")? else {
        return Err(ApiError::bad_request(
            "values",
            "expected an object of NAME: \"value\"",
        ));
    };
    let mut pairs: Vec<(String, zeroize::Zeroizing<String>)> = Vec::new();
    for (name, value) in values {
        let Value::String(v) = value else {
            return Err(ApiError::bad_request(
                format!("values.{name}"),
                "expected a string",
            ));
        };
        pairs.push((name, zeroize::Zeroizing::new(v)));
    }
    let names: Vec<&str> = pairs.iter().map(|(n, _)| n.as_str()).collect();
    let attempt = Attempt::new(SECRET_IMPORT, key.to_string(), json!({ "names": names }));
    ctx.mutate(attempt, Need::on(Role::Deployer, &key.env), async |actor| {
        let borrowed: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let done = vault(&ctx)?
            .import(&actor, &key.env, &key.app, &borrowed)
            .await?;
        let set: Vec<Value> = done
            .iter()
            .map(|(n, v)| json!({ "name": n, "version": v }))
            .collect();
        Ok(json(StatusCode::OK, json!({ "set": set })))
    })
    .await
}

async fn reveal(
    ctx: Ctx,
    path: Result<Path<(String, String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let (key, name) = secret_of(path)?;
    let attempt = attempt(SECRET_REVEAL, &key, &name);
    ctx.mutate(attempt, Need::on(Role::Admin, &key.env), async |actor| {
        let (version, value) = vault(&ctx)?
            .reveal(&actor, &key.env, &key.app, &name)
            .await?;
        Ok(json(
            StatusCode::OK,
            json!({ "name": name, "version": version, "value": value.as_str() }),
        ))
    })
    .await
}

async fn rotate(ctx: Ctx) -> Result<Response, ApiError> {
    let attempt = Attempt::new(SECRET_ROTATE, "secrets", json!({}));
    ctx.mutate(attempt, Need::everywhere(Role::Admin), async |actor| {
        let report = vault(&ctx)?.rotate(&actor).await?;
        json_of(StatusCode::OK, &report)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `field: message` of a refused body, as the answer carries it.
    fn refused(body: &str) -> String {
        match body_field(body.as_bytes(), "value") {
            Err(ApiError::BadRequest { field, message }) => format!("{field}: {message}"),
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn a_malformed_body_is_refused_without_quoting_the_value() {
        const PLANTED: &str = "PLANTED-value-3e1f9a";
        for body in [
            PLANTED.to_owned(),
            format!("\"{PLANTED}\""),
            format!("[\"{PLANTED}\"]"),
            format!("{{\"value\": \"{PLANTED}\""),
            format!("{{\"value\": \"{PLANTED}\", \"other\": 1}}"),
            format!("{{\"valeu\": \"{PLANTED}\"}}"),
        ] {
            let e = refused(&body);
            assert!(!e.contains(PLANTED), "{body} answered {e}");
        }
        assert_eq!(
            body_field(br#"{"value": "v"}"#, "value").unwrap(),
            json!("v")
        );
    }
}
