//! The deploy itself, in the order the crate docs give. Each step is recorded in the
//! deployment's log with the numbers behind it, so `berth deploys APP` can explain it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_config::app::{APP_SPEC_FILE, AppSpec, HookSpec, Strategy};
use berth_edge::spec::PoolSpec;
use berth_release::{Limits, Origin, import_tarball_built};
use berth_store::{Actor, NewRelease, ReleaseRecord};
use serde::Serialize;
use serde_json::json;

use crate::build::run_build;
use crate::error::DeployError;
use crate::layout::Layout;
use crate::progressive::Pair;
use crate::routes::{AppRoute, edge_health};
use crate::run::{InstanceView, ReleaseRun};
use crate::secrets::SecretEnv;
use crate::{AppKey, Deployer, Slot};

/// How often the drain checks for requests still in flight to the old instances.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// A deploy as the API hands it over: the uploaded archive and who sent it.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    pub key: AppKey,
    pub archive: PathBuf,
    pub origin: Origin,
    pub actor: Actor,
    /// Overrides the app spec's `[deploy] strategy` for this deploy.
    pub strategy: Option<Strategy>,
}

/// How a release is brought in.
/// The label of a rollback's deployment.
pub(crate) const ROLLBACK: &str = "rollback";

#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub strategy: Strategy,
    /// What the deployment is recorded as: the strategy's name, `restart`, `promote` or
    /// `rollback`.
    pub label: &'static str,
    /// Run the pre-deploy hook (not on a rollback: the release's hook ran when it was
    /// deployed).
    pub hooks: bool,
}

/// A deployment's step log as it is written, and who hears of it.
pub(crate) struct Journal {
    pub deployment: i64,
    pub lines: Vec<String>,
    /// `[[deploy.notify]]` targets, and what every notice of this deployment says.
    pub targets: Vec<berth_config::app::NotifySpec>,
    pub notice: crate::notify::Notice,
}

impl Journal {
    pub(crate) fn new(
        deployment: i64,
        lines: Vec<String>,
        spec: &AppSpec,
        key: &AppKey,
        release: &str,
        previous: Option<&str>,
        strategy: &str,
    ) -> Journal {
        Journal {
            deployment,
            lines,
            targets: spec.rollout.notify.clone(),
            notice: crate::notify::Notice {
                event: "started",
                app: key.app.clone(),
                environment: key.env.clone(),
                release: release.to_owned(),
                previous: previous.map(str::to_owned),
                strategy: strategy.to_owned(),
                detail: String::new(),
            },
        }
    }

    /// Tells the webhooks (in the background).
    pub(crate) fn announce(&self, event: &'static str, detail: &str) {
        if self.targets.is_empty() {
            return;
        }
        crate::notify::send(
            &self.targets,
            crate::notify::Notice {
                event,
                detail: detail.to_owned(),
                ..self.notice.clone()
            },
        );
    }

    /// Tells the webhooks how the deployment ended.
    pub(crate) fn announce_end(&self, result: &Result<Vec<String>, DeployError>) {
        match result {
            Ok(_) => self.announce("succeeded", "all traffic on the new release"),
            Err(e @ DeployError::RolledBack(_)) => self.announce("rolled_back", &e.to_string()),
            Err(e) => self.announce("failed", &e.to_string()),
        }
    }
}

/// What a deploy did.
#[derive(Debug, Clone, Serialize)]
pub struct DeployReport {
    pub app: String,
    pub environment: String,
    pub release: String,
    pub previous: Option<String>,
    /// The release was already the one running: nothing was restarted.
    pub unchanged: bool,
    pub deployment: Option<i64>,
    /// Seconds the build command took (absent when there was none, or the release existed).
    pub build_s: Option<f64>,
    /// One line per step, in order.
    pub steps: Vec<String>,
    pub instances: Vec<InstanceView>,
    /// Releases removed by retention.
    pub pruned: Vec<String>,
}

impl DeployReport {
    pub(crate) fn new(
        key: &AppKey,
        release: &str,
        build_s: Option<f64>,
        steps: Vec<String>,
    ) -> Self {
        DeployReport {
            app: key.app.clone(),
            environment: key.env.clone(),
            release: release.to_owned(),
            previous: None,
            unchanged: false,
            deployment: None,
            build_s,
            steps,
            instances: Vec::new(),
            pruned: Vec::new(),
        }
    }
}

/// `, with secrets A v2, B v1` (names and versions, never values), or nothing.
fn secrets_note(versions: &[(String, i64)]) -> String {
    if versions.is_empty() {
        return String::new();
    }
    let list: Vec<String> = versions.iter().map(|(n, v)| format!("{n} v{v}")).collect();
    format!(", with secrets {}", list.join(", "))
}

