//! The audit log: same-transaction appends, the hash chain, tamper detection, retention
//! with checkpoints, concurrent appends; on SQLite and PostgreSQL.

#[macro_use]
mod support;

use std::time::{Duration, SystemTime};

use berth_store::{
    Actor, AuditEntry, AuditFilter, BadEntry, Defect, Grant, NewAuditEntry, Role, StoreError,
};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use support::{KEY, TestDb, admin};

both!(
    changes_are_audited_with_who_where_and_what,
    audit_list_filters,
    failed_change_leaves_no_audit_entry,
    untouched_log_verifies,
    edited_entry_is_named,
    deleted_entry_is_named,
    forged_entries_are_named,
    reordered_entries_are_named,
    cut_off_tail_is_named,
    prune_writes_a_checkpoint_that_verifies,
    forged_checkpoint_fails,
    prune_refuses_a_tampered_chain,
    prune_cuts_only_a_prefix,
    concurrent_appends_keep_one_chain,
);

/// Appends `n` entries `test.1` … `test.n` on their own.
async fn seed(db: &TestDb, n: usize) {
    for i in 1..=n {
        db.store
            .audit_record(NewAuditEntry::new(
                &admin(),
                format!("test.{i}"),
                format!("thing{i}"),
                json!({ "i": i }),
            ))
            .await
            .unwrap();
    }
}

/// Appends `before` entries, then `after` more: the time returned lies between the two.
async fn seed_around_cutoff(db: &TestDb, before: usize, after: usize) -> SystemTime {
    seed(db, before).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cutoff = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    seed(db, after).await;
    cutoff
}

async fn all(db: &TestDb) -> Vec<AuditEntry> {
    let mut v = db.store.audit_list(&AuditFilter::default()).await.unwrap();
    v.reverse();
    v
}

async fn first_bad(db: &TestDb) -> Option<BadEntry> {
    db.store.audit_verify(KEY).await.unwrap().first_bad
}

fn bad(seq: i64, reason: Defect) -> Option<BadEntry> {
    Some(BadEntry { seq, reason })
}

/// A row that hashes correctly for its fields, as a forger who knows the format makes it.
fn forged(seq: i64, prev_hash: &str) -> AuditEntry {
    let mut e = AuditEntry {
        seq,
        time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000),
        actor: "mallory".into(),
        role: "admin".into(),
        source: "203.0.113.9".into(),
        action: "user.add".into(),
        target: "mallory".into(),
        params: "{}".into(),
        outcome: "ok".into(),
        prev_hash: prev_hash.into(),
        hash: String::new(),
    };
    e.hash = e.compute_hash();
    e
}

fn insert_sql(e: &AuditEntry) -> String {
    format!(
        "INSERT INTO audit_log (seq, time_ms, actor, role, source, action, target, params, \
         outcome, prev_hash, hash) VALUES ({}, 1700000000000, '{}', '{}', '{}', '{}', '{}', \
         '{}', '{}', '{}', '{}')",
        e.seq,
        e.actor,
        e.role,
        e.source,
        e.action,
        e.target,
        e.params,
        e.outcome,
        e.prev_hash,
        e.hash
    )
}

