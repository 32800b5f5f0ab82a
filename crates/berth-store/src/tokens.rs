//! API tokens: random, shown once, stored hashed.
//!
//! A token reads `berth_<public id>_<secret>`: 12 hex digits naming the row (not secret:
//! listings show it so an operator can tell tokens apart) and 64 hex digits (256 bits) from
//! the operating system's CSPRNG via `rand::rng()`.
//!
//! # Why SHA-256 and not argon2
//! Only `hex(SHA-256(token))` is stored. Slow, salted password hashes such as argon2 exist
//! to make guessing *low-entropy* secrets expensive after a database leak; a 256-bit random
//! secret cannot be guessed at any hash speed, so argon2 would add no protection. It would
//! add cost where it hurts: every API request authenticates, and an argon2 verification
//! (tens of milliseconds and megabytes of memory by design) per request turns the API into
//! an easy denial-of-service target. A leaked database therefore still yields no usable
//! token, and a lookup costs one hash.
//!
//! The row is found by its public id and the stored hash is compared in constant time, so
//! response timing reveals nothing about how much of a guessed secret was right.

use std::time::{Duration, SystemTime};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::Store;
use crate::actor::Actor;
use crate::audit::NewAuditEntry;
use crate::db::{with_pool, with_tx};
use crate::error::StoreError;
use crate::names::check_label;
use crate::time::{from_ms, now_ms};
use crate::tx::Tx;
use crate::users::User;

const PREFIX: &str = "berth_";
const PUBLIC_ID_BYTES: usize = 6;
const SECRET_BYTES: usize = 32;

/// `last_used` is refreshed at most this often: a write per request would contend with
/// deploys for the SQLite write lock for no useful precision.
const LAST_USED_GRANULARITY: Duration = Duration::from_secs(60);

/// A token as listed; never holds the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: i64,
    pub user: String,
    pub label: String,
    /// `berth_<public id>`: the start of the token, safe to show.
    pub prefix: String,
    #[serde(with = "crate::time::serde_ms")]
    pub created: SystemTime,
    #[serde(default, with = "crate::time::serde_ms_opt")]
    pub last_used: Option<SystemTime>,
    #[serde(default, with = "crate::time::serde_ms_opt")]
    pub revoked: Option<SystemTime>,
}

fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// Splits `berth_<public id>_<secret>` and checks its shape; `None` for anything else.
fn public_id_of(token: &str) -> Option<&str> {
    let (public_id, secret) = token.strip_prefix(PREFIX)?.split_once('_')?;
    let hex_of_len =
        |s: &str, n: usize| s.len() == n * 2 && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex_of_len(public_id, PUBLIC_ID_BYTES) && hex_of_len(secret, SECRET_BYTES))
        .then_some(public_id)
}

type TokenRow = (i64, String, String, String, i64, Option<i64>, Option<i64>);

/// The token listing query with `$tail` (conditions, an order) appended, as one literal.
macro_rules! select_tokens {
    ($tail:literal) => {
        concat!(
            "SELECT t.id, u.name, t.label, t.public_id, t.created_ms, t.last_used_ms, \
             t.revoked_ms FROM tokens t JOIN users u ON u.id = t.user_id ",
            $tail
        )
    };
}

fn token_from_row(r: TokenRow) -> TokenInfo {
    TokenInfo {
        id: r.0,
        user: r.1,
        label: r.2,
        prefix: format!("{PREFIX}{}", r.3),
        created: from_ms(r.4),
        last_used: r.5.map(from_ms),
        revoked: r.6.map(from_ms),
    }
}

impl Store {
    /// Creates a token for a current user. Returns its description and the token itself,
    /// which exists nowhere else: show it once.
    pub async fn create_token(
        &self,
        actor: &Actor,
        user: &str,
        label: &str,
    ) -> Result<(TokenInfo, String), StoreError> {
        let mut tx = self.transaction().await?;
        let created = tx.create_token(actor, user, label).await?;
        tx.commit().await?;
        Ok(created)
    }

