//! Secret versions (sealed values, removals, history), the versions a release runs with, and
//! re-sealing for a key rotation, on SQLite and PostgreSQL.

#[macro_use]
mod support;

use berth_store::{AuditFilter, NewAuditEntry, NewRelease, SealedValue, StoreError, Tx};
use serde_json::json;
use support::{TestDb, admin};

both!(
    versions_removals_and_listing,
    release_secrets_and_reseal,
    names_are_checked,
    audit_entries_of_one_environment,
);

fn sealed(tag: u8, key: &str) -> SealedValue {
    SealedValue {
        ciphertext: vec![tag; 20],
        nonce: vec![tag ^ 0xff; 24],
        key_id: key.into(),
    }
}

/// Sets the next version of `name` the way the API does: read the latest, insert one more.
async fn set(tx: &mut Tx, env: &str, name: &str, tag: u8) -> i64 {
    let (latest, _) = tx.latest_secret_version(env, "shop", name).await.unwrap();
    tx.insert_secret_version(
        &admin(),
        env,
        "shop",
        name,
        latest + 1,
        Some(&sealed(tag, "k-000000000001")),
    )
    .await
    .unwrap();
    latest + 1
}

async fn versions_removals_and_listing(db: TestDb) {
    let s = &db.store;
    let mut tx = s.transaction().await.unwrap();
    assert_eq!(set(&mut tx, "staging", "TOKEN", 1).await, 1);
    assert_eq!(set(&mut tx, "staging", "TOKEN", 2).await, 2);
    assert_eq!(set(&mut tx, "staging", "DB_URL", 3).await, 1);
    // Another environment is another secret with its own versions.
    assert_eq!(set(&mut tx, "production", "TOKEN", 4).await, 1);
    tx.commit().await.unwrap();

    let list = s.list_secrets("staging", "shop").await.unwrap();
    let seen: Vec<(&str, i64, &str)> = list
        .iter()
        .map(|i| (i.name.as_str(), i.version, i.updated_by.as_str()))
        .collect();
    assert_eq!(seen, [("DB_URL", 1, "root"), ("TOKEN", 2, "root")]);
    let current = s.current_secrets("staging", "shop").await.unwrap();
    assert_eq!(current.len(), 2);
    assert_eq!(current[1].ciphertext, vec![2; 20]);
    assert_eq!(current[1].nonce, vec![2 ^ 0xff; 24]);
    // A Debug print of a row shows no ciphertext.
    assert!(!format!("{:?}", current[1]).contains("ciphertext"));

    // Removing writes a removal version: not listed, but the history stays.
    let mut tx = s.transaction().await.unwrap();
    let (latest, live) = tx
        .latest_secret_version("staging", "shop", "TOKEN")
        .await
        .unwrap();
    assert_eq!((latest, live), (2, true));
    tx.insert_secret_version(&admin(), "staging", "shop", "TOKEN", 3, None)
        .await
        .unwrap();
    assert!(
        tx.current_secret("staging", "shop", "TOKEN")
            .await
            .unwrap()
            .is_none()
    );
    // The same version twice is refused.
    let again = tx
        .insert_secret_version(&admin(), "staging", "shop", "TOKEN", 3, None)
        .await;
    assert!(
        matches!(again, Err(StoreError::AlreadyExists { .. })),
        "{again:?}"
    );
    drop(tx);
    let mut tx = s.transaction().await.unwrap();
    tx.insert_secret_version(&admin(), "staging", "shop", "TOKEN", 3, None)
        .await
        .unwrap();
    assert_eq!(
        tx.latest_secret_version("staging", "shop", "TOKEN")
            .await
            .unwrap(),
        (3, false)
    );
    tx.commit().await.unwrap();
    let names: Vec<String> = s
        .list_secrets("staging", "shop")
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["DB_URL"]);
    // Old versions can still be read by number (a release may run with them).
    let old = s
        .secret_versions("staging", "shop", &[("TOKEN".into(), 1)])
        .await
        .unwrap();
    assert_eq!(old[0].ciphertext, vec![1; 20]);
    let missing = s
        .secret_versions("staging", "shop", &[("TOKEN".into(), 3)])
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "{missing:?}"
    );
    // Production is untouched.
    assert_eq!(
        s.list_secrets("production", "shop").await.unwrap()[0].version,
        1
    );
}

async fn release_secrets_and_reseal(db: TestDb) {
    let s = &db.store;
    let mut tx = s.transaction().await.unwrap();
    let app = tx
        .ensure_app(&admin(), "staging", "shop", &json!({}))
        .await
        .unwrap();
    let release = tx
        .record_release(
            &admin(),
            &app,
            &NewRelease {
                version: "r-000000000001".into(),
                artifact: "/tmp/x".into(),
                spec: json!({}),
                meta: json!({}),
            },
        )
        .await
        .unwrap();
    set(&mut tx, "staging", "A", 1).await;
    set(&mut tx, "staging", "B", 2).await;
    tx.record_release_secrets(release.id, &[("A".into(), 1), ("B".into(), 1)])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        s.release_secrets(release.id).await.unwrap(),
        [("A".to_owned(), 1), ("B".to_owned(), 1)]
    );
    // Recording again replaces the set.
    let mut tx = s.transaction().await.unwrap();
    tx.record_release_secrets(release.id, &[("A".into(), 1)])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(s.release_secrets(release.id).await.unwrap().len(), 1);

    assert_eq!(
        s.secret_key_ids().await.unwrap(),
        [("k-000000000001".to_owned(), 2)]
    );
    let mut tx = s.transaction().await.unwrap();
    let rows = tx.all_secret_rows().await.unwrap();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        tx.reseal_secret(r.id, &sealed(9, "k-000000000002"))
            .await
            .unwrap();
    }
    // Rolled back: nothing changed.
    drop(tx);
    assert_eq!(s.secret_key_ids().await.unwrap()[0].0, "k-000000000001");
    let mut tx = s.transaction().await.unwrap();
    for r in tx.all_secret_rows().await.unwrap() {
        tx.reseal_secret(r.id, &sealed(9, "k-000000000002"))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    assert_eq!(
        s.secret_key_ids().await.unwrap(),
        [("k-000000000002".to_owned(), 2)]
    );
    assert_eq!(
        s.current_secrets("staging", "shop").await.unwrap()[0].ciphertext,
        vec![9; 20]
    );
}

async fn names_are_checked(db: TestDb) {
    let mut tx = db.store.transaction().await.unwrap();
    for (env, app, name) in [
        ("staging", "shop", "BAD-NAME"),
        ("staging", "shop", "PORT"),
        ("staging", "shop", "BERTH_X"),
        ("*", "shop", "OK"),
        ("staging", "", "OK"),
    ] {
        let r = tx
            .insert_secret_version(&admin(), env, app, name, 1, Some(&sealed(1, "k")))
            .await;
        assert!(
            matches!(r, Err(StoreError::Invalid { .. })),
            "{env} {app} {name}: {r:?}"
        );
    }
}

async fn audit_entries_of_one_environment(db: TestDb) {
    for target in [
        "shop/staging",
        "shop/production",
        "staging",
        "blog/pre-staging",
        "blog/staging",
    ] {
        db.store
            .audit_record(NewAuditEntry::new(
                &admin(),
                "secret.set",
                target,
                json!({}),
            ))
            .await
            .unwrap();
    }
    let list = db
        .store
        .audit_list(&AuditFilter {
            environment: Some("staging".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let targets: Vec<&str> = list.iter().map(|e| e.target.as_str()).collect();
    assert_eq!(targets, ["blog/staging", "shop/staging"]);
}
