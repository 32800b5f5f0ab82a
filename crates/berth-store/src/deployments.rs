//! Deployments (moving an app to a release) with the log of every step and decision, and
//! the instances they start.
//!
//! Steps and instance rows are written outside the deploy's audit entries: they are the
//! deployer's own bookkeeping, many per deploy, and their meaning is carried by the audited
//! `deploy.start` and `deploy.finish`.

use std::collections::HashMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::Store;
use crate::actor::Actor;
use crate::apps::app_target;
use crate::audit::NewAuditEntry;
use crate::db::{with_pool, with_tx};
use crate::error::{StoreError, json_column};
use crate::releases::ReleaseRecord;
use crate::time::{from_ms, now_ms};
use crate::tx::Tx;

/// A deployment and its decision log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: i64,
    pub environment: String,
    pub app: String,
    pub release: String,
    pub previous_release: Option<String>,
    pub strategy: String,
    pub state: String,
    pub requested_by: String,
    #[serde(with = "crate::time::serde_ms")]
    pub started: SystemTime,
    #[serde(with = "crate::time::serde_ms_opt")]
    pub finished: Option<SystemTime>,
    pub detail: Option<String>,
    /// Who approved it, when it waited for approval (`requires_approval`).
    #[serde(default)]
    pub approved_by: Option<String>,
    pub steps: Vec<DeployStep>,
}

/// The state of a deployment waiting for `berth approve` before anything starts.
pub const AWAITING_APPROVAL: &str = "awaiting_approval";

/// One step or decision of a deployment, with the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployStep {
    pub seq: i64,
    #[serde(with = "crate::time::serde_ms")]
    pub time: SystemTime,
    pub step: String,
    pub decision: String,
    pub reason: String,
    pub measurements: serde_json::Value,
}

type DeploymentRow = (
    i64,
    String,
    String,
    String,
    Option<String>,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
);

/// The deployment query with `$tail` appended, as one literal.
macro_rules! select_deployments {
    ($($tail:expr),+) => {
        concat!(
            "SELECT d.id, e.name, a.name, r.version, p.version, d.strategy, \
     d.state, d.requested_by, d.started_ms, d.finished_ms, d.detail, d.approved_by \
     FROM deployments d JOIN apps a ON a.id = d.app_id \
     JOIN environments e ON e.id = a.environment_id \
     JOIN releases r ON r.id = d.release_id \
     LEFT JOIN releases p ON p.id = d.previous_release_id ",
            $($tail),+
        )
    };
}

/// The ids of the newest `$3` deployments of app `$2` in environment `$1`: what a listing
/// shows, and whose steps it reads.
macro_rules! newest_deployment_ids {
    () => {
        "SELECT d.id FROM deployments d JOIN apps a ON a.id = d.app_id \
         JOIN environments e ON e.id = a.environment_id \
         WHERE e.name = $1 AND a.name = $2 AND a.removed_ms IS NULL \
         ORDER BY d.id DESC LIMIT $3"
    };
}

/// The decision-log query with `$tail` (which deployments, then `ORDER BY deployment_id,
/// seq`) appended, as one literal.
macro_rules! select_steps {
    ($($tail:expr),+) => {
        concat!(
            "SELECT deployment_id, seq, time_ms, step, decision, reason, measurements \
             FROM deployment_decisions ",
            $($tail),+
        )
    };
}

type StepRow = (i64, i64, i64, String, String, String, String);

/// Groups decision-log rows (ordered by deployment, then `seq`) by deployment id.
fn steps_by_deployment(rows: Vec<StepRow>) -> Result<HashMap<i64, Vec<DeployStep>>, StoreError> {
    let mut by_deployment: HashMap<i64, Vec<DeployStep>> = HashMap::new();
    for (deployment, seq, time_ms, step, decision, reason, measurements) in rows {
        by_deployment
            .entry(deployment)
            .or_default()
            .push(DeployStep {
                seq,
                time: from_ms(time_ms),
                step,
                decision,
                reason,
                measurements: json_column("deployment_decisions.measurements", &measurements)?,
            });
    }
    Ok(by_deployment)
}

fn deployment_from_row(r: DeploymentRow, steps: Vec<DeployStep>) -> Deployment {
    Deployment {
        id: r.0,
        environment: r.1,
        app: r.2,
        release: r.3,
        previous_release: r.4,
        strategy: r.5,
        state: r.6,
        requested_by: r.7,
        started: from_ms(r.8),
        finished: r.9.map(from_ms),
        detail: r.10,
        approved_by: r.11,
        steps,
    }
}

