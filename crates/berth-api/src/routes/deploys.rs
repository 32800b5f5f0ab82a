//! Deploying and watching an app: upload a release (`berth deploy`), see its instances
//! (`berth ps`), read their output (`berth logs`), list releases and deployments.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Extension;
use axum::body::Body;
use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::response::Response;
use axum::routing::on;
use berth_deploy::{DeployError, DeployRequest, Deployer, LogQuery, Strategy};
use berth_store::Role;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use super::{Endpoint, QueryParam, app_of, epoch_ms, json_of, listing, number_param, query_pairs};
use crate::auth::{Attempt, Ctx};
use crate::error::ApiError;
use crate::openapi::any_object;
use crate::policy::Need;
use crate::serve::Stopping;

/// The largest upload accepted: a compressed release bigger than this is a mistake.
pub const MAX_UPLOAD_BYTES: u64 = 1 << 30;
/// Header naming where the client packed the release from (recorded, never trusted).
pub const SOURCE_HEADER: &str = "x-berth-source";
/// Header carrying the commit the client's directory was at.
pub const COMMIT_HEADER: &str = "x-berth-git-commit";

const LOG_QUERY: &[QueryParam] = &[
    QueryParam {
        name: "process",
        kind: "string",
        description: "only this process type (`web`)",
    },
    QueryParam {
        name: "release",
        kind: "string",
        description: "only this release id",
    },
    QueryParam {
        name: "since",
        kind: "string",
        description: "a duration back from now (`10m`) or an RFC 3339 time",
    },
    QueryParam {
        name: "tail",
        kind: "integer",
        description: "at most this many of the newest lines (default 200)",
    },
    QueryParam {
        name: "follow",
        kind: "string",
        description: "`true`: keep the response open and stream new lines",
    },
];

/// How attempts at this endpoint are named in the audit log.
const DEPLOY_REQUEST: &str = "deploy.request";
const APP_RESTART: &str = "app.restart";
const RELEASE_PROMOTE: &str = "release.promote";

