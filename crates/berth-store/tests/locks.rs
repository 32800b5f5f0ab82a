//! Deploy locks and deployments awaiting approval, on SQLite and PostgreSQL.

#[macro_use]
mod support;

use berth_store::{Actor, AuditFilter, NewRelease, ReleaseRecord, Store, StoreError};
use serde_json::json;
use support::{TestDb, admin};

both!(
    a_lock_has_one_owner_and_only_force_takes_it_from_them,
    no_deployment_starts_while_locked,
    approval_is_recorded_and_a_restart_cancels_what_still_waits,
);

fn alice() -> Actor {
    Actor::new("alice", "deployer", "127.0.0.1")
}

async fn shop_release(s: &Store, version: &str) -> ReleaseRecord {
    let mut tx = s.transaction().await.unwrap();
    let app = tx
        .ensure_app(&admin(), "production", "shop", &json!({}))
        .await
        .unwrap();
    let r = tx
        .record_release(
            &admin(),
            &app,
            &NewRelease {
                version: version.into(),
                artifact: format!("/srv/{version}"),
                spec: json!({}),
                meta: json!({}),
            },
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    r
}

async fn actions(s: &Store, prefix: &str) -> Vec<(String, String, serde_json::Value)> {
    s.audit_list(&AuditFilter {
        action_prefix: Some(prefix.into()),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_iter()
    .map(|e| {
        let params = serde_json::from_str(&e.params).unwrap();
        (e.action, e.actor, params)
    })
    .collect()
}

async fn a_lock_has_one_owner_and_only_force_takes_it_from_them(db: TestDb) {
    let s = &db.store;
    assert_eq!(s.deploy_lock("production", "shop").await.unwrap(), None);
    let mut tx = s.transaction().await.unwrap();
    assert!(matches!(
        tx.lock_deploys(&alice(), "production", "shop", "  ").await,
        Err(StoreError::Invalid { what: "reason", .. })
    ));
    let lock = tx
        .lock_deploys(&alice(), "production", "shop", "migrating")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(lock.owner, "alice");
    assert_eq!(
        s.deploy_lock("production", "shop").await.unwrap(),
        Some(lock.clone())
    );
    // Another environment is another lock.
    assert_eq!(s.deploy_lock("staging", "shop").await.unwrap(), None);

    let mut tx = s.transaction().await.unwrap();
    let again = tx
        .lock_deploys(&admin(), "production", "shop", "mine")
        .await;
    let Err(e @ StoreError::Locked(_)) = again else {
        panic!("{again:?}")
    };
    let text = e.to_string();
    assert!(
        text.contains("locked by alice since") && text.contains("migrating"),
        "{text}"
    );
    assert!(
        text.contains("berth unlock shop --env production"),
        "{text}"
    );
    drop(tx);

    let mut tx = s.transaction().await.unwrap();
    assert!(matches!(
        tx.unlock_deploys(&admin(), "production", "shop", false)
            .await,
        Err(StoreError::NotLockOwner(_))
    ));
    drop(tx);
    let mut tx = s.transaction().await.unwrap();
    let removed = tx
        .unlock_deploys(&admin(), "production", "shop", true)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(removed, lock);
    assert_eq!(s.deploy_lock("production", "shop").await.unwrap(), None);
    let mut tx = s.transaction().await.unwrap();
    assert!(matches!(
        tx.unlock_deploys(&admin(), "production", "shop", true)
            .await,
        Err(StoreError::NotLocked { .. })
    ));
    drop(tx);

    let audited = actions(s, "deploy.").await;
    assert_eq!(audited.len(), 2, "{audited:?}");
    let (action, actor, params) = &audited[0];
    assert_eq!(
        (action.as_str(), actor.as_str()),
        ("deploy.unlock", admin().name.as_str())
    );
    assert_eq!(params["forced"], true);
    assert_eq!(params["owner"], "alice");
    assert_eq!(params["reason"], "migrating");
    assert_eq!(audited[1].0, "deploy.lock");
    // The survivor of a restart is the row itself.
    let mut tx = s.transaction().await.unwrap();
    tx.lock_deploys(&alice(), "production", "shop", "again")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let reopened = db.reopen().await;
    assert_eq!(
        reopened
            .deploy_lock("production", "shop")
            .await
            .unwrap()
            .map(|l| l.reason),
        Some("again".into())
    );
}

async fn no_deployment_starts_while_locked(db: TestDb) {
    let s = &db.store;
    let r1 = shop_release(s, "r1").await;
    let mut tx = s.transaction().await.unwrap();
    tx.lock_deploys(&alice(), "production", "shop", "freeze")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = s.transaction().await.unwrap();
    let started = tx.start_deployment(&admin(), &r1, None, "rolling").await;
    assert!(matches!(started, Err(StoreError::Locked(_))), "{started:?}");
    drop(tx);
    let mut tx = s.transaction().await.unwrap();
    assert!(matches!(
        tx.start_deployment_awaiting_approval(&admin(), &r1, None, "rolling")
            .await,
        Err(StoreError::Locked(_))
    ));
    drop(tx);
    assert!(
        s.list_deployments("production", "shop", 10)
            .await
            .unwrap()
            .is_empty()
    );
    let mut tx = s.transaction().await.unwrap();
    tx.unlock_deploys(&alice(), "production", "shop", false)
        .await
        .unwrap();
    tx.start_deployment(&admin(), &r1, None, "rolling")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        s.list_deployments("production", "shop", 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn approval_is_recorded_and_a_restart_cancels_what_still_waits(db: TestDb) {
    let s = &db.store;
    let r1 = shop_release(s, "r1").await;
    let mut tx = s.transaction().await.unwrap();
    let first = tx
        .start_deployment_awaiting_approval(&alice(), &r1, None, "rolling")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let d = s.get_deployment(first).await.unwrap().unwrap();
    assert_eq!(d.state, berth_store::AWAITING_APPROVAL);
    assert_eq!(d.approved_by, None);
    let bob = Actor::new("bob", "deployer", "127.0.0.1");
    let mut tx = s.transaction().await.unwrap();
    tx.approve_deployment(&bob, first).await.unwrap();
    tx.commit().await.unwrap();
    let d = s.get_deployment(first).await.unwrap().unwrap();
    assert_eq!(
        (d.state.as_str(), d.approved_by.as_deref()),
        ("running", Some("bob"))
    );
    // Approving twice is refused.
    let mut tx = s.transaction().await.unwrap();
    assert!(matches!(
        tx.approve_deployment(&bob, first).await,
        Err(StoreError::Invalid { .. })
    ));
    drop(tx);
    let approvals = actions(s, "deploy.approve").await;
    assert_eq!(approvals.len(), 1);
    assert_eq!(approvals[0].1, "bob");
    assert_eq!(approvals[0].2["requested_by"], "alice");

    let mut tx = s.transaction().await.unwrap();
    let second = tx
        .start_deployment_awaiting_approval(&alice(), &r1, None, "rolling")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(s.interrupt_unfinished_deployments().await.unwrap(), 2);
    let running = s.get_deployment(first).await.unwrap().unwrap();
    assert_eq!(running.state, "interrupted");
    let waiting = s.get_deployment(second).await.unwrap().unwrap();
    assert_eq!(waiting.state, "cancelled");
    assert!(waiting.detail.unwrap_or_default().contains("deploy again"));
    assert!(waiting.finished.is_some());
}
