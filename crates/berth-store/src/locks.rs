//! Deploy locks: one per app and environment, with its owner, reason and time. While one is
//! held, [`Tx::start_deployment`] refuses, so a deploy, rollback, promotion or restart cannot
//! slip in between a check and its start.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::Store;
use crate::actor::Actor;
use crate::apps::app_target;
use crate::audit::NewAuditEntry;
use crate::db::{with_pool, with_tx};
use crate::error::StoreError;
use crate::names::check_environment;
use crate::time::{from_ms, now_ms};
use crate::tx::Tx;

/// The longest reason kept: a sentence or two, not a document.
pub const MAX_LOCK_REASON: usize = 500;

/// A held deploy lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployLock {
    pub environment: String,
    pub app: String,
    /// The user who took it.
    pub owner: String,
    pub reason: String,
    #[serde(with = "crate::time::serde_ms")]
    pub since: SystemTime,
}

impl DeployLock {
    /// `alice since 2026-11-22T12:00:00Z ("database migration")`.
    pub fn held_by(&self) -> String {
        format!(
            "{} since {} ({:?})",
            self.owner,
            humantime::format_rfc3339_seconds(self.since),
            self.reason
        )
    }

    /// The command that takes this lock off.
    pub fn unlock_command(&self) -> String {
        format!("berth unlock {} --env {}", self.app, self.environment)
    }
}

type LockRow = (String, String, String, String, i64);

fn lock_from_row(r: LockRow) -> DeployLock {
    DeployLock {
        environment: r.0,
        app: r.1,
        owner: r.2,
        reason: r.3,
        since: from_ms(r.4),
    }
}

const SELECT_LOCK: &str = "SELECT environment, app, owner, reason, created_ms FROM deploy_locks \
                           WHERE environment = $1 AND app = $2";

impl Store {
    /// The lock on `app` in `environment`, if one is held.
    pub async fn deploy_lock(
        &self,
        environment: &str,
        app: &str,
    ) -> Result<Option<DeployLock>, StoreError> {
        let row: Option<LockRow> = with_pool!(&self.pool, p => {
            sqlx::query_as(SELECT_LOCK).bind(environment).bind(app).fetch_optional(p).await
        })?;
        Ok(row.map(lock_from_row))
    }
}

impl Tx {
    /// The lock on `app` in `environment`, read inside this transaction.
    pub async fn deploy_lock(
        &mut self,
        environment: &str,
        app: &str,
    ) -> Result<Option<DeployLock>, StoreError> {
        let row: Option<LockRow> = with_tx!(&mut self.conn, c => {
            sqlx::query_as(SELECT_LOCK).bind(environment).bind(app).fetch_optional(&mut *c).await
        })?;
        Ok(row.map(lock_from_row))
    }

    /// Locks deploys of `app` in `environment` for `actor`. [`StoreError::Locked`] when a
    /// lock is already held (anyone's: taking over a lock means unlocking it first). Audited
    /// as `deploy.lock`.
    pub async fn lock_deploys(
        &mut self,
        actor: &Actor,
        environment: &str,
        app: &str,
        reason: &str,
    ) -> Result<DeployLock, StoreError> {
        check_environment(environment)?;
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(StoreError::invalid(
                "reason",
                "say why deploys are locked (--reason \"...\"), so others know whom to ask",
            ));
        }
        if reason.chars().count() > MAX_LOCK_REASON {
            return Err(StoreError::invalid(
                "reason",
                format!("at most {MAX_LOCK_REASON} characters"),
            ));
        }
        if let Some(held) = self.deploy_lock(environment, app).await? {
            return Err(StoreError::Locked(Box::new(held)));
        }
        let now = now_ms();
        with_tx!(&mut self.conn, c => {
            sqlx::query(
                "INSERT INTO deploy_locks (environment, app, owner, reason, created_ms) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(environment)
            .bind(app)
            .bind(&actor.name)
            .bind(reason)
            .bind(now)
            .execute(&mut *c)
            .await
            .map(|_| ())
        })?;
        self.audit(NewAuditEntry::new(
            actor,
            "deploy.lock",
            app_target(environment, app),
            json!({ "reason": reason }),
        ))
        .await?;
        Ok(DeployLock {
            environment: environment.to_owned(),
            app: app.to_owned(),
            owner: actor.name.clone(),
            reason: reason.to_owned(),
            since: from_ms(now),
        })
    }

    /// Removes the lock on `app` in `environment`. Someone else's lock only with `force`
    /// ([`StoreError::NotLockOwner`] otherwise). Audited as `deploy.unlock`, with the lock's
    /// owner and reason and whether it was forced. Returns the lock removed.
    pub async fn unlock_deploys(
        &mut self,
        actor: &Actor,
        environment: &str,
        app: &str,
        force: bool,
    ) -> Result<DeployLock, StoreError> {
        let Some(held) = self.deploy_lock(environment, app).await? else {
            return Err(StoreError::NotLocked {
                target: app_target(environment, app),
            });
        };
        let forced = held.owner != actor.name;
        if forced && !force {
            return Err(StoreError::NotLockOwner(Box::new(held)));
        }
        with_tx!(&mut self.conn, c => {
            sqlx::query("DELETE FROM deploy_locks WHERE environment = $1 AND app = $2")
                .bind(environment)
                .bind(app)
                .execute(&mut *c)
                .await
                .map(|_| ())
        })?;
        self.audit(NewAuditEntry::new(
            actor,
            "deploy.unlock",
            app_target(environment, app),
            json!({
                "owner": held.owner,
                "reason": held.reason,
                "since_ms": crate::time::to_ms(held.since),
                "forced": forced,
            }),
        ))
        .await?;
        Ok(held)
    }
}