impl Tx {
    /// Starts a deployment of `release`, recording what was active before (the rollback
    /// target). Refused with [`StoreError::Locked`] while the app is locked in its
    /// environment. Audited as `deploy.start`.
    pub async fn start_deployment(
        &mut self,
        actor: &Actor,
        release: &ReleaseRecord,
        previous: Option<&ReleaseRecord>,
        strategy: &str,
    ) -> Result<i64, StoreError> {
        self.insert_deployment(actor, release, previous, strategy, "running")
            .await
    }

    /// [`Tx::start_deployment`] for a deployment that waits for [`Tx::approve_deployment`]
    /// before anything starts (state [`AWAITING_APPROVAL`]).
    pub async fn start_deployment_awaiting_approval(
        &mut self,
        actor: &Actor,
        release: &ReleaseRecord,
        previous: Option<&ReleaseRecord>,
        strategy: &str,
    ) -> Result<i64, StoreError> {
        self.insert_deployment(actor, release, previous, strategy, AWAITING_APPROVAL)
            .await
    }

    async fn insert_deployment(
        &mut self,
        actor: &Actor,
        release: &ReleaseRecord,
        previous: Option<&ReleaseRecord>,
        strategy: &str,
        state: &str,
    ) -> Result<i64, StoreError> {
        // Checked in the same transaction as the insert: a lock taken a moment ago wins.
        if let Some(held) = self.deploy_lock(&release.environment, &release.app).await? {
            return Err(StoreError::Locked(Box::new(held)));
        }
        let now = now_ms();
        let id: i64 = with_tx!(&mut self.conn, c => {
            sqlx::query_scalar(
                "INSERT INTO deployments (app_id, release_id, previous_release_id, strategy, \
                 state, requested_by, started_ms, updated_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING id",
            )
            .bind(release.app_id)
            .bind(release.id)
            .bind(previous.map(|p| p.id))
            .bind(strategy)
            .bind(state)
            .bind(&actor.name)
            .bind(now)
            .fetch_one(&mut *c)
            .await
        })?;
        self.audit(NewAuditEntry::new(
            actor,
            "deploy.start",
            app_target(&release.environment, &release.app),
            json!({
                "deployment": id,
                "release": release.version,
                "previous": previous.map(|p| &p.version),
                "strategy": strategy,
                "state": state,
            }),
        ))
        .await?;
        Ok(id)
    }

    /// Lets a deployment waiting for approval go on (state `running`), recording who
    /// approved it. [`StoreError::Invalid`] when it is not waiting (it was cancelled, or
    /// approved already). Audited as `deploy.approve`.
    pub async fn approve_deployment(&mut self, actor: &Actor, id: i64) -> Result<(), StoreError> {
        let row: Option<(String, String, String, String)> = with_tx!(&mut self.conn, c => {
            sqlx::query_as(
                "SELECT e.name, a.name, d.state, d.requested_by FROM deployments d \
                 JOIN apps a ON a.id = d.app_id \
                 JOIN environments e ON e.id = a.environment_id WHERE d.id = $1",
            )
            .bind(id)
            .fetch_optional(&mut *c)
            .await
        })?;
        let Some((environment, app, state, requested_by)) = row else {
            return Err(StoreError::not_found("deployment", id.to_string()));
        };
        if state != AWAITING_APPROVAL {
            return Err(StoreError::invalid(
                "deployment",
                format!("deployment {id} is {state}, not waiting for approval"),
            ));
        }
        let now = now_ms();
        with_tx!(&mut self.conn, c => {
            sqlx::query(
                "UPDATE deployments SET state = 'running', approved_by = $1, updated_ms = $2 \
                 WHERE id = $3",
            )
            .bind(&actor.name)
            .bind(now)
            .bind(id)
            .execute(&mut *c)
            .await
            .map(|_| ())
        })?;
        self.audit(NewAuditEntry::new(
            actor,
            "deploy.approve",
            app_target(&environment, &app),
            json!({ "deployment": id, "requested_by": requested_by }),
        ))
        .await
        .map(|_| ())
    }

