//! Secrets end to end with the real binary: set from stdin, injected into instances (which
//! report a hash of what they got, never the value), a rolling restart, rotation of the
//! master key with instances running, wrong, missing and too-open keys, a corrupted
//! ciphertext, and a scan of everything berth wrote or printed for the planted values.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::Connection;

use crate::support::user;
use crate::support::{
    Berth, Ran, app_dir, eventually, pids, spec, start, start_logged, start_with,
};

/// Planted values: distinctive, so finding one anywhere is a leak.
const TOKEN_1: &str = "PLANTED-api-token-7f3a9c1e5b2d";
const TOKEN_2: &str = "PLANTED-api-token-v2-c0ffee4211";
const DB_PASS: &str = "PLANTED db pass with spaces 91ab";
const STAGING_TOKEN: &str = "PLANTED-staging-only-55e1d0";

pub fn sha(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

/// A web app whose instances serve `/API_TOKEN` and `/DB_PASS`: the SHA-256 of what they
/// found in their environment (of "" when unset). Its files go to a fresh directory under
/// `out`, never to berth's data directory.
pub fn secret_app(name: &str, out: &Path, extra: &str) -> tempfile::TempDir {
    let script = "if [ \"${API_TOKEN-}\" = \"REFUSED-BY-THE-APP\" ]; then echo bad token; exit 1; fi\n\
                  d=$(mktemp -d -p \"$OUT\")\n\
                  for v in API_TOKEN DB_PASS; do\n\
                    eval \"val=\\${$v-}\"\n\
                    printf %s \"$val\" | sha256sum | cut -c1-64 > \"$d/$v\"\n\
                  done\n\
                  printf %s \"${BERTH_STATE_DIR-}\" > \"$d/STATE\"\n\
                  echo ok > \"$d/health\"\n\
                  cd \"$d\" && exec python3 -m http.server \"$PORT\" --bind 127.0.0.1\n";
    let toml = spec(
        name,
        &format!(
            "[env]\nOUT = \"{}\"\n\n[processes.web]\ncommand = \"sh serve.sh\"\n\
             stop_timeout = \"5s\"\n[processes.web.health]\ninterval = \"200ms\"\n\
             timeout = \"200ms\"\nstart_timeout = \"20s\"\n{extra}",
            out.display()
        ),
    );
    app_dir(&[("berth.toml", &toml), ("serve.sh", script)])
}

/// A temporary directory (held by the caller) with berth's data directory in it, and the
/// directory [`secret_app`]'s instances write to, made.
pub fn dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let keep = tempfile::tempdir().unwrap();
    let data = keep.path().join("data");
    let out = keep.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    (keep, data, out)
}

/// What the app's instances report for `var` (through the edge).
pub async fn seen(b: &Berth, app: &str, var: &str) -> String {
    let (status, body) = b.get(&format!("{app}.test"), &format!("/{var}")).await;
    assert_eq!(status, 200, "{app}: GET /{var}: {body}");
    body.trim().to_owned()
}

async fn wait_seen(b: &Berth, app: &str, var: &str, value: &str) {
    let want = sha(value);
    let ok = eventually(Duration::from_secs(30), || async {
        let (status, body) = b.get(&format!("{app}.test"), &format!("/{var}")).await;
        status == 200 && body.trim() == want
    })
    .await;
    assert!(ok, "{app} never saw the expected {var}");
}

pub fn set(b: &Berth, app: &str, key: &str, value: &str, extra: &[&str]) -> Ran {
    let mut args = vec!["secrets", "set", app, key];
    args.extend_from_slice(extra);
    b.cli_input(&b.token(), &args, Some(value.as_bytes()))
}

/// Every regular file under `dir`, recursively. Panics on what it cannot read: a scan that
/// skipped a directory would pass without looking.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        for e in entries {
            let e = e.unwrap_or_else(|e| panic!("{}: {e}", d.display()));
            let ft = e
                .file_type()
                .unwrap_or_else(|err| panic!("{}: {err}", e.path().display()));
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

