//! A deployment's steps pushed as they are recorded (NDJSON), for `berth deploy` and
//! `berth deploys APP --follow`: a deployment by id, or the app's next one.
//!
//! The deployer bumps one counter after every deployment write; a stream re-reads the store
//! for its steps after the last one sent whenever it moves. It subscribes before its first
//! read, so a step recorded between the read and the wait still wakes it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::response::Response;
use axum::routing::on;
use berth_deploy::AppKey;
use berth_store::{Deployment, Role, Store};
use http::{HeaderValue, Method, StatusCode, Uri, header};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{Endpoint, QueryParam, app_of, number_param, one_environment};
use crate::auth::Ctx;
use crate::error::ApiError;
use crate::policy::Need;
use crate::serve::Stopping;

/// A line sent on a stream that has nothing new for this long, so that proxies and clients
/// with idle timeouts keep it open.
const HEARTBEAT: Duration = Duration::from_secs(15);

const NDJSON: &str = "application/x-ndjson";

pub(super) fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint {
            method: Method::GET,
            path: "/api/v1/envs/{env}/apps/{name}/deploys/{id}/events",
            operation_id: "deployEvents",
            audit: None,
            summary: "A deployment's steps as NDJSON, pushed as they are recorded, then a final `end` line with its outcome",
            access: "viewer@{env}",
            token_only: false,
            query: &[QueryParam {
                name: "after",
                kind: "integer",
                description: "only steps with a larger `seq` (the last one a reconnecting client saw; default 0)",
            }],
            body: None,
            success: (StatusCode::OK, "application/x-ndjson lines", None),
            errors: &[
                StatusCode::BAD_REQUEST,
                StatusCode::NOT_FOUND,
                StatusCode::SERVICE_UNAVAILABLE,
            ],
            handler: |m| on(m, deployment_events),
        },
        Endpoint {
            method: Method::GET,
            path: "/api/v1/envs/{env}/apps/{name}/deploys/events",
            operation_id: "nextDeployEvents",
            audit: None,
            summary: "Waits for the app's first deployment after `since_id`, then streams it as `deploys/{id}/events` does",
            access: "viewer@{env}",
            token_only: false,
            query: &[QueryParam {
                name: "since_id",
                kind: "integer",
                description: "the newest deployment id the client knows of (0: none)",
            }],
            body: None,
            success: (StatusCode::OK, "application/x-ndjson lines", None),
            errors: &[StatusCode::BAD_REQUEST, StatusCode::SERVICE_UNAVAILABLE],
            handler: |m| on(m, next_deployment_events),
        },
    ]
}

/// The query's only parameter `name`, a whole number ≥ 0; `None` when absent.
fn count_param(uri: &Uri, name: &str) -> Result<Option<i64>, ApiError> {
    number_param(uri, name, 0..=i64::MAX, "expected a whole number")
}

async fn deployment_events(
    ctx: Ctx,
    path: Result<Path<(String, String, String)>, PathRejection>,
    uri: Uri,
    stopping: Option<Extension<Stopping>>,
) -> Result<Response, ApiError> {
    let Path((env, app, id)) = path.map_err(|e| ApiError::bad_request("path", e.body_text()))?;
    let key = AppKey::new(one_environment(env)?, app);
    ctx.allow(&Need::on(Role::Viewer, &key.env))?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_request("id", "a deployment id is a whole number"))?;
    let after = count_param(&uri, "after")?.unwrap_or(0);
    let changes = super::deploys::deployer(&ctx)?.deployment_changes();
    let known = ctx.store().deployment_after(id, i64::MAX).await?;
    if !known.is_some_and(|d| d.environment == key.env && d.app == key.app) {
        return Err(ApiError::NotFound(format!(
            "no deployment {id} of {} in {} (berth deploys {} --env {} lists them)",
            key.app, key.env, key.app, key.env
        )));
    }
    let follow = Follow::new(ctx.store().clone(), key, Target::Deployment(id), after);
    Ok(stream(follow, changes, stopping))
}

async fn next_deployment_events(
    ctx: Ctx,
    path: Result<Path<(String, String)>, PathRejection>,
    uri: Uri,
    stopping: Option<Extension<Stopping>>,
) -> Result<Response, ApiError> {
    let key = app_of(path)?;
    ctx.allow(&Need::on(Role::Viewer, &key.env))?;
    let since = count_param(&uri, "since_id")?.ok_or_else(|| {
        ApiError::bad_request(
            "since_id",
            "required: the newest deployment id you know of (0: none)",
        )
    })?;
    let changes = super::deploys::deployer(&ctx)?.deployment_changes();
    // The app may not exist yet: its first deploy creates it.
    let follow = Follow::new(ctx.store().clone(), key, Target::After(since), 0);
    Ok(stream(follow, changes, stopping))
}

