//! Secrets of an app in one environment, as sealed values (the store never sees a plaintext:
//! sealing and opening are berth-secrets', done by the caller), and the versions each release
//! runs with.
//!
//! Every change is a new version row; removing a secret writes a removal version, so history
//! (who set what when) stays and a release that ran with an older version can run with it
//! again. Audited: `secret.set`, `secret.unset`, `secret.import`, `secret.reveal`,
//! `secret.rotate_key` (by the callers of [`Tx::insert_secret_version`], [`Tx::reseal_secret`]
//! through [`Tx::audit`]), never with a value.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::Store;
use crate::actor::Actor;
use crate::db::{with_pool, with_tx};
use crate::error::StoreError;
use crate::names::check_name;
use crate::time::{from_ms, now_ms};
use crate::tx::Tx;

/// The longest secret name.
pub const MAX_SECRET_NAME: usize = 128;

/// A current secret as listings show it: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInfo {
    pub name: String,
    pub version: i64,
    pub updated_by: String,
    #[serde(with = "crate::time::serde_ms")]
    pub updated: SystemTime,
}

/// A sealed secret version as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretRow {
    pub id: i64,
    pub environment: String,
    pub app: String,
    pub name: String,
    pub version: i64,
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
    pub key_id: String,
}

impl std::fmt::Debug for SecretRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRow")
            .field("environment", &self.environment)
            .field("app", &self.app)
            .field("name", &self.name)
            .field("version", &self.version)
            .field("key_id", &self.key_id)
            .finish()
    }
}

/// A sealed value to store.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedValue {
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
    pub key_id: String,
}

/// Secret names are environment variable names: letters, digits and `_`, not starting with
/// a digit, at most [`MAX_SECRET_NAME`] characters; `PORT` and `BERTH_*` are berth's.
pub fn check_secret_name(name: &str) -> Result<(), StoreError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_SECRET_NAME
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(StoreError::invalid(
            "secret name",
            format!(
                "{name:?} is not an environment variable name: 1 to {MAX_SECRET_NAME} letters, digits and _, not starting with a digit"
            ),
        ));
    }
    if name == "PORT" || name.starts_with("BERTH_") {
        return Err(StoreError::invalid(
            "secret name",
            format!("{name} is set by berth itself (PORT and BERTH_* are reserved)"),
        ));
    }
    Ok(())
}

fn check_place(environment: &str, app: &str) -> Result<(), StoreError> {
    check_name("environment", environment)?;
    check_name("app name", app)
}

type RowTuple = (i64, String, String, String, i64, String, String, String);

fn row_from(r: RowTuple) -> Result<SecretRow, StoreError> {
    let bytes = |what: &'static str, text: &str| {
        hex::decode(text).map_err(|e| StoreError::corrupt(what, e))
    };
    Ok(SecretRow {
        id: r.0,
        environment: r.1,
        app: r.2,
        name: r.3,
        version: r.4,
        ciphertext: bytes("secret_versions.ciphertext", &r.5)?,
        nonce: bytes("secret_versions.nonce", &r.6)?,
        key_id: r.7,
    })
}

/// The columns of a [`SecretRow`], from `secret_versions s`.
macro_rules! row_columns {
    () => {
        "s.id, s.environment, s.app, s.name, s.version, s.ciphertext, s.nonce, s.key_id"
    };
}

/// The newest version of each secret of app `$2` in environment `$1`, removals included.
macro_rules! newest {
    () => {
        "FROM secret_versions s WHERE s.environment = $1 AND s.app = $2 AND s.version = \
         (SELECT MAX(v.version) FROM secret_versions v WHERE v.environment = s.environment \
          AND v.app = s.app AND v.name = s.name) "
    };
}

impl Store {
    /// The app's current secrets in `environment` (names, versions, who, when), by name.
    pub async fn list_secrets(
        &self,
        environment: &str,
        app: &str,
    ) -> Result<Vec<SecretInfo>, StoreError> {
        let sql = concat!(
            "SELECT s.name, s.version, s.created_by, s.created_ms ",
            newest!(),
            "AND s.deleted = 0 ORDER BY s.name"
        );
        let rows: Vec<(String, i64, String, i64)> = with_pool!(&self.pool, p => {
            sqlx::query_as(sql).bind(environment).bind(app).fetch_all(p).await
        })?;
        Ok(rows
            .into_iter()
            .map(|(name, version, updated_by, ms)| SecretInfo {
                name,
                version,
                updated_by,
                updated: from_ms(ms),
            })
            .collect())
    }