/// Stops berth, adding what it printed to `outputs` (as run `n`); returns the CLI runs
/// against it.
async fn stop_and_collect(
    b: &mut Berth,
    n: u32,
    outputs: &mut Vec<(String, Vec<u8>)>,
) -> Vec<(Vec<String>, Ran)> {
    b.process.stop(Duration::from_secs(20)).await;
    outputs.push((
        format!("berth stdout ({n})"),
        b.process.stdout_text().into_bytes(),
    ));
    outputs.push((
        format!("berth stderr ({n})"),
        b.process.stderr_text().into_bytes(),
    ));
    std::mem::take(&mut *b.transcript.lock().unwrap())
}

/// Where `needle` occurs in `haystack`s: the names of those that hold it.
fn occurrences<'a>(needle: &str, haystacks: &'a [(String, Vec<u8>)]) -> Vec<&'a str> {
    haystacks
        .iter()
        .filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
        .map(|(name, _)| name.as_str())
        .collect()
}

#[tokio::test]
async fn secrets_reach_instances_and_no_value_leaks_anywhere() {
    let (keep, data, out) = dirs();
    let debug_log = [(
        "BERTH_LOG",
        "info,berth=debug,berth_api=debug,berth_deploy=debug",
    )];
    let mut b = start_logged(&data, &debug_log).await;
    let mut outputs: Vec<(String, Vec<u8>)> = Vec::new();

    // The first start made a master key, readable by berth's user only, and said where.
    let key_file = data.join("master.key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let log = b.process.stderr_text();
    assert!(
        log.contains("created a new master key") && log.contains(&key_file.display().to_string()),
        "{log}"
    );

    // Values come from stdin (never argv) and from a .env file.
    let r = set(&b, "vault", "API_TOKEN", &format!("{TOKEN_1}\n"), &[]);
    r.ok();
    assert!(r.stdout.contains("version 1"), "{}", r.stdout);
    let dotenv = keep.path().join("prod.env");
    std::fs::write(&dotenv, format!("# prod\nDB_PASS=\"{DB_PASS}\"\n")).unwrap();
    b.cli(&["secrets", "import", "vault", &dotenv.to_string_lossy()])
        .ok();
    set(
        &b,
        "vault",
        "API_TOKEN",
        STAGING_TOKEN,
        &["--env", "staging"],
    )
    .ok();
    // A value cannot be given on the command line.
    let r = b.cli(&["secrets", "set", "vault", "API_TOKEN", TOKEN_1]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("not taken from the command line"),
        "{}",
        r.stderr
    );
    // Nor is an empty stdin taken for an empty value.
    let r = b.cli_input(&b.token(), &["secrets", "set", "vault", "EMPTY"], Some(b""));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("is empty"), "{}", r.stderr);

    let list = b.cli(&["secrets", "list", "vault", "--json"]).ok().json();
    let names: Vec<(&str, i64)> = list["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["version"].as_i64().unwrap()))
        .collect();
    assert_eq!(names, [("API_TOKEN", 1), ("DB_PASS", 1)]);
    b.cli(&["secrets", "list", "vault"]).ok();

    // Deployed: the instances have the values (their hashes prove it).
    let app = secret_app(
        "vault",
        &out,
        "\n[processes.crasher]\ncommand = \"echo crashing now; exit 3\"\n\
         [processes.crasher.restart]\nbackoff_base = \"100ms\"\nbackoff_cap = \"100ms\"\n\
         crash_loop_exits = 2\n",
    );
    b.deploy(app.path()).ok();
    assert_eq!(seen(&b, "vault", "API_TOKEN").await, sha(TOKEN_1));
    assert_eq!(seen(&b, "vault", "DB_PASS").await, sha(DB_PASS));

    // A new value with --restart: the running release restarts, rolling, with it.
    let before = pids(&b.ps("vault"));
    let r = set(&b, "vault", "API_TOKEN", TOKEN_2, &["--restart"]);
    r.ok();
    assert!(r.stdout.contains("restarted vault release"), "{}", r.stdout);
    assert_eq!(seen(&b, "vault", "API_TOKEN").await, sha(TOKEN_2));
    assert!(pids(&b.ps("vault")).iter().all(|p| !before.contains(p)));
    let deploys = b.cli(&["deploys", "vault", "--json"]).ok().json();
    let last = &deploys["deployments"][0];
    assert_eq!(last["strategy"], "restart");
    assert_eq!(last["steps"][0]["step"], "start_instances");
    assert_eq!(
        last["steps"][0]["measurements"]["secrets"],
        serde_json::json!([["API_TOKEN", 2], ["DB_PASS", 1]])
    );

    // A crash of the web instance: restarted by the supervisor with the same secrets.
    let web_pid = b.ps("vault")["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["process"] == "web")
        .and_then(|i| i["pid"].as_i64())
        .unwrap();
    unsafe { libc::kill(web_pid as i32, libc::SIGKILL) };
    let back = eventually(Duration::from_secs(30), || async {
        let ps = b.ps("vault");
        ps["instances"].as_array().unwrap().iter().any(|i| {
            i["process"] == "web" && i["phase"] == "healthy" && i["pid"].as_i64() != Some(web_pid)
        })
    })
    .await;
    assert!(back, "the web instance did not come back");
    wait_seen(&b, "vault", "API_TOKEN", TOKEN_2).await;
    // The crash-looping process's message, in ps.
    let ps = b.cli(&["ps", "vault"]).ok().stdout.clone();
    assert!(ps.contains("crash loop"), "{ps}");
    b.cli(&["logs", "vault", "--tail", "500"]).ok();

    // A deploy that fails its health gate: the error and the log lines.
    let bad = secret_app(
        "vault",
        &out,
        "path = \"/nope\"\n\n[deploy]\ntimeout = \"3s\"\n",
    );
    // `spec` already wrote [deploy]; replace the file to keep one.
    let toml = std::fs::read_to_string(bad.path().join("berth.toml"))
        .unwrap()
        .replacen(
            "[deploy]\ntimeout = \"30s\"\ndrain_timeout = \"5s\"\n",
            "",
            1,
        );
    std::fs::write(bad.path().join("berth.toml"), toml).unwrap();
    let r = b.deploy(bad.path());
    assert_eq!(r.code, 1, "{r:?}");

    // Config, audit, a rejected request: no values.
    let config = b.cli(&["config", "show", "vault"]).ok().stdout.clone();
    assert!(
        config.contains("secrets.API_TOKEN") && config.contains("(hidden, version 2)"),
        "{config}"
    );
    b.cli(&["config", "show", "vault", "--json"]).ok();
    b.cli(&["audit", "list", "--since", "1h"]).ok();
    b.cli(&["audit", "export"]).ok();
    // An unset that fails, an unknown app's reveal.
    assert_eq!(b.cli(&["secrets", "unset", "vault", "NOPE"]).code, 4);
    assert_eq!(b.cli(&["secrets", "reveal", "other", "API_TOKEN"]).code, 4);

    // Reveal prints the value, on purpose: the scan below must find it there, which shows
    // it would find it anywhere else too.
    let revealed = b.cli(&["secrets", "reveal", "vault", "API_TOKEN"]);
    revealed.ok();
    assert_eq!(revealed.stdout.trim(), TOKEN_2);
    let control = [("reveal".to_owned(), revealed.stdout.as_bytes().to_vec())];
    assert_eq!(occurrences(TOKEN_2, &control), ["reveal"]);
    let audit = b
        .cli(&["audit", "list", "--action", "secret.", "--json"])
        .ok()
        .json();
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"secret.reveal"), "{actions:?}");
    assert!(actions.contains(&"secret.import"), "{actions:?}");

    // berth restarts: the app comes back with the versions it ran with.
    let first = stop_and_collect(&mut b, 1, &mut outputs).await;
    let mut b2 = start_logged(&data, &debug_log).await;
    wait_seen(&b2, "vault", "API_TOKEN", TOKEN_2).await;
    assert_eq!(seen(&b2, "vault", "DB_PASS").await, sha(DB_PASS));
    b2.cli(&["secrets", "list", "vault", "--env", "staging"])
        .ok();
    let second = stop_and_collect(&mut b2, 2, &mut outputs).await;

    // The scan: every CLI run's output, berth's own output, and every file under the data
    // directory (the SQLite database and, when berth leaves one, its WAL). The reveal's
    // stdout is scanned too: the value must be found there and nowhere else.
    let mut reveals = Vec::new();
    for (i, (args, ran)) in first.iter().chain(second.iter()).enumerate() {
        let what = format!("#{i} berth {}", args.join(" "));
        if args.contains(&"reveal".to_owned()) && ran.code == 0 {
            reveals.push(format!("{what} stdout"));
        }
        outputs.push((format!("{what} stdout"), ran.stdout.clone().into_bytes()));
        outputs.push((format!("{what} stderr"), ran.stderr.clone().into_bytes()));
    }
    let files = files_under(&data);
    assert!(
        files.iter().any(|f| f.ends_with("berth.db")),
        "the database is scanned"
    );
    assert!(files.iter().any(|f| f.ends_with("access.log")));
    assert!(
        files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "log")
                && f.to_string_lossy().contains("/logs/")),
        "instance logs are scanned"
    );
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        outputs.push((f.display().to_string(), bytes));
    }
    // The control, on the scan itself: the revealed value is found in the reveal's output.
    assert_eq!(reveals.len(), 1, "the reveal is in the transcript");
    assert_eq!(occurrences(TOKEN_2, &outputs), reveals);
    for value in [TOKEN_1, TOKEN_2, DB_PASS, STAGING_TOKEN] {
        let found: Vec<&str> = occurrences(value, &outputs)
            .into_iter()
            .filter(|name| !reveals.iter().any(|r| r == name))
            .collect();
        assert!(found.is_empty(), "{value:?} leaked into {found:?}");
    }
    // The scan saw real content.
    assert!(outputs.iter().map(|(_, b)| b.len()).sum::<usize>() > 10_000);
}