fn stream(
    follow: Follow,
    changes: watch::Receiver<u64>,
    stopping: Option<Extension<Stopping>>,
) -> Response {
    let state = (follow, changes, stopping.map(|Extension(s)| s));
    // Dropping the body (the client went, or the server closed the connection) drops this
    // state and with it the wait: nothing outlives the response.
    let lines = futures_util::stream::unfold(state, |mut s| async move {
        let line = next_line(&mut s.0, &mut s.1, s.2.as_mut()).await?;
        Some((Ok::<_, Infallible>(line), s))
    });
    let mut response = Response::new(Body::from_stream(lines));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    response
}

/// Which deployment a stream follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The app's first deployment with a larger id, once there is one.
    After(i64),
    Deployment(i64),
}

/// A stream's position: what it follows and what it has sent.
struct Follow {
    store: Store,
    key: AppKey,
    target: Target,
    /// The last step sent.
    after: i64,
    /// The `deployment` line is sent.
    announced: bool,
    queue: VecDeque<Value>,
    done: bool,
    /// A write may have been announced since the last read (the first read is always due).
    stale: bool,
}

impl Follow {
    fn new(store: Store, key: AppKey, target: Target, after: i64) -> Follow {
        Follow {
            store,
            key,
            target,
            after,
            announced: false,
            queue: VecDeque::new(),
            done: false,
            stale: true,
        }
    }

    /// Queues what the store holds beyond what was sent.
    async fn read(&mut self) -> Result<(), berth_store::StoreError> {
        if let Target::After(since) = self.target {
            match self
                .store
                .next_deployment_id(&self.key.env, &self.key.app, since)
                .await?
            {
                Some(id) => {
                    self.target = Target::Deployment(id);
                    self.after = 0;
                }
                None => return Ok(()),
            }
        }
        let Target::Deployment(id) = self.target else {
            return Ok(());
        };
        let Some(d) = self.store.deployment_after(id, self.after).await? else {
            // Only removing the app removes its deployments.
            self.queue.push_back(json!({
                "event": "error",
                "message": format!("deployment {id} no longer exists"),
            }));
            self.done = true;
            return Ok(());
        };
        let new = lines(&d, self.after, !self.announced);
        self.announced = true;
        self.after = new.last_seq.unwrap_or(self.after);
        self.done = new.finished;
        self.queue.extend(new.lines);
        Ok(())
    }
}

