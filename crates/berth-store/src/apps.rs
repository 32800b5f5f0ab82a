//! Apps and the environments they live in: the minimal API over the `apps` and
//! `environments` tables that per-environment grants are checked against. Releases,
//! deployments and instances build on it later.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::Store;
use crate::actor::Actor;
use crate::audit::NewAuditEntry;
use crate::db::{with_pool, with_tx};
use crate::error::{StoreError, json_column};
use crate::names::check_name;
use crate::time::{from_ms, now_ms};
use crate::tx::Tx;

/// An app in one environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct App {
    pub id: i64,
    pub environment: String,
    pub name: String,
    /// The desired configuration as JSON (`{}` until the supervisor work gives it fields).
    pub spec: serde_json::Value,
    #[serde(with = "crate::time::serde_ms")]
    pub created: SystemTime,
    #[serde(with = "crate::time::serde_ms")]
    pub updated: SystemTime,
}

/// How an app is named in audit targets and errors: `app/environment`, as docs/store.md
/// describes targets.
pub(crate) fn app_target(environment: &str, name: &str) -> String {
    format!("{name}/{environment}")
}

type AppRow = (i64, String, String, String, i64, i64);

fn app_from_row(r: AppRow) -> Result<App, StoreError> {
    Ok(App {
        id: r.0,
        environment: r.1,
        name: r.2,
        spec: json_column("apps.spec", &r.3)?,
        created: from_ms(r.4),
        updated: from_ms(r.5),
    })
}

/// The current apps of environment `$1`, with `$tail` (more conditions, an order) appended,
/// as one literal.
macro_rules! select_apps {
    ($tail:literal) => {
        concat!(
            "SELECT a.id, e.name, a.name, a.spec, a.created_ms, a.updated_ms \
             FROM apps a JOIN environments e ON e.id = a.environment_id \
             WHERE e.name = $1 AND a.removed_ms IS NULL ",
            $tail
        )
    };
}

impl Store {
    /// Creates an app in `environment` (see [`Tx::create_app`]).
    pub async fn create_app(
        &self,
        actor: &Actor,
        environment: &str,
        name: &str,
    ) -> Result<App, StoreError> {
        let mut tx = self.transaction().await?;
        let app = tx.create_app(actor, environment, name).await?;
        tx.commit().await?;
        Ok(app)
    }

    /// Removes an app (see [`Tx::delete_app`]).
    pub async fn delete_app(
        &self,
        actor: &Actor,
        environment: &str,
        name: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.transaction().await?;
        tx.delete_app(actor, environment, name).await?;
        tx.commit().await
    }

    /// The current apps of `environment`, by name; empty for an environment that has none
    /// or does not exist yet.
    pub async fn list_apps(&self, environment: &str) -> Result<Vec<App>, StoreError> {
        let sql = select_apps!("ORDER BY a.name");
        let rows: Vec<AppRow> = with_pool!(&self.pool, p => {
            sqlx::query_as(sql).bind(environment).fetch_all(p).await
        })?;
        rows.into_iter().map(app_from_row).collect()
    }

    /// The current app `name` in `environment`, if there is one.
    pub async fn app(&self, environment: &str, name: &str) -> Result<Option<App>, StoreError> {
        let sql = select_apps!("AND a.name = $2");
        let row: Option<AppRow> = with_pool!(&self.pool, p => {
            sqlx::query_as(sql).bind(environment).bind(name).fetch_optional(p).await
        })?;
        row.map(app_from_row).transpose()
    }
}

impl Tx {
    /// Creates an app named `name` in `environment`, creating the environment on first use.
    /// Names (app and environment): 1–64 characters of letters, digits and `. _ @ -`.
    /// [`StoreError::AlreadyExists`] when the environment already has a current app of that
    /// name. Audited as `app.create` with target `name/environment`.
    pub async fn create_app(
        &mut self,
        actor: &Actor,
        environment: &str,
        name: &str,
    ) -> Result<App, StoreError> {
        // A concrete environment: "*" is a grant wildcard, not a place an app can live.
        check_name("environment", environment)?;
        check_name("app name", name)?;
        let now = now_ms();
        let existing: Option<i64> = with_tx!(&mut self.conn, c => {
            sqlx::query_scalar("SELECT id FROM environments WHERE name = $1")
                .bind(environment)
                .fetch_optional(&mut *c)
                .await
        })?;
        // No race between the look-up and the insert: writers hold the write lock.
        let (environment_id, environment_created) = match existing {
            Some(id) => (id, false),
            None => {
                let id: i64 = with_tx!(&mut self.conn, c => {
                    sqlx::query_scalar(
                        "INSERT INTO environments (name, created_ms) VALUES ($1, $2) RETURNING id",
                    )
                    .bind(environment)
                    .bind(now)
                    .fetch_one(&mut *c)
                    .await
                })?;
                (id, true)
            }
        };
        let id: i64 = with_tx!(&mut self.conn, c => {
            sqlx::query_scalar(
                "INSERT INTO apps (environment_id, name, created_ms, updated_ms) \
                 VALUES ($1, $2, $3, $3) RETURNING id",
            )
            .bind(environment_id)
            .bind(name)
            .bind(now)
            .fetch_one(&mut *c)
            .await
        })
        .map_err(|e| StoreError::from_insert(e, "app", &app_target(environment, name)))?;
        self.audit(NewAuditEntry::new(
            actor,
            "app.create",
            app_target(environment, name),
            json!({ "environment_created": environment_created }),
        ))
        .await?;
        Ok(App {
            id,
            environment: environment.to_owned(),
            name: name.to_owned(),
            spec: json!({}),
            created: from_ms(now),
            updated: from_ms(now),
        })
    }

    /// Removes the current app `name` from `environment` ([`StoreError::NotFound`] when
    /// there is none). Removal is soft, so the releases and deployments that point at the
    /// row keep their history, and the name can be given to a new app. Audited as
    /// `app.remove`.
    pub async fn delete_app(
        &mut self,
        actor: &Actor,
        environment: &str,
        name: &str,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let removed = with_tx!(&mut self.conn, c => {
            sqlx::query(
                "UPDATE apps SET removed_ms = $1, updated_ms = $1 \
                 WHERE name = $2 AND removed_ms IS NULL AND environment_id = \
                 (SELECT id FROM environments WHERE name = $3)",
            )
            .bind(now)
            .bind(name)
            .bind(environment)
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected())
        })?;
        if removed == 0 {
            return Err(StoreError::not_found("app", app_target(environment, name)));
        }
        self.audit(NewAuditEntry::new(
            actor,
            "app.remove",
            app_target(environment, name),
            json!({}),
        ))
        .await?;
        Ok(())
    }

    /// [`Store::list_apps`] inside this transaction (it sees the transaction's own changes).
    pub async fn list_apps(&mut self, environment: &str) -> Result<Vec<App>, StoreError> {
        let sql = select_apps!("ORDER BY a.name");
        let rows: Vec<AppRow> = with_tx!(&mut self.conn, c => {
            sqlx::query_as(sql).bind(environment).fetch_all(&mut *c).await
        })?;
        rows.into_iter().map(app_from_row).collect()
    }

    /// The current app `name` of `environment`, as this transaction sees it.
    pub(crate) async fn current_app(
        &mut self,
        environment: &str,
        name: &str,
    ) -> Result<Option<App>, StoreError> {
        let sql = select_apps!("AND a.name = $2");
        let row: Option<AppRow> = with_tx!(&mut self.conn, c => {
            sqlx::query_as(sql).bind(environment).bind(name).fetch_optional(&mut *c).await
        })?;
        row.map(app_from_row).transpose()
    }
}
