//! The deployer: from an uploaded source to healthy instances behind the edge, and back
//! after a restart.
//!
//! - [`Deployer::deploy`]: import the archive as a release (berth-release), validate its
//!   `berth.toml`, run its build command, record it (berth-store), start its instances
//!   (berth-supervisor), wait until every one is ready, switch the app's edge route to them,
//!   wait for requests to the old instances to finish, stop the old ones, prune old releases.
//!   Any failure before the switch stops what it started and leaves the old release serving.
//! - [`Deployer::restore`]: at start, kill what a killed predecessor left running, mark its
//!   instances lost and its unfinished deployments interrupted, and bring every app's active
//!   release back up.
//! - [`Deployer::ps`], [`Deployer::log_dir`]: what runs, and where its output is.
//!
//! The edge is reached through [`Publisher`], which the binary implements by composing the
//! config file's routes with the apps' ([`routes::compose`]) and applying the result.

pub mod analysis;
mod approval;
mod build;
mod error;
mod flow;
mod http;
mod layout;
pub mod logs;
mod metrics;
mod notify;
mod progressive;
mod restore;
mod rollback;
pub mod rollout;
pub mod routes;
mod run;
pub mod secrets;
mod smoke;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use berth_store::Store;
use serde::Serialize;

pub use approval::self_approval;
pub use berth_config::app::Strategy;
pub use error::DeployError;
pub use flow::{DeployReport, DeployRequest};
pub use layout::Layout;
pub use logs::LogQuery;
pub use metrics::AppMetrics;
pub use routes::AppRoute;
pub use run::InstanceView;
pub use secrets::{SecretEnv, SecretsError, Vault};

use run::ReleaseRun;

/// An app in one environment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct AppKey {
    pub env: String,
    pub app: String,
}

impl AppKey {
    pub fn new(env: impl Into<String>, app: impl Into<String>) -> Self {
        AppKey {
            env: env.into(),
            app: app.into(),
        }
    }
}

impl fmt::Display for AppKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.app, self.env)
    }
}

/// The deployer's way to the edge.
pub trait Publisher: Send + Sync + 'static {
    /// Why `route` cannot be served (a host another route has), without changing anything.
    fn check(&self, key: &AppKey, route: &AppRoute) -> Option<String>;
    /// Serves `route` for the app from now on (`None`: the app has no route).
    fn publish(&self, key: &AppKey, route: Option<AppRoute>);
    /// Opens connections to the instances `route` would send traffic to, ahead of its
    /// [`Publisher::publish`] (see `berth_edge::Edge::warm`); hold what it returns until then.
    fn warm(&self, key: &AppKey, route: &AppRoute) -> BoxFuture<berth_edge::Warm>;
    /// Requests in flight to `release`'s instances of the app.
    fn in_flight(&self, key: &AppKey, release: &str) -> usize;
    /// The edge's counts for `release` on the app's route (canary analysis).
    fn stats(&self, key: &AppKey, release: &str) -> Option<berth_edge::stats::StatsSnapshot>;
}

/// A future the [`Publisher`] trait can return (it is used as `dyn Publisher`).
pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Moves traffic to `route`'s pools with connections to them already open: the requests
/// right after a switch would otherwise each wait for one, all at once (bench/RESULTS.md).
/// Returns how many were opened. A canary's rollback publishes without it: the stable
/// release holds most connections already, and that rollback must not wait for anything.
pub(crate) async fn switch_traffic(
    publisher: &dyn Publisher,
    key: &AppKey,
    route: Option<AppRoute>,
) -> usize {
    let warm = match &route {
        Some(r) => Some(publisher.warm(key, r).await),
        None => None,
    };
    publisher.publish(key, route);
    warm.map_or(0, |w| w.opened())
}

/// How a step's reason says what [`switch_traffic`] opened: nothing when it opened none.
pub(crate) fn opened_ahead(n: usize) -> String {
    match n {
        0 => String::new(),
        n => format!(" ({n} connection(s) to it opened ahead)"),
    }
}

