//! Deploy locks (`berth lock`, `berth unlock`) and deploys that wait for approval
//! (`requires_approval`, `berth approve`, `berth abort`), through the real binary.

use std::time::Duration;

use serde_json::Value;

use crate::support::{
    Berth, PY_WEB, Ran, app_dir, eventually, run_cli, spec, start, start_in, user,
};

/// App `shop` serving `version`, with `deploy` lines added to its `[deploy]` table.
pub(crate) fn shop(version: &str, deploy: &str) -> tempfile::TempDir {
    let processes = format!(
        "{deploy}\n[processes.web]\ncommand = \"{PY_WEB}\"\ninstances = 1\nstop_timeout = \"5s\"\n\
         [processes.web.health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\nstart_timeout = \"20s\"\n"
    );
    app_dir(&[
        ("berth.toml", &spec("shop", &processes)),
        ("health", "ok\n"),
        ("version", version),
    ])
}

/// `berth deploy DIR` as the holder of `token`, on a blocking thread (it waits for approval).
pub(crate) fn deploy_in_background(
    b: &Berth,
    token: &str,
    dir: &std::path::Path,
) -> tokio::task::JoinHandle<Ran> {
    let (admin, token, dir) = (
        b.admin,
        token.to_owned(),
        dir.to_string_lossy().into_owned(),
    );
    tokio::task::spawn_blocking(move || run_cli(admin, &token, &["deploy", &dir], None))
}

