//! Releases of an app in one environment, and which one is active.
//!
//! The release tree itself lives on disk (berth-release); the row is what the control plane
//! knows about it: its id (`version`), where it is (`artifact`), the app spec frozen with it,
//! its metadata, and whether the app runs it now (`apps.active_release_id`).

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::Store;
use crate::actor::Actor;
use crate::apps::{App, app_target};
use crate::audit::NewAuditEntry;
use crate::db::{with_pool, with_tx};
use crate::error::{StoreError, json_column};
use crate::time::{from_ms, now_ms};
use crate::tx::Tx;

/// A release as recorded in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseRecord {
    pub id: i64,
    pub app_id: i64,
    pub environment: String,
    pub app: String,
    /// The release id (`r-` and 12 hex digits).
    pub version: String,
    /// The release directory.
    pub artifact: String,
    /// The app spec the release was deployed with.
    pub spec: serde_json::Value,
    /// Source, git commit, digest, size, build log.
    pub meta: serde_json::Value,
    #[serde(with = "crate::time::serde_ms")]
    pub created: SystemTime,
    pub created_by: String,
    /// Whether the app runs this release now.
    pub active: bool,
}

/// What [`Tx::record_release`] records.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRelease {
    pub version: String,
    pub artifact: String,
    pub spec: serde_json::Value,
    pub meta: serde_json::Value,
}

type ReleaseRow = (
    i64,
    i64,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    String,
    bool,
);

/// The release query with `$tail` (more conditions, an order) appended, as one literal.
macro_rules! select_releases {
    ($tail:literal) => {
        concat!(
            "SELECT r.id, a.id, e.name, a.name, r.version, r.artifact, r.spec, \
     r.meta, r.created_ms, r.created_by, \
     (CASE WHEN a.active_release_id = r.id THEN TRUE ELSE FALSE END) \
     FROM releases r JOIN apps a ON a.id = r.app_id \
     JOIN environments e ON e.id = a.environment_id WHERE a.removed_ms IS NULL ",
            $tail
        )
    };
}

fn release_from_row(r: ReleaseRow) -> Result<ReleaseRecord, StoreError> {
    Ok(ReleaseRecord {
        id: r.0,
        app_id: r.1,
        environment: r.2,
        app: r.3,
        version: r.4,
        artifact: r.5,
        spec: json_column("releases.spec", &r.6)?,
        meta: json_column("releases.meta", &r.7)?,
        created: from_ms(r.8),
        created_by: r.9,
        active: r.10,
    })
}

impl Store {
    /// The app's releases in `environment`, newest first.
    pub async fn list_releases(
        &self,
        environment: &str,
        app: &str,
    ) -> Result<Vec<ReleaseRecord>, StoreError> {
        let sql = select_releases!("AND e.name = $1 AND a.name = $2 ORDER BY r.id DESC");
        let rows: Vec<ReleaseRow> = with_pool!(&self.pool, p => {
            sqlx::query_as(sql).bind(environment).bind(app).fetch_all(p).await
        })?;
        rows.into_iter().map(release_from_row).collect()
    }

    /// One release of the app by its id (`version`).
    pub async fn get_release(
        &self,
        environment: &str,
        app: &str,
        version: &str,
    ) -> Result<Option<ReleaseRecord>, StoreError> {
        let sql = select_releases!("AND e.name = $1 AND a.name = $2 AND r.version = $3");
        let row: Option<ReleaseRow> = with_pool!(&self.pool, p => {
            sqlx::query_as(sql).bind(environment).bind(app).bind(version).fetch_optional(p).await
        })?;
        row.map(release_from_row).transpose()
    }

    /// Every app's active release, in every environment: what berth brings back up at start.
    pub async fn active_releases(&self) -> Result<Vec<ReleaseRecord>, StoreError> {
        let sql = select_releases!("AND a.active_release_id = r.id ORDER BY e.name, a.name");
        let rows: Vec<ReleaseRow> = with_pool!(&self.pool, p => {
            sqlx::query_as(sql).fetch_all(p).await
        })?;
        rows.into_iter().map(release_from_row).collect()
    }
}

