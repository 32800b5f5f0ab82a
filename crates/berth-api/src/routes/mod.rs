//! The endpoints: one table ([`endpoints`]) that both the router and the OpenAPI document
//! are built from, so neither can list a route the other lacks. Handlers live in a file per
//! resource beside this one.

mod apps;
mod audit;
mod deploy_events;
mod deploys;
mod locks;
mod metrics;
mod reload;
mod rollouts;
mod secrets;
mod tokens;
mod users;
mod whoami;

use std::collections::BTreeMap;
use std::time::SystemTime;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, Path, Request};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};
use berth_deploy::AppKey;
use http::{HeaderValue, Method, StatusCode, Uri, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::Shared;
use crate::auth;
use crate::error::ApiError;

/// Request bodies are small JSON objects; anything bigger is a mistake or an attack.
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// A query parameter, for the OpenAPI document.
pub(crate) struct QueryParam {
    pub name: &'static str,
    /// JSON schema type: `string` or `integer`.
    pub kind: &'static str,
    pub description: &'static str,
}

/// Makes a JSON schema for the OpenAPI document.
pub(crate) type Schema = fn() -> Value;

/// One endpoint: how to serve it and how to document it.
pub(crate) struct Endpoint {
    pub method: Method,
    /// The full path in axum's and OpenAPI's shared syntax (`/api/v1/users/{name}`).
    pub path: &'static str,
    pub operation_id: &'static str,
    /// The dotted action every attempt is audited as (`user.add`): `Some` exactly for the
    /// mutating endpoints, so an attempt refused before its handler runs (a body that does
    /// not parse) is filed under the same action as the handler's own entries.
    pub audit: Option<&'static str>,
    pub summary: &'static str,
    /// Who may call it, as docs/api.md says it (`admin@*`, `viewer@{env}`, …).
    pub access: &'static str,
    /// Needs only a valid token (no 403 possible).
    pub token_only: bool,
    pub query: &'static [QueryParam],
    /// The JSON schema of the request body, if it takes one.
    pub body: Option<Schema>,
    /// The success status, what it returns, and its JSON schema (`None`: no body).
    pub success: (StatusCode, &'static str, Option<Schema>),
    /// Statuses beyond the ones every endpoint can answer (401, 429, 500) and the 403 that
    /// every endpoint needing a role can answer.
    pub errors: &'static [StatusCode],
    /// Makes the route from the method filter of `method`, so the method served and the
    /// method documented are one value: write it as `|m| on(m, handler_fn)`.
    pub handler: fn(MethodFilter) -> MethodRouter<Shared>,
}

impl Endpoint {
    /// Changes something, so every attempt is audited.
    pub(crate) fn mutating(&self) -> bool {
        self.audit.is_some()
    }
}

/// Every endpoint the API serves.
pub(crate) fn endpoints() -> Vec<Endpoint> {
    let mut all = Vec::new();
    all.extend(whoami::endpoints());
    all.extend(users::endpoints());
    all.extend(tokens::endpoints());
    all.extend(audit::endpoints());
    all.extend(reload::endpoints());
    all.extend(metrics::endpoints());
    all.extend(apps::endpoints());
    all.extend(deploys::endpoints());
    all.extend(deploy_events::endpoints());
    all.extend(rollouts::endpoints());
    all.extend(locks::endpoints());
    all.extend(secrets::endpoints());
    all
}

fn method_filter(method: &Method) -> MethodFilter {
    match *method {
        Method::GET => MethodFilter::GET,
        Method::POST => MethodFilter::POST,
        Method::DELETE => MethodFilter::DELETE,
        Method::PUT => MethodFilter::PUT,
        Method::PATCH => MethodFilter::PATCH,
        // The table only uses the methods above; a new one must be added here.
        _ => unreachable!("endpoint table uses an unsupported method {method}"),
    }
}

/// Where the API lives; every path in the table starts with it.
pub(crate) const PREFIX: &str = "/api/v1";

/// The API nested under [`PREFIX`]. Nesting (rather than full paths at the root) keeps the
/// API's own fallback, which needs a token and answers JSON, to paths under the prefix, and
/// leaves the root router with axum's default fallback: the binary can `merge` it beside
/// its own routes (health checks) and set its own fallback for everything else.
pub(crate) fn router(shared: Shared) -> Router {
    let mut api = Router::new();
    for e in endpoints() {
        let path = e.path.strip_prefix(PREFIX).unwrap_or(e.path);
        let mut route = (e.handler)(method_filter(&e.method));
        if let Some(action) = e.audit {
            route = route.layer(middleware::from_fn_with_state(
                (shared.clone(), action),
                auth::audit_rejected_input,
            ));
        }
        api = api.route(path, route);
    }
    let api = api
        .fallback(unknown_endpoint)
        .method_not_allowed_fallback(method_not_allowed)
        // Applied to every route and to the fallbacks: nothing answers without a token.
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            auth::authenticate,
        ))
        .layer(middleware::map_response(no_store))
        .with_state(shared);
    Router::new().nest(PREFIX, api)
}

