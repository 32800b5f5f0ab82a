//! The OpenAPI 3 document, generated from the same endpoint table as the router
//! (`routes::endpoints`), so it lists exactly the routes that are served.

use std::sync::LazyLock;

use http::StatusCode;
use serde_json::{Map, Value, json};

use crate::routes::{Endpoint, endpoints};

/// A reference to one of the document's shared schemas.
pub(crate) fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// `{key: [item, …]}`: the shape of every listing (`routes::listing` answers it).
pub(crate) fn list_of(key: &str, item: &str) -> Value {
    json!({
        "type": "object",
        "required": [key],
        "properties": { key: { "type": "array", "items": schema_ref(item) } },
    })
}

/// An object whose fields are not documented one by one.
pub(crate) fn any_object() -> Value {
    json!({ "type": "object" })
}

/// The `name` of a user or an app, as the store checks it.
pub(crate) fn name_property() -> Value {
    json!({ "type": "string", "description": "1-64 of A-Z a-z 0-9 . _ @ -, starting with a letter or digit" })
}

static DOCUMENT: LazyLock<Value> = LazyLock::new(build);

/// The OpenAPI 3 document of the API (also served at `GET /api/v1/openapi.json`).
pub fn openapi() -> Value {
    DOCUMENT.clone()
}

fn build() -> Value {
    let mut paths = Map::new();
    for e in endpoints() {
        let item = paths
            .entry(e.path)
            .or_insert_with(|| Value::Object(Map::new()));
        item[e.method.as_str().to_ascii_lowercase()] = operation(&e);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "berth admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every request needs `Authorization: Bearer <token>`. Roles are granted per environment (`admin` ⊃ `deployer` ⊃ `viewer`; `*` = every environment). Errors are `{\"code\", \"message\"}`; docs/api.md explains codes, throttling and network restriction.",
        },
        "servers": [{ "url": "/" }],
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "description": "a token `berth_<public id>_<secret>`" },
            },
            "schemas": schemas(),
        },
    })
}

fn operation(e: &Endpoint) -> Value {
    let mut parameters: Vec<Value> = path_params(e.path)
        .map(|name| {
            let kind = if name == "id" { "integer" } else { "string" };
            json!({ "name": name, "in": "path", "required": true, "schema": { "type": kind } })
        })
        .collect();
    parameters.extend(e.query.iter().map(|q| {
        json!({
            "name": q.name,
            "in": "query",
            "required": false,
            "description": q.description,
            "schema": { "type": q.kind },
        })
    }));

    let mut responses = Map::new();
    let (status, description, schema) = &e.success;
    let mut success = json!({ "description": description });
    if let Some(schema) = schema {
        success["content"] = json!({ "application/json": { "schema": schema() } });
    }
    responses.insert(status.as_u16().to_string(), success);
    for status in error_statuses(e) {
        responses.insert(
            status.as_u16().to_string(),
            json!({
                "description": status.canonical_reason().unwrap_or("error"),
                "content": { "application/json": { "schema": schema_ref("Error") } },
            }),
        );
    }

    let mut op = json!({
        "operationId": e.operation_id,
        "summary": e.summary,
        "description": format!("Access: {}.", e.access),
        "x-berth-access": e.access,
        "x-berth-audited": e.mutating(),
        "responses": responses,
    });
    if !parameters.is_empty() {
        op["parameters"] = Value::Array(parameters);
    }
    if let Some(body) = e.body {
        op["requestBody"] = json!({
            "required": true,
            "content": { "application/json": { "schema": body() } },
        });
    }
    op
}

/// The error statuses an endpoint can answer, in order.
fn error_statuses(e: &Endpoint) -> Vec<StatusCode> {
    let mut all = vec![StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS];
    if !e.token_only {
        all.push(StatusCode::FORBIDDEN);
    }
    if e.body.is_some() {
        all.extend([StatusCode::BAD_REQUEST, StatusCode::PAYLOAD_TOO_LARGE]);
    }
    all.extend_from_slice(e.errors);
    all.push(StatusCode::INTERNAL_SERVER_ERROR);
    all.sort();
    all.dedup();
    all
}

/// The `{name}` segments of a path.
pub(crate) fn path_params(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}

fn ms(description: &str) -> Value {
    json!({ "type": "integer", "format": "int64", "description": format!("{description} (ms since the Unix epoch)") })
}