pub(super) fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint {
            method: Method::POST,
            path: "/api/v1/envs/{env}/apps/{name}/deploys",
            operation_id: "deploy",
            audit: Some(DEPLOY_REQUEST),
            summary: "Deploy a release: the body is a .tar.gz of the app's source with berth.toml at its root",
            access: "deployer@{env}",
            token_only: false,
            query: &[QueryParam {
                name: "strategy",
                kind: "string",
                description: "`rolling`, `blue-green` or `canary`: overrides the app spec's for this deploy",
            }],
            body: Some(
                || json!({ "type": "string", "format": "binary", "description": "application/gzip tarball" }),
            ),
            success: (
                StatusCode::CREATED,
                "what the deploy did",
                Some(report_schema),
            ),
            errors: &[
                StatusCode::BAD_REQUEST,
                StatusCode::CONFLICT,
                StatusCode::PAYLOAD_TOO_LARGE,
                StatusCode::UNPROCESSABLE_ENTITY,
                StatusCode::SERVICE_UNAVAILABLE,
            ],
            handler: |m| on(m, deploy),
        },
        Endpoint {
            method: Method::GET,
            path: "/api/v1/envs/{env}/apps/{name}/deploys",
            operation_id: "listDeploys",
            audit: None,
            summary: "The app's deployments, newest first, with every step and decision",
            access: "viewer@{env}",
            token_only: false,
            query: &[QueryParam {
                name: "limit",
                kind: "integer",
                description: "at most this many (default 20)",
            }],
            body: None,
            success: (StatusCode::OK, "the deployments", Some(any_object)),
            errors: &[StatusCode::BAD_REQUEST],
            handler: |m| on(m, list_deploys),
        },
        Endpoint {
            method: Method::GET,
            path: "/api/v1/envs/{env}/apps/{name}/ps",
            operation_id: "ps",
            audit: None,
            summary: "The app's instances: release, process, pid, port, phase, restarts, uptime",
            access: "viewer@{env}",
            token_only: false,
            query: &[],
            body: None,
            success: (StatusCode::OK, "the instances", Some(any_object)),
            errors: &[
                StatusCode::BAD_REQUEST,
                StatusCode::NOT_FOUND,
                StatusCode::SERVICE_UNAVAILABLE,
            ],
            handler: |m| on(m, ps),
        },
        Endpoint {
            method: Method::GET,
            path: "/api/v1/envs/{env}/apps/{name}/releases",
            operation_id: "listReleases",
            audit: None,
            summary: "The app's releases, newest first; `active` marks the one serving",
            access: "viewer@{env}",
            token_only: false,
            query: &[],
            body: None,
            success: (StatusCode::OK, "the releases", Some(any_object)),
            errors: &[StatusCode::BAD_REQUEST],
            handler: |m| on(m, list_releases),
        },
        Endpoint {
            method: Method::GET,
            path: "/api/v1/envs/{env}/apps/{name}/logs",
            operation_id: "logs",
            audit: None,
            summary: "The instances' output as text lines `<time> <release> <instance> <stream> <text>`",
            access: "viewer@{env}",
            token_only: false,
            query: LOG_QUERY,
            body: None,
            success: (StatusCode::OK, "text/plain lines", None),
            errors: &[StatusCode::BAD_REQUEST, StatusCode::SERVICE_UNAVAILABLE],
            handler: |m| on(m, logs),
        },
        Endpoint {
            method: Method::POST,
            path: "/api/v1/envs/{env}/apps/{name}/restart",
            operation_id: "restart",
            audit: Some(APP_RESTART),
            summary: "Restart the running release with the current secrets, rolling: new instances take the traffic once healthy",
            access: "deployer@{env}",
            token_only: false,
            query: &[],
            body: None,
            success: (StatusCode::OK, "what the restart did", Some(report_schema)),
            errors: &[
                StatusCode::BAD_REQUEST,
                StatusCode::NOT_FOUND,
                StatusCode::CONFLICT,
                StatusCode::UNPROCESSABLE_ENTITY,
                StatusCode::SERVICE_UNAVAILABLE,
            ],
            handler: |m| on(m, restart),
        },
        Endpoint {
            method: Method::POST,
            path: "/api/v1/envs/{env}/apps/{name}/promote",
            operation_id: "promote",
            audit: Some(RELEASE_PROMOTE),
            summary: "Deploy into {env} exactly the release running in another environment (same release id, same build)",
            access: "deployer@{env} and viewer@{from}",
            token_only: false,
            query: &[],
            body: Some(|| {
                json!({ "type": "object", "required": ["from"], "additionalProperties": false,
                        "properties": { "from": { "type": "string" }, "release": { "type": "string" } } })
            }),
            success: (
                StatusCode::CREATED,
                "what the deploy did",
                Some(report_schema),
            ),
            errors: &[
                StatusCode::BAD_REQUEST,
                StatusCode::NOT_FOUND,
                StatusCode::CONFLICT,
                StatusCode::UNPROCESSABLE_ENTITY,
                StatusCode::SERVICE_UNAVAILABLE,
            ],
            handler: |m| on(m, promote),
        },
        Endpoint {
            method: Method::GET,
            path: "/api/v1/envs/{env}/apps/{name}/config",
            operation_id: "config",
            audit: None,
            summary: "The effective config of the app's release in the environment, each value with its source (environment, base, default, secret: value hidden)",
            access: "viewer@{env}",
            token_only: false,
            query: &[],
            body: None,
            success: (
                StatusCode::OK,
                "{app, environment, release, entries: [{key, value, source}]}",
                Some(any_object),
            ),
            errors: &[StatusCode::BAD_REQUEST, StatusCode::NOT_FOUND],
            handler: |m| on(m, config),
        },
    ]
}

fn report_schema() -> Value {
    json!({
        "type": "object",
        "required": ["app", "environment", "release", "unchanged", "steps", "instances"],
        "properties": {
            "release": { "type": "string" },
            "previous": { "type": ["string", "null"] },
            "unchanged": { "type": "boolean" },
            "deployment": { "type": ["integer", "null"] },
            "steps": { "type": "array", "items": { "type": "string" } },
            "instances": { "type": "array", "items": { "type": "object" } },
            "pruned": { "type": "array", "items": { "type": "string" } },
        },
    })
}