/// The answer to a second deploy (or restart) of an app while one runs.
pub(crate) fn busy(key: &AppKey, slot: &Slot) -> DeployError {
    DeployError::Conflict(format!(
        "a deploy of {key} is already in progress{}; wait for it to finish (berth ps {} --env {} \
         shows it), or end a canary or blue-green deploy, or one waiting for approval, with \
         berth abort {} --env {}",
        slot.held_by(),
        key.app,
        key.env,
        key.app,
        key.env
    ))
}

/// Refuses early (before a build) when the app is locked; the store checks again when the
/// deployment is recorded.
pub(crate) async fn check_unlocked(
    store: &berth_store::Store,
    key: &AppKey,
) -> Result<(), DeployError> {
    match store.deploy_lock(&key.env, &key.app).await? {
        Some(held) => Err(berth_store::StoreError::Locked(Box::new(held)).into()),
        None => Ok(()),
    }
}

/// `key`'s app and environment names, as paths use them (see [`check_path_name`]).
pub(crate) fn check_key(key: &AppKey) -> Result<(), DeployError> {
    check_path_name("app name", &key.app)?;
    check_path_name("environment", &key.env)
}

/// Names used in paths: lower-case letters, digits and `-`/`_`, starting with a letter or
/// digit, at most 63 characters. `.` and `..` can never pass.
pub(crate) fn check_path_name(what: &str, name: &str) -> Result<(), DeployError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(DeployError::BadInput(format!(
            "invalid {what} {name:?}: use 1-63 lower-case letters, digits, '-' or '_', starting \
             with a letter or digit"
        )))
    }
}

/// Reads and validates the release's `berth.toml`; errors name the file as the app's
/// author knows it.
pub(crate) fn load_spec(release_dir: &Path, app: &str) -> Result<AppSpec, DeployError> {
    let path = release_dir.join(APP_SPEC_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        DeployError::BadInput(format!(
            "the release has no readable {APP_SPEC_FILE} at its root ({e}); berth needs the \
             app spec there (see docs/app-spec.md)"
        ))
    })?;
    let spec = berth_config::app::parse(&text, Path::new(APP_SPEC_FILE))
        .map_err(|e| DeployError::BadInput(format!("invalid app spec:\n{e}")))?;
    if spec.name != app {
        return Err(DeployError::BadInput(format!(
            "{APP_SPEC_FILE} names the app {:?} but this deploy is for {app:?}; `berth deploy` \
             takes the name from {APP_SPEC_FILE}, so upload to the app it names",
            spec.name
        )));
    }
    Ok(spec)
}

/// The edge route for a running release, when the app serves HTTP on some host.
pub(crate) fn app_route(spec: &AppSpec, run: &ReleaseRun) -> Option<AppRoute> {
    let (_, web) = spec.http_process()?;
    if spec.hosts.is_empty() {
        return None;
    }
    Some(AppRoute {
        hosts: spec.hosts.clone(),
        health: web.health.as_ref().map(edge_health),
        pools: vec![PoolSpec {
            release: run.release.version.clone(),
            weight: berth_edge::spec::defaults::POOL_WEIGHT,
            upstreams: run.web_addrs(),
        }],
        edge: spec.edge.clone(),
        preview_hosts: spec.rollout.preview_hosts.clone(),
        release_dirs: vec![PathBuf::from(&run.release.artifact)],
        ..AppRoute::default()
    })
}

/// Why a static path of the spec cannot be served from the release in `dir`, if one cannot.
fn check_static_dirs(dir: &Path, spec: &AppSpec) -> Result<(), String> {
    for path in &spec.edge.paths {
        if let Some(s) = &path.static_files {
            crate::routes::static_root(dir, &s.dir).map_err(|why| {
                format!(
                    "static files of edge path {}: {why}; build them in [build] command (e.g. \
                     python manage.py collectstatic --noinput) or include them in the upload",
                    path.prefix
                )
            })?;
        }
    }
    Ok(())
}

/// SHA-256 of the spec as berth understood it (its JSON form): two releases with the same
/// spec hash run with the same settings, whatever their code.
fn spec_hash(spec: &serde_json::Value) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(spec.to_string().as_bytes()))
}

fn release_meta(
    r: &berth_release::Release,
    build_s: Option<f64>,
    spec: &serde_json::Value,
) -> serde_json::Value {
    json!({
        "spec_hash": spec_hash(spec),
        "source": r.source,
        "git_commit": r.git_commit,
        "digest": r.digest,
        "size_bytes": r.size_bytes,
        "files": r.files,
        "build_log": Layout::build_log(&r.path).to_string_lossy(),
        "build_s": build_s,
    })
}

