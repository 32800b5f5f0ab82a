//! Environments: per-environment grants on secrets, `[environments.<name>]` overrides,
//! `berth config show` and `config diff`, and promoting a release from staging to production.

use serde_json::Value;

use crate::secrets::{dirs, secret_app, seen, set, sha};
use crate::support::{Berth, start, user};

const STAGING_TOKEN: &str = "PLANTED-staging-token-d00d5e";
const PROD_TOKEN: &str = "PLANTED-production-token-8badf00d";

fn set_as(b: &Berth, token: &str, env: &str, key: &str, value: &str) -> i32 {
    b.cli_input(
        token,
        &["secrets", "set", "shop", key, "--env", env],
        Some(value.as_bytes()),
    )
    .code
}

#[tokio::test]
async fn grants_are_per_environment_for_secrets() {
    let keep = tempfile::tempdir().unwrap();
    let b = start(&keep).await;
    let alice = user(&b, "alice", &["deployer@staging", "viewer@production"]);
    let bob = user(&b, "bob", &["viewer@staging"]);
    let carol = user(&b, "carol", &["admin@staging"]);
    set(&b, "shop", "API_TOKEN", PROD_TOKEN, &[]).ok();

    // A staging deployer sets staging's secrets, and cannot set, remove, import or read
    // production's, though it may list their names there (viewer).
    assert_eq!(set_as(&b, &alice, "staging", "API_TOKEN", STAGING_TOKEN), 0);
    assert_eq!(set_as(&b, &alice, "production", "API_TOKEN", "x"), 3);
    let r = b.cli_as(&alice, &["secrets", "unset", "shop", "API_TOKEN"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("deployer@production"), "{}", r.stderr);
    let env_file = keep.path().join("x.env");
    std::fs::write(&env_file, "API_TOKEN=x\n").unwrap();
    let r = b.cli_as(
        &alice,
        &["secrets", "import", "shop", &env_file.to_string_lossy()],
    );
    assert_eq!(r.code, 3);
    let r = b.cli_as(&alice, &["secrets", "list", "shop", "--json"]);
    assert_eq!(r.ok().json()["secrets"][0]["name"], "API_TOKEN");
    // Revealing needs admin, even in alice's own environment.
    for env in ["staging", "production"] {
        let r = b.cli_as(
            &alice,
            &["secrets", "reveal", "shop", "API_TOKEN", "--env", env],
        );
        assert_eq!(r.code, 3, "{env}: {r:?}");
    }
    assert_eq!(
        b.cli_as(&alice, &["restart", "shop", "--env", "production"])
            .code,
        3
    );
    assert_eq!(
        b.cli_as(
            &alice,
            &[
                "promote-release",
                "shop",
                "--from",
                "staging",
                "--to",
                "production"
            ]
        )
        .code,
        3
    );

    // A staging viewer reads staging's names only.
    assert_eq!(set_as(&b, &bob, "staging", "API_TOKEN", "x"), 3);
    b.cli_as(&bob, &["secrets", "list", "shop", "--env", "staging"])
        .ok();
    assert_eq!(
        b.cli_as(&bob, &["secrets", "list", "shop", "--env", "production"])
            .code,
        3
    );

    // A staging admin reveals staging's, not production's, and cannot rotate the key.
    let r = b.cli_as(
        &carol,
        &["secrets", "reveal", "shop", "API_TOKEN", "--env", "staging"],
    );
    assert_eq!(r.ok().stdout.trim(), STAGING_TOKEN);
    let r = b.cli_as(&carol, &["secrets", "reveal", "shop", "API_TOKEN"]);
    assert_eq!(r.code, 3);
    assert_eq!(b.cli_as(&carol, &["secrets", "rotate-key"]).code, 3);
    // Production's value is what the admin set: alice's attempts changed nothing.
    let r = b.cli(&["secrets", "reveal", "shop", "API_TOKEN"]);
    assert_eq!(r.ok().stdout.trim(), PROD_TOKEN);

    // Every refusal is on record, with what was needed and no value.
    let audit = b
        .cli(&["audit", "export", "--action", "secret."])
        .ok()
        .stdout
        .clone();
    let entries: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let denied = |actor: &str, action: &str, needed: &str| {
        entries.iter().any(|e| {
            e["actor"] == actor
                && e["action"] == action
                && e["outcome"] == "denied"
                && e["params"].as_str().is_some_and(|p| {
                    // Stored as JSON text, exactly as hashed.
                    serde_json::from_str::<Value>(p).unwrap()["denied"]["needed"] == needed
                })
        })
    };
    for (actor, action, needed) in [
        ("alice", "secret.set", "deployer@production"),
        ("alice", "secret.unset", "deployer@production"),
        ("alice", "secret.import", "deployer@production"),
        ("alice", "secret.reveal", "admin@staging"),
        ("bob", "secret.set", "deployer@staging"),
        ("carol", "secret.rotate_key", "admin@*"),
    ] {
        assert!(denied(actor, action, needed), "{actor} {action}: {audit}");
    }
    let ok_reveal = entries
        .iter()
        .any(|e| e["actor"] == "carol" && e["action"] == "secret.reveal" && e["outcome"] == "ok");
    assert!(ok_reveal, "{audit}");
    assert!(!audit.contains(STAGING_TOKEN) && !audit.contains(PROD_TOKEN));

    // Each environment's audit stream is its own, readable by its viewers.
    let stream = b
        .cli_as(&bob, &["audit", "list", "--env", "staging", "--json"])
        .ok()
        .json();
    let targets: Vec<&str> = stream["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["target"].as_str().unwrap())
        .collect();
    assert!(!targets.is_empty());
    assert!(targets.iter().all(|t| *t == "shop/staging"), "{targets:?}");
    assert_eq!(b.cli_as(&bob, &["audit", "list"]).code, 3);
    assert_eq!(
        b.cli_as(&bob, &["audit", "list", "--env", "production"])
            .code,
        3
    );
}

/// The value and source of `key` in a `config show --json` answer.
fn entry(v: &Value, key: &str) -> (String, String) {
    let e = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == key)
        .unwrap_or_else(|| panic!("no {key} in {v}"));
    (
        e["value"].as_str().unwrap().to_owned(),
        e["source"].as_str().unwrap().to_owned(),
    )
}

fn pair(value: &str, source: &str) -> (String, String) {
    (value.to_owned(), source.to_owned())
}

#[tokio::test]
async fn environments_override_the_base_config_show_diff_and_promote() {
    let (keep, data, out) = dirs();
    let b = start(&keep).await;
    let app = secret_app(
        "envy",
        &out,
        "\n[processes.web.limits]\nopen_files = 1024\n\n[environments.staging]\n\
         hosts = [\"staging.envy.test\"]\nenv = { LOG_LEVEL = \"debug\" }\n\
         [environments.staging.processes.web]\ninstances = 1\n\
         [environments.production.processes.web]\ninstances = 2\n",
    );
    // Not deployed anywhere yet: nothing to show.
    assert_eq!(b.cli(&["config", "show", "envy"]).code, 4);

    set(
        &b,
        "envy",
        "API_TOKEN",
        STAGING_TOKEN,
        &["--env", "staging"],
    )
    .ok();
    b.cli(&["deploy", &app.path().to_string_lossy(), "--env", "staging"])
        .ok();
    let staging = b
        .cli(&["ps", "envy", "--env", "staging", "--json"])
        .ok()
        .json();
    assert_eq!(staging["instances"].as_array().unwrap().len(), 1);
    assert_eq!(
        seen(&b, "staging.envy", "API_TOKEN").await,
        sha(STAGING_TOKEN)
    );

    let show = b
        .cli(&["config", "show", "envy", "--env", "staging", "--json"])
        .ok()
        .json();
    for (key, value, source) in [
        ("hosts", "staging.envy.test", "environment"),
        ("processes.web.instances", "1", "environment"),
        ("env.LOG_LEVEL", "debug", "environment"),
        ("deploy.timeout", "30s", "base"),
        ("processes.web.limits.open_files", "1024", "base"),
        ("processes.web.stop_signal", "TERM", "default"),
        ("secrets.API_TOKEN", "(hidden, version 1)", "secret"),
    ] {
        assert_eq!(entry(&show, key), pair(value, source), "{key}");
    }
    let human = b
        .cli(&["config", "show", "envy", "--env", "staging"])
        .ok()
        .stdout
        .clone();
    assert!(
        human.contains("SOURCE") && !human.contains(STAGING_TOKEN),
        "{human}"
    );

    // Promote exactly what staging runs.
    let staging_release = staging["release"].as_str().unwrap().to_owned();
    let r = b.cli(&[
        "promote-release",
        "envy",
        "--from",
        "staging",
        "--to",
        "production",
    ]);
    r.ok();
    assert!(
        r.stdout
            .contains(&format!("promoted envy release {staging_release}")),
        "{}",
        r.stdout
    );
    let rel = |env: &str| {
        let v = b
            .cli(&["releases", "envy", "--env", env, "--json"])
            .ok()
            .json();
        let r = &v["releases"][0];
        (
            r["release"].as_str().unwrap().to_owned(),
            r["path"].as_str().unwrap().to_owned(),
        )
    };
    let (s, p) = (rel("staging"), rel("production"));
    assert_eq!(s, p, "the same release and the same build directory");
    let prod = b.ps("envy");
    assert_eq!(prod["release"], staging_release.as_str());
    assert_eq!(prod["instances"].as_array().unwrap().len(), 2);
    // Production has its own hosts, and none of staging's secrets.
    assert_eq!(seen(&b, "envy", "API_TOKEN").await, sha(""));
    // Each environment has a state directory of its own.
    let state = |host: &'static str| {
        let b = &b;
        async move { b.get(host, "/STATE").await.1 }
    };
    let (s_dir, p_dir) = (state("staging.envy.test").await, state("envy.test").await);
    assert_eq!(
        s_dir,
        data.join("apps/envy/staging/state").display().to_string()
    );
    assert_eq!(
        p_dir,
        data.join("apps/envy/production/state")
            .display()
            .to_string()
    );
    assert!(std::path::Path::new(&p_dir).is_dir());
    let deploys = b.cli(&["deploys", "envy", "--json"]).ok().json();
    assert_eq!(deploys["deployments"][0]["strategy"], "promote");
    let again = b.cli(&[
        "promote-release",
        "envy",
        "--from",
        "staging",
        "--to",
        "production",
        "--json",
    ]);
    assert_eq!(again.ok().json()["unchanged"], true);

    // Drift: what differs between the two, and how it exits.
    let diff = b.cli(&["config", "diff", "envy", "staging", "production"]);
    assert_eq!(diff.code, 1, "{diff:?}");
    for line in [
        "hosts",
        "  staging: staging.envy.test (environment)",
        "  production: envy.test (base)",
        "processes.web.instances",
        "env.LOG_LEVEL",
        "  production: (not set)",
        "secrets.API_TOKEN",
        "  staging: (set) (secret)",
    ] {
        assert!(
            diff.stdout.lines().any(|l| l == line),
            "{line:?} in\n{}",
            diff.stdout
        );
    }
    assert!(!diff.stdout.contains("deploy.timeout"), "{}", diff.stdout);
    assert!(!diff.stdout.contains(STAGING_TOKEN));
    let json = b.cli(&["config", "diff", "envy", "staging", "production", "--json"]);
    let keys: Vec<String> = json.json()["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        keys,
        [
            "env.LOG_LEVEL",
            "hosts",
            "processes.web.instances",
            "secrets.API_TOKEN"
        ]
    );
    // The same secret name on both sides is no drift (values are never compared).
    set(&b, "envy", "API_TOKEN", PROD_TOKEN, &["--restart"]).ok();
    assert_eq!(seen(&b, "envy", "API_TOKEN").await, sha(PROD_TOKEN));
    let json = b.cli(&["config", "diff", "envy", "staging", "production", "--json"]);
    assert_eq!(json.json()["differences"].as_array().unwrap().len(), 3);
    let same = b.cli(&["config", "diff", "envy", "production", "production"]);
    assert_eq!(same.code, 0, "{same:?}");
    assert!(same.stdout.contains("no differences"), "{}", same.stdout);
}
