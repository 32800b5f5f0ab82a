//! The tamper-evident audit log: types, appending (in [`chain`]), listing, verification (in
//! [`verify`]) and retention (in [`prune`]). The format is described in docs/store.md.

mod chain;
mod prune;
pub use prune::MIN_CHECKPOINT_KEY_LEN;
mod verify;

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub use chain::GENESIS_HASH;
pub use verify::{BadEntry, Defect, VerifyReport};

use crate::Store;
use crate::actor::Actor;
use crate::db::with_pool;
use crate::error::StoreError;
use crate::time::{from_ms, to_ms};

/// How long entries are kept by default before retention may prune them.
pub const DEFAULT_RETENTION: std::time::Duration =
    std::time::Duration::from_secs(365 * 24 * 60 * 60);

/// The `outcome` of an action that succeeded.
pub const OUTCOME_OK: &str = "ok";

/// An entry to append; the store adds the sequence number, time and hashes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEntry {
    pub actor: Actor,
    /// Dotted verb, e.g. `user.add`, `token.revoke`, `deploy.start`.
    pub action: String,
    /// What it acted on, e.g. a user name or `app/environment`.
    pub target: String,
    /// Parameters of the action. Values of secret-looking keys (`*secret*`, `*password*`,
    /// `token`, `*_token`, …) are replaced with `"[redacted]"` before hashing and storing.
    pub params: serde_json::Value,
    /// `ok`, or what went wrong (`denied`, `error: …`).
    pub outcome: String,
}

impl NewAuditEntry {
    /// A successful action.
    pub fn new(
        actor: &Actor,
        action: impl Into<String>,
        target: impl Into<String>,
        params: serde_json::Value,
    ) -> Self {
        NewAuditEntry {
            actor: actor.clone(),
            action: action.into(),
            target: target.into(),
            params,
            outcome: OUTCOME_OK.to_owned(),
        }
    }

    pub fn with_outcome(mut self, outcome: impl Into<String>) -> Self {
        self.outcome = outcome.into();
        self
    }
}

/// One stored entry of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: i64,
    #[serde(with = "crate::time::serde_ms")]
    pub time: SystemTime,
    pub actor: String,
    pub role: String,
    pub source: String,
    pub action: String,
    pub target: String,
    /// JSON text exactly as stored and hashed (see [`AuditEntry::params_json`]).
    pub params: String,
    pub outcome: String,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditEntry {
    /// The parameters parsed as JSON, or `None` if the stored text is not JSON (which only a
    /// hand-edited row can be; verification reports it).
    pub fn params_json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.params).ok()
    }
}

pub(crate) type AuditRow = (
    i64,
    i64,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
);

pub(crate) fn entry_from_row(r: AuditRow) -> AuditEntry {
    AuditEntry {
        seq: r.0,
        time: from_ms(r.1),
        actor: r.2,
        role: r.3,
        source: r.4,
        action: r.5,
        target: r.6,
        params: r.7,
        outcome: r.8,
        prev_hash: r.9,
        hash: r.10,
    }
}

/// Which entries [`Store::audit_list`] returns. Every field narrows; the default is all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFilter {
    pub actor: Option<String>,
    /// Entries whose action starts with this, e.g. `user.` or `deploy.`.
    pub action_prefix: Option<String>,
    pub target: Option<String>,
    /// Entries about one environment: targets `APP/ENVIRONMENT` (apps, releases, deploys,
    /// secrets there), an environment's own audit stream.
    #[serde(default)]
    pub environment: Option<String>,
    /// At or after this time.
    #[serde(default, with = "crate::time::serde_ms_opt")]
    pub since: Option<SystemTime>,
    /// Strictly before this time.
    #[serde(default, with = "crate::time::serde_ms_opt")]
    pub until: Option<SystemTime>,
    /// At most this many (the newest).
    pub limit: Option<u32>,
}

impl Store {
    /// Entries matching `filter`, newest first.
    pub async fn audit_list(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = filter.limit.map_or(i64::MAX, i64::from);
        let rows: Vec<AuditRow> = with_pool!(&self.pool, p => {
            // One static statement with optional filters (`$n IS NULL OR …`) rather than
            // SQL assembled at run time: nothing user-supplied ever becomes SQL text.
            sqlx::query_as(
                "SELECT seq, time_ms, actor, role, source, action, target, params, outcome, \
                 prev_hash, hash FROM audit_log \
                 WHERE ($1 IS NULL OR actor = $1) \
                 AND ($2 IS NULL OR substr(action, 1, length($2)) = $2) \
                 AND ($3 IS NULL OR target = $3) \
                 AND ($4 IS NULL OR time_ms >= $4) \
                 AND ($5 IS NULL OR time_ms < $5) \
                 AND ($6 IS NULL OR (length(target) > length($6) \
                      AND substr(target, length(target) - length($6)) = '/' || $6)) \
                 ORDER BY seq DESC LIMIT $7",
            )
            .bind(filter.actor.as_deref())
            .bind(filter.action_prefix.as_deref())
            .bind(filter.target.as_deref())
            .bind(filter.since.map(to_ms))
            .bind(filter.until.map(to_ms))
            .bind(filter.environment.as_deref())
            .bind(limit)
            .fetch_all(p)
            .await
        })?;
        Ok(rows.into_iter().map(entry_from_row).collect())
    }

    /// Appends one entry on its own, for actions that change nothing in the store (a denied
    /// request, a failed deploy attempt, a login). Changes should use [`crate::Tx::audit`]
    /// in their own transaction instead.
    pub async fn audit_record(&self, entry: NewAuditEntry) -> Result<AuditEntry, StoreError> {
        let mut tx = self.transaction().await?;
        let stored = tx.audit(entry).await?;
        tx.commit().await?;
        Ok(stored)
    }
}