/// Imports and builds the archive (blocking). Spec errors and build failures are told apart
/// although both abort the import from inside the build step.
fn import_and_build(
    archive: &Path,
    releases_dir: &Path,
    origin: Origin,
    app: &str,
) -> Result<(berth_release::Release, AppSpec, Option<f64>), DeployError> {
    let mut spec_error: Option<DeployError> = None;
    let mut parsed: Option<AppSpec> = None;
    let mut build_s: Option<f64> = None;
    let mut step = |dir: &Path| -> Result<(), String> {
        let spec = match load_spec(dir, app) {
            Ok(s) => s,
            Err(e) => {
                let text = e.to_string();
                spec_error = Some(e);
                return Err(text);
            }
        };
        if let Some(b) = &spec.build {
            let mut env = spec.env.clone();
            env.insert("BERTH_APP".into(), app.to_owned());
            let took = run_build(dir, &b.command, &env, b.timeout, &Layout::build_log(dir))?;
            build_s = Some(took.as_secs_f64());
        }
        if let Err(why) = check_static_dirs(dir, &spec) {
            spec_error = Some(DeployError::BadInput(why.clone()));
            return Err(why);
        }
        parsed = Some(spec);
        Ok(())
    };
    let imported = import_tarball_built(
        archive,
        releases_dir,
        Limits::default(),
        origin,
        Some(&mut step),
    );
    let release = match imported {
        Ok(r) => r,
        Err(e) => return Err(spec_error.unwrap_or_else(|| e.into())),
    };
    let spec = match parsed {
        Some(s) => s,
        // The same content was imported before: its spec is read from the stored tree.
        None => load_spec(&release.path, app)?,
    };
    Ok((release, spec, build_s))
}

/// A release about to be started for an app: what [`Deployer::launch`] needs.
pub(crate) struct Launch<'a> {
    pub slot: &'a Slot,
    pub key: &'a AppKey,
    pub actor: &'a Actor,
    pub record: ReleaseRecord,
    /// The spec as it applies to the app's environment.
    pub spec: AppSpec,
    pub secrets: SecretEnv,
    pub deployment: i64,
    /// What serves now (stopped once the new instances serve).
    pub active: Option<Arc<ReleaseRun>>,
    pub build_s: Option<f64>,
    pub steps: Vec<String>,
    pub started: Instant,
    pub plan: Plan,
}

/// The spec a release was recorded with.
pub(crate) fn stored_spec(record: &ReleaseRecord) -> Result<AppSpec, DeployError> {
    serde_json::from_value(record.spec.clone()).map_err(|e| {
        DeployError::Internal(format!(
            "stored spec of {} is unreadable: {e}",
            record.version
        ))
    })
}

impl Deployer {
    /// Deploys the uploaded archive (see the crate docs).
    pub async fn deploy(self: &Arc<Self>, req: DeployRequest) -> Result<DeployReport, DeployError> {
        let key = req.key.clone();
        check_key(&key)?;
        let slot = self.slot(&key);
        let _held = slot.hold(&key, &req.actor.name)?;
        check_unlocked(&self.store, &key).await?;
        let mut steps = Vec::new();
        let releases_dir = self.layout.releases_dir(&key.app);
        let (archive, origin, app) = (req.archive.clone(), req.origin.clone(), key.app.clone());
        let started = Instant::now();
        let (release, spec, build_s) = tokio::task::spawn_blocking(move || {
            import_and_build(&archive, &releases_dir, origin, &app)
        })
        .await
        .map_err(|e| DeployError::Internal(format!("import task failed: {e}")))??;
        steps.push(match build_s {
            Some(s) => format!("release {} imported and built in {s:.1}s", release.id),
            None => format!("release {} imported", release.id),
        });

        let active = slot.active.get();
        if let Some(run) = &active
            && run.release.version == release.id.as_str()
        {
            steps.push(format!(
                "already running this release: nothing to do (to apply changed secrets: \
                 berth restart {} --env {})",
                key.app, key.env
            ));
            return Ok(DeployReport {
                previous: Some(run.release.version.clone()),
                unchanged: true,
                instances: run.views(),
                ..DeployReport::new(&key, release.id.as_str(), build_s, steps)
            });
        }

        let effective = spec.for_environment(&key.env);
        self.check_hosts(&key, &effective)?;
        // The secrets are opened before anything is recorded: a missing key or a value that
        // does not decrypt stops the deploy with nothing changed.
        let secrets = self.secrets.current_env(&key.env, &key.app).await?;

        let spec_json = serde_json::to_value(&spec)
            .map_err(|e| DeployError::Internal(format!("app spec to JSON: {e}")))?;
        let mut tx = self.store.transaction().await?;
        let app_row = tx
            .ensure_app(&req.actor, &key.env, &key.app, &spec_json)
            .await?;
        let record = tx
            .record_release(
                &req.actor,
                &app_row,
                &NewRelease {
                    version: release.id.to_string(),
                    artifact: release.path.to_string_lossy().into_owned(),
                    meta: release_meta(&release, build_s, &spec_json),
                    spec: spec_json,
                },
            )
            .await?;
        // A first deploy is rolling whatever was asked: there is no release to compare with,
        // and its record should say what happened.
        let strategy = match &active {
            None => Strategy::Rolling,
            Some(_) => req.strategy.unwrap_or(effective.rollout.strategy),
        };
        let plan = Plan {
            strategy,
            label: strategy.as_str(),
            hooks: true,
        };
        let previous: Option<ReleaseRecord> = active.as_ref().map(|r| r.release.clone());
        let approval = effective.rollout.requires_approval;
        let deployment = if approval {
            tx.start_deployment_awaiting_approval(
                &req.actor,
                &record,
                previous.as_ref(),
                plan.label,
            )
            .await?
        } else {
            tx.start_deployment(&req.actor, &record, previous.as_ref(), plan.label)
                .await?
        };
        tx.commit().await?;
        self.started(&slot, deployment);
        if approval {
            let wait = effective.rollout.approval_timeout;
            self.await_approval(&slot, &key, &req.actor, deployment, wait, &mut steps)
                .await?;
        }

        self.launch(Launch {
            slot: &slot,
            key: &key,
            actor: &req.actor,
            record,
            spec: effective,
            secrets,
            deployment,
            active,
            build_s,
            steps,
            started,
            plan,
        })
        .await
    }

