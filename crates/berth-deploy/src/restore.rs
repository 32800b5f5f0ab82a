//! Bringing apps back when berth starts.
//!
//! Nothing from before is adopted: a berth that was `kill -9`ed left instances whose
//! supervisor is gone (PR_SET_PDEATHSIG kills the direct children; grandchildren may
//! survive), so every process carrying this data directory's marker is killed, their rows
//! are marked lost, and each app's active release is started fresh.

use std::sync::Arc;

use berth_config::app::AppSpec;
use berth_store::ReleaseRecord;
use serde::Serialize;

use crate::error::DeployError;
use crate::flow::{app_route, stored_spec};
use crate::run::ReleaseRun;
use crate::{AppKey, Deployer};

/// What [`Deployer::restore`] found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreReport {
    /// Processes of a previous berth killed.
    pub killed: Vec<i32>,
    pub lost_instances: u64,
    pub interrupted_deployments: u64,
    /// Apps being started (they become ready in the background).
    pub apps: Vec<String>,
}

impl Deployer {
    /// See the module docs. Returns once every app's instances are started; each app's
    /// route is published as soon as its instances are ready (or its deploy timeout passed,
    /// leaving the edge's health checks to decide).
    pub async fn restore(self: &Arc<Self>) -> Result<RestoreReport, DeployError> {
        let marker = self.layout.marker();
        let killed = tokio::task::spawn_blocking(move || berth_supervisor::sweep_stale(&marker))
            .await
            .unwrap_or_default();
        if !killed.is_empty() {
            tracing::warn!(pids = ?killed, "killed processes left by a previous berth");
        }
        let mut report = RestoreReport {
            killed,
            lost_instances: self.store.mark_lost_instances().await?,
            interrupted_deployments: self.store.interrupt_unfinished_deployments().await?,
            apps: Vec::new(),
        };
        for record in self.store.active_releases().await? {
            let key = AppKey::new(&record.environment, &record.app);
            report.apps.push(key.to_string());
            if let Err(e) = self.bring_back(&key, record).await {
                tracing::error!(app = %key, error = %e, "could not bring the app back");
            }
        }
        Ok(report)
    }

    async fn bring_back(
        self: &Arc<Self>,
        key: &AppKey,
        record: ReleaseRecord,
    ) -> Result<(), DeployError> {
        let spec: AppSpec = stored_spec(&record)?.for_environment(&key.env);
        if !std::path::Path::new(&record.artifact).is_dir() {
            return Err(DeployError::NotFound(format!(
                "release directory {} is missing; deploy the app again",
                record.artifact
            )));
        }
        // Exactly the secret versions the release ran with before berth stopped.
        let secrets = self.secrets.env_of_release(&record).await?;
        let slot = self.slot(key);
        // Held until the app is ready, so a deploy arriving meanwhile is told to wait.
        let guard = slot.lock.clone().lock_owned().await;
        let run = ReleaseRun::start(
            &self.store,
            &self.layout,
            &self.metrics,
            key,
            record,
            spec.clone(),
            &secrets,
            None,
        )
        .await?;
        slot.active.set(Some(run.clone()));
        tracing::info!(app = %key, release = %run.release.version, "starting the active release");
        let this = self.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let _held = guard;
            if let Err(why) = run.wait_ready(spec.deploy_timeout).await {
                tracing::error!(app = %key, "active release not ready after restart: {why}");
            }
            this.publisher.publish(&key, app_route(&spec, &run));
        });
        Ok(())
    }
}