#[track_caller]
fn refused(out: &Ran, code: i32, texts: &[&str]) {
    assert_eq!(
        out.code, code,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    for t in texts {
        assert!(out.stderr.contains(t), "{t:?} not in: {}", out.stderr);
    }
}

fn newest_deployment(b: &Berth) -> Value {
    let deps = b.cli(&["deploys", "shop", "--json"]).ok().json();
    deps["deployments"][0].clone()
}

fn audit(b: &Berth, action: &str) -> Vec<Value> {
    let all = b
        .cli(&["audit", "list", "--action", action, "--json"])
        .ok()
        .json();
    let mut entries = all["entries"].as_array().cloned().unwrap_or_default();
    // The API gives the parameters as the JSON text that was hashed.
    for e in &mut entries {
        if let Some(text) = e["params"].as_str() {
            e["params"] = serde_json::from_str(text).unwrap_or(Value::Null);
        }
    }
    entries
}

/// Waits until `berth ps` says a deployment waits for approval; returns `ps`.
pub(crate) async fn awaiting(b: &Berth) -> Value {
    let seen = eventually(Duration::from_secs(60), || async {
        b.cli(&["ps", "shop", "--json"]).json()["awaiting_approval"].is_i64()
    })
    .await;
    assert!(seen, "no deploy waiting for approval: {}", b.ps("shop"));
    b.ps("shop")
}

#[tokio::test]
async fn a_lock_refuses_deploys_until_unlocked_survives_a_restart_and_force_is_audited() {
    let keep = tempfile::tempdir().unwrap();
    let mut b = start(&keep).await;
    b.deploy(shop("v1", "").path()).ok();
    let alice = user(&b, "alice", &["deployer@production"]);
    let reason = "migrating the orders table";
    b.cli_as(&alice, &["lock", "shop", "--reason", reason]).ok();

    // Deploy, restart and rollback are all refused, naming owner, reason and the way out.
    let v2 = shop("v2", "");
    let out = b.deploy(v2.path());
    refused(
        &out,
        4,
        &[
            "locked by alice since",
            reason,
            "berth unlock shop --env production",
        ],
    );
    refused(&b.cli(&["restart", "shop"]), 4, &["locked by alice"]);
    refused(
        &b.cli(&["rollback", "shop", "r-000000000000"]),
        4,
        &["locked by alice"],
    );
    assert_eq!(b.get("shop.test", "/version").await, (200, "v1".to_owned()));
    // Nothing was recorded for the refused deploy.
    assert_eq!(newest_deployment(&b)["state"], "succeeded");
    // Taking a held lock again is refused too.
    refused(
        &b.cli(&["lock", "shop", "--reason", "mine"]),
        4,
        &["locked by alice"],
    );

    // The lock is in the store: a new berth on the same data still has it.
    let status = b.process.stop(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
    let b = start_in(&b.data_dir).await;
    let back = eventually(Duration::from_secs(30), || async {
        b.get("shop.test", "/version").await == (200, "v1".to_owned())
            && b.ps("shop")["deploying"] == false
    })
    .await;
    assert!(back, "v1 serves again after the restart");
    let shown = b.cli(&["lock", "shop", "--show", "--json"]).ok().json();
    assert_eq!(shown["locked"], true, "{shown}");
    assert_eq!(shown["lock"]["owner"], "alice");
    assert_eq!(shown["lock"]["reason"], reason);
    assert_eq!(b.ps("shop")["lock"]["owner"], "alice");
    refused(&b.deploy(v2.path()), 4, &["locked by alice"]);

    // Someone else's lock comes off only with --force, which the audit log says.
    refused(
        &b.cli(&["unlock", "shop"]),
        4,
        &["belongs to alice", "--force"],
    );
    let out = b.cli(&["unlock", "shop", "--force"]).ok().stdout.clone();
    assert!(out.contains("forced"), "{out}");
    let unlocks = audit(&b, "deploy.unlock");
    let forced = unlocks.iter().any(|e| {
        e["actor"] == "admin"
            && e["params"]["forced"] == true
            && e["params"]["owner"] == "alice"
            && e["outcome"] == "ok"
    });
    assert!(forced, "{unlocks:?}");
    let locks = audit(&b, "deploy.lock");
    assert!(
        locks
            .iter()
            .any(|e| e["actor"] == "alice" && e["outcome"] == "ok"),
        "{locks:?}"
    );

    b.deploy(v2.path()).ok();
    assert_eq!(b.get("shop.test", "/version").await, (200, "v2".to_owned()));

    // The owner unlocks without --force.
    b.cli_as(&alice, &["lock", "shop", "--reason", "again"])
        .ok();
    b.cli_as(&alice, &["unlock", "shop"]).ok();
    let entries = audit(&b, "deploy.unlock");
    assert!(
        entries
            .iter()
            .any(|e| e["actor"] == "alice" && e["params"]["forced"] == false),
        "{entries:?}"
    );
    assert_eq!(
        b.cli(&["lock", "shop", "--show", "--json"]).ok().json()["locked"],
        false
    );
}

#[tokio::test]
async fn a_deploy_requiring_approval_waits_and_starts_only_when_another_user_approves() {
    let keep = tempfile::tempdir().unwrap();
    let b = start(&keep).await;
    b.deploy(shop("v1", "").path()).ok();
    let v1 = b.ps("shop")["release"].as_str().unwrap().to_owned();
    let alice = user(&b, "alice", &["deployer@production"]);
    let bob = user(&b, "bob", &["deployer@production"]);

    let v2 = shop("v2", "requires_approval = true");
    let deploying = deploy_in_background(&b, &alice, v2.path());
    let ps = awaiting(&b).await;
    let id = ps["awaiting_approval"].as_i64().unwrap();
    let d = newest_deployment(&b);
    assert_eq!(d["id"].as_i64(), Some(id));
    assert_eq!(d["state"], "awaiting_approval");
    // While it waits nothing of the new release runs.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ps = b.ps("shop");
    let releases: Vec<&str> = ps["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["release"].as_str().unwrap())
        .collect();
    assert_eq!(releases, vec![v1.as_str()], "{ps}");
    assert_eq!(b.get("shop.test", "/version").await, (200, "v1".to_owned()));
    // A second deploy is told who waits for what.
    refused(
        &b.deploy(shop("v3", "").path()),
        4,
        &[&format!(
            "deployment {id}, started by alice, waiting for approval"
        )],
    );

    // The deployer cannot approve their own deploy.
    let own = b.cli_as(&alice, &["approve", "shop"]);
    refused(
        &own,
        3,
        &["alice started this deploy and cannot approve it"],
    );
    assert_eq!(newest_deployment(&b)["state"], "awaiting_approval");

    b.cli_as(&bob, &["approve", "shop", &id.to_string()]).ok();
    let out = deploying.await.unwrap();
    out.ok();
    assert!(
        out.stdout.contains("waiting for approval"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains(&format!("berth approve shop --env production {id}")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("approved by bob"), "{}", out.stdout);
    assert_eq!(b.get("shop.test", "/version").await, (200, "v2".to_owned()));
    let d = newest_deployment(&b);
    assert_eq!(d["state"], "succeeded");
    assert_eq!(d["approved_by"], "bob");
    let human = b.cli(&["deploys", "shop"]).ok().stdout.clone();
    assert!(human.contains("approved by bob"), "{human}");
    let approvals = audit(&b, "deploy.approve");
    assert!(
        approvals.iter().any(|e| e["actor"] == "bob"
            && e["outcome"] == "ok"
            && e["params"]["deployment"] == id),
        "{approvals:?}"
    );
    assert!(
        approvals
            .iter()
            .any(|e| e["actor"] == "alice" && e["outcome"] != "ok"),
        "the refused self-approval is on record: {approvals:?}"
    );
}

#[tokio::test]
async fn a_deploy_waiting_for_approval_ends_cancelled_on_abort_and_on_a_restart() {
    let keep = tempfile::tempdir().unwrap();
    let mut b = start(&keep).await;
    b.deploy(shop("v1", "").path()).ok();
    let v2 = shop("v2", "requires_approval = true");

    let deploying = deploy_in_background(&b, &b.token(), v2.path());
    let id = awaiting(&b).await["awaiting_approval"].as_i64().unwrap();
    b.cli(&["abort", "shop"]).ok();
    let out = deploying.await.unwrap();
    refused(&out, 1, &["cancelled by admin before approval"]);
    let d = newest_deployment(&b);
    assert_eq!(d["id"].as_i64(), Some(id));
    assert_eq!(d["state"], "cancelled");
    assert!(b.ps("shop")["awaiting_approval"].is_null());
    assert_eq!(b.get("shop.test", "/version").await, (200, "v1".to_owned()));

    // Waiting again, then berth stops: the next start cancels it, with a reason.
    let deploying = deploy_in_background(&b, &b.token(), v2.path());
    let id = awaiting(&b).await["awaiting_approval"].as_i64().unwrap();
    let status = b.process.stop(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
    let _ = deploying.await;
    let b = start_in(&b.data_dir).await;
    let d = newest_deployment(&b);
    assert_eq!(d["id"].as_i64(), Some(id));
    assert_eq!(d["state"], "cancelled", "{d}");
    assert!(
        d["detail"].as_str().unwrap_or("").contains("deploy again"),
        "{d}"
    );
    let back = eventually(Duration::from_secs(30), || async {
        b.get("shop.test", "/version").await == (200, "v1".to_owned())
            && b.ps("shop")["deploying"] == false
    })
    .await;
    assert!(back, "v1 serves again after the restart");
    // The first admin may approve its own deploy while nobody else may deploy here...
    let deploying = deploy_in_background(&b, &b.token(), v2.path());
    awaiting(&b).await;
    b.cli(&["approve", "shop"]).ok();
    deploying.await.unwrap().ok();
    assert_eq!(b.get("shop.test", "/version").await, (200, "v2".to_owned()));

    // ... and not once someone else may.
    let carol = user(&b, "carol", &["deployer@production"]);
    let v3 = shop("v3", "requires_approval = true");
    let deploying = deploy_in_background(&b, &b.token(), v3.path());
    awaiting(&b).await;
    refused(
        &b.cli(&["approve", "shop"]),
        3,
        &["admin started this deploy and cannot approve it"],
    );
    b.cli_as(&carol, &["approve", "shop"]).ok();
    deploying.await.unwrap().ok();
    assert_eq!(b.get("shop.test", "/version").await, (200, "v3".to_owned()));
}

#[tokio::test]
async fn a_deploy_nobody_approves_is_cancelled_after_approval_timeout() {
    let keep = tempfile::tempdir().unwrap();
    let b = start(&keep).await;
    b.deploy(shop("v1", "").path()).ok();
    let v2 = shop("v2", "requires_approval = true\napproval_timeout = \"1s\"");
    let out = deploy_in_background(&b, &b.token(), v2.path())
        .await
        .unwrap();
    refused(
        &out,
        1,
        &[
            "not approved within 1s ([deploy] approval_timeout)",
            "deploy again",
        ],
    );
    let d = newest_deployment(&b);
    assert_eq!(d["state"], "cancelled", "{d}");
    assert!(b.ps("shop")["awaiting_approval"].is_null());
    // Nothing waits any more, so an approval now has nothing to approve, and the app is free.
    assert_ne!(b.cli(&["approve", "shop"]).code, 0);
    assert_eq!(b.get("shop.test", "/version").await, (200, "v1".to_owned()));
    b.cli(&["restart", "shop"]).ok();
}