    /// Restarts the app's running release with its current secrets, the way a deploy
    /// replaces a release: new instances start beside the old, take the traffic once
    /// healthy, and the old ones drain and stop. A release that fails to become ready is
    /// stopped and the old instances keep serving, with the secrets they had.
    pub async fn restart(
        self: &Arc<Self>,
        key: &AppKey,
        actor: &Actor,
    ) -> Result<DeployReport, DeployError> {
        check_key(key)?;
        let slot = self.slot(key);
        let _held = slot.hold(key, &actor.name)?;
        check_unlocked(&self.store, key).await?;
        let Some(active) = slot.active.get() else {
            return Err(DeployError::NotFound(format!(
                "{} is not running in {}; deploy it first (berth deploy DIR --env {})",
                key.app, key.env, key.env
            )));
        };
        let record = active.release.clone();
        let spec = stored_spec(&record)?.for_environment(&key.env);
        let secrets = self.secrets.current_env(&key.env, &key.app).await?;
        let plan = Plan {
            strategy: Strategy::Rolling,
            label: "restart",
            hooks: false,
        };
        let mut tx = self.store.transaction().await?;
        let deployment = tx
            .start_deployment(actor, &record, Some(&record), plan.label)
            .await?;
        tx.commit().await?;
        self.started(&slot, deployment);
        let steps = vec![format!(
            "restarting release {} with the current secrets",
            record.version
        )];
        self.launch(Launch {
            slot: &slot,
            key,
            actor,
            record,
            spec,
            secrets,
            deployment,
            active: Some(active),
            build_s: None,
            steps,
            started: Instant::now(),
            plan,
        })
        .await
    }

    /// Deploys into `key.env` exactly the release that runs in `from` (or `release`, one
    /// recorded there): the same release id, the same directory, built once. The spec is the
    /// release's own, as it applies in `key.env`; the secrets are `key.env`'s.
    pub async fn promote(
        self: &Arc<Self>,
        key: &AppKey,
        from: &str,
        release: Option<&str>,
        actor: &Actor,
    ) -> Result<DeployReport, DeployError> {
        check_key(key)?;
        check_path_name("environment", from)?;
        if from == key.env {
            return Err(DeployError::BadInput(format!(
                "promoting from {from} to itself: name two environments"
            )));
        }
        let source = match release {
            Some(v) => self
                .store
                .get_release(from, &key.app, v)
                .await?
                .ok_or_else(|| {
                    DeployError::NotFound(format!(
                        "{} has no release {v} in {from} (berth releases {} --env {from})",
                        key.app, key.app
                    ))
                })?,
            None => self
                .store
                .list_releases(from, &key.app)
                .await?
                .into_iter()
                .find(|r| r.active)
                .ok_or_else(|| {
                    DeployError::NotFound(format!(
                        "{} runs no release in {from}: deploy it there first",
                        key.app
                    ))
                })?,
        };
        if !Path::new(&source.artifact).is_dir() {
            return Err(DeployError::NotFound(format!(
                "release {} is no longer on disk ({}); deploy its source again",
                source.version, source.artifact
            )));
        }
        let slot = self.slot(key);
        let _held = slot.hold(key, &actor.name)?;
        check_unlocked(&self.store, key).await?;
        let mut steps = vec![format!(
            "promoting release {} from {from} to {}",
            source.version, key.env
        )];
        let active = slot.active.get();
        if let Some(run) = &active
            && run.release.version == source.version
        {
            steps.push("already running this release: nothing to do".into());
            return Ok(DeployReport {
                previous: Some(run.release.version.clone()),
                unchanged: true,
                instances: run.views(),
                ..DeployReport::new(key, &source.version, None, steps)
            });
        }
        let effective = stored_spec(&source)?.for_environment(&key.env);
        self.check_hosts(key, &effective)?;
        let secrets = self.secrets.current_env(&key.env, &key.app).await?;
        let mut meta = source.meta.clone();
        if let Some(m) = meta.as_object_mut() {
            m.insert("promoted_from".into(), json!(from));
        }
        let mut tx = self.store.transaction().await?;
        let app_row = tx
            .ensure_app(actor, &key.env, &key.app, &source.spec)
            .await?;
        let record = tx
            .record_release(
                actor,
                &app_row,
                &NewRelease {
                    version: source.version.clone(),
                    artifact: source.artifact.clone(),
                    spec: source.spec.clone(),
                    meta,
                },
            )
            .await?;
        tx.audit(berth_store::NewAuditEntry::new(
            actor,
            "release.promote",
            key.to_string(),
            json!({ "from": from, "release": source.version }),
        ))
        .await?;
        let previous: Option<ReleaseRecord> = active.as_ref().map(|r| r.release.clone());
        // The target environment's own strategy: production may canary what staging rolled.
        let plan = Plan {
            strategy: effective.rollout.strategy,
            label: "promote",
            hooks: true,
        };
        let approval = effective.rollout.requires_approval;
        let deployment = if approval {
            tx.start_deployment_awaiting_approval(actor, &record, previous.as_ref(), plan.label)
                .await?
        } else {
            tx.start_deployment(actor, &record, previous.as_ref(), plan.label)
                .await?
        };
        tx.commit().await?;
        self.started(&slot, deployment);
        if approval {
            let wait = effective.rollout.approval_timeout;
            self.await_approval(&slot, key, actor, deployment, wait, &mut steps)
                .await?;
        }
        self.launch(Launch {
            slot: &slot,
            key,
            actor,
            record,
            spec: effective,
            secrets,
            deployment,
            active,
            build_s: None,
            steps,
            started: Instant::now(),
            plan,
        })
        .await
    }

