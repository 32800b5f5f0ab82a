//! berth's state store: everything berth knows (apps, environments, releases, deployments
//! and their decision log, instances, users, tokens, audit) in embedded SQLite by default
//! or in PostgreSQL when given a `postgres://` URL. The schema, the audit chain format and
//! verification are described in docs/store.md.
//!
//! One [`Store`] hides the dialect. Every change that matters goes through a [`Tx`] and
//! appends its audit entry in the same transaction, so the change and its record commit
//! together or not at all.

mod actor;
mod apps;
mod audit;
mod db;
mod deployments;
mod error;
mod locks;
mod names;
mod releases;
mod roles;
mod secrets;
#[cfg(feature = "testing")]
pub mod testing;
mod time;
mod tokens;
mod tx;
mod users;

use std::path::Path;

pub use actor::Actor;
pub use apps::App;
pub use audit::{
    AuditEntry, AuditFilter, BadEntry, DEFAULT_RETENTION, Defect, GENESIS_HASH, NewAuditEntry,
    OUTCOME_OK, VerifyReport,
};
pub use deployments::{AWAITING_APPROVAL, DeployStep, Deployment, NewInstance};
pub use error::StoreError;
pub use locks::{DeployLock, MAX_LOCK_REASON};
pub use releases::{NewRelease, ReleaseRecord};
pub use roles::{ALL_ENVIRONMENTS, Grant, GrantParseError, Role, UnknownRole};
pub use secrets::{MAX_SECRET_NAME, SealedValue, SecretInfo, SecretRow, check_secret_name};
pub use time::{serde_ms, serde_ms_opt};
pub use tokens::TokenInfo;
pub use tx::Tx;
pub use users::{BOOTSTRAP_ADMIN, User};

/// The minimum length of the retention checkpoint key.
pub use audit::MIN_CHECKPOINT_KEY_LEN;

/// A handle on the store; cheap to clone (it is a connection pool).
#[derive(Clone, Debug)]
pub struct Store {
    pool: db::Pool,
}

impl Store {
    /// Opens (creating if needed) and migrates the store at `url`:
    /// - `sqlite:PATH`, `sqlite://PATH?mode=rwc`, `sqlite:///ABSOLUTE/PATH`: a file, in WAL
    ///   mode with foreign keys on and a busy timeout; created if missing.
    /// - `sqlite::memory:`: a private in-memory store (tests).
    /// - `postgres://…` or `postgresql://…`: a PostgreSQL database.
    ///
    /// Pending migrations are applied; opening an up-to-date store applies none.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Ok(Store {
            pool: db::Pool::open(url).await?,
        })
    }

    /// Opens (creating if needed) and migrates the SQLite store in the file at `path`.
    pub async fn open_sqlite_file(path: &Path) -> Result<Store, StoreError> {
        Ok(Store {
            pool: db::Pool::open_sqlite_file(path).await?,
        })
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn dialect(&self) -> &'static str {
        match self.pool {
            db::Pool::Sqlite(_) => "sqlite",
            db::Pool::Postgres(_) => "postgres",
        }
    }

    /// Waits for connections in use to be returned, then closes them all.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