/// Runs a deployer action in its own task: a client that goes away (a closed terminal, a CI
/// timeout) must not cut a deploy, restart, promotion or rollback short between two steps.
pub(super) async fn detached<T: Send + 'static>(
    work: impl Future<Output = Result<T, DeployError>> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::spawn(work)
        .await
        .map_err(|e| ApiError::Internal(format!("deploy task failed: {e}")))?
        .map_err(ApiError::from)
}

pub(super) fn deployer(ctx: &Ctx) -> Result<Arc<Deployer>, ApiError> {
    ctx.shared
        .api
        .deployer
        .clone()
        .ok_or_else(|| ApiError::Unavailable("this server does not run apps".into()))
}

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> Self {
        match e {
            DeployError::BadInput(m) => ApiError::Deploy {
                status: StatusCode::BAD_REQUEST,
                code: "invalid_release",
                message: m,
            },
            DeployError::NotFound(m) => ApiError::NotFound(m),
            DeployError::Conflict(m) => ApiError::Conflict {
                code: "conflict",
                message: m,
            },
            DeployError::Build(m) => ApiError::Deploy {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "build_failed",
                message: m,
            },
            DeployError::Unhealthy(m) => ApiError::Deploy {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "unhealthy",
                message: m,
            },
            DeployError::Hook(m) => ApiError::Deploy {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "hook_failed",
                message: m,
            },
            DeployError::RolledBack(m) => ApiError::Deploy {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "rolled_back",
                message: m,
            },
            DeployError::Cancelled(m) => ApiError::Deploy {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "cancelled",
                message: m,
            },
            DeployError::SelfApproval(m) => ApiError::Deploy {
                status: StatusCode::FORBIDDEN,
                code: "self_approval",
                message: m,
            },
            DeployError::Store(s) => s.into(),
            DeployError::Secrets(s) => s.into(),
            DeployError::Internal(m) => ApiError::Internal(m),
        }
    }
}

/// Receives the body into a private file under the uploads directory, refusing more than
/// [`MAX_UPLOAD_BYTES`]. The file is removed when the returned guard drops.
async fn receive(dir: PathBuf, body: Body) -> Result<tempfile::TempPath, ApiError> {
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiError::Internal(format!("creating {}: {e}", dir.display())))?;
    let file = tempfile::Builder::new()
        .prefix("upload-")
        .suffix(".tar.gz")
        .tempfile_in(&dir)
        .map_err(|e| {
            ApiError::Internal(format!("creating an upload file in {}: {e}", dir.display()))
        })?;
    let (std_file, path) = file.into_parts();
    let mut out = tokio::fs::File::from_std(std_file);
    let mut stream = body.into_data_stream();
    let mut total: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request("body", format!("upload interrupted: {e}")))?;
        total += chunk.len() as u64;
        if total > MAX_UPLOAD_BYTES {
            return Err(ApiError::TooLarge {
                limit: MAX_UPLOAD_BYTES as usize,
            });
        }
        out.write_all(&chunk)
            .await
            .map_err(|e| ApiError::Internal(format!("writing the upload: {e}")))?;
    }
    out.flush()
        .await
        .map_err(|e| ApiError::Internal(format!("writing the upload: {e}")))?;
    if total == 0 {
        return Err(ApiError::bad_request(
            "body",
            "empty upload: send the release as a .tar.gz body (berth deploy DIR does this)",
        ));
    }
    Ok(path)
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(1024).collect())
}