// Inside the nested router `Uri` has the prefix stripped; put it back for messages.

async fn unknown_endpoint(method: Method, uri: Uri) -> ApiError {
    ApiError::UnknownEndpoint {
        method: method.to_string(),
        path: format!("{PREFIX}{}", uri.path()),
    }
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: format!("{PREFIX}{}", uri.path()),
    }
}

/// API answers carry tokens (shown once) and private state: no cache may keep them.
async fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A JSON request body, with errors that name the field. Any content type is accepted
/// (`curl -d` sends a form type by default); the body must be a JSON object of the right
/// shape, unknown fields refused so that typos do not pass silently.
pub(crate) struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Shared> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &Shared) -> Result<Self, ApiError> {
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
            .await
            .map_err(|_| ApiError::TooLarge { limit: MAX_BODY })?;
        parse_json(&bytes).map(JsonBody)
    }
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        // A missing or unknown field is reported at the object holding it ("."); name
        // the field itself.
        let field = if inner.is_syntax() || inner.is_eof() {
            // Not JSON at all (or cut short): no field is at fault but the body.
            "body".to_owned()
        } else if path == "." {
            backticked(&message).unwrap_or_else(|| "body".to_owned())
        } else {
            path
        };
        ApiError::bad_request(field, message)
    })
}

/// The first `` `name` `` in a serde message (`missing field `label``).
fn backticked(message: &str) -> Option<String> {
    let (_, rest) = message.split_once('`')?;
    let (name, _) = rest.split_once('`')?;
    Some(name.to_owned())
}

/// The query string as name/value pairs, refusing names outside `allowed` (so a typo such
/// as `?actr=` is an error, not a silently unfiltered answer) and repeated names.
pub(crate) fn query_pairs(uri: &Uri, allowed: &[&str]) -> Result<Vec<(String, String)>, ApiError> {
    let axum::extract::Query(pairs) =
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map_err(|e| ApiError::bad_request("query", e.body_text()))?;
    for (i, (name, _)) in pairs.iter().enumerate() {
        if !allowed.contains(&name.as_str()) {
            return Err(ApiError::bad_request(
                name.clone(),
                format!(
                    "unknown query parameter (expected one of {})",
                    allowed.join(", ")
                ),
            ));
        }
        if pairs[..i].iter().any(|(n, _)| n == name) {
            return Err(ApiError::bad_request(name.clone(), "given more than once"));
        }
    }
    Ok(pairs)
}

/// The query's only parameter `name`, when given, as a number within `range`; `expected`
/// says what is allowed when it is not.
pub(crate) fn number_param<T: std::str::FromStr + PartialOrd>(
    uri: &Uri,
    name: &str,
    range: std::ops::RangeInclusive<T>,
    expected: &str,
) -> Result<Option<T>, ApiError> {
    match query_pairs(uri, &[name])?.first() {
        None => Ok(None),
        Some((_, value)) => value
            .parse()
            .ok()
            .filter(|n| range.contains(n))
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(name.to_owned(), expected)),
    }
}