    /// Revokes a token by id. Revoking a revoked token succeeds and changes nothing.
    pub async fn revoke_token(&self, actor: &Actor, id: i64) -> Result<(), StoreError> {
        let mut tx = self.transaction().await?;
        tx.revoke_token(actor, id).await?;
        tx.commit().await
    }

    /// Tokens, revoked ones included, oldest first; only `user`'s when given (including
    /// those of removed users of that name).
    pub async fn list_tokens(&self, user: Option<&str>) -> Result<Vec<TokenInfo>, StoreError> {
        let sql = select_tokens!("WHERE ($1 IS NULL OR u.name = $1) ORDER BY t.id");
        let rows: Vec<TokenRow> = with_pool!(&self.pool, p => {
            sqlx::query_as(sql).bind(user).fetch_all(p).await
        })?;
        Ok(rows.into_iter().map(token_from_row).collect())
    }

    /// One token by id, revoked or not (as [`Store::list_tokens`] describes it).
    pub async fn get_token(&self, id: i64) -> Result<Option<TokenInfo>, StoreError> {
        let sql = select_tokens!("WHERE t.id = $1");
        let row: Option<TokenRow> = with_pool!(&self.pool, p => {
            sqlx::query_as(sql).bind(id).fetch_optional(p).await
        })?;
        Ok(row.map(token_from_row))
    }

    /// The user and token a presented token belongs to, if it is valid: well-formed, known,
    /// not revoked, and its user not removed. Anything else is `Ok(None)`.
    pub async fn authenticate(&self, token: &str) -> Result<Option<(User, TokenInfo)>, StoreError> {
        let Some(public_id) = public_id_of(token) else {
            return Ok(None);
        };
        // The user's grants come in the same query (one row per grant, or one row of NULLs):
        // this runs for every API request, and each query is a round trip to the store's
        // thread.
        type Row = (
            i64,
            String,
            String,
            i64,
            Option<i64>,
            i64,
            String,
            i64,
            Option<String>,
            Option<String>,
        );
        let rows: Vec<Row> = with_pool!(&self.pool, p => {
            sqlx::query_as(
                "SELECT t.id, t.hash, t.label, t.created_ms, t.last_used_ms, \
                 u.id, u.name, u.created_ms, g.role, g.environment \
                 FROM tokens t JOIN users u ON u.id = t.user_id \
                 LEFT JOIN grants g ON g.user_id = u.id \
                 WHERE t.public_id = $1 AND t.revoked_ms IS NULL AND u.removed_ms IS NULL",
            )
            .bind(public_id)
            .fetch_all(p)
            .await
        })?;
        let mut rows = rows.into_iter();
        let Some((
            id,
            stored_hash,
            label,
            created_ms,
            last_used_ms,
            user_id,
            user_name,
            user_created_ms,
            first_role,
            first_environment,
        )) = rows.next()
        else {
            return Ok(None);
        };
        let presented = hash_token(token);
        if !bool::from(presented.as_bytes().ct_eq(stored_hash.as_bytes())) {
            return Ok(None);
        }
        let now = now_ms();
        let granularity = LAST_USED_GRANULARITY.as_millis() as i64;
        let last_used_ms = if last_used_ms.is_none_or(|t| now - t >= granularity) {
            // Not audited: using a token changes nothing berth runs. Checking staleness
            // here, before writing, keeps most requests read-only.
            with_pool!(&self.pool, p => {
                sqlx::query("UPDATE tokens SET last_used_ms = $1 WHERE id = $2")
                    .bind(now)
                    .bind(id)
                    .execute(p)
                    .await
                    .map(|r| r.rows_affected())
            })?;
            Some(now)
        } else {
            last_used_ms
        };
        let grant_rows = std::iter::once((first_role, first_environment))
            .chain(rows.map(|r| (r.8, r.9)))
            .filter_map(|(role, environment)| Some((role?, environment?)));
        let grants = crate::users::grants_from_rows(grant_rows)?;
        let user = User {
            id: user_id,
            name: user_name.clone(),
            grants,
            created: from_ms(user_created_ms),
        };
        let info = TokenInfo {
            id,
            user: user_name,
            label,
            prefix: format!("{PREFIX}{public_id}"),
            created: from_ms(created_ms),
            last_used: last_used_ms.map(from_ms),
            revoked: None,
        };
        Ok(Some((user, info)))
    }
}

