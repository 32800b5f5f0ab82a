//! Users and their grants.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::Store;
use crate::actor::Actor;
use crate::audit::NewAuditEntry;
use crate::db::{with_pool, with_tx};
use crate::error::StoreError;
use crate::names::{check_environment, check_name};
use crate::roles::{ALL_ENVIRONMENTS, Grant, Role};
use crate::time::{from_ms, now_ms};
use crate::tx::Tx;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: i64,
    pub name: String,
    /// Sorted by role (weakest first), then environment.
    pub grants: Vec<Grant>,
    #[serde(with = "crate::time::serde_ms")]
    pub created: SystemTime,
}

impl User {
    /// True when one of the user's grants allows `needed` on `environment` (pass `"*"` for
    /// actions that are not about one environment, such as managing users).
    pub fn can(&self, needed: Role, environment: &str) -> bool {
        self.grants.iter().any(|g| g.allows(needed, environment))
    }
}

fn grant_from_row(role: &str, environment: String) -> Result<Grant, StoreError> {
    let role = role
        .parse()
        .map_err(|e| StoreError::corrupt("grants.role", e))?;
    Ok(Grant { role, environment })
}

/// Grants from `(role, environment)` rows, sorted.
pub(crate) fn grants_from_rows(
    rows: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Grant>, StoreError> {
    let mut grants = rows
        .into_iter()
        .map(|(role, environment)| grant_from_row(&role, environment))
        .collect::<Result<Vec<_>, _>>()?;
    grants.sort();
    Ok(grants)
}

type UserRow = (i64, String, i64);
type GrantRow = (i64, String, String);

/// Groups `(user_id, role, environment)` rows into sorted grants per user id.
fn grants_by_user_from_rows(rows: Vec<GrantRow>) -> Result<BTreeMap<i64, Vec<Grant>>, StoreError> {
    let mut by_user: BTreeMap<i64, Vec<Grant>> = BTreeMap::new();
    for (user_id, role, environment) in rows {
        by_user
            .entry(user_id)
            .or_default()
            .push(grant_from_row(&role, environment)?);
    }
    for grants in by_user.values_mut() {
        grants.sort();
    }
    Ok(by_user)
}

impl Store {
    /// Adds a user with the given grants (see [`Tx::add_user`]).
    pub async fn add_user(
        &self,
        actor: &Actor,
        name: &str,
        grants: &[Grant],
    ) -> Result<User, StoreError> {
        let mut tx = self.transaction().await?;
        let user = tx.add_user(actor, name, grants).await?;
        tx.commit().await?;
        Ok(user)
    }

    /// Removes a user and revokes all of its tokens (see [`Tx::remove_user`]).
    pub async fn remove_user(&self, actor: &Actor, name: &str) -> Result<(), StoreError> {
        let mut tx = self.transaction().await?;
        tx.remove_user(actor, name).await?;
        tx.commit().await
    }

    /// Current users with their grants, by name.
    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let (users, grants): (Vec<UserRow>, Vec<GrantRow>) = with_pool!(&self.pool, p => {
            let users = sqlx::query_as(
                "SELECT id, name, created_ms FROM users WHERE removed_ms IS NULL ORDER BY name",
            )
            .fetch_all(p)
            .await?;
            let grants = sqlx::query_as(
                "SELECT g.user_id, g.role, g.environment FROM grants g \
                 JOIN users u ON u.id = g.user_id WHERE u.removed_ms IS NULL",
            )
            .fetch_all(p)
            .await?;
            Ok::<_, sqlx::Error>((users, grants))
        })?;
        let mut grants = grants_by_user_from_rows(grants)?;
        Ok(users
            .into_iter()
            .map(|(id, name, created_ms)| User {
                id,
                name,
                grants: grants.remove(&id).unwrap_or_default(),
                created: from_ms(created_ms),
            })
            .collect())
    }

    /// One current user by name.
    pub async fn get_user(&self, name: &str) -> Result<Option<User>, StoreError> {
        let row: Option<UserRow> = with_pool!(&self.pool, p => {
            sqlx::query_as(
                "SELECT id, name, created_ms FROM users WHERE name = $1 AND removed_ms IS NULL",
            )
            .bind(name)
            .fetch_optional(p)
            .await
        })?;
        let Some((id, name, created_ms)) = row else {
            return Ok(None);
        };
        let grants = self.grants_of(id).await?;
        Ok(Some(User {
            id,
            name,
            grants,
            created: from_ms(created_ms),
        }))
    }

    /// The user's grants, sorted.
    pub(crate) async fn grants_of(&self, user_id: i64) -> Result<Vec<Grant>, StoreError> {
        let rows: Vec<(String, String)> = with_pool!(&self.pool, p => {
            sqlx::query_as("SELECT role, environment FROM grants WHERE user_id = $1")
                .bind(user_id)
                .fetch_all(p)
                .await
        })?;
        grants_from_rows(rows)
    }

    /// On a store with no users, creates `admin` with the admin role on every environment and
    /// returns a token for it, to be shown once (printed at first start). Otherwise `None`.
    ///
    /// "No users" means no *current* user. As the last admin on `"*"` cannot be removed
    /// through berth, that is the first start, or a database whose users were removed by hand
    /// (the recovery path for an operator with shell access on the server).
    pub async fn bootstrap_admin(&self) -> Result<Option<String>, StoreError> {
        let mut tx = self.transaction().await?;
        // Counted under the write lock, so two processes starting at once cannot both
        // bootstrap.
        let users: i64 = with_tx!(&mut tx.conn, c => {
            sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE removed_ms IS NULL")
                .fetch_one(&mut *c)
                .await
        })?;
        if users > 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let system = Actor::system();
        tx.add_user(&system, BOOTSTRAP_ADMIN, &[Grant::everywhere(Role::Admin)])
            .await?;
        let (_, secret) = tx
            .create_token(&system, BOOTSTRAP_ADMIN, "bootstrap")
            .await?;
        tx.commit().await?;
        Ok(Some(secret))
    }
}