/// A response with a JSON body and a status.
pub(crate) fn json(status: StatusCode, value: Value) -> Response {
    (status, axum::Json(value)).into_response()
}

/// A response with `value` serialised as its JSON body. The store's and the deployer's
/// types serialise to the form the API answers with (times by `berth_store::serde_ms`).
pub(crate) fn json_of(status: StatusCode, value: &impl Serialize) -> Result<Response, ApiError> {
    let value = serde_json::to_value(value)
        .map_err(|e| ApiError::Internal(format!("encoding the answer: {e}")))?;
    Ok(json(status, value))
}

/// 200 with `{key: items}`: how every listing answers (`openapi::list_of` documents it).
pub(crate) fn listing(key: &'static str, items: &impl Serialize) -> Result<Response, ApiError> {
    json_of(StatusCode::OK, &BTreeMap::from([(key, items)]))
}

/// A time as the store's JSON types write it ([`berth_store::serde_ms`]), for answers built
/// field by field.
pub(crate) fn epoch_ms(t: SystemTime) -> Value {
    // Writing an integer into a `Value` cannot fail.
    berth_store::serde_ms::serialize(&t, serde_json::value::Serializer).unwrap_or(Value::Null)
}

/// `*` is a grant wildcard, not an environment: asking for it would otherwise read as
/// "needs the role on every environment" and then fail on the name.
pub(crate) fn one_environment(env: String) -> Result<String, ApiError> {
    if env == berth_store::ALL_ENVIRONMENTS {
        return Err(ApiError::bad_request(
            "env",
            "name one environment; `*` is only for grants",
        ));
    }
    Ok(env)
}

/// The `{env}` of a path such as `/envs/{env}/apps`.
pub(crate) fn env_of(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(env) = path.map_err(|e| ApiError::bad_request("env", e.body_text()))?;
    one_environment(env)
}

/// The `{env}` and `{name}` of an app's path (`/envs/{env}/apps/{name}/…`).
pub(crate) fn app_of(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<AppKey, ApiError> {
    let Path((env, name)) = path.map_err(|e| ApiError::bad_request("path", e.body_text()))?;
    Ok(AppKey::new(one_environment(env)?, name))
}

/// 204 No Content.
pub(crate) fn no_content() -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_the_changing_methods_are_audited_under_a_dotted_action() {
        for e in endpoints() {
            let audited = e.audit.is_some();
            assert_eq!(audited, e.method != Method::GET, "{} {}", e.method, e.path);
            if let Some(action) = e.audit {
                assert!(action.contains('.'), "{action}");
            }
        }
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        grants: Vec<String>,
    }

    fn field_of(json: &str) -> String {
        match parse_json::<Body>(json.as_bytes()) {
            Err(ApiError::BadRequest { field, .. }) => field,
            other => panic!("{json}: {other:?}"),
        }
    }

    #[test]
    fn body_errors_name_the_field() {
        assert_eq!(field_of(r#"{"grants": []}"#), "name");
        assert_eq!(field_of(r#"{"name": 1, "grants": []}"#), "name");
        assert_eq!(field_of(r#"{"name": "a", "grants": [1]}"#), "grants[0]");
        assert_eq!(field_of(r#"{"name": "a", "grants": [], "x": 1}"#), "x");
        assert_eq!(field_of("not json"), "body");
        assert_eq!(field_of("{not json"), "body");
        assert_eq!(field_of(r#"{"name": "a", "grants": ["#), "body");
        assert_eq!(field_of(""), "body");
        assert!(parse_json::<Body>(br#"{"name": "a", "grants": []}"#).is_ok());
    }

    #[test]
    fn every_path_is_under_the_prefix_and_unique() {
        let all = endpoints();
        for (i, e) in all.iter().enumerate() {
            assert!(e.path.starts_with(&format!("{PREFIX}/")), "{}", e.path);
            assert!(
                !all[..i]
                    .iter()
                    .any(|o| o.path == e.path && o.method == e.method),
                "{} {} twice",
                e.method,
                e.path
            );
        }
    }
}