async fn changes_are_audited_with_who_where_and_what(db: TestDb) {
    let s = &db.store;
    let alice = Actor::new("alice", "admin", "198.51.100.7");
    s.add_user(&alice, "bob", &[Grant::new(Role::Deployer, "production")])
        .await
        .unwrap();
    let (tok, secret) = s.create_token(&alice, "bob", "ci").await.unwrap();
    s.revoke_token(&alice, tok.id).await.unwrap();
    s.remove_user(&alice, "bob").await.unwrap();
    // Other subsystems append in their own transactions through Tx::audit.
    let mut tx = s.transaction().await.unwrap();
    let stored = tx
        .audit(NewAuditEntry::new(
            &alice,
            "app.create",
            "shop/production",
            json!({ "image": "shop:1", "env": { "DATABASE_PASSWORD": "hunter2" } }),
        ))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(stored.seq, 5);
    // Refused requests are recorded on their own, with their outcome.
    s.audit_record(
        NewAuditEntry::new(
            &Actor::new("eve", "viewer", "203.0.113.5"),
            "deploy.start",
            "shop",
            json!({}),
        )
        .with_outcome("denied"),
    )
    .await
    .unwrap();

    let log = all(&db).await;
    let summary: Vec<(i64, &str, &str, &str, &str)> = log
        .iter()
        .map(|e| {
            (
                e.seq,
                e.actor.as_str(),
                e.action.as_str(),
                e.target.as_str(),
                e.outcome.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "alice", "user.add", "bob", "ok"),
            (2, "alice", "token.create", "bob", "ok"),
            (3, "alice", "token.revoke", "bob", "ok"),
            (4, "alice", "user.remove", "bob", "ok"),
            (5, "alice", "app.create", "shop/production", "ok"),
            (6, "eve", "deploy.start", "shop", "denied"),
        ]
    );
    assert!(
        log[..5]
            .iter()
            .all(|e| e.role == "admin" && e.source == "198.51.100.7")
    );
    assert_eq!(log[5].source, "203.0.113.5");
    assert_eq!(
        log[0].params_json().unwrap(),
        json!({ "grants": ["deployer@production"] })
    );
    assert_eq!(log[1].params_json().unwrap()["token_id"], tok.id);
    assert_eq!(
        log[4].params_json().unwrap()["env"]["DATABASE_PASSWORD"],
        "[redacted]"
    );
    let dump = db.raw_dump().await;
    assert!(!dump.contains("hunter2"));
    assert!(!dump.contains(&secret[secret.len() - 64..]));
    let now = SystemTime::now();
    assert!(
        log.iter()
            .all(|e| e.time <= now && e.time > now - Duration::from_secs(60))
    );
    assert_eq!(log[0].prev_hash, berth_store::GENESIS_HASH);
    for pair in log.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
    let report = s.audit_verify(KEY).await.unwrap();
    assert!(report.is_valid(), "{report:?}");
    assert_eq!(report.entries_checked, 6);
    assert_eq!(
        (report.head_seq, report.head_hash.as_str()),
        (6, log[5].hash.as_str())
    );
}

async fn audit_list_filters(db: TestDb) {
    let s = &db.store;
    let alice = Actor::new("alice", "admin", "::1");
    let bob = Actor::new("bob", "deployer", "::1");
    s.audit_record(NewAuditEntry::new(&alice, "user.add", "x", json!({})))
        .await
        .unwrap();
    s.audit_record(NewAuditEntry::new(&bob, "deploy.start", "shop", json!({})))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let middle = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.audit_record(NewAuditEntry::new(
        &bob,
        "deploy.rollback",
        "shop",
        json!({}),
    ))
    .await
    .unwrap();
    s.audit_record(NewAuditEntry::new(&alice, "user_add_like", "y", json!({})))
        .await
        .unwrap();

    let seqs = |v: Vec<AuditEntry>| v.into_iter().map(|e| e.seq).collect::<Vec<_>>();
    let list = |f: AuditFilter| async move { seqs(s.audit_list(&f).await.unwrap()) };
    assert_eq!(
        list(AuditFilter::default()).await,
        [4, 3, 2, 1],
        "newest first"
    );
    assert_eq!(
        list(AuditFilter {
            actor: Some("bob".into()),
            ..Default::default()
        })
        .await,
        [3, 2]
    );
    assert_eq!(
        list(AuditFilter {
            action_prefix: Some("deploy.".into()),
            ..Default::default()
        })
        .await,
        [3, 2]
    );
    // A prefix is literal text: `_` and `%` are not wildcards.
    assert_eq!(
        list(AuditFilter {
            action_prefix: Some("user.".into()),
            ..Default::default()
        })
        .await,
        [1]
    );
    assert_eq!(
        list(AuditFilter {
            action_prefix: Some("user_".into()),
            ..Default::default()
        })
        .await,
        [4]
    );
    assert_eq!(
        list(AuditFilter {
            target: Some("shop".into()),
            limit: Some(1),
            ..Default::default()
        })
        .await,
        [3]
    );
    assert_eq!(
        list(AuditFilter {
            since: Some(middle),
            ..Default::default()
        })
        .await,
        [4, 3]
    );
    assert_eq!(
        list(AuditFilter {
            until: Some(middle),
            ..Default::default()
        })
        .await,
        [2, 1]
    );
    assert_eq!(
        list(AuditFilter {
            actor: Some("nobody".into()),
            ..Default::default()
        })
        .await,
        Vec::<i64>::new()
    );
}

