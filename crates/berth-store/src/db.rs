//! The two dialects behind one face: connection pools, transactions, migrations.
//!
//! Every query is written once, in SQL that SQLite and PostgreSQL both accept (`$1`
//! placeholders, `BIGINT`/`TEXT` columns, `RETURNING`), and run through [`with_pool!`] or
//! [`with_tx!`], which expand the same body once per driver. Only the few statements whose
//! syntax differs (row locks, transaction modes) match on the dialect by hand.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Postgres, Sqlite, Transaction};

use crate::error::StoreError;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a SQLite writer waits for another writer's lock before failing with "busy".
/// Control-plane transactions are short; five seconds covers a slow disk without hanging a
/// request forever.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// An open transaction on either dialect.
pub(crate) enum TxConn {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

/// Runs `$body` with `$p` bound to the pool of whichever dialect this is.
macro_rules! with_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            $crate::db::Pool::Sqlite($p) => $body,
            $crate::db::Pool::Postgres($p) => $body,
        }
    };
}

/// Runs `$body` with `$c` bound to the transaction's connection (`&mut XConnection`);
/// use it as `&mut *$c` so it can be borrowed again.
macro_rules! with_tx {
    ($tx:expr, $c:ident => $body:expr) => {
        match $tx {
            $crate::db::TxConn::Sqlite(t) => {
                let $c = &mut **t;
                $body
            }
            $crate::db::TxConn::Postgres(t) => {
                let $c = &mut **t;
                $body
            }
        }
    };
}

pub(crate) use {with_pool, with_tx};

impl Pool {
    pub(crate) async fn open(url: &str) -> Result<Pool, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .connect_with(options)
                .await?;
            // sqlx takes a PostgreSQL advisory lock while migrating, so two berth processes
            // starting at once cannot apply the same migration twice.
            POSTGRES_MIGRATIONS.run(&pool).await?;
            Ok(Pool::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            let options = SqliteConnectOptions::from_str(url)?;
            Self::open_sqlite(options, in_memory).await
        } else {
            Err(StoreError::UnsupportedUrl(url.to_owned()))
        }
    }

    pub(crate) async fn open_sqlite_file(path: &Path) -> Result<Pool, StoreError> {
        Self::open_sqlite(SqliteConnectOptions::new().filename(path), false).await
    }

    async fn open_sqlite(
        options: SqliteConnectOptions,
        in_memory: bool,
    ) -> Result<Pool, StoreError> {
        let options = options
            .create_if_missing(true)
            // WAL: readers never block the writer and a crash leaves the last committed
            // transaction intact; NORMAL sync is durable in WAL mode except for the last
            // transactions on power loss, never corrupting.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(SQLITE_BUSY_TIMEOUT);
        let pool = if in_memory {
            // An in-memory database lives as long as one of its connections does and shared
            // cache locks tables without honouring busy_timeout: keep exactly one connection.
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options)
                .await?
        } else {
            // No ping before each use: a SQLite connection is a handle to a local file with
            // nothing in between to go stale, and the ping was one more round trip to the
            // connection's thread for every query (a deploy makes about 60).
            SqlitePoolOptions::new()
                .max_connections(4)
                .test_before_acquire(false)
                .connect_with(options)
                .await?
        };
        SQLITE_MIGRATIONS.run(&pool).await?;
        Ok(Pool::Sqlite(pool))
    }

    /// Starts a transaction that may write and append to the audit chain.
    ///
    /// Writers are serialised from their first statement, on both dialects, so that
    /// audit sequence numbers are handed out one at a time and the chain cannot fork:
    /// - SQLite: `BEGIN IMMEDIATE` takes the database write lock now (waiting up to the
    ///   busy timeout), instead of upgrading a read lock later, which fails at once with
    ///   "database is locked" when two deferred transactions both want to write.
    /// - PostgreSQL: `SELECT … FOR UPDATE` on the single chain-head row. Taking it first,
    ///   before any other write, also means two writers never hold row locks in opposite
    ///   orders (no deadlocks between, say, a user insert and an audit append).
    pub(crate) async fn begin_write(&self) -> Result<TxConn, StoreError> {
        match self {
            Pool::Sqlite(p) => Ok(TxConn::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?)),
            Pool::Postgres(p) => {
                let mut t = p.begin().await?;
                sqlx::query("SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE")
                    .fetch_optional(&mut *t)
                    .await?;
                Ok(TxConn::Postgres(t))
            }
        }
    }

    /// Starts a read-only transaction that sees one consistent snapshot (used to verify the
    /// audit chain while appends go on).
    pub(crate) async fn begin_snapshot(&self) -> Result<TxConn, StoreError> {
        match self {
            // A deferred SQLite transaction in WAL mode reads from the snapshot taken at its
            // first SELECT until it ends.
            Pool::Sqlite(p) => Ok(TxConn::Sqlite(p.begin().await?)),
            Pool::Postgres(p) => Ok(TxConn::Postgres(
                p.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?,
            )),
        }
    }

    pub(crate) async fn close(&self) {
        with_pool!(self, p => p.close().await)
    }
}

impl TxConn {
    pub(crate) async fn commit(self) -> Result<(), StoreError> {
        match self {
            TxConn::Sqlite(t) => t.commit().await?,
            TxConn::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }

    pub(crate) async fn rollback(self) -> Result<(), StoreError> {
        match self {
            TxConn::Sqlite(t) => t.rollback().await?,
            TxConn::Postgres(t) => t.rollback().await?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The settings docs/store.md promises, as a pooled connection reports them.
    #[tokio::test]
    async fn sqlite_files_run_with_the_documented_settings() {
        let dir = tempfile::tempdir().expect("temp dir");
        let Pool::Sqlite(pool) = Pool::open_sqlite_file(&dir.path().join("berth.db"))
            .await
            .expect("open")
        else {
            panic!("a SQLite file opened as another dialect");
        };
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&pool)
            .await
            .expect("journal_mode");
        assert_eq!(journal, "wal");
        for (pragma, expected) in [
            // 1 is NORMAL.
            ("PRAGMA synchronous", 1),
            ("PRAGMA foreign_keys", 1),
            ("PRAGMA busy_timeout", 5000),
        ] {
            let value: i64 = sqlx::query_scalar(pragma)
                .fetch_one(&pool)
                .await
                .expect(pragma);
            assert_eq!(value, expected, "{pragma}");
        }
        pool.close().await;
    }
}
