//! Opening, migrations and crash safety, on SQLite and PostgreSQL.

#[macro_use]
mod support;

use std::process::Command;

use berth_store::{AuditFilter, NewAuditEntry, Store, StoreError};
use serde_json::json;
use sqlx::Connection as _;
use support::{Backend, KEY, TestDb, admin, user_names};

both!(migrations_apply_once, dropped_transaction_leaves_nothing);

async fn migrations_apply_once(db: TestDb) {
    db.store.add_user(&admin(), "alice", &[]).await.unwrap();
    let migrations = db.int("SELECT COUNT(*) FROM _sqlx_migrations").await;
    assert!(migrations >= 2, "{migrations} migrations recorded");
    assert_eq!(
        migrations,
        migration_files(db.backend),
        "every migration is applied"
    );
    // Every start runs the migrator; on an up-to-date database it changes nothing.
    for _ in 0..2 {
        let again = db.reopen().await;
        assert_eq!(again.list_users().await.unwrap().len(), 1);
        again.close().await;
    }
    assert_eq!(
        db.int("SELECT COUNT(*) FROM _sqlx_migrations").await,
        migrations
    );
    // The tables later work builds on are there.
    for table in [
        "environments",
        "apps",
        "releases",
        "deployments",
        "deployment_decisions",
        "instances",
    ] {
        assert_eq!(db.int(&format!("SELECT COUNT(*) FROM {table}")).await, 0);
    }
    db.store.add_user(&admin(), "bob", &[]).await.unwrap();
    assert!(db.store.audit_verify(KEY).await.unwrap().is_valid());
}

/// How many migrations the store ships for `backend`'s dialect.
fn migration_files(backend: Backend) -> i64 {
    let dialect = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(dialect);
    let files = std::fs::read_dir(&dir).expect("migrations directory");
    let sql = files.filter(|f| {
        f.as_ref()
            .is_ok_and(|f| f.path().extension().is_some_and(|e| e == "sql"))
    });
    sql.count() as i64
}

/// Two processes starting at once on a fresh PostgreSQL database: the migrator's advisory
/// lock lets one apply the migrations and the other find them applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_migrate_once_on_postgres() {
    let url = berth_store::testing::TempPostgres::fresh_database().await;
    let (a, b) = tokio::join!(Store::open(&url), Store::open(&url));
    let (a, b) = (a.unwrap(), b.unwrap());
    a.add_user(&admin(), "alice", &[]).await.unwrap();
    assert_eq!(b.list_users().await.unwrap().len(), 1);
    let mut raw = sqlx::PgConnection::connect(&url).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(applied, migration_files(Backend::Postgres));
    raw.close().await.ok();
    a.close().await;
    b.close().await;
}

async fn dropped_transaction_leaves_nothing(db: TestDb) {
    let s = &db.store;
    s.add_user(&admin(), "alice", &[]).await.unwrap();
    let mut tx = s.transaction().await.unwrap();
    tx.add_user(&admin(), "bob", &[]).await.unwrap();
    tx.create_token(&admin(), "bob", "t").await.unwrap();
    tx.audit(NewAuditEntry::new(
        &admin(),
        "app.create",
        "shop",
        json!({}),
    ))
    .await
    .unwrap();
    drop(tx);

    assert_eq!(s.get_user("bob").await.unwrap(), None);
    assert!(s.list_tokens(None).await.unwrap().is_empty());
    assert_eq!(
        s.audit_list(&AuditFilter::default()).await.unwrap().len(),
        1
    );
    // The write lock went with it: the next writer is not blocked.
    s.add_user(&admin(), "carol", &[]).await.unwrap();
    let mut tx = s.transaction().await.unwrap();
    tx.add_user(&admin(), "dave", &[]).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(s.get_user("dave").await.unwrap(), None);
    let report = s.audit_verify(KEY).await.unwrap();
    assert!(report.is_valid(), "{report:?}");
    assert_eq!(report.head_seq, 2);
}

/// Set in the child process of the crash test: the database to crash in.
const CRASH_URL: &str = "BERTH_STORE_TEST_CRASH_URL";
const CRASH_MARK: &str = "about to crash with an open transaction";

/// The process dies (abort: no destructors, no rollback sent) in the middle of a write
/// transaction; the next start finds the state from before it and an intact chain.
mod crash_mid_transaction_is_recovered_at_next_start {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        crash(
            Backend::Sqlite,
            "crash_mid_transaction_is_recovered_at_next_start::sqlite",
        )
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        crash(
            Backend::Postgres,
            "crash_mid_transaction_is_recovered_at_next_start::postgres",
        )
        .await
    }
}

async fn crash(backend: Backend, test_name: &str) {
    if let Ok(url) = std::env::var(CRASH_URL) {
        // The child: write, then die before committing.
        let store = Store::open(&url).await.unwrap();
        let mut tx = store.transaction().await.unwrap();
        tx.add_user(&admin(), "bob", &[]).await.unwrap();
        tx.create_token(&admin(), "bob", "t").await.unwrap();
        tx.remove_user(&admin(), "alice").await.unwrap();
        println!("{CRASH_MARK}");
        std::process::abort();
    }
    let db = TestDb::new(backend).await;
    db.store.add_user(&admin(), "alice", &[]).await.unwrap();
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CRASH_URL, &db.url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(CRASH_MARK) && !out.status.success(),
        "the child did not crash where expected ({}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    let store = db.reopen().await;
    assert_eq!(user_names(&store).await, ["alice"]);
    assert!(store.list_tokens(None).await.unwrap().is_empty());
    assert_eq!(
        store
            .audit_list(&AuditFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );
    let report = store.audit_verify(KEY).await.unwrap();
    assert!(report.is_valid(), "{report:?}");
    store.add_user(&admin(), "bob", &[]).await.unwrap();
    assert_eq!(store.audit_verify(KEY).await.unwrap().head_seq, 2);
}

#[tokio::test]
async fn urls_and_paths() {
    let dir = tempfile::tempdir().unwrap();
    // sqlite:PATH with create mode, as a relative-looking URL would be written.
    let path = dir.path().join("a.db");
    let s = Store::open(&format!("sqlite:{}?mode=rwc", path.display()))
        .await
        .unwrap();
    assert_eq!(s.dialect(), "sqlite");
    s.add_user(&admin(), "alice", &[]).await.unwrap();
    s.close().await;
    let s = Store::open_sqlite_file(&path).await.unwrap();
    assert_eq!(s.list_users().await.unwrap().len(), 1);
    assert!(path.exists());
    let mut raw = sqlx::SqliteConnection::connect_with(
        &sqlx::sqlite::SqliteConnectOptions::new().filename(&path),
    )
    .await
    .unwrap();
    let wal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(wal, "wal");

    // A new file in an existing directory is created.
    let fresh = dir.path().join("fresh.db");
    Store::open_sqlite_file(&fresh).await.unwrap();
    assert!(fresh.exists());

    // In memory: one private database that lives as long as the store.
    let mem = Store::open("sqlite::memory:").await.unwrap();
    mem.add_user(&admin(), "alice", &[]).await.unwrap();
    mem.create_token(&admin(), "alice", "x").await.unwrap();
    assert_eq!(mem.list_users().await.unwrap().len(), 1);
    assert!(mem.audit_verify(KEY).await.unwrap().is_valid());

    for bad in ["mysql://localhost/x", "berth.db", ""] {
        assert!(
            matches!(Store::open(bad).await, Err(StoreError::UnsupportedUrl(_))),
            "{bad:?}"
        );
    }
}