/// The user berth creates at its first start. Until other users exist this is the only
/// person there is, so its deploys may be approved by itself (see `requires_approval`).
pub const BOOTSTRAP_ADMIN: &str = "admin";

impl Tx {
    /// The id of the current (not removed) user `name`.
    pub(crate) async fn current_user_id(&mut self, name: &str) -> Result<Option<i64>, StoreError> {
        let id = with_tx!(&mut self.conn, c => {
            sqlx::query_scalar("SELECT id FROM users WHERE name = $1 AND removed_ms IS NULL")
                .bind(name)
                .fetch_optional(&mut *c)
                .await
        })?;
        Ok(id)
    }

    /// Adds a user. Names: 1–64 characters of letters, digits and `. _ @ -`; unique among
    /// current users ([`StoreError::AlreadyExists`] otherwise). Audited as `user.add`.
    pub async fn add_user(
        &mut self,
        actor: &Actor,
        name: &str,
        grants: &[Grant],
    ) -> Result<User, StoreError> {
        check_name("user name", name)?;
        for g in grants {
            check_environment(&g.environment)?;
        }
        let mut grants = grants.to_vec();
        grants.sort();
        grants.dedup();
        let created_ms = now_ms();
        let id: i64 = with_tx!(&mut self.conn, c => {
            sqlx::query_scalar("INSERT INTO users (name, created_ms) VALUES ($1, $2) RETURNING id")
                .bind(name)
                .bind(created_ms)
                .fetch_one(&mut *c)
                .await
        })
        .map_err(|e| StoreError::from_insert(e, "user", name))?;
        for g in &grants {
            with_tx!(&mut self.conn, c => {
                sqlx::query("INSERT INTO grants (user_id, role, environment) VALUES ($1, $2, $3)")
                    .bind(id)
                    .bind(g.role.as_str())
                    .bind(&g.environment)
                    .execute(&mut *c)
                    .await
                    .map(|r| r.rows_affected())
            })?;
        }
        let shown: Vec<String> = grants.iter().map(Grant::to_string).collect();
        self.audit(NewAuditEntry::new(
            actor,
            "user.add",
            name,
            json!({ "grants": shown }),
        ))
        .await?;
        Ok(User {
            id,
            name: name.to_owned(),
            grants,
            created: from_ms(created_ms),
        })
    }

    /// Removes a user and revokes all of its tokens, in this transaction. Refuses to remove
    /// the last user holding admin on `"*"`, which would leave nobody able to manage users.
    /// Audited as `user.remove`.
    pub async fn remove_user(&mut self, actor: &Actor, name: &str) -> Result<(), StoreError> {
        let Some(id) = self.current_user_id(name).await? else {
            return Err(StoreError::not_found("user", name));
        };
        let admins: Vec<i64> = with_tx!(&mut self.conn, c => {
            sqlx::query_scalar(
                "SELECT u.id FROM users u JOIN grants g ON g.user_id = u.id \
                 WHERE u.removed_ms IS NULL AND g.role = $1 AND g.environment = $2",
            )
            .bind(Role::Admin.as_str())
            .bind(ALL_ENVIRONMENTS)
            .fetch_all(&mut *c)
            .await
        })?;
        // Each user holds a grant once (primary key), so this user is the only admin on `*`.
        if admins == [id] {
            return Err(StoreError::LastAdmin {
                name: name.to_owned(),
            });
        }
        let now = now_ms();
        let revoked = with_tx!(&mut self.conn, c => {
            sqlx::query("UPDATE users SET removed_ms = $1 WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(&mut *c)
                .await?;
            sqlx::query("UPDATE tokens SET revoked_ms = $1 WHERE user_id = $2 AND revoked_ms IS NULL")
                .bind(now)
                .bind(id)
                .execute(&mut *c)
                .await
                .map(|r| r.rows_affected())
        })?;
        self.audit(NewAuditEntry::new(
            actor,
            "user.remove",
            name,
            json!({ "tokens_revoked": revoked }),
        ))
        .await?;
        Ok(())
    }
}