    /// Why the app's hosts cannot be served (another route or app has one), before anything
    /// is recorded or started.
    fn check_hosts(&self, key: &AppKey, spec: &AppSpec) -> Result<(), DeployError> {
        if spec.hosts.is_empty() {
            return Ok(());
        }
        let probe = AppRoute {
            hosts: spec.hosts.clone(),
            preview_hosts: spec.rollout.preview_hosts.clone(),
            ..AppRoute::default()
        };
        match self.publisher.check(key, &probe) {
            Some(why) => Err(DeployError::Conflict(why)),
            None => Ok(()),
        }
    }

    /// Runs a recorded deployment (start, gate, switch, drain, stop, prune), records how it
    /// ended and says what it did.
    pub(crate) async fn launch(&self, l: Launch<'_>) -> Result<DeployReport, DeployError> {
        let Launch {
            slot,
            key,
            actor,
            record,
            spec,
            secrets,
            deployment,
            active,
            build_s,
            steps,
            started,
            plan,
        } = l;
        let version = record.version.clone();
        let previous = active.as_ref().map(|r| r.release.version.clone());
        let mut journal = Journal::new(
            deployment,
            steps,
            &spec,
            key,
            &version,
            previous.as_deref(),
            plan.label,
        );
        journal.announce("started", &format!("{} started", plan.label));
        let result = self
            .roll(
                slot,
                key,
                actor,
                record,
                spec,
                &secrets,
                plan,
                active,
                &mut journal,
            )
            .await;
        journal.announce_end(&result);
        let steps = journal.lines;
        let elapsed = started.elapsed().as_secs_f64();
        match result {
            Ok(pruned) => {
                let detail = format!("done in {elapsed:.1}s");
                self.finish(key, actor, deployment, "succeeded", &detail)
                    .await;
                let instances = slot.active.get().map(|r| r.views()).unwrap_or_default();
                Ok(DeployReport {
                    previous,
                    deployment: Some(deployment),
                    instances,
                    pruned,
                    ..DeployReport::new(key, &version, build_s, steps)
                })
            }
            Err(e) => {
                let state = match e {
                    DeployError::RolledBack(_) => "rolled_back",
                    _ => "failed",
                };
                self.finish(key, actor, deployment, state, &e.to_string())
                    .await;
                Err(e)
            }
        }
    }

    pub(crate) async fn finish(
        &self,
        key: &AppKey,
        actor: &Actor,
        deployment: i64,
        state: &'static str,
        detail: &str,
    ) {
        self.metrics
            .deploys
            .get_or_create(&crate::metrics::DeployLabels {
                app: key.app.clone(),
                env: key.env.clone(),
                result: state,
            })
            .inc();
        let done = async {
            let mut tx = self.store.transaction().await?;
            tx.finish_deployment(actor, deployment, state, detail)
                .await?;
            tx.commit().await
        };
        if let Err(e) = done.await {
            tracing::error!(error = %e, deployment, "could not record the end of the deployment");
        }
        self.deployment_changed();
    }