async fn deploy(
    ctx: Ctx,
    path: Result<Path<(String, String)>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let key = app_of(path)?;
    let mut strategy = None;
    for (name, value) in query_pairs(&uri, &["strategy"])? {
        if name == "strategy" {
            strategy = Some(Strategy::from_name(&value).ok_or_else(|| {
                ApiError::bad_request(
                    "strategy",
                    format!("unknown strategy {value:?}: use rolling, blue-green or canary"),
                )
            })?);
        }
    }
    let attempt = Attempt::new(DEPLOY_REQUEST, key.to_string(), json!({}));
    let env = key.env.clone();
    ctx.mutate(attempt, Need::on(Role::Deployer, &env), async |actor| {
        let deployer = deployer(&ctx)?;
        let upload = receive(deployer.layout().uploads_dir(), body).await?;
        let source = header_text(&headers, SOURCE_HEADER).unwrap_or_else(|| "upload".into());
        let git_commit = header_text(&headers, COMMIT_HEADER)
            .filter(|c| c.len() == 40 && c.chars().all(|ch| ch.is_ascii_hexdigit()));
        let request = DeployRequest {
            key,
            archive: upload.to_path_buf(),
            origin: berth_release::Origin {
                source: format!("upload:{source}"),
                git_commit,
            },
            actor,
            strategy,
        };
        // The upload is removed when the deploy ends.
        let report = detached(async move {
            let report = deployer.deploy(request).await;
            drop(upload);
            report
        })
        .await?;
        json_of(StatusCode::CREATED, &report)
    })
    .await
}

async fn ps(
    ctx: Ctx,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let key = app_of(path)?;
    ctx.allow(&Need::on(Role::Viewer, &key.env))?;
    let status = deployer(&ctx)?.ps(&key).await?;
    json_of(StatusCode::OK, &status)
}

async fn list_releases(
    ctx: Ctx,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let key = app_of(path)?;
    ctx.allow(&Need::on(Role::Viewer, &key.env))?;
    let list = ctx.store().list_releases(&key.env, &key.app).await?;
    let releases: Vec<Value> = list
        .iter()
        .map(|r| {
            json!({
                "release": r.version,
                "active": r.active,
                "created": epoch_ms(r.created),
                "created_by": r.created_by,
                "source": r.meta.get("source"),
                "git_commit": r.meta.get("git_commit"),
                "spec_hash": r.meta.get("spec_hash"),
                "size_bytes": r.meta.get("size_bytes"),
                "build_s": r.meta.get("build_s"),
                "path": r.artifact,
            })
        })
        .collect();
    listing("releases", &releases)
}

async fn list_deploys(
    ctx: Ctx,
    path: Result<Path<(String, String)>, PathRejection>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let key = app_of(path)?;
    ctx.allow(&Need::on(Role::Viewer, &key.env))?;
    let limit = number_param(
        &uri,
        "limit",
        1..=1000,
        "expected a whole number from 1 to 1000",
    )?
    .unwrap_or(20);
    let list = ctx
        .store()
        .list_deployments(&key.env, &key.app, limit)
        .await?;
    listing("deployments", &list)
}

/// `10m`, `2h`, `1d` back from now, or an RFC 3339 time.
fn parse_since(value: &str) -> Result<SystemTime, ApiError> {
    if let Ok(t) = humantime::parse_rfc3339_weak(value) {
        return Ok(t);
    }
    let d: Duration = humantime::parse_duration(value).map_err(|_| {
        ApiError::bad_request(
            "since",
            "expected a duration such as 10m or 2h, or an RFC 3339 time",
        )
    })?;
    Ok(SystemTime::now()
        .checked_sub(d)
        .unwrap_or(SystemTime::UNIX_EPOCH))
}

async fn logs(
    ctx: Ctx,
    path: Result<Path<(String, String)>, PathRejection>,
    uri: Uri,
    stopping: Option<Extension<Stopping>>,
) -> Result<Response, ApiError> {
    let key = app_of(path)?;
    ctx.allow(&Need::on(Role::Viewer, &key.env))?;
    let deployer = deployer(&ctx)?;
    let mut q = LogQuery::default();
    let mut follow = false;
    for (name, value) in query_pairs(&uri, &["process", "release", "since", "tail", "follow"])? {
        match name.as_str() {
            "process" => q.process = Some(value),
            "release" => q.release = Some(value),
            "since" => q.since = Some(parse_since(&value)?),
            "tail" => {
                q.tail = Some(
                    value
                        .parse()
                        .map_err(|_| ApiError::bad_request("tail", "expected a whole number"))?,
                )
            }
            "follow" => {
                follow = match value.as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(ApiError::bad_request("follow", "expected true or false")),
                }
            }
            _ => {}
        }
    }
    let dir = deployer.log_dir(&key);
    let body = if follow {
        let (tx, rx) = tokio::sync::mpsc::channel::<String>(256);
        // Ends when the client goes (the body, and with it `rx`, is dropped).
        tokio::spawn(berth_deploy::logs::follow(dir, q, tx));
        // The receiver as a stream, ended early when the listener stops so that its graceful
        // shutdown is not held up by a follower that never leaves.
        let state = (rx, stopping.map(|Extension(s)| s));
        let lines = futures_util::stream::unfold(state, |(mut rx, mut stopping)| async move {
            let line = match stopping.as_mut() {
                Some(s) => tokio::select! {
                    line = rx.recv() => line?,
                    () = s.wait() => return None,
                },
                None => rx.recv().await?,
            };
            Some((Ok::<_, Infallible>(line + "\n"), (rx, stopping)))
        });
        Body::from_stream(lines)
    } else {
        let lines = tokio::task::spawn_blocking(move || berth_deploy::logs::read_logs(&dir, &q))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
        Body::from(
            lines
                .into_iter()
                .map(|line| line + "\n")
                .collect::<String>(),
        )
    };
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
}

