//! Users, grants and API tokens, on SQLite and PostgreSQL.

#[macro_use]
mod support;

use berth_store::{Actor, Grant, Role, StoreError};
use support::{TestDb, admin, user_names};

both!(
    users_create_list_remove,
    user_input_is_checked,
    last_admin_cannot_be_removed,
    tokens_are_shown_once_and_hashed_at_rest,
    authenticate_and_revoke,
    a_token_carries_all_its_users_grants,
    removing_a_user_revokes_all_its_tokens,
    bootstrap_happens_once,
);

async fn users_create_list_remove(db: TestDb) {
    let s = &db.store;
    assert!(s.list_users().await.unwrap().is_empty());
    let alice = s
        .add_user(
            &admin(),
            "alice",
            &[
                Grant::new(Role::Deployer, "production"),
                Grant::new(Role::Viewer, "*"),
                Grant::new(Role::Deployer, "production"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(alice.name, "alice");
    // Duplicates are folded; grants come back sorted (weakest role first).
    assert_eq!(
        alice.grants,
        vec![
            Grant::new(Role::Viewer, "*"),
            Grant::new(Role::Deployer, "production")
        ]
    );
    s.add_user(&admin(), "bob", &[Grant::everywhere(Role::Admin)])
        .await
        .unwrap();

    let users = s.list_users().await.unwrap();
    let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["alice", "bob"]);
    assert_eq!(users[0], alice);
    assert!(users[0].can(Role::Deployer, "production"));
    assert!(users[0].can(Role::Viewer, "staging"));
    assert!(!users[0].can(Role::Deployer, "staging"));
    assert!(!users[0].can(Role::Admin, "*"));
    assert!(users[1].can(Role::Admin, "*"));
    assert_eq!(s.get_user("alice").await.unwrap(), Some(alice.clone()));

    s.remove_user(&admin(), "alice").await.unwrap();
    assert_eq!(user_names(s).await, ["bob"]);
    assert_eq!(s.get_user("alice").await.unwrap(), None);
    // The name can be given out again, to a new user.
    let again = s.add_user(&admin(), "alice", &[]).await.unwrap();
    assert_ne!(again.id, alice.id);
    assert!(again.grants.is_empty());
}

async fn user_input_is_checked(db: TestDb) {
    let s = &db.store;
    s.add_user(&admin(), "alice", &[]).await.unwrap();
    assert!(matches!(
        s.add_user(&admin(), "alice", &[]).await,
        Err(StoreError::AlreadyExists { kind: "user", .. })
    ));
    for bad in ["", "-x", "a b", "a\u{7}", "名前"] {
        assert!(
            matches!(
                s.add_user(&admin(), bad, &[]).await,
                Err(StoreError::Invalid { .. })
            ),
            "{bad:?} accepted"
        );
    }
    assert!(matches!(
        s.add_user(&admin(), "carol", &[Grant::new(Role::Admin, "prod uction")])
            .await,
        Err(StoreError::Invalid { .. })
    ));
    assert!(matches!(
        s.remove_user(&admin(), "nobody").await,
        Err(StoreError::NotFound { kind: "user", .. })
    ));
    assert!(matches!(
        s.create_token(&admin(), "nobody", "x").await,
        Err(StoreError::NotFound { kind: "user", .. })
    ));
    assert!(matches!(
        s.create_token(&admin(), "alice", "line\nbreak").await,
        Err(StoreError::Invalid { .. })
    ));
    assert!(matches!(
        s.revoke_token(&admin(), 9999).await,
        Err(StoreError::NotFound { kind: "token", .. })
    ));
}

async fn last_admin_cannot_be_removed(db: TestDb) {
    let s = &db.store;
    s.add_user(&admin(), "root", &[Grant::everywhere(Role::Admin)])
        .await
        .unwrap();
    // An admin on one environment only does not count.
    s.add_user(&admin(), "ops", &[Grant::new(Role::Admin, "production")])
        .await
        .unwrap();
    assert!(matches!(
        s.remove_user(&admin(), "root").await,
        Err(StoreError::LastAdmin { .. })
    ));
    s.add_user(&admin(), "root2", &[Grant::everywhere(Role::Admin)])
        .await
        .unwrap();
    s.remove_user(&admin(), "root").await.unwrap();
    s.remove_user(&admin(), "ops").await.unwrap();
}

async fn tokens_are_shown_once_and_hashed_at_rest(db: TestDb) {
    let s = &db.store;
    s.add_user(&admin(), "alice", &[Grant::everywhere(Role::Viewer)])
        .await
        .unwrap();
    let (info, secret) = s.create_token(&admin(), "alice", "laptop").await.unwrap();
    assert!(
        secret.starts_with(&info.prefix),
        "{secret} / {}",
        info.prefix
    );
    assert!(secret.len() > info.prefix.len() + 60);
    assert_eq!(info.user, "alice");
    assert_eq!(info.label, "laptop");
    assert_eq!(info.revoked, None);
    let (_, other) = s.create_token(&admin(), "alice", "ci").await.unwrap();
    assert_ne!(secret, other);

    // Listings never carry the secret: the type has no field for it, and its JSON form
    // holds only the public prefix.
    let listed = s.list_tokens(Some("alice")).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0], info);
    let json = serde_json::to_string(&listed).unwrap();
    let secret_part = &secret[info.prefix.len() + 1..];
    assert!(!json.contains(secret_part));

    // Nothing at rest holds it either: not the token rows, not the audit log, not the
    // bytes of the SQLite files.
    let raw = db.raw_dump().await;
    assert!(
        raw.contains(&info.prefix[6..]),
        "the dump should show the public id"
    );
    assert!(!raw.contains(secret_part), "the secret is stored in clear");
    assert!(!raw.contains(&secret));
    let hashes = db.texts("SELECT hash FROM tokens ORDER BY id").await;
    assert_eq!(hashes.len(), 2);
    assert!(
        hashes
            .iter()
            .all(|h| h.len() == 64 && !secret.contains(h.as_str()))
    );
}

