//! Releases, the active release, deployments with their steps, and instances, on SQLite and
//! PostgreSQL.

#[macro_use]
mod support;

use berth_store::{App, AuditFilter, NewInstance, NewRelease, ReleaseRecord, Tx};
use serde_json::json;
use support::{TestDb, admin};

both!(
    releases_are_recorded_once_and_one_is_active,
    deployments_keep_their_steps_and_restart_interrupts_them,
    instances_are_tracked_and_lost_on_restart,
);

fn release(version: &str) -> NewRelease {
    NewRelease {
        version: version.into(),
        artifact: format!("/var/lib/berth/apps/shop/releases/{version}"),
        spec: json!({ "name": "shop" }),
        meta: json!({ "source": "upload:/src/shop", "git_commit": null }),
    }
}

/// Records `version` of `app` as the admin.
async fn record(tx: &mut Tx, app: &App, version: &str) -> ReleaseRecord {
    tx.record_release(&admin(), app, &release(version))
        .await
        .unwrap()
}

async fn releases_are_recorded_once_and_one_is_active(db: TestDb) {
    let s = &db.store;
    let mut tx = s.transaction().await.unwrap();
    let app = tx
        .ensure_app(
            &admin(),
            "staging",
            "shop",
            &json!({ "name": "shop", "v": 1 }),
        )
        .await
        .unwrap();
    let r1 = record(&mut tx, &app, "r-000000000001").await;
    // The same content deployed twice is one release.
    let again = record(&mut tx, &app, "r-000000000001").await;
    assert_eq!(again.id, r1.id);
    let r2 = record(&mut tx, &app, "r-000000000002").await;
    tx.activate_release(&admin(), &r1).await.unwrap();
    tx.commit().await.unwrap();

    // ensure_app on an existing app updates its spec and keeps its id.
    let mut tx = s.transaction().await.unwrap();
    let same = tx
        .ensure_app(
            &admin(),
            "staging",
            "shop",
            &json!({ "name": "shop", "v": 2 }),
        )
        .await
        .unwrap();
    assert_eq!(same.id, app.id);
    tx.commit().await.unwrap();
    assert_eq!(
        s.list_apps("staging").await.unwrap()[0].spec,
        json!({ "name": "shop", "v": 2 })
    );

    let list = s.list_releases("staging", "shop").await.unwrap();
    let versions: Vec<(&str, bool)> = list
        .iter()
        .map(|r| (r.version.as_str(), r.active))
        .collect();
    assert_eq!(
        versions,
        [("r-000000000002", false), ("r-000000000001", true)]
    );
    assert_eq!(list[1].meta["source"], "upload:/src/shop");
    assert_eq!(list[1].created_by, admin().name);
    assert!(
        s.list_releases("production", "shop")
            .await
            .unwrap()
            .is_empty()
    );

    let mut tx = s.transaction().await.unwrap();
    tx.activate_release(&admin(), &r2).await.unwrap();
    tx.commit().await.unwrap();
    let active = s.active_releases().await.unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].version, "r-000000000002");
    assert!(active[0].active);
    assert_eq!(
        s.get_release("staging", "shop", "r-000000000001")
            .await
            .unwrap()
            .map(|r| r.active),
        Some(false)
    );
    assert_eq!(
        s.get_release("staging", "shop", "r-00000000000f")
            .await
            .unwrap(),
        None
    );

    // Newest first from the store; oldest first here.
    let actions: Vec<(String, serde_json::Value)> = s
        .audit_list(&AuditFilter::default())
        .await
        .unwrap()
        .into_iter()
        .rev()
        .map(|e| (e.action.clone(), e.params_json().unwrap_or_default()))
        .collect();
    let names: Vec<&str> = actions.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        names,
        [
            "app.create",
            "release.create",
            "release.create",
            "release.activate",
            "release.activate"
        ]
    );
    assert_eq!(actions[4].1["previous"], "r-000000000001");
    assert_eq!(actions[4].1["release"], "r-000000000002");
}