    /// Records a step in the deployment's log (with the numbers behind it) and in the
    /// report `berth deploy` prints.
    pub(crate) async fn record(
        &self,
        journal: &mut Journal,
        step: &str,
        decision: &str,
        reason: String,
        m: serde_json::Value,
    ) {
        self.log_step(journal.deployment, step, decision, &reason, m)
            .await;
        journal.lines.push(reason);
    }

    /// Records a step in the deployment's log and wakes its followers. A step that cannot be
    /// recorded is logged, not fatal: the deploy itself goes on.
    pub(crate) async fn log_step(
        &self,
        deployment: i64,
        step: &str,
        decision: &str,
        reason: &str,
        m: serde_json::Value,
    ) {
        if let Err(e) = self
            .store
            .record_step(deployment, step, decision, reason, m)
            .await
        {
            tracing::warn!(error = %e, deployment, step, "could not record a deployment step");
        }
        self.deployment_changed();
        tracing::info!(deployment, step, decision, "{reason}");
    }

    /// Hook, start, gate, canary or blue-green, switch, smoke, drain, stop, prune. Returns
    /// the pruned releases.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn roll(
        &self,
        slot: &Slot,
        key: &AppKey,
        actor: &Actor,
        record: ReleaseRecord,
        spec: AppSpec,
        secrets: &SecretEnv,
        plan: Plan,
        old: Option<Arc<ReleaseRun>>,
        journal: &mut Journal,
    ) -> Result<Vec<String>, DeployError> {
        let version = record.version.clone();
        let timeout = spec.deploy_timeout;
        if plan.hooks
            && let Some(hook) = &spec.rollout.pre_deploy
        {
            self.pre_deploy(key, &record, &spec, secrets, hook, old.as_ref(), journal)
                .await?;
        }
        // A rollback to the release kept warm takes its running instances.
        let warm = (plan.label == ROLLBACK)
            .then(|| slot.warm.take_release(&version))
            .flatten();
        let run = match warm {
            Some(run) => {
                self.record(
                    journal,
                    "start_instances",
                    "proceed",
                    format!("{version} was kept warm: its instances take the traffic back"),
                    json!({ "instances": run.shape(), "warm": true }),
                )
                .await;
                run
            }
            None => {
                self.start_run(key, &record, &spec, secrets, journal)
                    .await?
            }
        };
        slot.starting.set(Some(run.clone()));

        let gate_started = Instant::now();
        if let Err(why) = run.wait_ready(timeout).await {
            self.record(
                journal,
                "health_gate",
                "abort",
                why.clone(),
                json!({ "waited_s": gate_started.elapsed().as_secs_f64() }),
            )
            .await;
            run.stop().await;
            slot.starting.set(None);
            let serving = old
                .as_ref()
                .map_or("nothing was serving before".to_owned(), |o| {
                    format!("release {} keeps serving", o.release.version)
                });
            return Err(DeployError::Unhealthy(format!(
                "release {version} did not become ready: {why}\n{serving}; its output: berth logs {} --env {} --release {version}",
                key.app, key.env
            )));
        }
        self.record(
            journal,
            "health_gate",
            "proceed",
            format!(
                "all instances ready in {:.1}s",
                gate_started.elapsed().as_secs_f64()
            ),
            json!({ "waited_s": gate_started.elapsed().as_secs_f64() }),
        )
        .await;

        if let Some(old) = &old
            && plan.strategy != Strategy::Rolling
            && spec.http_process().is_some()
            && !spec.hosts.is_empty()
        {
            let pair = Pair {
                key,
                spec: &spec,
                new: &run,
                old,
            };
            self.progressive(slot, pair, plan.strategy, journal).await?;
        }

        let warmed = self
            .switch(slot, key, actor, &record, &spec, &run, Some(secrets))
            .await?;
        let opened = crate::opened_ahead(warmed);
        self.record(
            journal,
            "switch",
            "proceed",
            format!("traffic switched to {version}{opened}"),
            json!({ "upstreams": run.web_addrs().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                    "connections_opened": warmed }),
        )
        .await;

        if !spec.rollout.smoke.is_empty() {
            match crate::smoke::run(&spec, &run.web_addrs()).await {
                Ok(passed) => {
                    self.record(journal, "smoke", "proceed", passed, json!({}))
                        .await;
                }
                Err(why) => {
                    self.smoke_failed(slot, key, actor, &spec, &run, old.as_ref(), journal, &why)
                        .await;
                    let serving = old
                        .as_ref()
                        .map_or("nothing serves the app now".to_owned(), |o| {
                            format!("{} serves all traffic again", o.release.version)
                        });
                    return Err(DeployError::RolledBack(format!(
                        "release {version} was rolled back: {why}\n{serving}"
                    )));
                }
            }
        }

        let warm_for = spec.rollout.keep_warm_for(plan.strategy);
        let keep = plan.hooks && !warm_for.is_zero();
        if let Some(old) = old
            .as_ref()
            .filter(|o| keep && o.release.version != version)
        {
            self.keep_warm(key, old.clone(), warm_for, journal).await;
        } else if let Some(old) = old {
            self.drain(key, &old, spec.drain_timeout, journal).await;
            old.stop().await;
            self.record(
                journal,
                "stop_old",
                "proceed",
                format!("stopped the instances of {}", old.release.version),
                json!({}),
            )
            .await;
        }

        let pruned = self.prune(key, &version, spec.keep_releases).await;
        if !pruned.is_empty() {
            self.record(
                journal,
                "prune",
                "proceed",
                format!(
                    "pruned {} old release(s): {}",
                    pruned.len(),
                    pruned.join(", ")
                ),
                json!({ "pruned": pruned }),
            )
            .await;
        }
        Ok(pruned)
    }

    /// All traffic to `run`, recorded as the app's active release (with the secret versions
    /// it runs with, when they are new: a restart of berth brings back exactly these).
    /// Returns how many connections to `run` were opened ahead of the switch.
    #[allow(clippy::too_many_arguments)]
    async fn switch(
        &self,
        slot: &Slot,
        key: &AppKey,
        actor: &Actor,
        record: &ReleaseRecord,
        spec: &AppSpec,
        run: &Arc<ReleaseRun>,
        secrets: Option<&SecretEnv>,
    ) -> Result<usize, DeployError> {
        let warmed = crate::switch_traffic(&*self.publisher, key, app_route(spec, run)).await;
        let mut tx = self.store.transaction().await?;
        tx.activate_release(actor, record).await?;
        if let Some(secrets) = secrets {
            tx.record_release_secrets(record.id, &secrets.versions)
                .await?;
        }
        tx.commit().await?;
        slot.active.set(Some(run.clone()));
        slot.starting.set(None);
        Ok(warmed)
    }

    /// Starts `record`'s instances with `secrets` and says so in the journal.
    async fn start_run(
        &self,
        key: &AppKey,
        record: &ReleaseRecord,
        spec: &AppSpec,
        secrets: &SecretEnv,
        journal: &mut Journal,
    ) -> Result<Arc<ReleaseRun>, DeployError> {
        let run = ReleaseRun::start(
            &self.store,
            &self.layout,
            &self.metrics,
            key,
            record.clone(),
            spec.clone(),
            secrets,
            Some(journal.deployment),
        )
        .await?;
        let shape = run.shape();
        self.record(
            journal,
            "start_instances",
            "proceed",
            format!(
                "started {} instance(s) of {}: {shape:?}{}",
                shape.values().sum::<usize>(),
                record.version,
                secrets_note(&secrets.versions)
            ),
            // Which secret versions (never values) the instances got.
            json!({ "instances": shape, "secrets": secrets.versions }),
        )
        .await;
        Ok(run)
    }

    /// Leaves `old` running, out of the route, for `warm_for`; a rollback meanwhile takes
    /// it back at once. A release kept warm before is stopped now: one at a time.
    async fn keep_warm(
        &self,
        key: &AppKey,
        old: Arc<ReleaseRun>,
        warm_for: std::time::Duration,
        journal: &mut Journal,
    ) {
        let slot = self.slot(key);
        if let Some(previous) = slot.warm.replace(old.clone()) {
            previous.stop().await;
        }
        let version = old.release.version.clone();
        self.record(
            journal,
            "keep_warm",
            "proceed",
            format!(
                "{version} keeps running for {} so a rollback is instant (berth rollback {} \
                 --env {}); [deploy] keep_warm sets how long",
                berth_config::app::duration_text(warm_for),
                key.app,
                key.env
            ),
            json!({ "release": version, "seconds": warm_for.as_secs() }),
        )
        .await;
        tokio::spawn(async move {
            tokio::time::sleep(warm_for).await;
            if let Some(run) = slot.warm.take_same(&old) {
                tracing::info!(release = %run.release.version, "stopping the release kept warm");
                run.stop().await;
            }
        });
    }

    /// Waits until no request is in flight to `old`, or `timeout`.
    async fn drain(
        &self,
        key: &AppKey,
        old: &ReleaseRun,
        timeout: std::time::Duration,
        journal: &mut Journal,
    ) {
        let drain_started = Instant::now();
        let deadline = drain_started + timeout;
        let mut left = self.publisher.in_flight(key, &old.release.version);
        while left > 0 && Instant::now() < deadline {
            tokio::time::sleep(DRAIN_POLL).await;
            left = self.publisher.in_flight(key, &old.release.version);
        }
        let drained = format!(
            "drained {} in {:.1}s ({left} request(s) still in flight)",
            old.release.version,
            drain_started.elapsed().as_secs_f64()
        );
        self.record(
            journal,
            "drain",
            "proceed",
            drained,
            json!({ "in_flight": left }),
        )
        .await;
    }

    /// A smoke check failed after the switch: the old release (still running) takes the
    /// traffic back and is active again; the new one is stopped.
    #[allow(clippy::too_many_arguments)]
    async fn smoke_failed(
        &self,
        slot: &Slot,
        key: &AppKey,
        actor: &Actor,
        spec: &AppSpec,
        run: &Arc<ReleaseRun>,
        old: Option<&Arc<ReleaseRun>>,
        journal: &mut Journal,
        why: &str,
    ) {
        match old {
            Some(old) => {
                if let Err(e) = self
                    .switch(slot, key, actor, &old.release, spec, old, None)
                    .await
                {
                    tracing::error!(error = %e, "could not record the rollback after a failed smoke check");
                }
            }
            None => {
                self.publisher.publish(key, None);
                slot.active.set(None);
            }
        }
        self.drain(key, run, spec.drain_timeout, journal).await;
        run.stop().await;
        self.record(
            journal,
            "smoke",
            "rollback",
            format!("{why}; rolled back"),
            json!({ "reason": why }),
        )
        .await;
    }

    /// Runs the pre-deploy hook with the new release's environment, under the maintenance
    /// page when asked. A failure ends the deploy before any instance starts.
    #[allow(clippy::too_many_arguments)]
    async fn pre_deploy(
        &self,
        key: &AppKey,
        record: &ReleaseRecord,
        spec: &AppSpec,
        secrets: &SecretEnv,
        hook: &HookSpec,
        old: Option<&Arc<ReleaseRun>>,
        journal: &mut Journal,
    ) -> Result<(), DeployError> {
        let maintenance = hook
            .maintenance
            .then(|| old.and_then(|o| app_route(spec, o)))
            .flatten();
        if let Some(route) = &maintenance {
            self.publisher.publish(
                key,
                Some(AppRoute {
                    maintenance: true,
                    ..route.clone()
                }),
            );
        }
        let mut env = spec.env.clone();
        env.insert("BERTH_APP".into(), key.app.clone());
        env.insert("BERTH_ENV".into(), key.env.clone());
        env.insert("BERTH_RELEASE_ID".into(), record.version.clone());
        env.insert(
            "BERTH_STATE_DIR".into(),
            self.layout.state_dir(key).to_string_lossy().into_owned(),
        );
        // As for instances: the secrets over the spec's variables (a migration needs the
        // database password).
        for (k, v) in &secrets.values {
            env.insert(k.clone(), v.as_str().to_owned());
        }
        let dir = PathBuf::from(&record.artifact);
        let log = self
            .layout
            .logs_dir(key)
            .join(format!("pre-deploy-{}.log", record.version));
        let (command, timeout) = (hook.command.clone(), hook.timeout);
        let ran = tokio::task::spawn_blocking(move || {
            if let Some(parent) = log.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            run_build(&dir, &command, &env, timeout, &log)
        })
        .await
        .unwrap_or_else(|e| Err(format!("hook task failed: {e}")));
        if let Some(route) = maintenance {
            self.publisher.publish(key, Some(route));
        }
        match ran {
            Ok(took) => {
                self.record(
                    journal,
                    "pre_deploy",
                    "proceed",
                    format!(
                        "pre-deploy hook passed in {:.1}s{}",
                        took.as_secs_f64(),
                        if hook.maintenance {
                            " (under the maintenance page)"
                        } else {
                            ""
                        }
                    ),
                    json!({ "took_s": took.as_secs_f64() }),
                )
                .await;
                Ok(())
            }
            Err(why) => {
                self.record(journal, "pre_deploy", "abort", why.clone(), json!({}))
                    .await;
                Err(DeployError::Hook(format!(
                    "the pre-deploy hook failed, so no traffic moved: {why}"
                )))
            }
        }
    }

    /// Keeps the newest `keep` releases of the app and every release active in any
    /// environment; a failure is logged, never fatal to the deploy that succeeded.
    async fn prune(&self, key: &AppKey, current: &str, keep: usize) -> Vec<String> {
        let mut active: Vec<berth_release::ReleaseId> = Vec::new();
        match self.store.active_releases().await {
            Ok(list) => {
                for r in list.iter().filter(|r| r.app == key.app) {
                    if let Ok(id) = berth_release::ReleaseId::parse(&r.version) {
                        active.push(id);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "not pruning: cannot read the active releases");
                return Vec::new();
            }
        }
        // The release kept warm is running from its directory.
        let warm = self.slot(key).warm.get();
        let warm = warm.as_ref().map(|r| r.release.version.as_str());
        for version in [Some(current), warm].into_iter().flatten() {
            if let Ok(id) = berth_release::ReleaseId::parse(version) {
                active.push(id);
            }
        }
        let dir = self.layout.releases_dir(&key.app);
        match tokio::task::spawn_blocking(move || berth_release::prune(&dir, keep, &active)).await {
            Ok(Ok(ids)) => ids.into_iter().map(|i| i.to_string()).collect(),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "pruning old releases failed");
                Vec::new()
            }
            Err(_) => Vec::new(),
        }
    }
}