async fn authenticate_and_revoke(db: TestDb) {
    let s = &db.store;
    s.add_user(&admin(), "alice", &[Grant::new(Role::Deployer, "staging")])
        .await
        .unwrap();
    let (info, secret) = s.create_token(&admin(), "alice", "").await.unwrap();
    assert_eq!(info.last_used, None);

    let (user, tok) = s.authenticate(&secret).await.unwrap().expect("valid token");
    assert_eq!(user.name, "alice");
    assert!(user.can(Role::Deployer, "staging"));
    assert_eq!(tok.id, info.id);
    assert!(tok.last_used.is_some());
    let listed = s.list_tokens(None).await.unwrap();
    assert!(listed[0].last_used.is_some(), "last_used is recorded");

    // last_used is refreshed at most once a minute: a use 30 s after the last one writes
    // nothing, one 61 s after it does.
    let last_used = format!("SELECT last_used_ms FROM tokens WHERE id = {}", info.id);
    let recent = db.int(&last_used).await - 30_000;
    db.exec(&format!(
        "UPDATE tokens SET last_used_ms = {recent} WHERE id = {}",
        info.id
    ))
    .await;
    let (_, tok) = s.authenticate(&secret).await.unwrap().expect("valid token");
    assert_eq!(db.int(&last_used).await, recent);
    assert_eq!(
        tok.last_used,
        s.get_token(info.id).await.unwrap().unwrap().last_used
    );
    let stale = recent - 31_000;
    db.exec(&format!(
        "UPDATE tokens SET last_used_ms = {stale} WHERE id = {}",
        info.id
    ))
    .await;
    s.authenticate(&secret).await.unwrap().expect("valid token");
    assert!(db.int(&last_used).await >= recent + 30_000);

    // Wrong secret with the right public id, garbage, and near misses: all refused.
    let mut wrong = secret.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == '0' { '1' } else { '0' });
    for bad in [
        wrong.as_str(),
        "",
        "berth_",
        "Bearer x",
        &secret[..secret.len() - 1],
    ] {
        assert_eq!(s.authenticate(bad).await.unwrap(), None, "{bad:?} accepted");
    }

    s.revoke_token(&admin(), info.id).await.unwrap();
    assert_eq!(s.authenticate(&secret).await.unwrap(), None);
    let listed = s.list_tokens(Some("alice")).await.unwrap();
    assert!(listed[0].revoked.is_some());
    // One token by id reads as it is listed, revoked ones included.
    assert_eq!(
        s.get_token(info.id).await.unwrap().as_ref(),
        Some(&listed[0])
    );
    assert_eq!(s.get_token(info.id + 1000).await.unwrap(), None);
    // Revoking again is harmless.
    s.revoke_token(&admin(), info.id).await.unwrap();
}

