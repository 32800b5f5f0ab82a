//! An app's `[edge]` policies through the real binary: static files served by the edge from
//! the release (and still after a restart), an allow list on one path, a missing static
//! directory refused before any traffic moves.

use std::time::Duration;

use crate::support::{PY_WEB, app_dir, client, eventually, spec, start, start_in};

const EDGE: &str = "[edge]\ncompression = true\n\
     [[edge.paths]]\nprefix = \"/static\"\nstatic = { dir = \"staticfiles\", max_age = \"1h\" }\n\
     [[edge.paths]]\nprefix = \"/admin\"\nallow = [\"10.0.0.0/8\"]\n";

fn shop(version: &str, with_static: bool) -> tempfile::TempDir {
    let web = format!(
        "[processes.web]\ncommand = \"{PY_WEB}\"\nstop_timeout = \"5s\"\n\
         [processes.web.health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\nstart_timeout = \"20s\"\n"
    );
    let toml = spec("shop", &format!("{web}\n{EDGE}"));
    let mut files = vec![
        ("berth.toml", toml.as_str()),
        ("health", "ok\n"),
        ("version", version),
        ("admin/index.html", "admin page\n"),
    ];
    if with_static {
        files.push(("staticfiles/app.css", "body { color: teal }\n"));
    }
    app_dir(&files)
}

/// (status, ETag, body) of a GET through the edge to shop.test.
async fn fetch(listen: std::net::SocketAddr, path: &str) -> (u16, Option<String>, String) {
    let r = client()
        .get(format!("http://{listen}{path}"))
        .header("host", "shop.test")
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let etag = r
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (
        r.status().as_u16(),
        etag,
        r.text().await.unwrap_or_default(),
    )
}

#[tokio::test]
async fn static_paths_and_allow_lists_apply_to_the_apps_hosts_and_survive_a_restart() {
    let keep = tempfile::tempdir().unwrap();
    let mut b = start(&keep).await;
    b.deploy(shop("v1", true).path()).ok();

    // The app itself has no /static/app.css (its file is at /staticfiles/app.css): the edge
    // answers, with its own validators.
    let (status, etag, body) = fetch(b.listen, "/static/app.css").await;
    assert_eq!((status, body.as_str()), (200, "body { color: teal }\n"));
    assert!(etag.is_some(), "the edge's static files carry an ETag");
    // Missing under /static: 404 from the edge, not the app.
    assert_eq!(fetch(b.listen, "/static/missing.css").await.0, 404);
    // Loopback is not in 10.0.0.0/8: /admin is refused, the rest of the app is not.
    assert_eq!(fetch(b.listen, "/admin/").await.0, 403);
    assert_eq!(b.get("shop.test", "/version").await, (200, "v1".to_owned()));

    // A new berth on the same data directory serves them from the stored spec.
    b.process.stop(Duration::from_secs(20)).await;
    let b2 = start_in(&b.data_dir).await;
    let back = eventually(Duration::from_secs(30), || async {
        fetch(b2.listen, "/static/app.css").await.0 == 200
    })
    .await;
    assert!(back, "static files were not served after a restart");
    assert_eq!(fetch(b2.listen, "/admin/").await.0, 403);
}

#[tokio::test]
async fn a_release_without_its_static_directory_is_refused_and_the_old_one_keeps_serving() {
    let keep = tempfile::tempdir().unwrap();
    let b = start(&keep).await;
    b.deploy(shop("v1", true).path()).ok();
    let r = b.deploy(shop("v2", false).path());
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("staticfiles") && r.stderr.contains("collectstatic"),
        "{}",
        r.stderr
    );
    assert_eq!(b.get("shop.test", "/version").await, (200, "v1".to_owned()));
    assert_eq!(fetch(b.listen, "/static/app.css").await.0, 200);
}