async fn restart(
    ctx: Ctx,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let key = app_of(path)?;
    let attempt = Attempt::new(APP_RESTART, key.to_string(), json!({}));
    let env = key.env.clone();
    ctx.mutate(attempt, Need::on(Role::Deployer, &env), async |actor| {
        let deployer = deployer(&ctx)?;
        let report = detached(async move { deployer.restart(&key, &actor).await }).await?;
        json_of(StatusCode::OK, &report)
    })
    .await
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    from: String,
    release: Option<String>,
}

async fn promote(
    ctx: Ctx,
    path: Result<Path<(String, String)>, PathRejection>,
    super::JsonBody(body): super::JsonBody<PromoteBody>,
) -> Result<Response, ApiError> {
    let key = app_of(path)?;
    let from = super::one_environment(body.from)?;
    let attempt = Attempt::new(
        RELEASE_PROMOTE,
        key.to_string(),
        json!({ "from": from, "release": body.release }),
    );
    let env = key.env.clone();
    ctx.mutate(attempt, Need::on(Role::Deployer, &env), async |actor| {
        // Reading what runs in the source environment needs a look there too.
        ctx.allow(&Need::on(Role::Viewer, &from))?;
        let deployer = deployer(&ctx)?;
        let release = body.release;
        let report = detached(async move {
            deployer
                .promote(&key, &from, release.as_deref(), &actor)
                .await
        })
        .await?;
        json_of(StatusCode::CREATED, &report)
    })
    .await
}

async fn config(
    ctx: Ctx,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let key = app_of(path)?;
    ctx.allow(&Need::on(Role::Viewer, &key.env))?;
    let releases = ctx.store().list_releases(&key.env, &key.app).await?;
    let Some(release) = releases
        .iter()
        .find(|r| r.active)
        .or_else(|| releases.first())
    else {
        return Err(ApiError::NotFound(format!(
            "{} has no release in {}: deploy or promote it there first",
            key.app, key.env
        )));
    };
    let file = std::path::Path::new(&release.artifact).join(berth_config::app::APP_SPEC_FILE);
    let text = tokio::fs::read_to_string(&file).await.map_err(|e| {
        ApiError::NotFound(format!(
            "the berth.toml of release {} is not readable ({e}); deploy it again",
            release.version
        ))
    })?;
    let shown = std::path::PathBuf::from(format!(
        "{}:{}",
        release.version,
        berth_config::app::APP_SPEC_FILE
    ));
    let mut entries = berth_config::app::explain(&text, &shown, &key.env)
        .map_err(|e| ApiError::Internal(format!("stored spec of {}: {e}", release.version)))?;
    // Secrets: names and versions only; the values stay sealed.
    let secrets = ctx.store().list_secrets(&key.env, &key.app).await?;
    for s in secrets {
        entries.push(berth_config::app::ConfigEntry {
            key: format!("secrets.{}", s.name),
            value: format!("(hidden, version {})", s.version),
            source: "secret".into(),
        });
    }
    json_of(
        StatusCode::OK,
        &json!({
            "app": key.app,
            "environment": key.env,
            "release": release.version,
            "active": release.active,
            "entries": entries,
        }),
    )
}