async fn failed_change_leaves_no_audit_entry(db: TestDb) {
    let s = &db.store;
    s.add_user(&admin(), "alice", &[]).await.unwrap();
    assert_eq!(all(&db).await.len(), 1);

    // The change fails: no entry.
    assert!(matches!(
        s.add_user(&admin(), "alice", &[]).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    assert_eq!(all(&db).await.len(), 1);

    // A transaction that made a change and appended its entry, then failed on a second
    // change: dropping it takes back both the first change and its entry.
    let mut tx = s.transaction().await.unwrap();
    tx.add_user(&admin(), "bob", &[]).await.unwrap();
    assert!(tx.add_user(&admin(), "alice", &[]).await.is_err());
    drop(tx);
    assert_eq!(s.get_user("bob").await.unwrap(), None);
    assert_eq!(all(&db).await.len(), 1);

    // The chain carries on without a gap.
    s.add_user(&admin(), "bob", &[]).await.unwrap();
    let log = all(&db).await;
    assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
    assert!(s.audit_verify(KEY).await.unwrap().is_valid());
}

async fn untouched_log_verifies(db: TestDb) {
    let empty = db.store.audit_verify(KEY).await.unwrap();
    assert!(empty.is_valid(), "{empty:?}");
    assert_eq!((empty.entries_checked, empty.head_seq), (0, 0));
    seed(&db, 30).await;
    let report = db.store.audit_verify(KEY).await.unwrap();
    assert!(report.is_valid(), "{report:?}");
    assert_eq!(report.entries_checked, 30);
    assert_eq!(report.checkpoint_seq, None);
    // A restart sees the same chain.
    assert!(
        db.reopen()
            .await
            .audit_verify(KEY)
            .await
            .unwrap()
            .is_valid()
    );
}

async fn edited_entry_is_named(db: TestDb) {
    seed(&db, 8).await;
    db.exec("UPDATE audit_log SET target = 'innocent' WHERE seq = 3")
        .await;
    assert_eq!(first_bad(&db).await, bad(3, Defect::Altered));
    db.exec("UPDATE audit_log SET target = 'thing3' WHERE seq = 3")
        .await;
    assert_eq!(
        first_bad(&db).await,
        None,
        "restoring the field restores the chain"
    );

    db.exec("UPDATE audit_log SET outcome = 'denied' WHERE seq = 6")
        .await;
    assert_eq!(first_bad(&db).await, bad(6, Defect::Altered));
    db.exec("UPDATE audit_log SET outcome = 'ok' WHERE seq = 6")
        .await;

    db.exec("UPDATE audit_log SET time_ms = time_ms + 1 WHERE seq = 8")
        .await;
    assert_eq!(first_bad(&db).await, bad(8, Defect::Altered));
    db.exec("UPDATE audit_log SET time_ms = time_ms - 1 WHERE seq = 8")
        .await;

    // Editing an entry and recomputing its hash moves the break to the next link.
    let mut e = all(&db).await.remove(3);
    e.actor = "someone-else".into();
    let rehashed = e.compute_hash();
    db.exec(&format!(
        "UPDATE audit_log SET actor = 'someone-else', hash = '{rehashed}' WHERE seq = 4"
    ))
    .await;
    assert_eq!(first_bad(&db).await, bad(5, Defect::BrokenLink));
}

async fn deleted_entry_is_named(db: TestDb) {
    seed(&db, 10).await;
    assert_eq!(db.exec("DELETE FROM audit_log WHERE seq = 4").await, 1);
    assert_eq!(first_bad(&db).await, bad(4, Defect::Missing));
    let report = db.store.audit_verify(KEY).await.unwrap();
    assert_eq!(
        report.entries_checked, 3,
        "entries before the gap were good"
    );
}

async fn forged_entries_are_named(db: TestDb) {
    seed(&db, 5).await;
    let log = all(&db).await;
    // Appended behind berth's back, hashing correctly: past the recorded head.
    let f6 = forged(6, &log[4].hash);
    db.exec(&insert_sql(&f6)).await;
    assert_eq!(first_bad(&db).await, bad(6, Defect::BeyondHead));
    // With the head moved too, a row whose hash does not match its fields is named.
    db.exec(&format!(
        "UPDATE audit_log SET hash = '{}' WHERE seq = 6",
        "ab".repeat(32)
    ))
    .await;
    db.exec(&format!(
        "UPDATE audit_head SET seq = 6, hash = '{}'",
        "ab".repeat(32)
    ))
    .await;
    assert_eq!(first_bad(&db).await, bad(6, Defect::Altered));
    db.exec("DELETE FROM audit_log WHERE seq = 6").await;
    db.exec(&format!(
        "UPDATE audit_head SET seq = 5, hash = '{}'",
        log[4].hash
    ))
    .await;
    assert_eq!(first_bad(&db).await, None);

    // Inserted in the middle, later entries shifted up to make room.
    db.exec("UPDATE audit_log SET seq = 6 WHERE seq = 5").await;
    db.exec("UPDATE audit_log SET seq = 5 WHERE seq = 4").await;
    let mut f4 = forged(4, &log[2].hash);
    f4.hash = "cd".repeat(32);
    db.exec(&insert_sql(&f4)).await;
    db.exec(&format!(
        "UPDATE audit_head SET seq = 6, hash = '{}'",
        log[4].hash
    ))
    .await;
    assert_eq!(first_bad(&db).await, bad(4, Defect::Altered));
    // Even one that hashes correctly breaks the chain at the next entry.
    let f4 = forged(4, &log[2].hash);
    db.exec(&format!(
        "UPDATE audit_log SET hash = '{}' WHERE seq = 4",
        f4.hash
    ))
    .await;
    assert_eq!(first_bad(&db).await, bad(5, Defect::BrokenLink));
}

async fn reordered_entries_are_named(db: TestDb) {
    seed(&db, 6).await;
    db.exec("UPDATE audit_log SET seq = -1 WHERE seq = 3").await;
    db.exec("UPDATE audit_log SET seq = 3 WHERE seq = 4").await;
    db.exec("UPDATE audit_log SET seq = 4 WHERE seq = -1").await;
    assert_eq!(first_bad(&db).await, bad(3, Defect::BrokenLink));
}

async fn cut_off_tail_is_named(db: TestDb) {
    seed(&db, 5).await;
    db.exec("DELETE FROM audit_log WHERE seq >= 4").await;
    assert_eq!(first_bad(&db).await, bad(4, Defect::Missing));
    // Rewinding the head to hide it needs the old hash, and is then a different head.
    db.exec(&format!(
        "UPDATE audit_head SET seq = 3, hash = '{}'",
        "ef".repeat(32)
    ))
    .await;
    assert_eq!(first_bad(&db).await, bad(3, Defect::HeadMismatch));
    db.exec("DELETE FROM audit_head").await;
    assert_eq!(first_bad(&db).await, bad(0, Defect::HeadMissing));
}

async fn prune_writes_a_checkpoint_that_verifies(db: TestDb) {
    let s = &db.store;
    let cutoff = seed_around_cutoff(&db, 5, 3).await;

    assert!(matches!(
        s.audit_prune(&admin(), cutoff, b"short").await,
        Err(StoreError::Invalid { .. })
    ));
    assert_eq!(s.audit_prune(&admin(), cutoff, KEY).await.unwrap(), 5);
    let log = all(&db).await;
    assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), [6, 7, 8, 9]);
    assert_eq!(log[3].action, "audit.prune");
    assert_eq!(log[3].params_json().unwrap()["removed"], 5);
    assert_eq!(log[3].params_json().unwrap()["checkpoint_seq"], 5);
    let report = s.audit_verify(KEY).await.unwrap();
    assert!(report.is_valid(), "{report:?}");
    assert_eq!(report.checkpoint_seq, Some(5));
    assert_eq!(report.entries_checked, 4);

    // Nothing older left: nothing removed, no new checkpoint, still audited.
    assert_eq!(s.audit_prune(&admin(), cutoff, KEY).await.unwrap(), 0);
    let report = s.audit_verify(KEY).await.unwrap();
    assert!(report.is_valid(), "{report:?}");
    assert_eq!(report.checkpoint_seq, Some(5));

    // Cutting everything leaves only the prune's own entry after the new checkpoint.
    let later = SystemTime::now() + Duration::from_secs(1);
    assert_eq!(s.audit_prune(&admin(), later, KEY).await.unwrap(), 5);
    let log = all(&db).await;
    assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), [11]);
    let report = s.audit_verify(KEY).await.unwrap();
    assert!(report.is_valid(), "{report:?}");
    assert_eq!(report.checkpoint_seq, Some(10));
    assert_eq!(db.int("SELECT COUNT(*) FROM audit_checkpoints").await, 1);

    // Entries after the checkpoint are still protected.
    seed(&db, 2).await;
    db.exec("DELETE FROM audit_log WHERE seq = 11").await;
    assert_eq!(first_bad(&db).await, bad(11, Defect::Missing));
}