// authenticate reads the grants in the token's query: one row per grant, or one of NULLs.
async fn a_token_carries_all_its_users_grants(db: TestDb) {
    let s = &db.store;
    let grants = [
        Grant::new(Role::Viewer, "production"),
        Grant::new(Role::Deployer, "staging"),
        Grant::everywhere(Role::Viewer),
    ];
    s.add_user(&admin(), "carol", &grants).await.unwrap();
    s.add_user(&admin(), "dave", &[]).await.unwrap();
    for name in ["carol", "dave"] {
        let (_, secret) = s.create_token(&admin(), name, "").await.unwrap();
        let (user, _) = s.authenticate(&secret).await.unwrap().expect("valid token");
        let stored = s.get_user(name).await.unwrap().expect("the user");
        assert_eq!(user.grants, stored.grants, "{name}");
        assert_eq!(user.grants.len(), if name == "carol" { 3 } else { 0 });
    }
}

async fn removing_a_user_revokes_all_its_tokens(db: TestDb) {
    let s = &db.store;
    s.add_user(&admin(), "alice", &[Grant::everywhere(Role::Viewer)])
        .await
        .unwrap();
    s.add_user(&admin(), "bob", &[Grant::everywhere(Role::Viewer)])
        .await
        .unwrap();
    let mut alice_tokens = Vec::new();
    for label in ["a", "b", "c"] {
        alice_tokens.push(s.create_token(&admin(), "alice", label).await.unwrap().1);
    }
    let (_, bob_token) = s.create_token(&admin(), "bob", "b").await.unwrap();
    for t in &alice_tokens {
        assert!(s.authenticate(t).await.unwrap().is_some());
    }

    s.remove_user(&admin(), "alice").await.unwrap();
    for t in &alice_tokens {
        assert_eq!(s.authenticate(t).await.unwrap(), None);
    }
    let listed = s.list_tokens(Some("alice")).await.unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|t| t.revoked.is_some()));
    assert!(s.authenticate(&bob_token).await.unwrap().is_some());
    // A new user of the same name does not inherit the old tokens.
    s.add_user(&admin(), "alice", &[]).await.unwrap();
    assert_eq!(s.authenticate(&alice_tokens[0]).await.unwrap(), None);

    let removal = s
        .audit_list(&berth_store::AuditFilter {
            action_prefix: Some("user.remove".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(removal.len(), 1);
    assert_eq!(removal[0].params_json().unwrap()["tokens_revoked"], 3);
}

async fn bootstrap_happens_once(db: TestDb) {
    let s = &db.store;
    let secret = s
        .bootstrap_admin()
        .await
        .unwrap()
        .expect("first start bootstraps");
    let (user, _) = s
        .authenticate(&secret)
        .await
        .unwrap()
        .expect("bootstrap token works");
    assert_eq!(user.name, "admin");
    assert_eq!(user.grants, vec![Grant::everywhere(Role::Admin)]);
    assert_eq!(s.bootstrap_admin().await.unwrap(), None);
    // A restart (a new handle on the same database) does not bootstrap again either.
    assert_eq!(db.reopen().await.bootstrap_admin().await.unwrap(), None);
    assert_eq!(s.list_users().await.unwrap().len(), 1);

    let log = s.audit_list(&Default::default()).await.unwrap();
    let actions: Vec<(&str, &str)> = log
        .iter()
        .rev()
        .map(|e| (e.actor.as_str(), e.action.as_str()))
        .collect();
    assert_eq!(
        actions,
        [("system", "user.add"), ("system", "token.create")]
    );
    assert_eq!(log[0].role, Actor::system().role);
}