/// The next line to send, `None` when the stream is over: the deployment ended, the client
/// or the listener is going, or the store failed (said in an `error` line; the client
/// reconnects with `after`).
async fn next_line(
    f: &mut Follow,
    changes: &mut watch::Receiver<u64>,
    mut stopping: Option<&mut Stopping>,
) -> Option<String> {
    let heartbeat_at = tokio::time::Instant::now() + HEARTBEAT;
    loop {
        if let Some(v) = f.queue.pop_front() {
            return Some(format!("{v}\n"));
        }
        if f.done {
            return None;
        }
        // Read only what a write since the last read can have added: every write is
        // announced after it commits, so with nothing announced the store holds nothing new.
        // Re-reading after each line sent read the store twice for every write.
        if f.stale || changes.has_changed().unwrap_or(true) {
            // Marked seen before the read: a write after it wakes the wait below.
            changes.borrow_and_update();
            f.stale = false;
            if let Err(e) = f.read().await {
                tracing::warn!(error = %e, "reading a followed deployment");
                f.queue.push_back(json!({
                    "event": "error",
                    "message": "the store could not be read; reconnect with after=",
                }));
                f.done = true;
                continue;
            }
            if !f.queue.is_empty() {
                continue;
            }
        }
        let stop = async {
            match stopping.as_mut() {
                Some(s) => s.wait().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = changes.changed() => {
                // `changed` marked the write seen; the next turn must still read it.
                f.stale = true;
                // The deployer is gone: nothing will be recorded any more.
                if changed.is_err() {
                    f.done = true;
                }
            }
            () = tokio::time::sleep_until(heartbeat_at) => {
                return Some(format!("{}\n", json!({ "event": "heartbeat" })));
            }
            // Ends without an `end` line: the client sees the stream break and reconnects.
            () = stop => f.done = true,
        }
    }
}

/// What a read of a deployment adds to its stream.
#[derive(Debug, PartialEq)]
struct Lines {
    lines: Vec<Value>,
    /// The seq of the last step in `lines`.
    last_seq: Option<i64>,
    /// The deployment has ended: `lines` closes with its `end` line.
    finished: bool,
}

/// The lines for `d`'s steps after `after` (and its `deployment` line first when
/// `announce`), closed by the `end` line when it has finished. Pure.
fn lines(d: &Deployment, after: i64, announce: bool) -> Lines {
    let mut lines = Vec::new();
    if announce {
        lines.push(summary("deployment", d));
    }
    let mut last_seq = None;
    for s in d.steps.iter().filter(|s| s.seq > after) {
        let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
        if let Some(m) = v.as_object_mut() {
            m.insert("event".into(), json!("step"));
            m.insert("deployment".into(), json!(d.id));
        }
        lines.push(v);
        last_seq = Some(s.seq);
    }
    let finished = d.finished.is_some();
    if finished {
        lines.push(summary("end", d));
    }
    Lines {
        lines,
        last_seq,
        finished,
    }
}

/// The deployment as the listing shows it, without its steps, its id as `deployment`.
fn summary(event: &str, d: &Deployment) -> Value {
    let mut v = serde_json::to_value(d).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.remove("steps");
        m.remove("id");
        m.insert("event".into(), json!(event));
        m.insert("deployment".into(), json!(d.id));
    }
    v
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use berth_store::{Actor, DeployStep, NewRelease};

    use super::*;

    /// A store holding one running deployment of `shop` with one step; its id.
    async fn store_with_a_deployment() -> (Store, i64) {
        let store = Store::open("sqlite::memory:").await.expect("store");
        let actor = Actor::system();
        let mut tx = store.transaction().await.expect("tx");
        let app = tx
            .ensure_app(&actor, "production", "shop", &json!({}))
            .await
            .expect("app");
        let release = NewRelease {
            version: "r-1".into(),
            artifact: "a".into(),
            spec: json!({}),
            meta: json!({}),
        };
        let release = tx
            .record_release(&actor, &app, &release)
            .await
            .expect("release");
        let id = tx
            .start_deployment(&actor, &release, None, "rolling")
            .await
            .expect("deployment");
        tx.commit().await.expect("commit");
        store
            .record_step(id, "start", "proceed", "one", json!({}))
            .await
            .expect("step");
        (store, id)
    }

    #[tokio::test]
    async fn a_follower_reads_the_store_again_only_when_a_write_is_announced() {
        let (store, id) = store_with_a_deployment().await;
        let (announce, mut changes) = watch::channel(0u64);
        let key = AppKey::new("production", "shop");
        let mut f = Follow::new(store.clone(), key, Target::Deployment(id), 0);
        let mut next = async || {
            let line = next_line(&mut f, &mut changes, None);
            let line = tokio::time::timeout(Duration::from_millis(200), line).await;
            line.map(|l| serde_json::from_str::<Value>(&l.expect("a line")).expect("json"))
        };
        assert_eq!(next().await.expect("a line")["event"], "deployment");
        assert_eq!(next().await.expect("a line")["reason"], "one");

        // Written but not announced: the follower waits instead of reading again.
        store
            .record_step(id, "switch", "proceed", "two", json!({}))
            .await
            .expect("step");
        assert!(next().await.is_err(), "read without an announcement");

        announce.send_modify(|n| *n += 1);
        assert_eq!(next().await.expect("a line")["reason"], "two");
        assert!(next().await.is_err(), "nothing more was written");
    }

    fn deployment(steps: i64, finished: bool) -> Deployment {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        Deployment {
            id: 7,
            environment: "production".into(),
            app: "shop".into(),
            release: "r-2".into(),
            previous_release: Some("r-1".into()),
            strategy: "rolling".into(),
            state: if finished { "rolled_back" } else { "running" }.into(),
            requested_by: "alice".into(),
            started: t,
            finished: finished.then_some(t),
            detail: finished.then(|| "error rate 30%".to_owned()),
            approved_by: None,
            steps: (1..=steps)
                .map(|seq| DeployStep {
                    seq,
                    time: t,
                    step: "gate".into(),
                    decision: "pass".into(),
                    reason: format!("step {seq}"),
                    measurements: json!({ "n": seq }),
                })
                .collect(),
        }
    }

    fn events(l: &Lines) -> Vec<(String, Option<i64>)> {
        l.lines
            .iter()
            .map(|v| {
                (
                    v["event"].as_str().unwrap_or("").to_owned(),
                    v["seq"].as_i64(),
                )
            })
            .collect()
    }

    #[test]
    fn a_finished_deployment_is_announced_its_steps_in_order_then_its_end() {
        let l = lines(&deployment(3, true), 0, true);
        assert_eq!(
            events(&l),
            [
                ("deployment".to_owned(), None),
                ("step".to_owned(), Some(1)),
                ("step".to_owned(), Some(2)),
                ("step".to_owned(), Some(3)),
                ("end".to_owned(), None),
            ]
        );
        assert!(l.finished);
        assert_eq!(l.last_seq, Some(3));
        let step = &l.lines[2];
        assert_eq!(step["deployment"], 7);
        assert_eq!(step["reason"], "step 2");
        assert_eq!(step["measurements"], json!({ "n": 2 }));
        let end = &l.lines[4];
        assert_eq!(end["deployment"], 7);
        assert_eq!(end["state"], "rolled_back");
        assert_eq!(end["detail"], "error rate 30%");
        assert_eq!(end["previous_release"], "r-1");
        assert!(end["finished"].is_u64(), "{end}");
        assert!(
            end.get("steps").is_none() && end.get("id").is_none(),
            "{end}"
        );
    }

    #[test]
    fn only_steps_after_the_last_seen_and_no_end_while_running() {
        let l = lines(&deployment(3, false), 2, false);
        assert_eq!(events(&l), [("step".to_owned(), Some(3))]);
        assert!(!l.finished);
        let none = lines(&deployment(3, false), 3, false);
        assert_eq!(none.lines, Vec::<Value>::new());
        assert_eq!(none.last_seq, None);
    }
}