async fn forged_checkpoint_fails(db: TestDb) {
    let s = &db.store;
    let cutoff = seed_around_cutoff(&db, 4, 4).await;
    assert_eq!(s.audit_prune(&admin(), cutoff, KEY).await.unwrap(), 4);
    assert_eq!(first_bad(&db).await, None);

    // The wrong key does not verify the checkpoint.
    let wrong = s
        .audit_verify(b"some other key, also 32 bytes...")
        .await
        .unwrap();
    assert_eq!(wrong.first_bad, bad(4, Defect::BadCheckpoint));

    // Hiding entries 5 and 6 behind a checkpoint signed with a key the attacker made up.
    let log = all(&db).await;
    db.exec("DELETE FROM audit_log WHERE seq <= 6").await;
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(b"attacker's own key").unwrap();
    mac.update(format!("berth-audit-checkpoint-v1\n6\n{}\n", log[1].hash).as_bytes());
    let forged_mac = hex::encode(mac.finalize().into_bytes());
    db.exec(&format!(
        "INSERT INTO audit_checkpoints (seq, hash, created_ms, mac) VALUES (6, '{}', 0, '{forged_mac}')",
        log[1].hash
    ))
    .await;
    assert_eq!(first_bad(&db).await, bad(6, Defect::BadCheckpoint));

    // Without a forged checkpoint, the old one shows the entries are gone.
    db.exec("DELETE FROM audit_checkpoints WHERE seq = 6").await;
    assert_eq!(first_bad(&db).await, bad(5, Defect::Missing));

    // Moving the genuine checkpoint forward breaks its signature.
    db.exec(&format!(
        "UPDATE audit_checkpoints SET seq = 6, hash = '{}' WHERE seq = 4",
        log[1].hash
    ))
    .await;
    assert_eq!(first_bad(&db).await, bad(6, Defect::BadCheckpoint));
}