async fn deployments_keep_their_steps_and_restart_interrupts_them(db: TestDb) {
    let s = &db.store;
    let mut tx = s.transaction().await.unwrap();
    let app = tx
        .ensure_app(&admin(), "production", "shop", &json!({}))
        .await
        .unwrap();
    let r1 = record(&mut tx, &app, "r-000000000001").await;
    let r2 = record(&mut tx, &app, "r-000000000002").await;
    let d1 = tx
        .start_deployment(&admin(), &r1, None, "rolling")
        .await
        .unwrap();
    tx.finish_deployment(&admin(), d1, "succeeded", "1 instance healthy")
        .await
        .unwrap();
    let d2 = tx
        .start_deployment(&admin(), &r2, Some(&r1), "rolling")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    s.record_step(
        d2,
        "start_instances",
        "proceed",
        "started web-1",
        json!({ "instances": 1 }),
    )
    .await
    .unwrap();
    s.record_step(
        d2,
        "health_gate",
        "abort",
        "web-1 not healthy within 5s",
        json!({}),
    )
    .await
    .unwrap();

    let d = s.get_deployment(d2).await.unwrap().unwrap();
    assert_eq!(d.state, "running");
    assert_eq!(d.previous_release.as_deref(), Some("r-000000000001"));
    let steps: Vec<(i64, &str, &str)> = d
        .steps
        .iter()
        .map(|s| (s.seq, s.step.as_str(), s.decision.as_str()))
        .collect();
    assert_eq!(
        steps,
        [
            (1, "start_instances", "proceed"),
            (2, "health_gate", "abort")
        ]
    );
    assert_eq!(d.steps[0].measurements, json!({ "instances": 1 }));
    // A follower that has seen step 1 reads only what came after it.
    let later = s.deployment_after(d2, 1).await.unwrap().unwrap();
    assert_eq!(later.steps, d.steps[1..]);
    assert!(
        s.deployment_after(d2, 2)
            .await
            .unwrap()
            .unwrap()
            .steps
            .is_empty()
    );
    // The app's next deployment after an id, and none after the newest or elsewhere.
    let next = |env: &'static str, id: i64| s.next_deployment_id(env, "shop", id);
    assert_eq!(next("production", 0).await.unwrap(), Some(d1));
    assert_eq!(next("production", d1).await.unwrap(), Some(d2));
    assert_eq!(next("production", d2).await.unwrap(), None);
    assert_eq!(next("staging", 0).await.unwrap(), None);

    // A restart finds d2 unfinished and marks it; d1 is left alone.
    assert_eq!(s.interrupt_unfinished_deployments().await.unwrap(), 1);
    assert_eq!(s.interrupt_unfinished_deployments().await.unwrap(), 0);
    let list = s.list_deployments("production", "shop", 10).await.unwrap();
    let states: Vec<(i64, &str)> = list.iter().map(|d| (d.id, d.state.as_str())).collect();
    assert_eq!(states, [(d2, "interrupted"), (d1, "succeeded")]);
    assert!(list[0].finished.is_some());
    // Each deployment in a listing carries its own steps, in order.
    assert_eq!(list[0].steps, d.steps);
    assert!(list[1].steps.is_empty());
    assert_eq!(
        s.list_deployments("production", "shop", 1)
            .await
            .unwrap()
            .len(),
        1
    );

    let entries = s.audit_list(&AuditFilter::default()).await.unwrap();
    let finish: Vec<&str> = entries
        .iter()
        .filter(|e| e.action == "deploy.finish")
        .map(|e| e.outcome.as_str())
        .collect();
    assert_eq!(finish, ["ok"]);

    // Any other end is on record as an error, with the state it ended in.
    let mut tx = s.transaction().await.unwrap();
    let d3 = tx
        .start_deployment(&admin(), &r2, Some(&r1), "rolling")
        .await
        .unwrap();
    tx.finish_deployment(&admin(), d3, "failed", "web-1 exited")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let finished = s
        .audit_list(&AuditFilter {
            action_prefix: Some("deploy.finish".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let outcomes: Vec<(&str, &str)> = finished
        .iter()
        .map(|e| (e.outcome.as_str(), e.target.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("error: failed", "shop/production"),
            ("ok", "shop/production")
        ]
    );
    let d = s.get_deployment(d3).await.unwrap().unwrap();
    assert_eq!(
        (d.state.as_str(), d.detail.as_deref()),
        ("failed", Some("web-1 exited"))
    );
    assert!(d.steps.is_empty());
    assert_eq!(s.get_deployment(d3 + 1).await.unwrap(), None);
}

async fn instances_are_tracked_and_lost_on_restart(db: TestDb) {
    let s = &db.store;
    let mut tx = s.transaction().await.unwrap();
    let app = tx
        .ensure_app(&admin(), "production", "shop", &json!({}))
        .await
        .unwrap();
    let r1 = record(&mut tx, &app, "r-000000000001").await;
    tx.commit().await.unwrap();
    let new = |name: &'static str| NewInstance {
        release: &r1,
        deployment: None,
        process: "web",
        name,
        address: "127.0.0.1:4001",
        pid: Some(4242),
        state: "starting",
    };
    let a = s.insert_instance(&new("web-1")).await.unwrap();
    let b = s.insert_instance(&new("web-2")).await.unwrap();
    s.update_instance(a, "healthy", None, None).await.unwrap();
    s.update_instance(b, "stopped", Some(4243), Some(Some(0)))
        .await
        .unwrap();
    let row = |id: i64| {
        let db = &db;
        async move {
            let sql = format!(
                "SELECT state || ':' || COALESCE(CAST(pid AS TEXT), '') || ':' || \
                 COALESCE(CAST(exit_status AS TEXT), '-') FROM instances WHERE id = {id}"
            );
            db.texts(&sql).await.concat()
        }
    };
    assert_eq!(row(a).await, "healthy:4242:-");
    assert_eq!(row(b).await, "stopped:4243:0");
    assert_eq!(s.mark_lost_instances().await.unwrap(), 1);
    assert_eq!(row(a).await, "lost:4242:-");
    assert_eq!(row(b).await, "stopped:4243:0");
}