    /// The app's current secrets in `environment`, sealed, by name.
    pub async fn current_secrets(
        &self,
        environment: &str,
        app: &str,
    ) -> Result<Vec<SecretRow>, StoreError> {
        let sql = concat!(
            "SELECT ",
            row_columns!(),
            " ",
            newest!(),
            "AND s.deleted = 0 ORDER BY s.name"
        );
        let rows: Vec<RowTuple> = with_pool!(&self.pool, p => {
            sqlx::query_as(sql).bind(environment).bind(app).fetch_all(p).await
        })?;
        rows.into_iter().map(row_from).collect()
    }

    /// Exactly these versions (`(name, version)`) of the app's secrets; [`StoreError::NotFound`]
    /// names the first one missing.
    pub async fn secret_versions(
        &self,
        environment: &str,
        app: &str,
        versions: &[(String, i64)],
    ) -> Result<Vec<SecretRow>, StoreError> {
        let sql = concat!(
            "SELECT ",
            row_columns!(),
            " FROM secret_versions s WHERE s.environment = $1 AND s.app = $2 AND s.name = $3 \
             AND s.version = $4 AND s.deleted = 0"
        );
        let mut out = Vec::with_capacity(versions.len());
        for (name, version) in versions {
            let row: Option<RowTuple> = with_pool!(&self.pool, p => {
                sqlx::query_as(sql)
                    .bind(environment)
                    .bind(app)
                    .bind(name)
                    .bind(version)
                    .fetch_optional(p)
                    .await
            })?;
            match row {
                Some(r) => out.push(row_from(r)?),
                None => {
                    return Err(StoreError::not_found(
                        "secret version",
                        format!("{name} v{version} of {app}/{environment}"),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Each master key id that sealed a stored value, with how many values it sealed.
    pub async fn secret_key_ids(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let sql = "SELECT key_id, COUNT(*) FROM secret_versions WHERE deleted = 0 \
                   GROUP BY key_id ORDER BY key_id";
        Ok(with_pool!(&self.pool, p => {
            sqlx::query_as(sql).fetch_all(p).await
        })?)
    }

    /// The secret versions `release_id` last ran with, by name.
    pub async fn release_secrets(&self, release_id: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let sql = "SELECT name, version FROM release_secrets WHERE release_id = $1 ORDER BY name";
        Ok(with_pool!(&self.pool, p => {
            sqlx::query_as(sql).bind(release_id).fetch_all(p).await
        })?)
    }
}

impl Tx {
    /// The newest version number of the secret, removals included (0 when never set): the
    /// next version is one more.
    pub async fn latest_secret_version(
        &mut self,
        environment: &str,
        app: &str,
        name: &str,
    ) -> Result<(i64, bool), StoreError> {
        check_place(environment, app)?;
        check_secret_name(name)?;
        let row: Option<(i64, i64)> = with_tx!(&mut self.conn, c => {
            sqlx::query_as(
                "SELECT version, deleted FROM secret_versions WHERE environment = $1 \
                 AND app = $2 AND name = $3 ORDER BY version DESC LIMIT 1",
            )
            .bind(environment)
            .bind(app)
            .bind(name)
            .fetch_optional(&mut *c)
            .await
        })?;
        Ok(match row {
            Some((v, deleted)) => (v, deleted == 0),
            None => (0, false),
        })
    }

    /// Stores version `version` of the secret: `Some` sealed value, or `None` for a removal.
    /// The caller audits (the change and its entry commit together).
    pub async fn insert_secret_version(
        &mut self,
        actor: &Actor,
        environment: &str,
        app: &str,
        name: &str,
        version: i64,
        value: Option<&SealedValue>,
    ) -> Result<(), StoreError> {
        check_place(environment, app)?;
        check_secret_name(name)?;
        let (ciphertext, nonce, key_id, deleted) = match value {
            Some(v) => (
                hex::encode(&v.ciphertext),
                hex::encode(&v.nonce),
                v.key_id.clone(),
                0i64,
            ),
            None => (String::new(), String::new(), String::new(), 1),
        };
        with_tx!(&mut self.conn, c => {
            sqlx::query(
                "INSERT INTO secret_versions (environment, app, name, version, ciphertext, \
                 nonce, key_id, deleted, created_by, created_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(environment)
            .bind(app)
            .bind(name)
            .bind(version)
            .bind(&ciphertext)
            .bind(&nonce)
            .bind(&key_id)
            .bind(deleted)
            .bind(&actor.name)
            .bind(now_ms())
            .execute(&mut *c)
            .await
            .map(|_| ())
        })
        .map_err(|e| StoreError::from_insert(e, "secret version", &format!("{name} v{version}")))
    }

    /// The current version of one secret, sealed (`None`: not set, or removed).
    pub async fn current_secret(
        &mut self,
        environment: &str,
        app: &str,
        name: &str,
    ) -> Result<Option<SecretRow>, StoreError> {
        let sql = concat!(
            "SELECT ",
            row_columns!(),
            " ",
            newest!(),
            "AND s.name = $3 AND s.deleted = 0"
        );
        let row: Option<RowTuple> = with_tx!(&mut self.conn, c => {
            sqlx::query_as(sql).bind(environment).bind(app).bind(name).fetch_optional(&mut *c).await
        })?;
        row.map(row_from).transpose()
    }

    /// Every stored sealed value, every version of every secret (a rotation re-seals them all:
    /// releases may run with old versions).
    pub async fn all_secret_rows(&mut self) -> Result<Vec<SecretRow>, StoreError> {
        let sql = concat!(
            "SELECT ",
            row_columns!(),
            " FROM secret_versions s WHERE s.deleted = 0 ORDER BY s.id"
        );
        let rows: Vec<RowTuple> = with_tx!(&mut self.conn, c => {
            sqlx::query_as(sql).fetch_all(&mut *c).await
        })?;
        rows.into_iter().map(row_from).collect()
    }

    /// Replaces the sealed value of row `id` (same plaintext, sealed under another key).
    pub async fn reseal_secret(&mut self, id: i64, value: &SealedValue) -> Result<(), StoreError> {
        let changed = with_tx!(&mut self.conn, c => {
            sqlx::query(
                "UPDATE secret_versions SET ciphertext = $1, nonce = $2, key_id = $3 \
                 WHERE id = $4 AND deleted = 0",
            )
            .bind(hex::encode(&value.ciphertext))
            .bind(hex::encode(&value.nonce))
            .bind(&value.key_id)
            .bind(id)
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected())
        })?;
        if changed != 1 {
            return Err(StoreError::not_found("secret version", format!("#{id}")));
        }
        Ok(())
    }

    /// Records the secret versions `release_id` runs with, replacing what it ran with before.
    pub async fn record_release_secrets(
        &mut self,
        release_id: i64,
        versions: &[(String, i64)],
    ) -> Result<(), StoreError> {
        with_tx!(&mut self.conn, c => {
            sqlx::query("DELETE FROM release_secrets WHERE release_id = $1")
                .bind(release_id)
                .execute(&mut *c)
                .await
                .map(|_| ())
        })?;
        for (name, version) in versions {
            with_tx!(&mut self.conn, c => {
                sqlx::query(
                    "INSERT INTO release_secrets (release_id, name, version) VALUES ($1, $2, $3)",
                )
                .bind(release_id)
                .bind(name)
                .bind(version)
                .execute(&mut *c)
                .await
                .map(|_| ())
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        for ok in ["DATABASE_URL", "_x", "a1", &"A".repeat(MAX_SECRET_NAME)] {
            assert!(check_secret_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1A",
            "A-B",
            "A B",
            "PORT",
            "BERTH_APP",
            "É",
            &"A".repeat(MAX_SECRET_NAME + 1),
        ] {
            assert!(check_secret_name(bad).is_err(), "{bad}");
        }
    }
}