async fn prune_refuses_a_tampered_chain(db: TestDb) {
    seed(&db, 6).await;
    db.exec("UPDATE audit_log SET params = '{\"i\":99}' WHERE seq = 2")
        .await;
    let later = SystemTime::now() + Duration::from_secs(1);
    match db.store.audit_prune(&admin(), later, KEY).await {
        Err(StoreError::AuditChainBroken(b)) => assert_eq!(
            b,
            BadEntry {
                seq: 2,
                reason: Defect::Altered
            }
        ),
        other => panic!("prune of a tampered chain: {other:?}"),
    }
    assert_eq!(
        db.int("SELECT COUNT(*) FROM audit_log").await,
        6,
        "nothing removed"
    );
    assert_eq!(db.int("SELECT COUNT(*) FROM audit_checkpoints").await, 0);
}

/// The clock stepped back: entry 4 is older than entries 1 to 3. Pruning stops at the first
/// entry newer than the cutoff, so nothing is cut and the chain stays whole.
async fn prune_cuts_only_a_prefix(db: TestDb) {
    seed(&db, 3).await;
    let log = all(&db).await;
    // A correctly linked and hashed entry dated 2023 (what a clock stepped back writes).
    let old = forged(4, &log[2].hash);
    db.exec(&insert_sql(&old)).await;
    db.exec(&format!(
        "UPDATE audit_head SET seq = 4, hash = '{}'",
        old.hash
    ))
    .await;
    assert_eq!(first_bad(&db).await, None);

    let cutoff = SystemTime::now() - Duration::from_secs(24 * 60 * 60);
    assert!(old.time < cutoff && log[0].time > cutoff);
    assert_eq!(
        db.store.audit_prune(&admin(), cutoff, KEY).await.unwrap(),
        0
    );
    let seqs: Vec<i64> = all(&db).await.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(db.int("SELECT COUNT(*) FROM audit_checkpoints").await, 0);
    assert!(db.store.audit_verify(KEY).await.unwrap().is_valid());
}

async fn concurrent_appends_keep_one_chain(db: TestDb) {
    const TASKS: usize = 8;
    const EACH: usize = 25;
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let s = db.store.clone();
        handles.push(tokio::spawn(async move {
            let actor = Actor::new(format!("task{t}"), "admin", "127.0.0.1");
            for i in 0..EACH {
                if i % 5 == 0 {
                    // Mix in real changes, which append inside their own transactions.
                    s.add_user(&actor, &format!("u{t}-{i}"), &[]).await.unwrap();
                } else {
                    s.audit_record(NewAuditEntry::new(
                        &actor,
                        "test.append",
                        format!("{t}/{i}"),
                        json!({}),
                    ))
                    .await
                    .unwrap();
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let log = all(&db).await;
    let total = (TASKS * EACH) as i64;
    assert_eq!(
        log.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    for t in 0..TASKS {
        assert_eq!(
            log.iter().filter(|e| e.actor == format!("task{t}")).count(),
            EACH
        );
    }
    let report = db.store.audit_verify(KEY).await.unwrap();
    assert!(report.is_valid(), "{report:?}");
    assert_eq!(report.entries_checked, total as u64);
    assert_eq!(db.store.list_users().await.unwrap().len(), TASKS * EACH / 5);
}