impl Tx {
    /// [`Store::create_token`] inside this transaction. Audited as `token.create` (without
    /// the secret).
    pub async fn create_token(
        &mut self,
        actor: &Actor,
        user: &str,
        label: &str,
    ) -> Result<(TokenInfo, String), StoreError> {
        check_label("token label", label)?;
        let Some(user_id) = self.current_user_id(user).await? else {
            return Err(StoreError::not_found("user", user));
        };
        let public_id = random_hex(PUBLIC_ID_BYTES);
        let token = format!("{PREFIX}{public_id}_{}", random_hex(SECRET_BYTES));
        let created_ms = now_ms();
        // A clash of 48-bit public ids fails the unique index; the caller may simply retry.
        let id: i64 = with_tx!(&mut self.conn, c => {
            sqlx::query_scalar(
                "INSERT INTO tokens (user_id, label, public_id, hash, created_ms) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
            )
            .bind(user_id)
            .bind(label)
            .bind(&public_id)
            .bind(hash_token(&token))
            .bind(created_ms)
            .fetch_one(&mut *c)
            .await
        })
        .map_err(|e| StoreError::from_insert(e, "token id", &public_id))?;
        let prefix = format!("{PREFIX}{public_id}");
        self.audit(NewAuditEntry::new(
            actor,
            "token.create",
            user,
            json!({ "token_id": id, "label": label, "prefix": prefix }),
        ))
        .await?;
        let info = TokenInfo {
            id,
            user: user.to_owned(),
            label: label.to_owned(),
            prefix,
            created: from_ms(created_ms),
            last_used: None,
            revoked: None,
        };
        Ok((info, token))
    }

    /// [`Store::revoke_token`] inside this transaction. Audited as `token.revoke`.
    pub async fn revoke_token(&mut self, actor: &Actor, id: i64) -> Result<(), StoreError> {
        let row: Option<(String, Option<i64>)> = with_tx!(&mut self.conn, c => {
            sqlx::query_as(
                "SELECT u.name, t.revoked_ms FROM tokens t JOIN users u ON u.id = t.user_id \
                 WHERE t.id = $1",
            )
            .bind(id)
            .fetch_optional(&mut *c)
            .await
        })?;
        let Some((user, revoked_ms)) = row else {
            return Err(StoreError::not_found("token", id.to_string()));
        };
        if revoked_ms.is_none() {
            with_tx!(&mut self.conn, c => {
                sqlx::query("UPDATE tokens SET revoked_ms = $1 WHERE id = $2")
                    .bind(now_ms())
                    .bind(id)
                    .execute(&mut *c)
                    .await
                    .map(|r| r.rows_affected())
            })?;
        }
        self.audit(NewAuditEntry::new(
            actor,
            "token.revoke",
            user,
            json!({ "token_id": id, "already_revoked": revoked_ms.is_some() }),
        ))
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shape() {
        let t = format!(
            "{PREFIX}{}_{}",
            random_hex(PUBLIC_ID_BYTES),
            random_hex(SECRET_BYTES)
        );
        assert_eq!(t.len(), 6 + 12 + 1 + 64);
        assert!(public_id_of(&t).is_some());
        assert!(public_id_of("berth_abc_def").is_none());
        assert!(public_id_of(&t.replace("berth_", "other_")).is_none());
        assert!(public_id_of(&format!("{t}0")).is_none());
        assert_ne!(random_hex(SECRET_BYTES), random_hex(SECRET_BYTES));
        assert_eq!(hash_token("x").len(), 64);
    }
}