/// What `berth ps` shows for an app.
#[derive(Debug, Clone, Serialize)]
pub struct AppStatus {
    pub app: String,
    pub environment: String,
    /// The release serving traffic.
    pub release: Option<String>,
    /// A deploy is in progress (its new instances are listed too).
    pub deploying: bool,
    /// The deployment waiting for `berth approve`, if one is.
    pub awaiting_approval: Option<i64>,
    /// The deploy lock, when one is held (`berth lock`).
    pub lock: Option<berth_store::DeployLock>,
    pub instances: Vec<InstanceView>,
}

/// Locks `m`, carrying on after a panic elsewhere poisoned it: every value kept under these
/// locks is replaced whole, so a panicking holder cannot leave it half-written.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A release's instances, or none.
#[derive(Default)]
struct RunCell(Mutex<Option<Arc<ReleaseRun>>>);

impl RunCell {
    fn get(&self) -> Option<Arc<ReleaseRun>> {
        lock(&self.0).clone()
    }

    fn set(&self, run: Option<Arc<ReleaseRun>>) {
        *lock(&self.0) = run;
    }

    fn take(&self) -> Option<Arc<ReleaseRun>> {
        lock(&self.0).take()
    }

    /// Puts `run` in, returning the one it replaces.
    fn replace(&self, run: Arc<ReleaseRun>) -> Option<Arc<ReleaseRun>> {
        lock(&self.0).replace(run)
    }

    /// Takes the run if it is `release`'s.
    fn take_release(&self, release: &str) -> Option<Arc<ReleaseRun>> {
        let mut held = lock(&self.0);
        match &*held {
            Some(run) if run.release.version == release => held.take(),
            _ => None,
        }
    }

    /// Takes the run if it is `run` itself (not a later one put in its place).
    fn take_same(&self, run: &Arc<ReleaseRun>) -> Option<Arc<ReleaseRun>> {
        let mut held = lock(&self.0);
        match &*held {
            Some(r) if Arc::ptr_eq(r, run) => held.take(),
            _ => None,
        }
    }
}

/// One app's running releases and its deploy lock.
#[derive(Default)]
struct Slot {
    /// Held for the whole of a deploy or a restore: one at a time per app.
    lock: Arc<tokio::sync::Mutex<()>>,
    /// The release serving traffic, and one being started by a deploy.
    active: RunCell,
    starting: RunCell,
    /// The release the last deploy replaced, still running for `[deploy] keep_warm` so a
    /// rollback to it only moves traffic.
    warm: RunCell,
    /// Commands for a canary or blue-green rollout in progress.
    control: Mutex<Option<tokio::sync::mpsc::UnboundedSender<rollout::Command>>>,
    /// Who holds `lock`, for the answer to a second deploy (`None` during a restore).
    holder: Mutex<Option<Holder>>,
    /// A deploy waiting for `berth approve`.
    approval: Mutex<Option<approval::Pending>>,
}

/// Who started the deploy holding an app's lock, and its deployment once recorded.
#[derive(Debug, Clone)]
struct Holder {
    by: String,
    deployment: Option<i64>,
}

/// An app's deploy lock, held: forgets its [`Holder`] when dropped.
pub(crate) struct Held<'a> {
    slot: &'a Slot,
    _guard: tokio::sync::MutexGuard<'a, ()>,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        *lock(&self.slot.holder) = None;
    }
}

impl Slot {
    /// Takes the app's deploy lock for `by`, or says who has it.
    pub(crate) fn hold(&self, key: &AppKey, by: &str) -> Result<Held<'_>, DeployError> {
        let Ok(guard) = self.lock.try_lock() else {
            return Err(flow::busy(key, self));
        };
        *lock(&self.holder) = Some(Holder {
            by: by.to_owned(),
            deployment: None,
        });
        Ok(Held {
            slot: self,
            _guard: guard,
        })
    }

    /// The deployment the holder started, once recorded.
    pub(crate) fn started(&self, deployment: i64) {
        if let Some(h) = lock(&self.holder).as_mut() {
            h.deployment = Some(deployment);
        }
    }

    /// ` (deployment 12, started by alice)`.
    pub(crate) fn held_by(&self) -> String {
        let waiting = lock(&self.approval)
            .as_ref()
            .map(|p| (p.deployment, p.requested_by.clone()));
        if let Some((id, by)) = waiting {
            return format!(" (deployment {id}, started by {by}, waiting for approval)");
        }
        match lock(&self.holder).clone() {
            Some(Holder {
                by,
                deployment: Some(id),
            }) => format!(" (deployment {id}, started by {by})"),
            Some(Holder {
                by,
                deployment: None,
            }) => format!(" (started by {by})"),
            // Only a restore holds the lock without a holder.
            None => " (berth is starting the app after its own restart)".to_owned(),
        }
    }
}

