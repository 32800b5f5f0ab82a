//! The API's behaviour beyond the access matrix: users and tokens end to end, the audit
//! trail (ok, denied, errors, never a secret), verification, reload, apps, errors, the
//! OpenAPI document, throttling and metrics. Over real sockets.

mod support;

use std::collections::BTreeSet;

use berth_api::{ClientSource, router};
use berth_store::AuditFilter;
use reqwest::Method;
use serde_json::{Value, json};
use support::{Backend, Harness, auth_failures, policy};
use tower::ServiceExt;

/// `both!(name, …)`: for each `async fn name(backend)`, a module `name` with the tests
/// `sqlite` and `postgres`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::support::Backend::Sqlite).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::support::Backend::Postgres).await
            }
        }
    )*};
}

both!(users_and_tokens_end_to_end, audit_trail_has_no_secrets);

/// The field names of a JSON object, sorted.
fn keys(v: &Value) -> Vec<&str> {
    let mut names: Vec<&str> = v
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    names
}

async fn users_and_tokens_end_to_end(backend: Backend) {
    let h = Harness::new(backend, 10).await;
    let root = h.admin().await;
    let r = h.inside_as(Some(&root.token));

    let who = r.get("/api/v1/whoami").await;
    assert_eq!(who.status, 200);
    assert_eq!(who.body["user"], "root");
    assert_eq!(who.body["grants"], json!(["admin@*"]));
    assert!(who.body["token_id"].is_i64());
    assert_eq!(who.headers["cache-control"], "no-store");

    let add = json!({ "name": "alice", "grants": ["deployer@staging", "viewer@production"] });
    let created = r.post("/api/v1/users", &add).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(
        created.body["grants"],
        json!(["viewer@production", "deployer@staging"])
    );
    assert_eq!(keys(&created.body), ["created", "grants", "name"]);
    assert!(created.body["created"].is_i64());
    let again = r.post("/api/v1/users", &add).await;
    assert_eq!((again.status, again.code()), (409, "already_exists"));

    // Bad input names the field.
    for (body, field) in [
        (json!({ "name": "bob", "grants": ["root@*"] }), "grants[0]"),
        (
            json!({ "name": "bob", "grants": ["viewer@staging", "admin@"] }),
            "grants[1]",
        ),
        (json!({ "name": "-bob" }), "name"),
        (
            json!({ "name": "bob", "grants": ["viewer@prod uction"] }),
            "grants",
        ),
        (json!({ "grants": [] }), "name"),
        (json!({ "name": "bob", "roles": [] }), "roles"),
        (json!({ "name": 7 }), "name"),
    ] {
        let a = r.post("/api/v1/users", &body).await;
        assert_eq!(
            (a.status, a.code()),
            (400, "bad_request"),
            "{body}: {:?}",
            a.body
        );
        assert_eq!(a.body["field"], field, "{body}: {:?}", a.body);
        assert!(a.body["message"].as_str().unwrap().starts_with(field));
    }

    let users = r.get("/api/v1/users").await;
    let names: Vec<&str> = users.body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "root"]);

    // An admin makes alice a token; alice makes herself another. Each is shown once.
    let t1 = r
        .post("/api/v1/tokens", &json!({ "user": "alice", "label": "ci" }))
        .await;
    assert_eq!(t1.status, 201, "{:?}", t1.body);
    let alice1 = t1.body["token"].as_str().unwrap().to_owned();
    assert!(alice1.starts_with(t1.body["prefix"].as_str().unwrap()));
    assert_eq!(t1.body["user"], "alice");
    // The token as listed, plus the token itself; times in ms since the epoch.
    assert_eq!(
        keys(&t1.body),
        [
            "created",
            "id",
            "label",
            "last_used",
            "prefix",
            "revoked",
            "token",
            "user"
        ]
    );
    assert!(t1.body["created"].is_i64());
    assert_eq!(
        (&t1.body["last_used"], &t1.body["revoked"]),
        (&Value::Null, &Value::Null)
    );
    let a1 = h.inside_as(Some(&alice1));
    let t2 = a1
        .post("/api/v1/tokens", &json!({ "label": "laptop" }))
        .await;
    assert_eq!(t2.status, 201);
    assert_eq!(t2.body["user"], "alice");
    let alice2 = t2.body["token"].as_str().unwrap().to_owned();
    let a2 = h.inside_as(Some(&alice2));
    assert_eq!(a2.get("/api/v1/whoami").await.body["user"], "alice");
    let missing_label = a1.post("/api/v1/tokens", &json!({})).await;
    assert_eq!(
        (missing_label.status, missing_label.field()),
        (400, Some("label"))
    );
    let bad_label = a1.post("/api/v1/tokens", &json!({ "label": "a\nb" })).await;
    assert_eq!((bad_label.status, bad_label.field()), (400, Some("label")));
    let nobody = r
        .post("/api/v1/tokens", &json!({ "user": "nobody", "label": "x" }))
        .await;
    assert_eq!((nobody.status, nobody.code()), (404, "not_found"));

    // Listings: alice sees her own (without secrets); root sees anyone's.
    let mine = a1.get("/api/v1/tokens").await;
    assert_eq!(mine.status, 200);
    let labels: Vec<&str> = mine.body["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["ci", "laptop"]);
    let text = mine.body.to_string();
    assert!(!text.contains(&alice1) && !text.contains(&alice2));
    assert!(mine.body["tokens"][0].get("token").is_none());
    let same = a1.get("/api/v1/tokens?user=self").await;
    assert_eq!(same.body, mine.body);
    let theirs = r.get("/api/v1/tokens?user=alice").await;
    assert_eq!(theirs.body["tokens"].as_array().unwrap().len(), 2);
    let all = r.get("/api/v1/tokens?user=*").await;
    assert_eq!(all.body["tokens"].as_array().unwrap().len(), 3);
    let typo = r.get("/api/v1/tokens?usr=alice").await;
    assert_eq!((typo.status, typo.field()), (400, Some("usr")));

    // Alice revokes her own token; it stops working at once. She may not revoke root's.
    let id2 = t2.body["id"].as_i64().unwrap();
    let revoked = a1.delete(&format!("/api/v1/tokens/{id2}")).await;
    assert_eq!(revoked.status, 204);
    assert_eq!(revoked.body, Value::Null);
    // Listed still, with the time it was revoked.
    let listed = a1.get("/api/v1/tokens").await;
    let t2_listed = listed.body["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id2)
        .expect("a revoked token is listed");
    assert_eq!(
        keys(t2_listed),
        [
            "created",
            "id",
            "label",
            "last_used",
            "prefix",
            "revoked",
            "user"
        ]
    );
    assert!(t2_listed["revoked"].as_i64() >= t2_listed["created"].as_i64());
    assert!(t2_listed["revoked"].is_i64());
    assert_eq!(a2.get("/api/v1/whoami").await.status, 401);
    let root_token_id = who.body["token_id"].as_i64().unwrap();
    let not_hers = a1.delete(&format!("/api/v1/tokens/{root_token_id}")).await;
    assert_eq!((not_hers.status, not_hers.code()), (403, "forbidden"));
    // An id that does not exist: 404 for an admin, 403 for anyone else (who learns nothing).
    assert_eq!(r.delete("/api/v1/tokens/999999").await.status, 404);
    assert_eq!(a1.delete("/api/v1/tokens/999999").await.status, 403);
    assert_eq!(r.delete("/api/v1/tokens/abc").await.body["field"], "id");
    // Rejected input is on record under the endpoint's operation id and the path below
    // /api/v1, without parameters.
    let newest = h
        .store
        .audit_list(&AuditFilter {
            limit: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let seen: Vec<(&str, &str, &str, &str)> = newest
        .iter()
        .map(|e| (&*e.action, &*e.target, &*e.outcome, &*e.params))
        .collect();
    assert_eq!(
        seen,
        [(
            "token.revoke",
            "/api/v1/tokens/abc",
            "rejected: bad_request",
            "{}"
        )]
    );

    // Removing alice revokes all her tokens.
    assert_eq!(r.delete("/api/v1/users/alice").await.status, 204);
    assert_eq!(a1.get("/api/v1/whoami").await.status, 401);
    assert_eq!(r.delete("/api/v1/users/alice").await.status, 404);
    // A new alice does not see the old alice's tokens as hers.
    let new_alice = h.person("alice", &["viewer@*"]).await;
    let hers = h
        .inside_as(Some(&new_alice.token))
        .get("/api/v1/tokens")
        .await;
    assert_eq!(hers.body["tokens"].as_array().unwrap().len(), 1);

    // The last admin on * cannot be removed: the store's rule, a 409.
    let last = r.delete("/api/v1/users/root").await;
    assert_eq!((last.status, last.code()), (409, "last_admin"));
    h.stop().await;
}

async fn audit_trail_has_no_secrets(backend: Backend) {
    let h = Harness::new(backend, 10).await;
    let root = h.admin().await;
    let viewer = h.person("val", &["viewer@*"]).await;
    let r = h.inside_as(Some(&root.token));
    let v = h.inside_as(Some(&viewer.token));
    let mut secrets = vec![root.token.clone(), viewer.token.clone()];

    // Successes, in the change's own transaction.
    assert_eq!(
        r.post(
            "/api/v1/users",
            &json!({ "name": "bob", "grants": ["viewer@*"] })
        )
        .await
        .status,
        201
    );
    for body in [
        json!({ "user": "bob", "label": "ci" }),
        json!({ "label": "mine" }),
    ] {
        let a = r.post("/api/v1/tokens", &body).await;
        assert_eq!(a.status, 201);
        secrets.push(a.body["token"].as_str().unwrap().to_owned());
    }
    let a = v.post("/api/v1/tokens", &json!({ "label": "val's" })).await;
    secrets.push(a.body["token"].as_str().unwrap().to_owned());
    // Denied attempts, recorded on their own.
    assert_eq!(
        v.post(
            "/api/v1/users",
            &json!({ "name": "eve", "grants": ["admin@*"] })
        )
        .await
        .status,
        403
    );
    assert_eq!(
        v.post(
            "/api/v1/tokens",
            &json!({ "user": "root", "label": "steal" })
        )
        .await
        .status,
        403
    );
    assert_eq!(v.delete("/api/v1/users/root").await.status, 403);
    // Over the outside listener: an admin, refused by network.
    assert_eq!(
        h.outside_as(Some(&root.token))
            .delete("/api/v1/users/bob")
            .await
            .status,
        403
    );
    // Failures of allowed attempts: recorded as errors.
    assert_eq!(
        r.post("/api/v1/users", &json!({ "name": "bob" }))
            .await
            .status,
        409
    );
    // Reads and unauthenticated requests: not recorded.
    assert_eq!(r.get("/api/v1/users").await.status, 200);
    assert_eq!(
        h.inside_as(None)
            .post("/api/v1/users", &json!({ "name": "x" }))
            .await
            .status,
        401
    );

    let listed = v.get("/api/v1/audit?limit=100").await;
    assert_eq!(listed.status, 200);
    let mut seen: Vec<(String, String, String, String, String)> = listed.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] != "system")
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap().to_owned();
            (
                s("actor"),
                s("role"),
                s("action"),
                s("target"),
                s("outcome"),
            )
        })
        .collect();
    seen.reverse();
    let row = |a: &str, r: &str, act: &str, t: &str, o: &str| {
        (
            a.to_owned(),
            r.to_owned(),
            act.to_owned(),
            t.to_owned(),
            o.to_owned(),
        )
    };
    assert_eq!(
        seen,
        [
            row("root", "admin", "user.add", "bob", "ok"),
            row("root", "admin", "token.create", "bob", "ok"),
            row("root", "admin", "token.create", "root", "ok"),
            row("val", "viewer", "token.create", "val", "ok"),
            row("val", "viewer", "user.add", "eve", "denied"),
            row("val", "viewer", "token.create", "root", "denied"),
            row("val", "viewer", "user.remove", "root", "denied"),
            row("root", "admin", "user.remove", "bob", "denied"),
            row("root", "admin", "user.add", "bob", "error: already_exists"),
        ]
    );
    let entries = h.store.audit_list(&AuditFilter::default()).await.unwrap();
    let denied = entries.iter().find(|e| e.target == "eve").unwrap();
    assert_eq!(denied.source, "127.0.0.1");
    assert_eq!(
        denied.params_json().unwrap(),
        json!({ "grants": ["admin@*"], "denied": { "needed": "admin@*", "reason": "forbidden" } })
    );
    let by_network = entries
        .iter()
        .find(|e| e.target == "bob" && e.outcome == "denied")
        .unwrap();
    assert_eq!(
        by_network.params_json().unwrap()["denied"]["reason"],
        "network_denied"
    );

    // Filters.
    let only = v
        .get("/api/v1/audit?actor=val&action=token.&limit=10")
        .await;
    assert_eq!(only.body["entries"].as_array().unwrap().len(), 2);
    let future = v.get("/api/v1/audit?since=99999999999999").await;
    assert_eq!(future.body["entries"], json!([]));
    for (q, field) in [
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("since=yesterday", "since"),
        ("who=me", "who"),
    ] {
        let a = v.get(&format!("/api/v1/audit?{q}")).await;
        assert_eq!((a.status, a.field()), (400, Some(field)), "{q}");
    }

    // No token secret anywhere in the audit table (nor, on SQLite, in the files).
    let raw = h.raw_audit_dump().await;
    assert!(raw.contains("token.create"));
    for secret in &secrets {
        let secret_part = secret.rsplit('_').next().unwrap();
        assert_eq!(secret_part.len(), 64);
        assert!(
            !raw.contains(secret_part),
            "a token secret is in the audit table"
        );
    }

    // Verification: valid, then broken by an edit, reported as 200 with the first bad entry.
    let ok = v.get("/api/v1/audit/verify").await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body["valid"], true);
    assert_eq!(ok.body["first_bad"], Value::Null);
    assert!(ok.body["entries_checked"].as_u64().unwrap() >= 9);
    h.exec("UPDATE audit_log SET actor = 'mallory' WHERE seq = 3")
        .await;
    let broken = v.get("/api/v1/audit/verify").await;
    assert_eq!(broken.status, 200);
    assert_eq!(broken.body["valid"], false);
    assert_eq!(broken.body["first_bad"]["seq"], 3);
    assert_eq!(broken.body["first_bad"]["reason"], "altered");
    // Pruning a broken chain is refused (it would sign the tampering away).
    let prune = r
        .post("/api/v1/audit/prune", &json!({ "older_than_days": 1 }))
        .await;
    assert_eq!((prune.status, prune.code()), (409, "audit_chain_broken"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_and_reload() {
    let h = Harness::new(Backend::Sqlite, 10).await;
    let root = h.admin().await;
    let r = h.inside_as(Some(&root.token));

    let pruned = r
        .post("/api/v1/audit/prune", &json!({ "older_than_days": 30 }))
        .await;
    assert_eq!(
        (pruned.status, &pruned.body),
        (200, &json!({ "removed": 0 }))
    );
    let zero = r
        .post("/api/v1/audit/prune", &json!({ "older_than_days": 0 }))
        .await;
    assert_eq!((zero.status, zero.field()), (400, Some("older_than_days")));
    let no_body = r.post_empty("/api/v1/audit/prune").await;
    assert_eq!((no_body.status, no_body.field()), (400, Some("body")));

    *h.control.next.lock().unwrap() = Some(Ok(vec!["route x: no health check".into()]));
    let applied = r.post_empty("/api/v1/reload").await;
    assert_eq!(
        (applied.status, &applied.body),
        (200, &json!({ "warnings": ["route x: no health check"] }))
    );
    let diagnostics = "berth.toml:3:7: routes[0].host: expected a string";
    *h.control.next.lock().unwrap() = Some(Err(diagnostics.into()));
    let refused = r.post_empty("/api/v1/reload").await;
    assert_eq!(refused.status, 422);
    assert_eq!(
        refused.body,
        json!({ "code": "invalid_config", "message": diagnostics })
    );
    assert_eq!(*h.control.calls.lock().unwrap(), 2);

    let log = h
        .store
        .audit_list(&AuditFilter {
            action_prefix: Some("config.".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let outcomes: Vec<&str> = log.iter().rev().map(|e| e.outcome.as_str()).collect();
    assert_eq!(outcomes, ["ok", "error: invalid_config"]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_per_environment() {
    let h = Harness::new(Backend::Sqlite, 10).await;
    let dep = h
        .person("dora", &["deployer@staging", "viewer@production"])
        .await;
    let root = h.admin().await;
    let d = h.inside_as(Some(&dep.token));
    let r = h.inside_as(Some(&root.token));

    let made = d
        .post("/api/v1/envs/staging/apps", &json!({ "name": "shop" }))
        .await;
    assert_eq!(made.status, 201);
    assert_eq!(made.body["environment"], "staging");
    assert_eq!(made.body["name"], "shop");
    assert_eq!(
        keys(&made.body),
        ["created", "environment", "id", "name", "spec", "updated"]
    );
    assert_eq!(made.body["spec"], json!({}));
    assert!(made.body["created"].is_i64() && made.body["created"] == made.body["updated"]);
    let dup = d
        .post("/api/v1/envs/staging/apps", &json!({ "name": "shop" }))
        .await;
    assert_eq!((dup.status, dup.code()), (409, "already_exists"));
    let bad = d
        .post("/api/v1/envs/staging/apps", &json!({ "name": "no way" }))
        .await;
    assert_eq!((bad.status, bad.field()), (400, Some("name")));
    let star = r.get("/api/v1/envs/*/apps").await;
    assert_eq!((star.status, star.field()), (400, Some("env")));
    let listed = d.get("/api/v1/envs/staging/apps").await;
    assert_eq!(listed.body["apps"][0]["name"], "shop");
    assert_eq!(
        d.get("/api/v1/envs/production/apps").await.body,
        json!({ "apps": [] })
    );
    // Deployer creates, only admin removes.
    let no = d.delete("/api/v1/envs/staging/apps/shop").await;
    assert_eq!((no.status, no.code()), (403, "forbidden"));
    assert_eq!(r.delete("/api/v1/envs/staging/apps/shop").await.status, 204);
    let gone = r.delete("/api/v1/envs/staging/apps/shop").await;
    assert_eq!((gone.status, gone.code()), (404, "not_found"));
    let targets: BTreeSet<String> = h
        .store
        .audit_list(&AuditFilter {
            action_prefix: Some("app.".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|e| format!("{} {} {}", e.action, e.target, e.outcome))
        .collect();
    assert!(
        targets.contains("app.create shop/staging ok"),
        "{targets:?}"
    );
    assert!(
        targets.contains("app.remove shop/staging denied"),
        "{targets:?}"
    );
    assert!(
        targets.contains("app.remove shop/staging ok"),
        "{targets:?}"
    );
    h.stop().await;
}

/// docs/api.md: token, then route, then body and query, then role and network, then the
/// action. The deploy listings check the role before their query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_run_in_the_documented_order() {
    let h = Harness::new(Backend::Sqlite, 10).await;
    let viewer = h.person("val", &["viewer@staging"]).await;
    let v = h.inside_as(Some(&viewer.token));

    // Token before route.
    let anon = h.inside_as(None).post("/api/v1/nope", &json!(7)).await;
    assert_eq!(anon.code(), "missing_token");
    // Route before body.
    let nowhere = v.post("/api/v1/nope", &json!(7)).await;
    assert_eq!(nowhere.code(), "unknown_endpoint");
    // Body and query before role: the same requests, well-formed, are refused.
    let body = v.post("/api/v1/users", &json!({ "name": 7 })).await;
    assert_eq!((body.status, body.code()), (400, "bad_request"));
    let query = v.get("/api/v1/audit?who=me").await;
    assert_eq!((query.status, query.code()), (400, "bad_request"));
    let add = v.post("/api/v1/users", &json!({ "name": "eve" })).await;
    assert_eq!((add.status, add.code()), (403, "forbidden"));
    assert_eq!(v.get("/api/v1/audit").await.code(), "forbidden");
    // Role before the action: an unknown user is not revealed to someone who may not act.
    assert_eq!(v.delete("/api/v1/users/nobody").await.code(), "forbidden");
    // The deploy listings: role first, then the query.
    let elsewhere = v
        .get("/api/v1/envs/production/apps/shop/deploys?limit=0")
        .await;
    assert_eq!(elsewhere.code(), "forbidden");
    let here = v
        .get("/api/v1/envs/staging/apps/shop/deploys?limit=0")
        .await;
    assert_eq!((here.status, here.field()), (400, Some("limit")));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_with_stable_codes() {
    let h = Harness::new(Backend::Sqlite, 1000).await;
    let root = h.admin().await;
    let (c, base) = (&h.client, &h.inside.base);
    let r = h.inside_as(Some(&root.token));

    let missing = h.inside_as(None).get("/api/v1/users").await;
    assert_eq!((missing.status, missing.code()), (401, "missing_token"));
    assert!(
        missing.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert_eq!(missing.headers["content-type"], "application/json");
    assert!(missing.body["message"].is_string());
    for bad in [
        "nonsense",
        "berth_000000000000_00",
        &root.token[..root.token.len() - 1],
    ] {
        let a = h.inside_as(Some(bad)).get("/api/v1/whoami").await;
        assert_eq!((a.status, a.code()), (401, "invalid_token"), "{bad}");
    }
    let basic = c
        .get(format!("{base}/api/v1/whoami"))
        .header("authorization", format!("Basic {}", root.token))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
    // Unknown paths under /api/v1 need a token too, then say what is wrong.
    assert_eq!(h.inside_as(None).get("/api/v1/nope").await.status, 401);
    assert_eq!(h.inside_as(None).get("/api/v1").await.status, 401);
    let nope = r.get("/api/v1/nope/x").await;
    assert_eq!((nope.status, nope.code()), (404, "unknown_endpoint"));
    assert!(
        nope.body["message"]
            .as_str()
            .unwrap()
            .contains("/api/v1/nope/x")
    );
    // Outside /api/v1 the router has nothing (the binary serves its health checks there).
    let elsewhere = c.get(format!("{base}/elsewhere")).send().await.unwrap();
    assert_eq!(elsewhere.status(), 404);
    assert_eq!(
        h.inside_as(None)
            .send(Method::PUT, "/api/v1/users", None)
            .await
            .status,
        401
    );
    let put = r.send(Method::PUT, "/api/v1/users", None).await;
    assert_eq!((put.status, put.code()), (405, "method_not_allowed"));
    let big = json!({ "name": "x".repeat(100_000) });
    let too_large = r.post("/api/v1/users", &big).await;
    assert_eq!((too_large.status, too_large.code()), (413, "too_large"));
    let garbage = c
        .post(format!("{base}/api/v1/users"))
        .bearer_auth(&root.token)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);
    let body: Value = garbage.json().await.unwrap();
    assert_eq!(body["field"], "body");

    // Wrong types, unknown fields and invalid names: 400 naming the problem, nothing
    // changed, and every attempt on record.
    for bad in [
        json!({ "name": 5, "grants": ["viewer"] }),
        json!({ "name": "eve", "grants": ["viewer"], "superuser": true }),
        json!({ "name": "../eve", "grants": ["viewer"] }),
        json!({ "name": "eve", "grants": ["wizard@prod"] }),
    ] {
        let a = r.post("/api/v1/users", &bad).await;
        assert_eq!((a.status, a.code()), (400, "bad_request"), "{bad}");
        assert!(
            a.body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{bad}"
        );
    }
    let users = h.store.list_users().await.unwrap();
    assert!(
        users
            .iter()
            .all(|u| u.name != "eve" && u.name != "x".repeat(100_000))
    );
    let refused: Vec<String> = h
        .store
        .audit_list(&AuditFilter::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| {
            e.outcome.starts_with("rejected:") || e.outcome.starts_with("error: bad_request")
        })
        .map(|e| format!("{} {}", e.target, e.outcome))
        .collect();
    // 413 + malformed JSON + the four above, each recorded exactly once.
    assert_eq!(refused.len(), 6, "{refused:?}");
    assert!(
        refused.iter().any(|r| r.ends_with("rejected: too_large")),
        "{refused:?}"
    );
    h.stop().await;
}

/// The issue's endpoints, all served and all documented; nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_every_route() {
    let h = Harness::new(Backend::Sqlite, 1000).await;
    let root = h.admin().await;
    let r = h.inside_as(Some(&root.token));

    let doc = r.get("/api/v1/openapi.json").await;
    assert_eq!(doc.status, 200);
    assert_eq!(doc.body, berth_api::openapi());
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = BTreeSet::new();
    for (path, item) in doc.body["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    let issue: BTreeSet<String> = [
        "GET /api/v1/whoami",
        "GET /api/v1/openapi.json",
        "GET /api/v1/users",
        "POST /api/v1/users",
        "DELETE /api/v1/users/{name}",
        "GET /api/v1/tokens",
        "POST /api/v1/tokens",
        "DELETE /api/v1/tokens/{id}",
        "GET /api/v1/audit",
        "GET /api/v1/audit/verify",
        "POST /api/v1/audit/prune",
        "POST /api/v1/reload",
        "GET /api/v1/metrics",
        "GET /api/v1/envs/{env}/apps",
        "POST /api/v1/envs/{env}/apps",
        "DELETE /api/v1/envs/{env}/apps/{name}",
        "POST /api/v1/envs/{env}/apps/{name}/deploys",
        "GET /api/v1/envs/{env}/apps/{name}/deploys",
        "GET /api/v1/envs/{env}/apps/{name}/deploys/{id}/events",
        "GET /api/v1/envs/{env}/apps/{name}/deploys/events",
        "GET /api/v1/envs/{env}/apps/{name}/ps",
        "GET /api/v1/envs/{env}/apps/{name}/releases",
        "GET /api/v1/envs/{env}/apps/{name}/logs",
        "POST /api/v1/envs/{env}/apps/{name}/rollback",
        "POST /api/v1/envs/{env}/apps/{name}/rollout/{action}",
        "POST /api/v1/envs/{env}/apps/{name}/restart",
        "POST /api/v1/envs/{env}/apps/{name}/promote",
        "GET /api/v1/envs/{env}/apps/{name}/config",
        "GET /api/v1/envs/{env}/apps/{name}/secrets",
        "POST /api/v1/envs/{env}/apps/{name}/secrets",
        "PUT /api/v1/envs/{env}/apps/{name}/secrets/{key}",
        "DELETE /api/v1/envs/{env}/apps/{name}/secrets/{key}",
        "POST /api/v1/envs/{env}/apps/{name}/secrets/{key}/reveal",
        "POST /api/v1/secrets/rotate-key",
        "GET /api/v1/envs/{env}/apps/{name}/lock",
        "PUT /api/v1/envs/{env}/apps/{name}/lock",
        "DELETE /api/v1/envs/{env}/apps/{name}/lock",
        "POST /api/v1/envs/{env}/apps/{name}/approve",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(documented, issue);

    // Every documented operation is served: the router answers it with something other
    // than "no such endpoint" or "method not allowed".
    for op in &documented {
        let (method, path) = op.split_once(' ').unwrap();
        let path = path
            .replace("{name}", "nobody")
            .replace("{id}", "999999")
            .replace("{action}", "promote")
            .replace("{key}", "SOME_KEY")
            .replace("{env}", "staging");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let body = (method == Method::POST).then(|| json!({}));
        let a = r.send(method, &path, body.as_ref()).await;
        assert!(
            a.code() != "unknown_endpoint" && a.code() != "method_not_allowed",
            "{op} is documented but not served: {} {}",
            a.status,
            a.body
        );
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failures_are_throttled_per_address_and_counted() {
    let h = Harness::new(Backend::Sqlite, 10).await;
    let root = h.admin().await;
    let bad = format!("berth_{}_{}", "1".repeat(12), "2".repeat(64));
    let guesser = h.inside_as(Some(&bad));

    assert_eq!(h.inside_as(None).get("/api/v1/whoami").await.status, 401);
    for _ in 0..9 {
        assert_eq!(guesser.get("/api/v1/whoami").await.status, 401);
    }
    // Ten failures from 127.0.0.1: the eleventh request is refused, and so is a good token
    // from the same address, until the window has passed.
    let throttled = guesser.get("/api/v1/whoami").await;
    assert_eq!((throttled.status, throttled.code()), (429, "throttled"));
    let retry: u64 = throttled.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let good = h.inside_as(Some(&root.token)).get("/api/v1/whoami").await;
    assert_eq!((good.status, good.code()), (429, "throttled"));

    let text = h.metrics_text();
    assert_eq!(auth_failures(&text, "missing"), 1);
    assert_eq!(auth_failures(&text, "invalid"), 9);
    assert_eq!(auth_failures(&text, "throttled"), 2);

    // The limiter is per server (per router): the other listener is not affected.
    assert_eq!(
        h.outside_as(Some(&root.token))
            .get("/api/v1/whoami")
            .await
            .status,
        200
    );

    // Another address is not throttled (the same router, requests with another source).
    let app = router(h.state(policy(&[], 2)));
    let from = |ip: &str, token: &str| {
        let mut req = axum::http::Request::get("/api/v1/whoami")
            .header("authorization", format!("Bearer {token}"))
            .body(axum::body::Body::empty())
            .unwrap();
        req.extensions_mut()
            .insert(ClientSource::Ip(ip.parse().unwrap()));
        req
    };
    for _ in 0..2 {
        let resp = app.clone().oneshot(from("192.0.2.1", &bad)).await.unwrap();
        assert_eq!(resp.status(), 401);
    }
    assert_eq!(
        app.clone()
            .oneshot(from("192.0.2.1", &root.token))
            .await
            .unwrap()
            .status(),
        429
    );
    assert_eq!(
        app.clone()
            .oneshot(from("192.0.2.2", &root.token))
            .await
            .unwrap()
            .status(),
        200
    );
    // The Unix socket is never throttled.
    let mut unix = from("192.0.2.1", &root.token);
    unix.extensions_mut().insert(ClientSource::Unix);
    assert_eq!(app.clone().oneshot(unix).await.unwrap().status(), 200);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_source_is_refused() {
    let h = Harness::new(Backend::Sqlite, 10).await;
    let root = h.admin().await;
    let app = router(h.state(policy(&[], 10)));
    let req = axum::http::Request::get("/api/v1/whoami")
        .header("authorization", format!("Bearer {}", root.token))
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = app.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 500);
    h.stop().await;
}

/// How the binary composes it: merged beside routes of its own (health checks, open) and
/// its own fallback; the API's paths keep their token check and JSON answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merges_beside_the_binarys_own_routes() {
    use axum::routing::get;
    let h = Harness::new(Backend::Sqlite, 10).await;
    let root = h.admin().await;
    let send = |app: axum::Router, path: &str, token: Option<&str>| {
        let mut req = axum::http::Request::get(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let mut req = req.body(axum::body::Body::empty()).unwrap();
        req.extensions_mut()
            .insert(ClientSource::Ip("127.0.0.1".parse().unwrap()));
        async move { app.oneshot(req).await.unwrap().status().as_u16() }
    };
    let theirs = || async { (axum::http::StatusCode::IM_A_TEAPOT, "theirs") };
    // Their fallback set after the merge, and before it: neither panics.
    let after = axum::Router::new()
        .route("/health", get(|| async { "ok" }))
        .merge(router(h.state(policy(&[], 10))))
        .fallback(theirs);
    let before = axum::Router::new()
        .route("/health", get(|| async { "ok" }))
        .fallback(theirs)
        .merge(router(h.state(policy(&[], 10))));
    for app in [after, before] {
        assert_eq!(send(app.clone(), "/health", None).await, 200);
        assert_eq!(send(app.clone(), "/elsewhere", None).await, 418);
        assert_eq!(send(app.clone(), "/api/v1/nope", None).await, 401);
        assert_eq!(
            send(app.clone(), "/api/v1/nope", Some(&root.token)).await,
            404
        );
        assert_eq!(
            send(app.clone(), "/api/v1/whoami", Some(&root.token)).await,
            200
        );
    }
    h.stop().await;
}
