//! The API over a Unix socket: owner-only, local, inside every restricted network; stale
//! sockets replaced, live ones and other files left alone.

mod support;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use berth_api::{router, serve_unix};
use berth_store::AuditFilter;
use serde_json::json;
use support::{Backend, Harness, policy};
use tokio::sync::oneshot;

fn unix_client(path: &Path) -> reqwest::Client {
    reqwest::Client::builder()
        .unix_socket(path)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Waits until a server answers at `path` (a stale socket file is there before it).
async fn wait_for_socket(path: &Path) {
    for _ in 0..200 {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            assert!(
                std::fs::symlink_metadata(path)
                    .unwrap()
                    .file_type()
                    .is_socket()
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} did not appear", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_is_private_local_and_inside() {
    let h = Harness::new(Backend::Sqlite, 10).await;
    let root = h.admin().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.sock");

    // A stale socket left by a process that died: replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());

    // Restricted to a network the client could never be in: the socket is inside anyway.
    let app = router(h.state(policy(&["10.0.0.0/8"], 10)));
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn({
        let path = path.clone();
        async move {
            serve_unix(&path, app, async move {
                let _ = stopped.await;
            })
            .await
        }
    });
    wait_for_socket(&path).await;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    // No temporary socket was left beside it.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    let c = unix_client(&path);
    let resp = c
        .post("http://berth/api/v1/users")
        .bearer_auth(&root.token)
        .json(&json!({ "name": "alice", "grants": ["viewer@*"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let added = h
        .store
        .audit_list(&AuditFilter {
            action_prefix: Some("user.add".into()),
            actor: Some("root".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(added[0].source, "local");
    // Still a token is needed.
    let anon = c.get("http://berth/api/v1/whoami").send().await.unwrap();
    assert_eq!(anon.status(), 401);
    // The same request over TCP from outside the networks is refused.
    let outside = support::call(
        &h.client,
        &h.outside.base,
        reqwest::Method::POST,
        "/api/v1/users",
        Some(&root.token),
        Some(&json!({ "name": "bob" })),
    )
    .await;
    assert_eq!((outside.status, outside.code()), (403, "network_denied"));

    // A second server on the same path while this one runs: refused, socket untouched.
    let err = serve_unix(&path, router(h.state(policy(&[], 10))), async {})
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert_eq!(
        c.get("http://berth/api/v1/whoami")
            .bearer_auth(&root.token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let _ = stop.send(());
    server.await.unwrap().unwrap();
    assert!(!path.exists(), "the socket file is removed at shutdown");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_a_socket_is_left_alone() {
    let h = Harness::new(Backend::Sqlite, 10).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.sock");
    std::fs::write(&path, "precious").unwrap();
    let err = serve_unix(&path, router(h.state(policy(&[], 10))), async {})
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
    h.stop().await;
}
