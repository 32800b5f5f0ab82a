//! The control plane through the real binary: bootstrap, the CLI against the admin API
//! (TCP and Unix socket), roles, offboarding and the tamper-evident audit log.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use berth_testkit::FakeUpstream;

use crate::common::{BIN, Env, client, simple, start};

/// Runs the CLI with its own credentials file, so nothing from the machine leaks in.
fn cli(env: &Env, creds: &Path, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("BERTH_CREDENTIALS", creds)
        .env("BERTH_REMOTE", format!("http://{}", env.admin))
        .env_remove("BERTH_TOKEN")
        .env_remove("BERTH_CONFIG");
    if let Some(t) = token {
        cmd.env("BERTH_TOKEN", t);
    }
    cmd.output().expect("berth runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn data(env: &Env) -> PathBuf {
    env.berth.dir().join("data")
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn bootstrap_writes_a_private_admin_token_and_never_logs_it() {
    let up = FakeUpstream::start_named("a").await;
    let mut env = start(&simple(&[up.addr()], "", "")).await;
    let token = env.token();
    assert!(token.starts_with("berth_"), "{token}");
    assert_eq!(mode(&data(&env)), 0o700);
    assert_eq!(mode(&data(&env).join("admin.token")), 0o600);
    assert_eq!(mode(&data(&env).join("audit.key")), 0o600);
    assert_eq!(mode(&data(&env).join("berth.sock")) & 0o077, 0);
    // Only health endpoints answer without a token.
    let c = client();
    for (path, want) in [
        ("/health", 200),
        ("/ready", 200),
        ("/api/v1/metrics", 401),
        ("/api/v1/users", 401),
    ] {
        let r = c
            .get(format!("http://{}{path}", env.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "{path}");
    }
    env.berth.stop(std::time::Duration::from_secs(10)).await;
    let logs = format!("{}{}", env.berth.stdout_text(), env.berth.stderr_text());
    assert!(
        logs.contains("admin.token"),
        "the log should say where the token is"
    );
    assert!(!logs.contains(&token), "the admin token was logged");
}

#[tokio::test]
async fn cli_manages_users_and_tokens_and_offboarding_revokes_at_once() {
    let up = FakeUpstream::start_named("a").await;
    let env = start(&simple(&[up.addr()], "", "")).await;
    let creds = env.berth.dir().join("creds.json");
    let token_file = data(&env).join("admin.token");

    let out = cli(
        &env,
        &creds,
        None,
        &["login", "--token-file", token_file.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(mode(&creds), 0o600);
    let out = cli(&env, &creds, None, &["whoami"]);
    assert!(text(&out.stdout).contains("admin"), "{}", text(&out.stdout));

    let out = cli(
        &env,
        &creds,
        None,
        &[
            "users",
            "add",
            "alice",
            "--grant",
            "deployer@staging",
            "--grant",
            "viewer@production",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cli(
        &env,
        &creds,
        None,
        &["users", "add", "alice", "--grant", "viewer"],
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "a duplicate user: {}",
        text(&out.stderr)
    );
    let out = cli(
        &env,
        &creds,
        None,
        &["users", "add", "bob", "--grant", "wizard@x"],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "a bad grant: {}",
        text(&out.stderr)
    );

    let out = cli(
        &env,
        &creds,
        None,
        &["tokens", "create", "--user", "alice", "--label", "laptop"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let alice = text(&out.stdout).trim().to_owned();
    assert!(alice.starts_with("berth_"), "{alice}");

    // Alice is a deployer, not an admin: listing users is refused with exit 3.
    let out = cli(&env, &creds, Some(&alice), &["users", "list"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let out = cli(&env, &creds, Some(&alice), &["whoami", "--json"]);
    let me: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(me["user"], "alice");

    // Offboarding: removing alice kills her token immediately.
    let out = cli(&env, &creds, None, &["users", "remove", "alice"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cli(&env, &creds, Some(&alice), &["whoami"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("berth login"),
        "{}",
        text(&out.stderr)
    );

    // The Unix socket serves the same API.
    let sock = format!("unix:{}", data(&env).join("berth.sock").display());
    let out = cli(&env, &creds, None, &["--remote", &sock, "users", "list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("admin"));

    // No token secret ever reaches berth's own output.
    for secret in [&alice, &env.token()] {
        assert!(!env.berth.stdout_text().contains(secret.as_str()));
        assert!(!env.berth.stderr_text().contains(secret.as_str()));
    }
}

#[tokio::test]
async fn audit_verify_names_an_entry_edited_in_the_database() {
    let up = FakeUpstream::start_named("a").await;
    let env = start(&simple(&[up.addr()], "", "")).await;
    let creds = env.berth.dir().join("creds.json");
    let admin = env.token();
    for name in ["u1", "u2", "u3"] {
        let out = cli(
            &env,
            &creds,
            Some(&admin),
            &["users", "add", name, "--grant", "viewer"],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let out = cli(&env, &creds, Some(&admin), &["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let out = cli(&env, &creds, Some(&admin), &["audit", "export"]);
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect();
    let adds: Vec<_> = lines
        .iter()
        .filter(|e| e["action"] == "user.add" && e["actor"] == "admin")
        .collect();
    assert_eq!(adds.len(), 3, "{lines:?}");
    let seq = adds[1]["seq"].as_i64().unwrap();

    // Someone with access to the database file rewrites history.
    let db = data(&env).join("berth.db");
    let script = format!(
        "import sqlite3; c = sqlite3.connect('{}'); c.execute(\"UPDATE audit_log SET target = 'mallory' WHERE seq = {seq}\"); c.commit()",
        db.display()
    );
    let py = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(py.status.success(), "{}", text(&py.stderr));

    let out = cli(&env, &creds, Some(&admin), &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out.stdout);
    assert!(
        said.contains("BROKEN") && said.contains(&format!("entry {seq}")),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_through_the_binary() {
    let url = berth_store::testing::TempPostgres::fresh_database().await;
    let up = FakeUpstream::start_named("a").await;
    let env = crate::common::start_with_args(
        &simple(&[up.addr()], "", ""),
        "",
        &["--database-url".to_owned(), url.clone()],
    )
    .await;
    let creds = env.berth.dir().join("creds.json");
    let admin = env.token();
    let out = cli(
        &env,
        &creds,
        Some(&admin),
        &["users", "add", "pat", "--grant", "viewer@production"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cli(&env, &creds, Some(&admin), &["users", "list", "--json"]);
    assert!(text(&out.stdout).contains("pat"), "{}", text(&out.stdout));
    let out = cli(&env, &creds, Some(&admin), &["audit", "verify"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    // Nothing went to SQLite, and the URL (which may hold a password) is not logged.
    assert!(!data(&env).join("berth.db").exists());
    assert!(!env.berth.stderr_text().contains(&url));
}

#[tokio::test]
async fn admin_networks_refuse_admin_actions_from_elsewhere_but_not_on_the_socket() {
    let up = FakeUpstream::start_named("a").await;
    let env = crate::common::start_with(
        &simple(&[up.addr()], "", ""),
        "admin_networks = [\"10.0.0.0/8\"]",
    )
    .await;
    let creds = env.berth.dir().join("creds.json");
    let admin = env.token();
    // From 127.0.0.1, outside 10.0.0.0/8: reading is fine, changing is refused.
    let out = cli(&env, &creds, Some(&admin), &["whoami"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cli(
        &env,
        &creds,
        Some(&admin),
        &["users", "add", "x", "--grant", "viewer"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("network"),
        "{}",
        text(&out.stderr)
    );
    // The Unix socket is local, so inside every network.
    let sock = format!("unix:{}", data(&env).join("berth.sock").display());
    let out = cli(
        &env,
        &creds,
        Some(&admin),
        &["--remote", &sock, "users", "add", "x", "--grant", "viewer"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The refusal is on record.
    let out = cli(
        &env,
        &creds,
        Some(&admin),
        &["--remote", &sock, "audit", "export"],
    );
    assert!(
        text(&out.stdout).contains("\"denied\""),
        "{}",
        text(&out.stdout)
    );
}
