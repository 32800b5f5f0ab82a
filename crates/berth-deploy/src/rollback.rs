//! `berth rollback`: the app goes back to a retained release (the previous one by default)
//! through the same steps as a rolling deploy, with no build and no pre-deploy hook (both ran
//! when that release was first deployed).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use berth_config::app::Strategy;
use berth_store::Actor;

use crate::error::DeployError;
use crate::flow::{DeployReport, Launch, Plan, ROLLBACK, check_key, check_unlocked, stored_spec};
use crate::{AppKey, Deployer};

/// How far back the previous release is looked for in the deployment history.
const HISTORY: u32 = 100;

impl Deployer {
    /// Rolls the app back to `target`, or to the release that served before the current one.
    pub async fn rollback(
        self: &Arc<Self>,
        key: AppKey,
        target: Option<String>,
        actor: Actor,
    ) -> Result<DeployReport, DeployError> {
        check_key(&key)?;
        let slot = self.slot(&key);
        let _held = slot.hold(&key, &actor.name)?;
        check_unlocked(&self.store, &key).await?;
        let active = slot.active.get();
        let current = active.as_ref().map(|r| r.release.version.clone());
        let version = match target {
            Some(v) => v,
            None => self.previous(&key, current.as_deref()).await?,
        };
        if current.as_deref() == Some(version.as_str()) {
            return Err(DeployError::BadInput(format!(
                "{version} is already the release serving {key}; name another one (berth \
                 releases {} --env {} lists them)",
                key.app, key.env
            )));
        }
        let record = self
            .store
            .get_release(&key.env, &key.app, &version)
            .await?
            .ok_or_else(|| {
                DeployError::NotFound(format!(
                    "{key} has no release {version}; berth releases {} --env {} lists them",
                    key.app, key.env
                ))
            })?;
        let dir = Path::new(&record.artifact).to_path_buf();
        if !dir.is_dir() {
            return Err(DeployError::NotFound(format!(
                "release {version} is no longer on disk (pruned by [release] keep); deploy its \
                 source again instead"
            )));
        }
        let spec = stored_spec(&record)?.for_environment(&key.env);
        // The secret versions the release ran with, so a rollback restores them too; a
        // release that never ran here (or ran with none) gets the current ones.
        let mut secrets = self.secrets.env_of_release(&record).await?;
        if secrets.versions.is_empty() {
            secrets = self.secrets.current_env(&key.env, &key.app).await?;
        }
        let plan = Plan {
            strategy: Strategy::Rolling,
            label: ROLLBACK,
            hooks: false,
        };
        let previous = active.as_ref().map(|r| r.release.clone());
        let mut tx = self.store.transaction().await?;
        let deployment = tx
            .start_deployment(&actor, &record, previous.as_ref(), plan.label)
            .await?;
        tx.commit().await?;
        self.started(&slot, deployment);
        let steps = vec![format!(
            "rolling back {key} from {} to {version}",
            current.as_deref().unwrap_or("nothing")
        )];
        self.launch(Launch {
            slot: &slot,
            key: &key,
            actor: &actor,
            record,
            spec,
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

    /// The release that served before `current`: the one the newest successful deployment
    /// of `current` replaced (restarts, which replace it with itself, do not count).
    async fn previous(&self, key: &AppKey, current: Option<&str>) -> Result<String, DeployError> {
        let history = self
            .store
            .list_deployments(&key.env, &key.app, HISTORY)
            .await?;
        history
            .iter()
            // A restart replaces a release with itself: look past it.
            .find(|d| {
                d.state == "succeeded"
                    && Some(d.release.as_str()) == current
                    && d.previous_release.as_deref() != current
            })
            .and_then(|d| d.previous_release.clone())
            .ok_or_else(|| {
                DeployError::NotFound(format!(
                    "no earlier release of {key} to roll back to; name one: berth rollback {} \
                     RELEASE --env {} (berth releases lists them)",
                    key.app, key.env
                ))
            })
    }
}