/// The deployer. Cheap to share (`Arc`).
pub struct Deployer {
    store: Store,
    layout: Layout,
    publisher: Arc<dyn Publisher>,
    metrics: AppMetrics,
    secrets: Arc<Vault>,
    slots: Mutex<BTreeMap<AppKey, Arc<Slot>>>,
    /// Bumped after every write to a deployment (started, a step, approved, finished): one
    /// counter for all of them, since a follower re-reads the store anyway and only needs to
    /// know when to look.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Deployer {
    pub fn new(
        store: Store,
        layout: Layout,
        publisher: Arc<dyn Publisher>,
        metrics: AppMetrics,
        secrets: Arc<Vault>,
    ) -> Arc<Deployer> {
        Arc::new(Deployer {
            store,
            layout,
            publisher,
            metrics,
            secrets,
            slots: Mutex::new(BTreeMap::new()),
            changes: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Tells when a deployment may have changed. Subscribe before reading the store: a write
    /// made after the subscription always marks the receiver changed, so none is missed.
    pub fn deployment_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Wakes the followers of deployments: call after a deployment write is committed.
    pub(crate) fn deployment_changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The deployment the slot's holder started is recorded.
    pub(crate) fn started(&self, slot: &Slot, deployment: i64) {
        slot.started(deployment);
        self.deployment_changed();
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The app secrets the deployer starts instances with.
    pub fn secrets(&self) -> &Arc<Vault> {
        &self.secrets
    }

    fn slot(&self, key: &AppKey) -> Arc<Slot> {
        lock(&self.slots).entry(key.clone()).or_default().clone()
    }

    fn existing_slot(&self, key: &AppKey) -> Option<Arc<Slot>> {
        lock(&self.slots).get(key).cloned()
    }

    /// What runs for the app now.
    pub async fn ps(&self, key: &AppKey) -> Result<AppStatus, DeployError> {
        let known = self.store.app(&key.env, &key.app).await?.is_some();
        let slot = self.existing_slot(key);
        if !known && slot.is_none() {
            return Err(DeployError::NotFound(format!(
                "no app {} in environment {} (deploy it first: berth deploy DIR --env {})",
                key.app, key.env, key.env
            )));
        }
        let (active, starting, deploying) = match &slot {
            Some(s) => (
                s.active.get(),
                [s.starting.get(), s.warm.get()],
                s.lock.try_lock().is_err(),
            ),
            None => (None, [None, None], false),
        };
        let awaiting_approval = slot
            .as_ref()
            .and_then(|s| lock(&s.approval).as_ref().map(|p| p.deployment));
        let deploy_lock = self.store.deploy_lock(&key.env, &key.app).await?;
        let mut instances = Vec::new();
        for run in active.iter().chain(starting.iter().flatten()) {
            instances.extend(run.views());
        }
        Ok(AppStatus {
            app: key.app.clone(),
            environment: key.env.clone(),
            release: active.map(|r| r.release.version.clone()),
            deploying,
            awaiting_approval,
            lock: deploy_lock,
            instances,
        })
    }

    /// The app's log directory (see [`logs`]).
    pub fn log_dir(&self, key: &AppKey) -> std::path::PathBuf {
        self.layout.logs_dir(key)
    }

    /// Stops every instance of every app (berth is shutting down). The edge should have
    /// drained first.
    pub async fn shutdown(&self) {
        let slots: Vec<Arc<Slot>> = lock(&self.slots).values().cloned().collect();
        let mut stops = Vec::new();
        for slot in slots {
            for cell in [&slot.active, &slot.starting, &slot.warm] {
                if let Some(run) = cell.take() {
                    stops.push(tokio::spawn(async move { run.stop().await }));
                }
            }
        }
        for s in stops {
            let _ = s.await;
        }
    }
}