    /// Ends a deployment in `state` (`succeeded`, `failed`, …). Audited as `deploy.finish`,
    /// with the outcome `ok` only for `succeeded`.
    pub async fn finish_deployment(
        &mut self,
        actor: &Actor,
        id: i64,
        state: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let row: Option<(String, String)> = with_tx!(&mut self.conn, c => {
            sqlx::query_as(
                "SELECT e.name, a.name FROM deployments d JOIN apps a ON a.id = d.app_id \
                 JOIN environments e ON e.id = a.environment_id WHERE d.id = $1",
            )
            .bind(id)
            .fetch_optional(&mut *c)
            .await
        })?;
        let Some((environment, app)) = row else {
            return Err(StoreError::not_found("deployment", id.to_string()));
        };
        with_tx!(&mut self.conn, c => {
            sqlx::query(
                "UPDATE deployments SET state = $1, detail = $2, updated_ms = $3, \
                 finished_ms = $3 WHERE id = $4",
            )
            .bind(state)
            .bind(detail)
            .bind(now)
            .bind(id)
            .execute(&mut *c)
            .await
            .map(|_| ())
        })?;
        let params = json!({ "deployment": id, "state": state, "detail": detail });
        let mut entry = NewAuditEntry::new(
            actor,
            "deploy.finish",
            app_target(&environment, &app),
            params,
        );
        if state != "succeeded" {
            entry = entry.with_outcome(format!("error: {state}"));
        }
        self.audit(entry).await.map(|_| ())
    }
}

impl Store {
    /// Appends a step to a deployment's decision log.
    pub async fn record_step(
        &self,
        deployment: i64,
        step: &str,
        decision: &str,
        reason: &str,
        measurements: serde_json::Value,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let measurements = measurements.to_string();
        // One deployment has one writer (the deployer's task), so max+1 cannot race.
        with_pool!(&self.pool, p => {
            sqlx::query(
                "INSERT INTO deployment_decisions \
                 (deployment_id, seq, time_ms, step, decision, reason, measurements) \
                 VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM deployment_decisions \
                 WHERE deployment_id = $1), $2, $3, $4, $5, $6)",
            )
            .bind(deployment)
            .bind(now)
            .bind(step)
            .bind(decision)
            .bind(reason)
            .bind(&measurements)
            .execute(p)
            .await
            .map(|_| ())
        })?;
        Ok(())
    }

