//! Bad input is refused with an error that says what and where, and changes nothing: a
//! broken spec, a command that does not exist, a port already taken, a failing build, an
//! archive reaching out of its release.

use std::path::Path;
use std::process::Command;

use crate::support::{Berth, app_dir, spec, start, web_app};

/// Names in the app's releases directory (what "nothing changed" is checked against).
fn release_files(b: &Berth, app: &str) -> Vec<String> {
    let dir = b.data_dir.join("apps").join(app).join("releases");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.retain(|n| !n.ends_with(".build.log"));
    names.sort();
    names
}

/// What must not change: the release files, the serving release, its processes.
async fn running(b: &Berth) -> (Vec<String>, serde_json::Value, Vec<i64>) {
    assert_eq!(b.get("shop.test", "/version").await, (200, "v1".into()));
    let ps = b.ps("shop");
    (
        release_files(b, "shop"),
        ps["release"].clone(),
        crate::support::pids(&ps),
    )
}

#[tokio::test]
async fn a_spec_with_an_unknown_key_is_refused_before_upload() {
    let keep = tempfile::tempdir().unwrap();
    let b = start(&keep).await;
    let app = app_dir(&[(
        "berth.toml",
        "name = \"shop\"\nhosts = [\"shop.test\"]\n\n[processes.web]\ncomand = \"python3 app.py\"\n",
    )]);
    let out = b.deploy(app.path());
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("berth.toml:5"),
        "names the line: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("processes.web.comand"),
        "names the field: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("command"),
        "hints the right key: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("nothing was deployed"),
        "{}",
        out.stderr
    );
    // The server never heard of it.
    assert_eq!(b.cli(&["ps", "shop"]).code, 4);
    assert!(release_files(&b, "shop").is_empty());
}

#[tokio::test]
async fn failures_leave_the_running_release_alone() {
    let keep = tempfile::tempdir().unwrap();
    let b = start(&keep).await;
    b.deploy(web_app("shop", "v1", 1).path()).ok();
    let before = running(&b).await;

    // A build that fails: its output comes back, no release is kept.
    let app = web_app("shop", "v2", 1);
    let toml = std::fs::read_to_string(app.path().join("berth.toml")).unwrap();
    std::fs::write(
        app.path().join("berth.toml"),
        format!("{toml}\n[build]\ncommand = \"echo compiling assets; echo 'error: missing module foo' >&2; exit 4\"\n"),
    )
    .unwrap();
    let out = b.deploy(app.path());
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("exited with status 4"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("error: missing module foo"),
        "{}",
        out.stderr
    );
    assert_eq!(running(&b).await, before);

    // A command that does not exist.
    let app = app_dir(&[
        (
            "berth.toml",
            &spec(
                "shop",
                "[processes.web]\ncommand = \"gunicorn-not-installed --bind 127.0.0.1:$PORT app:app\"\n",
            ),
        ),
        ("v3", ""),
    ]);
    let out = b.deploy(app.path());
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("not found"), "{}", out.stderr);
    assert!(
        out.stderr.contains("release r-") && out.stderr.contains("keeps serving"),
        "{}",
        out.stderr
    );
    // The failed release stays on record (it was built fine), nothing else changed.
    let now = running(&b).await;
    assert_eq!((&now.1, &now.2), (&before.1, &before.2));

    // A port already taken: this app ignores $PORT and binds one that is in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let app = app_dir(&[
        (
            "berth.toml",
            &spec(
                "shop",
                &format!(
                    "[processes.web]\ncommand = \"exec python3 -m http.server {port} --bind 127.0.0.1\"\n\
                     [processes.web.health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\nstart_timeout = \"3s\"\n"
                ),
            )
            .replace("timeout = \"30s\"", "timeout = \"6s\""),
        ),
        ("health", "ok\n"),
    ]);
    let out = b.deploy(app.path());
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("Address already in use"),
        "{}",
        out.stderr
    );
    let now = running(&b).await;
    assert_eq!((&now.1, &now.2), (&before.1, &before.2));
    drop(taken);
}

/// A .tar.gz with a `berth.toml` and one hostile entry, written by Python's tarfile (which,
/// unlike `tar`, writes whatever name it is given).
fn hostile_tarball(dir: &Path, kind: &str) -> std::path::PathBuf {
    let out = dir.join(format!("{kind}.tar.gz"));
    let script = format!(
        r#"
import io, tarfile
spec = b'name = "shop"\nhosts = ["shop.test"]\n[processes.web]\ncommand = "sleep 100"\n'
with tarfile.open("{out}", "w:gz") as t:
    i = tarfile.TarInfo("berth.toml"); i.size = len(spec); t.addfile(i, io.BytesIO(spec))
    if "{kind}" == "dotdot":
        i = tarfile.TarInfo("static/../../evil.sh"); i.size = 3; t.addfile(i, io.BytesIO(b"hi\n"))
    else:
        i = tarfile.TarInfo("static/etc"); i.type = tarfile.SYMTYPE; i.linkname = "../../../../etc"; t.addfile(i)
"#,
        out = out.display()
    );
    let st = Command::new("python3")
        .arg("-c")
        .arg(script)
        .status()
        .unwrap();
    assert!(st.success());
    out
}

#[tokio::test]
async fn archives_reaching_outside_the_release_are_refused() {
    let keep = tempfile::tempdir().unwrap();
    let b = start(&keep).await;
    b.deploy(web_app("shop", "v1", 1).path()).ok();
    let before = running(&b).await;
    let tmp = tempfile::tempdir().unwrap();
    for (kind, says) in [("dotdot", "`..`"), ("symlink", "outside the release")] {
        let archive = hostile_tarball(tmp.path(), kind);
        let out = b.cli(&["deploy", &archive.to_string_lossy()]);
        assert_eq!(out.code, 2, "{kind}: {out:?}");
        assert!(out.stderr.contains(says), "{kind}: {}", out.stderr);
        assert_eq!(running(&b).await, before, "{kind} changed something");
    }
    // Nothing was written outside the release either: `static/../../evil.sh` from a
    // release tree would land in the releases directory itself.
    assert!(!b.data_dir.join("apps/shop/releases/evil.sh").exists());
    assert!(!b.data_dir.join("apps/shop/evil.sh").exists());
}
