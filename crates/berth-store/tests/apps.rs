//! Apps and environments, on SQLite and PostgreSQL.

#[macro_use]
mod support;

use berth_store::{AuditFilter, StoreError};
use serde_json::json;
use support::{KEY, TestDb, admin, app_names};

both!(
    apps_create_list_remove,
    app_input_is_checked,
    app_changes_are_audited_in_their_transaction,
);

async fn apps_create_list_remove(db: TestDb) {
    let s = &db.store;
    assert!(s.list_apps("staging").await.unwrap().is_empty());
    let shop = s.create_app(&admin(), "staging", "shop").await.unwrap();
    assert_eq!(shop.environment, "staging");
    assert_eq!(shop.name, "shop");
    assert_eq!(shop.spec, json!({}));
    s.create_app(&admin(), "staging", "blog").await.unwrap();
    // The same name in another environment is another app.
    s.create_app(&admin(), "production", "shop").await.unwrap();
    // The environment row is created once, on first use.
    assert_eq!(db.int("SELECT COUNT(*) FROM environments").await, 2);

    let staging = s.list_apps("staging").await.unwrap();
    let names: Vec<&str> = staging.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["blog", "shop"]);
    assert_eq!(staging[1], shop);
    assert_eq!(s.app("staging", "shop").await.unwrap(), Some(shop.clone()));
    assert_eq!(s.app("staging", "nope").await.unwrap(), None);
    assert_eq!(s.app("nowhere", "shop").await.unwrap(), None);
    assert_eq!(s.list_apps("production").await.unwrap().len(), 1);
    assert!(s.list_apps("nowhere").await.unwrap().is_empty());

    assert!(matches!(
        s.create_app(&admin(), "staging", "shop").await,
        Err(StoreError::AlreadyExists { kind: "app", .. })
    ));
    s.delete_app(&admin(), "staging", "shop").await.unwrap();
    assert_eq!(app_names(s, "staging").await, ["blog"]);
    assert_eq!(s.list_apps("production").await.unwrap().len(), 1);
    assert!(matches!(
        s.delete_app(&admin(), "staging", "shop").await,
        Err(StoreError::NotFound { kind: "app", .. })
    ));
    // Removal is soft: the row stays for history and the name can be used again.
    assert_eq!(db.int("SELECT COUNT(*) FROM apps").await, 3);
    let again = s.create_app(&admin(), "staging", "shop").await.unwrap();
    assert_ne!(again.id, shop.id);
}

async fn app_input_is_checked(db: TestDb) {
    let s = &db.store;
    for (env, name) in [
        ("*", "shop"),
        ("", "shop"),
        ("staging", "-x"),
        ("a b", "shop"),
    ] {
        assert!(
            matches!(
                s.create_app(&admin(), env, name).await,
                Err(StoreError::Invalid { .. })
            ),
            "{env:?}/{name:?} accepted"
        );
    }
    assert!(matches!(
        s.delete_app(&admin(), "nowhere", "shop").await,
        Err(StoreError::NotFound { kind: "app", .. })
    ));
    // Refused input leaves nothing behind, not even the environment row.
    assert_eq!(db.int("SELECT COUNT(*) FROM environments").await, 0);
    assert!(
        s.audit_list(&AuditFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
}

async fn app_changes_are_audited_in_their_transaction(db: TestDb) {
    let s = &db.store;
    s.create_app(&admin(), "staging", "shop").await.unwrap();
    s.create_app(&admin(), "staging", "blog").await.unwrap();
    s.delete_app(&admin(), "staging", "shop").await.unwrap();
    let log = s
        .audit_list(&AuditFilter {
            action_prefix: Some("app.".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let seen: Vec<(&str, &str, &str)> = log
        .iter()
        .rev()
        .map(|e| (e.action.as_str(), e.target.as_str(), e.outcome.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("app.create", "shop/staging", "ok"),
            ("app.create", "blog/staging", "ok"),
            ("app.remove", "shop/staging", "ok"),
        ]
    );
    assert_eq!(
        log[2].params_json().unwrap(),
        json!({ "environment_created": true })
    );
    assert_eq!(log[2].actor, admin().name);
    assert_eq!(log[2].source, admin().source);

    // A transaction dropped after creating an app leaves neither the app, nor the
    // environment it created, nor the audit entry.
    let mut tx = s.transaction().await.unwrap();
    tx.create_app(&admin(), "qa", "shop").await.unwrap();
    assert_eq!(tx.list_apps("qa").await.unwrap().len(), 1);
    drop(tx);
    assert!(s.list_apps("qa").await.unwrap().is_empty());
    assert_eq!(
        db.int("SELECT COUNT(*) FROM environments WHERE name = 'qa'")
            .await,
        0
    );
    assert_eq!(
        s.audit_list(&AuditFilter::default()).await.unwrap().len(),
        3
    );
    assert!(s.audit_verify(KEY).await.unwrap().is_valid());
}