fn nullable_ms(description: &str) -> Value {
    let mut v = ms(description);
    v["nullable"] = json!(true);
    v
}

fn schemas() -> Value {
    json!({
        "Error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": { "type": "string", "description": "stable machine-readable code, e.g. `forbidden`, `network_denied`, `throttled`" },
                "message": { "type": "string" },
                "field": { "type": "string", "description": "on 400: the request field at fault" },
            },
        },
        "Grant": { "type": "string", "example": "deployer@staging", "description": "ROLE@ENVIRONMENT; ROLE alone means ROLE@*" },
        "User": {
            "type": "object",
            "required": ["name", "grants", "created"],
            "properties": {
                "name": { "type": "string" },
                "grants": { "type": "array", "items": schema_ref("Grant") },
                "created": ms("when the user was added"),
            },
        },
        "Token": {
            "type": "object",
            "required": ["id", "user", "label", "prefix", "created"],
            "properties": {
                "id": { "type": "integer" },
                "user": { "type": "string" },
                "label": { "type": "string" },
                "prefix": { "type": "string", "description": "`berth_<public id>`: the start of the token, safe to show" },
                "created": ms("created"),
                "last_used": nullable_ms("last used (refreshed at most once a minute)"),
                "revoked": nullable_ms("revoked"),
            },
        },
        "NewToken": {
            "allOf": [
                schema_ref("Token"),
                {
                    "type": "object",
                    "required": ["token"],
                    "properties": { "token": { "type": "string", "description": "the token itself; shown only in this answer" } },
                },
            ],
        },
        "AuditEntry": {
            "type": "object",
            "properties": {
                "seq": { "type": "integer" },
                "time": ms("when"),
                "actor": { "type": "string" },
                "role": { "type": "string" },
                "source": { "type": "string", "description": "client IP address, or `local`" },
                "action": { "type": "string" },
                "target": { "type": "string" },
                "params": { "type": "string", "description": "JSON text, exactly as hashed" },
                "outcome": { "type": "string", "description": "`ok`, `denied`, or `error: CODE`" },
                "prev_hash": { "type": "string" },
                "hash": { "type": "string" },
            },
        },
        "VerifyReport": {
            "type": "object",
            "required": ["valid", "entries_checked", "head_seq", "head_hash"],
            "properties": {
                "valid": { "type": "boolean" },
                "entries_checked": { "type": "integer" },
                "first_bad": {
                    "type": "object",
                    "nullable": true,
                    "properties": {
                        "seq": { "type": "integer" },
                        "reason": { "type": "string", "enum": ["missing", "unexpected", "broken_link", "altered", "beyond_head", "head_mismatch", "head_missing", "bad_checkpoint"] },
                        "message": { "type": "string" },
                    },
                },
                "checkpoint_seq": { "type": "integer", "nullable": true },
                "head_seq": { "type": "integer" },
                "head_hash": { "type": "string", "description": "record it elsewhere: a later chain that no longer passes through it was rewritten" },
            },
        },
        "App": {
            "type": "object",
            "required": ["id", "environment", "name", "spec", "created", "updated"],
            "properties": {
                "id": { "type": "integer" },
                "environment": { "type": "string" },
                "name": { "type": "string" },
                "spec": { "type": "object" },
                "created": ms("created"),
                "updated": ms("last changed"),
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_lists_every_endpoint_with_its_parameters() {
        let doc = openapi();
        let table = endpoints();
        let mut operations = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                operations += 1;
                let e = table
                    .iter()
                    .find(|e| e.path == path && e.method.as_str().eq_ignore_ascii_case(method))
                    .unwrap_or_else(|| panic!("{method} {path} documented but not in the table"));
                let documented: Vec<&str> = op["parameters"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .filter(|p| p["in"] == "path")
                            .map(|p| p["name"].as_str().unwrap())
                            .collect()
                    })
                    .unwrap_or_default();
                assert_eq!(documented, path_params(e.path).collect::<Vec<_>>());
                assert!(op["responses"]["401"].is_object(), "{method} {path}");
            }
        }
        assert_eq!(operations, table.len());
        // Every $ref names a schema that exists.
        let text = doc.to_string();
        for piece in text.split("#/components/schemas/").skip(1) {
            let name: String = piece.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(
                doc["components"]["schemas"][&name].is_object()
                    || doc["components"]["schemas"][&name].is_string(),
                "missing schema {name}"
            );
        }
    }
}
