//! Shared by the integration tests: a store on either dialect plus raw SQL access to it
//! (for tampering), and `both!` to run one test body on SQLite and on PostgreSQL.
#![allow(dead_code)]

use std::path::PathBuf;

use berth_store::{Actor, Store};
use sqlx::{AssertSqlSafe, Connection, PgConnection, SqliteConnection};
use tempfile::TempDir;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestDb {
    pub store: Store,
    pub url: String,
    pub backend: Backend,
    /// The SQLite file, for scanning its bytes.
    pub sqlite_path: Option<PathBuf>,
    _dir: Option<TempDir>,
}

/// 32 bytes, as berth would generate for the retention checkpoint key.
pub const KEY: &[u8] = b"test checkpoint key, 32 bytes..!";

pub fn admin() -> Actor {
    Actor::new("root", "admin", "192.0.2.1")
}

/// The current users' names, as listed (by name).
pub async fn user_names(store: &Store) -> Vec<String> {
    let users = store.list_users().await.expect("list users");
    users.into_iter().map(|u| u.name).collect()
}

/// The names of `environment`'s current apps, as listed (by name).
pub async fn app_names(store: &Store, environment: &str) -> Vec<String> {
    let apps = store.list_apps(environment).await.expect("list apps");
    apps.into_iter().map(|a| a.name).collect()
}

/// Runs `$body` on a fresh raw connection `$c` of the right dialect, panicking on errors.
macro_rules! raw {
    ($db:expr, $sql:expr, $c:ident => $body:expr) => {
        match $db.backend {
            Backend::Sqlite => {
                let mut $c = SqliteConnection::connect(&$db.url)
                    .await
                    .expect("raw connect");
                let r = $body.unwrap_or_else(|e| panic!("{}: {e}", $sql));
                $c.close().await.ok();
                r
            }
            Backend::Postgres => {
                let mut $c = PgConnection::connect(&$db.url).await.expect("raw connect");
                let r = $body.unwrap_or_else(|e| panic!("{}: {e}", $sql));
                $c.close().await.ok();
                r
            }
        }
    };
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let path = dir.path().join("berth.db");
                // sqlite:// + absolute path, the form berth writes into its configuration.
                let url = format!("sqlite://{}", path.display());
                let store = Store::open(&url).await.expect("open SQLite store");
                TestDb {
                    store,
                    url,
                    backend,
                    sqlite_path: Some(path),
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let url = berth_store::testing::TempPostgres::fresh_database().await;
                let store = Store::open(&url).await.expect("open PostgreSQL store");
                TestDb {
                    store,
                    url,
                    backend,
                    sqlite_path: None,
                    _dir: None,
                }
            }
        }
    }

    /// Opens the same database again (as berth does at its next start).
    pub async fn reopen(&self) -> Store {
        Store::open(&self.url).await.expect("reopen store")
    }

    /// Runs one raw SQL statement on its own connection, returning rows affected.
    pub async fn exec(&self, sql: &str) -> u64 {
        raw!(self, sql, c => sqlx::query(AssertSqlSafe(sql.to_owned()))
            .execute(&mut c)
            .await
            .map(|r| r.rows_affected()))
    }

    /// Runs a raw query returning one text column.
    pub async fn texts(&self, sql: &str) -> Vec<String> {
        raw!(self, sql, c => sqlx::query_scalar(AssertSqlSafe(sql.to_owned()))
            .fetch_all(&mut c)
            .await)
    }

    /// Runs a raw query returning one integer.
    pub async fn int(&self, sql: &str) -> i64 {
        raw!(self, sql, c => sqlx::query_scalar(AssertSqlSafe(sql.to_owned()))
            .fetch_one(&mut c)
            .await)
    }

    /// Everything stored about tokens and in the audit log, as text: every column of every
    /// row, plus (SQLite) the raw bytes of the database and WAL files.
    pub async fn raw_dump(&self) -> String {
        let mut out = self
            .texts(
                "SELECT CAST(id AS TEXT) || '|' || CAST(user_id AS TEXT) || '|' || label || '|' \
                 || public_id || '|' || hash || '|' || CAST(created_ms AS TEXT) || '|' \
                 || COALESCE(CAST(last_used_ms AS TEXT), '') || '|' \
                 || COALESCE(CAST(revoked_ms AS TEXT), '') FROM tokens",
            )
            .await
            .join("\n");
        out.push('\n');
        out.push_str(
            &self
                .texts(
                    "SELECT actor || '|' || action || '|' || target || '|' || params || '|' \
                     || outcome FROM audit_log",
                )
                .await
                .join("\n"),
        );
        if let Some(path) = &self.sqlite_path {
            out.push_str(&berth_store::testing::sqlite_file_text(path));
        }
        out
    }
}

/// `both!(name, …)`: for each `async fn name(db: TestDb)`, a module `name` with the tests
/// `sqlite` and `postgres` running it on a fresh store of each dialect.
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::support::TestDb::new($crate::support::Backend::Sqlite).await)
                    .await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::support::TestDb::new($crate::support::Backend::Postgres).await)
                    .await
            }
        }
    )*};
}