#[tokio::test]
async fn rotating_the_master_key_keeps_instances_running_and_every_value() {
    let (_keep, data, out) = dirs();
    let b = start_with(&data, &[]).await;
    let key_file = data.join("master.key");
    let old_key = std::fs::read_to_string(&key_file).unwrap();
    set(&b, "rot", "API_TOKEN", TOKEN_1, &[]).ok();
    set(&b, "rot", "API_TOKEN", TOKEN_2, &[]).ok();
    set(&b, "rot", "DB_PASS", DB_PASS, &["--env", "staging"]).ok();
    let app = secret_app("rot", &out, "");
    b.deploy(app.path()).ok();
    assert_eq!(seen(&b, "rot", "API_TOKEN").await, sha(TOKEN_2));
    let before = pids(&b.ps("rot"));

    // Requests keep flowing while the key rotates.
    let hammer = {
        let listen = b.listen;
        tokio::spawn(async move {
            let c = crate::support::client();
            let mut bad = Vec::new();
            for _ in 0..100 {
                let r = c
                    .get(format!("http://{listen}/API_TOKEN"))
                    .header("host", "rot.test")
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {}
                    Ok(r) => bad.push(r.status().to_string()),
                    Err(e) => bad.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            bad
        })
    };
    let r = b.cli(&["secrets", "rotate-key", "--json"]).ok().json();
    // Every version of every secret, both environments: three values.
    assert_eq!(r["resealed"], 3);
    assert_ne!(r["key_id"], r["previous_key_id"]);
    assert!(
        r["new_key"].is_null(),
        "a key file is replaced in place: {r}"
    );
    let bad = hammer.await.unwrap();
    assert!(
        bad.is_empty(),
        "requests failed during the rotation: {bad:?}"
    );
    assert_eq!(pids(&b.ps("rot")), before, "instances were not touched");

    let new_key = std::fs::read_to_string(&key_file).unwrap();
    assert_ne!(new_key, old_key);
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(!data.join("master.key.next").exists());
    let reveal = b.cli(&["secrets", "reveal", "rot", "API_TOKEN"]);
    assert_eq!(reveal.ok().stdout.trim(), TOKEN_2);
    // A non-admin may not rotate.
    let dep = user(&b, "dep", &["deployer"]);
    assert_eq!(b.cli_as(&dep, &["secrets", "rotate-key"]).code, 3);

    // After a restart, berth opens everything with the new key and brings the app back.
    let mut b = b;
    b.process.stop(Duration::from_secs(20)).await;
    let b2 = start_with(&data, &[]).await;
    wait_seen(&b2, "rot", "API_TOKEN", TOKEN_2).await;
    let r = b2.cli(&["secrets", "reveal", "rot", "DB_PASS", "--env", "staging"]);
    assert_eq!(r.ok().stdout.trim(), DB_PASS);
    let mut b2 = b2;
    b2.process.stop(Duration::from_secs(20)).await;

    // The old key opens nothing any more: given as BERTH_MASTER_KEY, it is refused by id.
    let b3 = start_with(&data, &[("BERTH_MASTER_KEY", old_key.trim())]).await;
    let r = b3.cli(&["secrets", "reveal", "rot", "API_TOKEN"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("not the key they were sealed with"),
        "{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains(old_key.trim()),
        "the key is never printed"
    );
}

#[tokio::test]
async fn a_wrong_missing_or_open_master_key_decrypts_nothing_and_overwrites_nothing() {
    let (keep, data, out) = dirs();
    let mut b = start_with(&data, &[]).await;
    set(&b, "keyed", "API_TOKEN", TOKEN_1, &[]).ok();
    let app = secret_app("keyed", &out, "");
    b.deploy(app.path()).ok();
    b.process.stop(Duration::from_secs(20)).await;
    let key_file = data.join("master.key");
    let saved = keep.path().join("saved.key");
    std::fs::rename(&key_file, &saved).unwrap();

    // Missing: berth runs, says why, makes no new key, decrypts nothing.
    let mut b = start_with(&data, &[]).await;
    let log = b.process.stderr_text();
    assert!(
        log.contains("no master key") && log.contains("master.key"),
        "{log}"
    );
    assert!(
        !key_file.exists(),
        "a new key would orphan the stored secrets"
    );
    b.cli(&["secrets", "list", "keyed"]).ok();
    for args in [
        vec!["secrets", "reveal", "keyed", "API_TOKEN"],
        vec!["restart", "keyed"],
    ] {
        let r = b.cli(&args);
        assert_ne!(r.code, 0, "{args:?}: {r:?}");
    }
    let r = set(&b, "keyed", "API_TOKEN", TOKEN_2, &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("secrets are unavailable"), "{}", r.stderr);
    // The app was not started without its secrets; a deploy is refused the same way.
    assert!(pids(&b.ps("keyed")).is_empty());
    let r = b.deploy(app.path());
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("secrets are unavailable"), "{}", r.stderr);
    b.process.stop(Duration::from_secs(20)).await;

    // Wrong: another key in the file is named as not the one, and left as it is.
    let other = "ab".repeat(32);
    std::fs::write(&key_file, format!("{other}\n")).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut b = start_with(&data, &[]).await;
    let r = b.cli(&["secrets", "reveal", "keyed", "API_TOKEN"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("not the key they were sealed with") && r.stderr.contains("master.key"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains(&other));
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap(),
        format!("{other}\n")
    );
    b.process.stop(Duration::from_secs(20)).await;

    // The right key, readable by others: refused, with the fix.
    std::fs::copy(&saved, &key_file).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut b = start_with(&data, &[]).await;
    let r = b.cli(&["secrets", "reveal", "keyed", "API_TOKEN"]);
    assert!(
        r.stderr.contains("chmod 600") && r.stderr.contains(&key_file.display().to_string()),
        "{}",
        r.stderr
    );
    b.process.stop(Duration::from_secs(20)).await;

    // A malformed BERTH_MASTER_KEY is named, not quoted.
    let mut b = start_with(&data, &[("BERTH_MASTER_KEY", "not-a-key-zzz")]).await;
    let r = b.cli(&["secrets", "reveal", "keyed", "API_TOKEN"]);
    assert!(
        r.stderr.contains("BERTH_MASTER_KEY") && !r.stderr.contains("not-a-key-zzz"),
        "{}",
        r.stderr
    );
    b.process.stop(Duration::from_secs(20)).await;

    // With the right key back (0600), everything is as it was: nothing was overwritten.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let b = start_with(&data, &[]).await;
    wait_seen(&b, "keyed", "API_TOKEN", TOKEN_1).await;
    let r = b.cli(&["secrets", "reveal", "keyed", "API_TOKEN"]);
    assert_eq!(r.ok().stdout.trim(), TOKEN_1);
    let list = b.cli(&["secrets", "list", "keyed", "--json"]).ok().json();
    assert_eq!(list["secrets"][0]["version"], 1);
}

#[tokio::test]
async fn a_corrupted_or_moved_ciphertext_is_detected_and_nothing_starts_with_it() {
    let (keep, data, out) = dirs();
    let b = start(&keep).await;
    set(&b, "tamper", "API_TOKEN", TOKEN_1, &[]).ok();
    set(&b, "tamper", "DB_PASS", DB_PASS, &[]).ok();
    let app = secret_app("tamper", &out, "");
    b.deploy(app.path()).ok();
    let before = pids(&b.ps("tamper"));

    let url = format!("sqlite://{}", data.join("berth.db").display());
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    // One bit of API_TOKEN's ciphertext flipped.
    sqlx::query(
        "UPDATE secret_versions SET ciphertext = \
         (CASE WHEN substr(ciphertext, 1, 1) = '0' THEN '1' ELSE '0' END) || substr(ciphertext, 2) \
         WHERE name = 'API_TOKEN'",
    )
    .execute(&mut db)
    .await
    .unwrap();
    let r = b.cli(&["secrets", "reveal", "tamper", "API_TOKEN"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("secret API_TOKEN (version 1)") && r.stderr.contains("does not decrypt"),
        "{}",
        r.stderr
    );
    // A restart with it is refused before anything starts; the old instances keep serving.
    let r = b.cli(&["restart", "tamper"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("API_TOKEN"), "{}", r.stderr);
    assert_eq!(pids(&b.ps("tamper")), before);
    assert_eq!(seen(&b, "tamper", "API_TOKEN").await, sha(TOKEN_1));

    // DB_PASS's intact ciphertext moved into API_TOKEN's row: bound to its own row, it
    // does not open there either.
    sqlx::query(
        "UPDATE secret_versions SET \
         ciphertext = (SELECT ciphertext FROM secret_versions WHERE name = 'DB_PASS'), \
         nonce = (SELECT nonce FROM secret_versions WHERE name = 'DB_PASS') \
         WHERE name = 'API_TOKEN'",
    )
    .execute(&mut db)
    .await
    .unwrap();
    db.close().await.unwrap();
    let r = b.cli(&["secrets", "reveal", "tamper", "API_TOKEN"]);
    assert!(r.stderr.contains("does not decrypt"), "{}", r.stderr);
    let r = b.cli(&["secrets", "reveal", "tamper", "DB_PASS"]);
    assert_eq!(r.ok().stdout.trim(), DB_PASS);
    // Setting it again repairs it.
    set(&b, "tamper", "API_TOKEN", TOKEN_2, &["--restart"]).ok();
    assert_eq!(seen(&b, "tamper", "API_TOKEN").await, sha(TOKEN_2));
}

#[tokio::test]
async fn a_release_comes_back_with_the_secret_versions_it_ran_with() {
    let (_keep, data, out) = dirs();
    let mut b = start_with(&data, &[]).await;
    set(&b, "again", "API_TOKEN", TOKEN_1, &[]).ok();
    let app = secret_app("again", &out, "");
    // A short deploy timeout for the failing restart below, and a spec variable of the
    // secret's name: the secret wins (every value seen below is a secret's).
    let toml = std::fs::read_to_string(app.path().join("berth.toml"))
        .unwrap()
        .replace("timeout = \"30s\"", "timeout = \"4s\"")
        .replacen("[env]\n", "[env]\nAPI_TOKEN = \"from-the-spec\"\n", 1);
    std::fs::write(app.path().join("berth.toml"), toml).unwrap();
    b.deploy(app.path()).ok();
    assert_eq!(seen(&b, "again", "API_TOKEN").await, sha(TOKEN_1));

    // A value the app refuses: the restart fails its health gate and the old instances
    // keep serving with the version they had.
    let r = set(
        &b,
        "again",
        "API_TOKEN",
        "REFUSED-BY-THE-APP",
        &["--restart"],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(seen(&b, "again", "API_TOKEN").await, sha(TOKEN_1));
    // Set without a restart: the running instances keep theirs too.
    set(&b, "again", "API_TOKEN", TOKEN_2, &[]).ok();
    assert_eq!(seen(&b, "again", "API_TOKEN").await, sha(TOKEN_1));

    // berth restarts: the release comes back with version 1, the one it ran with, not the
    // refused version 2 nor the newest, version 3.
    b.process.stop(Duration::from_secs(20)).await;
    let b = start_with(&data, &[]).await;
    wait_seen(&b, "again", "API_TOKEN", TOKEN_1).await;
    let list = b.cli(&["secrets", "list", "again", "--json"]).ok().json();
    assert_eq!(list["secrets"][0]["version"], 3);
    assert_eq!(list["secrets"][0]["running_version"], 1);
    let human = b.cli(&["secrets", "list", "again"]).ok().stdout.clone();
    assert!(human.contains("berth restart again"), "{human}");
    // Then a restart takes the current version.
    let r = b.cli(&["restart", "again"]);
    r.ok();
    assert!(
        r.stdout.contains("with secrets API_TOKEN v3"),
        "{}",
        r.stdout
    );
    assert_eq!(seen(&b, "again", "API_TOKEN").await, sha(TOKEN_2));
}

#[tokio::test]
async fn a_master_key_from_the_environment_or_a_credential_never_reaches_apps() {
    let (keep, data, out) = dirs();
    let key = "5e".repeat(32);
    let mut b = start_with(&data, &[("BERTH_MASTER_KEY", &key)]).await;
    assert!(
        b.process
            .stderr_text()
            .contains("BERTH_MASTER_KEY environment variable"),
        "{}",
        b.process.stderr_text()
    );
    set(&b, "envkey", "API_TOKEN", TOKEN_1, &[]).ok();
    // The build command and the instances see berth's environment, less the key.
    let app = secret_app("envkey", &out, "");
    let toml = std::fs::read_to_string(app.path().join("berth.toml")).unwrap();
    std::fs::write(
        app.path().join("berth.toml"),
        toml.replacen(
            "\n[env]",
            "\n[build]\ncommand = \"env > build-env.txt\"\n\n[env]",
            1,
        ),
    )
    .unwrap();
    b.deploy(app.path()).ok();
    assert_eq!(seen(&b, "envkey", "API_TOKEN").await, sha(TOKEN_1));
    let release = b.ps("envkey")["release"].as_str().unwrap().to_owned();
    let build_env = std::fs::read_to_string(
        data.join("apps/envkey/releases")
            .join(&release)
            .join("build-env.txt"),
    )
    .unwrap();
    assert!(
        build_env.contains("BERTH_APP=envkey"),
        "the build's env was captured"
    );
    let ps = b.ps("envkey");
    let instance_pids = pids(&ps);
    assert!(!instance_pids.is_empty());
    for (what, text) in
        std::iter::once(("build".to_owned(), build_env)).chain(instance_pids.iter().map(|pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
            (
                format!("pid {pid}"),
                String::from_utf8_lossy(&environ).into_owned(),
            )
        }))
    {
        assert!(
            text.contains("BERTH_APP=envkey"),
            "{what}: not the app's environment?"
        );
        assert!(
            !text.contains("BERTH_MASTER_KEY") && !text.contains(&key),
            "{what} got the master key"
        );
    }
    // No key file was written: the variable is the key.
    assert!(!data.join("master.key").exists());
    b.process.stop(Duration::from_secs(20)).await;

    // The same key as a systemd credential.
    let creds = keep.path().join("creds");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(creds.join("berth-master-key"), format!("{key}\n")).unwrap();
    let creds_dir = creds.to_string_lossy().into_owned();
    let b = start_with(&data, &[("CREDENTIALS_DIRECTORY", creds_dir.as_str())]).await;
    assert!(
        b.process.stderr_text().contains("systemd credential"),
        "{}",
        b.process.stderr_text()
    );
    wait_seen(&b, "envkey", "API_TOKEN", TOKEN_1).await;
    let r = b.cli(&["secrets", "reveal", "envkey", "API_TOKEN"]);
    assert_eq!(r.ok().stdout.trim(), TOKEN_1);
    // berth cannot rewrite a credential: the rotation hands the new key back, once.
    let r = b.cli(&["secrets", "rotate-key", "--json"]).ok().json();
    let new_key = r["new_key"].as_str().unwrap();
    assert_eq!(new_key.len(), 64);
    assert_eq!(
        std::fs::read_to_string(creds.join("berth-master-key")).unwrap(),
        format!("{key}\n")
    );
    assert!(!data.join("master.key").exists());
}