    /// The app's deployments in `environment`, newest first, at most `limit`, with steps.
    pub async fn list_deployments(
        &self,
        environment: &str,
        app: &str,
        limit: u32,
    ) -> Result<Vec<Deployment>, StoreError> {
        let sql = select_deployments!(
            "WHERE d.id IN (",
            newest_deployment_ids!(),
            ") ORDER BY d.id DESC"
        );
        // The steps of all of them in one query rather than one per deployment.
        let steps_sql = select_steps!(
            "WHERE deployment_id IN (",
            newest_deployment_ids!(),
            ") ORDER BY deployment_id, seq"
        );
        let limit = i64::from(limit);
        let (rows, steps): (Vec<DeploymentRow>, Vec<StepRow>) = with_pool!(&self.pool, p => {
            let rows = sqlx::query_as(sql).bind(environment).bind(app).bind(limit).fetch_all(p).await?;
            let steps = sqlx::query_as(steps_sql).bind(environment).bind(app).bind(limit).fetch_all(p).await?;
            Ok::<_, sqlx::Error>((rows, steps))
        })?;
        let mut steps = steps_by_deployment(steps)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let own = steps.remove(&r.0).unwrap_or_default();
                deployment_from_row(r, own)
            })
            .collect())
    }

    /// One deployment by id.
    pub async fn get_deployment(&self, id: i64) -> Result<Option<Deployment>, StoreError> {
        self.deployment_after(id, 0).await
    }

    /// One deployment by id with only its steps after `seq` (a follower that has printed up
    /// to `seq` reads just what is new).
    pub async fn deployment_after(
        &self,
        id: i64,
        seq: i64,
    ) -> Result<Option<Deployment>, StoreError> {
        let sql = select_deployments!("WHERE d.id = $1");
        let steps_sql =
            select_steps!("WHERE deployment_id = $1 AND seq > $2 ORDER BY deployment_id, seq");
        let row: Option<DeploymentRow> = with_pool!(&self.pool, p => {
            sqlx::query_as(sql).bind(id).fetch_optional(p).await
        })?;
        let Some(row) = row else {
            return Ok(None);
        };
        let steps: Vec<StepRow> = with_pool!(&self.pool, p => {
            sqlx::query_as(steps_sql).bind(id).bind(seq).fetch_all(p).await
        })?;
        let steps = steps_by_deployment(steps)?.remove(&id).unwrap_or_default();
        Ok(Some(deployment_from_row(row, steps)))
    }

    /// The id of the app's first deployment in `environment` after deployment `id`, if one
    /// has been recorded: what "the next deploy of this app" is, without racing its start.
    pub async fn next_deployment_id(
        &self,
        environment: &str,
        app: &str,
        id: i64,
    ) -> Result<Option<i64>, StoreError> {
        let next: Option<i64> = with_pool!(&self.pool, p => {
            sqlx::query_scalar(
                "SELECT MIN(d.id) FROM deployments d JOIN apps a ON a.id = d.app_id \
                 JOIN environments e ON e.id = a.environment_id \
                 WHERE e.name = $1 AND a.name = $2 AND a.removed_ms IS NULL AND d.id > $3",
            )
            .bind(environment)
            .bind(app)
            .bind(id)
            .fetch_one(p)
            .await
        })?;
        Ok(next)
    }

    /// Marks deployments that were in flight when berth stopped as `interrupted` (the
    /// release that was active before them is still the active one, since activation is the
    /// last step of a deploy), and those that waited for approval as `cancelled` (nothing of
    /// them had started; the approval is for a deploy that is no longer waiting). Returns how
    /// many.
    pub async fn interrupt_unfinished_deployments(&self) -> Result<u64, StoreError> {
        let now = now_ms();
        let cancelled = with_pool!(&self.pool, p => {
            sqlx::query(
                "UPDATE deployments SET state = 'cancelled', \
                 detail = 'berth restarted while the deployment waited for approval; nothing \
                 was started: deploy again', updated_ms = $1, finished_ms = $1 \
                 WHERE finished_ms IS NULL AND state = $2",
            )
            .bind(now)
            .bind(AWAITING_APPROVAL)
            .execute(p)
            .await
            .map(|r| r.rows_affected())
        })?;
        let n = with_pool!(&self.pool, p => {
            sqlx::query(
                "UPDATE deployments SET state = 'interrupted', \
                 detail = 'berth stopped while the deployment ran', updated_ms = $1, \
                 finished_ms = $1 WHERE finished_ms IS NULL",
            )
            .bind(now)
            .execute(p)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(cancelled + n)
    }

    /// Records a started instance; returns its row id.
    pub async fn insert_instance(&self, new: &NewInstance<'_>) -> Result<i64, StoreError> {
        let now = now_ms();
        let id: i64 = with_pool!(&self.pool, p => {
            sqlx::query_scalar(
                "INSERT INTO instances (app_id, release_id, deployment_id, process, name, address, \
                 pid, state, started_ms, updated_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING id",
            )
            .bind(new.release.app_id)
            .bind(new.release.id)
            .bind(new.deployment)
            .bind(new.process)
            .bind(new.name)
            .bind(new.address)
            .bind(new.pid)
            .bind(new.state)
            .bind(now)
            .fetch_one(p)
            .await
        })?;
        Ok(id)
    }

    /// Updates an instance's state (and pid); `stopped` also records the end and exit status.
    pub async fn update_instance(
        &self,
        id: i64,
        state: &str,
        pid: Option<i32>,
        stopped: Option<Option<i32>>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let (stopped_ms, exit_status) = match stopped {
            Some(status) => (Some(now), status),
            None => (None, None),
        };
        with_pool!(&self.pool, p => {
            sqlx::query(
                "UPDATE instances SET state = $1, pid = COALESCE($2, pid), updated_ms = $3, \
                 stopped_ms = COALESCE($4, stopped_ms), exit_status = COALESCE($5, exit_status) \
                 WHERE id = $6",
            )
            .bind(state)
            .bind(pid)
            .bind(now)
            .bind(stopped_ms)
            .bind(exit_status)
            .bind(id)
            .execute(p)
            .await
            .map(|_| ())
        })?;
        Ok(())
    }

    /// At start: instances a previous berth left marked running are gone (their processes
    /// died with it or were swept); mark them `lost`. Returns how many.
    pub async fn mark_lost_instances(&self) -> Result<u64, StoreError> {
        let now = now_ms();
        let n = with_pool!(&self.pool, p => {
            sqlx::query(
                "UPDATE instances SET state = 'lost', updated_ms = $1, stopped_ms = $1 \
                 WHERE stopped_ms IS NULL",
            )
            .bind(now)
            .execute(p)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(n)
    }
}

/// What [`Store::insert_instance`] records.
#[derive(Debug, Clone)]
pub struct NewInstance<'a> {
    pub release: &'a ReleaseRecord,
    pub deployment: Option<i64>,
    pub process: &'a str,
    pub name: &'a str,
    pub address: &'a str,
    pub pid: Option<i32>,
    pub state: &'a str,
}
