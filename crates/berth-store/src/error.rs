//! The one error type of the store.

use crate::audit::BadEntry;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "unsupported database URL {0:?}: expected sqlite:PATH, sqlite:///ABSOLUTE/PATH or postgres://…"
    )]
    UnsupportedUrl(String),

    #[error("database: {0}")]
    Database(#[from] sqlx::Error),

    #[error("applying database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },

    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: &'static str, name: String },

    /// The caller's input was refused before touching the database.
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },

    /// Removing this user would leave nobody with admin on every environment.
    #[error("{name:?} is the last admin on all environments; add another first")]
    LastAdmin { name: String },

    /// The app is locked in that environment: nothing starts a deployment of it there.
    #[error(
        "deploys of {} in {} are locked by {}; nothing was started. Wait for them to unlock it, \
         or unlock it: {} (add --force for someone else's lock; it is audited)",
        .0.app, .0.environment, .0.held_by(), .0.unlock_command()
    )]
    Locked(Box<crate::locks::DeployLock>),

    /// Unlocking someone else's lock without `force`.
    #[error(
        "the deploy lock on {} in {} belongs to {}; ask them, or take it off anyway: {} --force \
         (recorded in the audit log)",
        .0.app, .0.environment, .0.held_by(), .0.unlock_command()
    )]
    NotLockOwner(Box<crate::locks::DeployLock>),

    #[error("{target} is not locked")]
    NotLocked { target: String },

    /// A value read back from the database does not parse (a hand-edited or corrupted row).
    #[error("unexpected value in the database ({what}): {reason}")]
    Corrupt { what: &'static str, reason: String },

    /// Pruning would turn a tampered prefix of the log into a signed checkpoint; refuse instead.
    #[error("the audit chain is broken at entry {}: {}; refusing to prune it", .0.seq, .0.reason)]
    AuditChainBroken(BadEntry),
}

/// Parses a JSON text column (`what` names it, e.g. `apps.spec`).
pub(crate) fn json_column(what: &'static str, text: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::corrupt(what, e))
}

impl StoreError {
    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        StoreError::Invalid {
            what,
            reason: reason.into(),
        }
    }

    pub(crate) fn corrupt(what: &'static str, reason: impl ToString) -> Self {
        StoreError::Corrupt {
            what,
            reason: reason.to_string(),
        }
    }

    pub(crate) fn not_found(kind: &'static str, name: impl Into<String>) -> Self {
        StoreError::NotFound {
            kind,
            name: name.into(),
        }
    }

    /// Turns a unique-constraint violation into `AlreadyExists`, anything else into `Database`.
    pub(crate) fn from_insert(e: sqlx::Error, kind: &'static str, name: &str) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::AlreadyExists {
                kind,
                name: name.to_owned(),
            },
            _ => StoreError::Database(e),
        }
    }
}