impl Tx {
    /// The app `name` in `environment` with its spec set to `spec`, created (and audited as
    /// `app.create`) when it does not exist yet.
    pub async fn ensure_app(
        &mut self,
        actor: &Actor,
        environment: &str,
        name: &str,
        spec: &serde_json::Value,
    ) -> Result<App, StoreError> {
        let mut app = match self.current_app(environment, name).await? {
            Some(app) => app,
            None => self.create_app(actor, environment, name).await?,
        };
        let text = spec.to_string();
        let now = now_ms();
        with_tx!(&mut self.conn, c => {
            sqlx::query("UPDATE apps SET spec = $1, updated_ms = $2 WHERE id = $3")
                .bind(&text)
                .bind(now)
                .bind(app.id)
                .execute(&mut *c)
                .await
                .map(|_| ())
        })?;
        app.spec = spec.clone();
        app.updated = from_ms(now);
        Ok(app)
    }

    /// Records a release of `app` (which must exist); a release with the same version is
    /// returned as it is (deploying the same content twice is one release). New releases are
    /// audited as `release.create`.
    pub async fn record_release(
        &mut self,
        actor: &Actor,
        app: &App,
        new: &NewRelease,
    ) -> Result<ReleaseRecord, StoreError> {
        if let Some(existing) = self.release_by_version(app, &new.version).await? {
            return Ok(existing);
        }
        let now = now_ms();
        let spec = new.spec.to_string();
        let meta = new.meta.to_string();
        let id: i64 = with_tx!(&mut self.conn, c => {
            sqlx::query_scalar(
                "INSERT INTO releases (app_id, version, artifact, spec, meta, created_ms, created_by) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            )
            .bind(app.id)
            .bind(&new.version)
            .bind(&new.artifact)
            .bind(&spec)
            .bind(&meta)
            .bind(now)
            .bind(&actor.name)
            .fetch_one(&mut *c)
            .await
        })?;
        self.audit(NewAuditEntry::new(
            actor,
            "release.create",
            app_target(&app.environment, &app.name),
            json!({ "release": new.version, "source": new.meta.get("source") }),
        ))
        .await?;
        Ok(ReleaseRecord {
            id,
            app_id: app.id,
            environment: app.environment.clone(),
            app: app.name.clone(),
            version: new.version.clone(),
            artifact: new.artifact.clone(),
            spec: new.spec.clone(),
            meta: new.meta.clone(),
            created: from_ms(now),
            created_by: actor.name.clone(),
            active: false,
        })
    }

    /// Makes `release` the one the app runs; audited as `release.activate` with the release
    /// it replaces.
    pub async fn activate_release(
        &mut self,
        actor: &Actor,
        release: &ReleaseRecord,
    ) -> Result<(), StoreError> {
        let previous: Option<String> = with_tx!(&mut self.conn, c => {
            sqlx::query_scalar(
                "SELECT r.version FROM apps a JOIN releases r ON r.id = a.active_release_id \
                 WHERE a.id = $1",
            )
            .bind(release.app_id)
            .fetch_optional(&mut *c)
            .await
        })?;
        let now = now_ms();
        with_tx!(&mut self.conn, c => {
            sqlx::query("UPDATE apps SET active_release_id = $1, updated_ms = $2 WHERE id = $3")
                .bind(release.id)
                .bind(now)
                .bind(release.app_id)
                .execute(&mut *c)
                .await
                .map(|_| ())
        })?;
        self.audit(NewAuditEntry::new(
            actor,
            "release.activate",
            app_target(&release.environment, &release.app),
            json!({ "release": release.version, "previous": previous }),
        ))
        .await
        .map(|_| ())
    }

    async fn release_by_version(
        &mut self,
        app: &App,
        version: &str,
    ) -> Result<Option<ReleaseRecord>, StoreError> {
        let sql = select_releases!("AND a.id = $1 AND r.version = $2");
        let row: Option<ReleaseRow> = with_tx!(&mut self.conn, c => {
            sqlx::query_as(sql).bind(app.id).bind(version).fetch_optional(&mut *c).await
        })?;
        row.map(release_from_row).transpose()
    }
}
