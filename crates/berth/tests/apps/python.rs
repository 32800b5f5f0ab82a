//! examples/python-app, a WSGI app served by gunicorn (Debian's package), deployed as users
//! would: its build runs, its web and worker processes start, a redeploy lets in-flight
//! requests finish.

use std::path::Path;
use std::time::Duration;

use crate::support::{eventually, start, write_files};

fn example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/python-app")
}

/// A copy of the example, so a test can change it into a new release.
fn copy_example() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&example(), dir.path());
    dir
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[tokio::test]
async fn the_python_example_runs_under_gunicorn_and_redeploys_without_dropping_a_request() {
    let keep = tempfile::tempdir().unwrap();
    let b = start(&keep).await;
    let out = b.deploy(&example());
    out.ok();
    assert!(
        out.stdout.contains("built in"),
        "the build ran: {}",
        out.stdout
    );
    let host = "hello-py.localhost";
    assert_eq!(b.get(host, "/").await.1.trim(), "hello from berth");
    let ps = b.ps("hello-py");
    let r1 = ps["release"].as_str().unwrap().to_owned();
    assert_eq!(b.get(host, "/version").await.1.trim(), r1);
    // [edge]: /static is the edge's, from the release (gunicorn's app has no such path).
    assert_eq!(
        b.get(host, "/static/site.css").await,
        (200, "body { font-family: sans-serif }\n".to_owned())
    );
    let names: Vec<&str> = ps["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instance"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"web-1") && names.contains(&"worker-1"),
        "{names:?}"
    );
    // The worker's heartbeat reaches its log.
    let beat = eventually(Duration::from_secs(15), || async {
        b.cli(&["logs", "hello-py", "--process", "worker"])
            .stdout
            .contains("worker-1 stdout")
    })
    .await;
    assert!(beat, "{:?}", b.cli(&["logs", "hello-py"]));

    // A slow request is in flight on r1 while r2 is deployed: it completes.
    let slow = {
        let listen = b.listen;
        tokio::spawn(async move {
            crate::support::client()
                .get(format!("http://{listen}/slow?ms=3000"))
                .header("host", host)
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let v2 = copy_example();
    write_files(v2.path(), &[("NOTE", "release two\n")]);
    let out = b.deploy(v2.path());
    out.ok();
    assert_eq!(
        slow.await.unwrap().expect("the slow request completed"),
        200
    );
    let r2 = b.ps("hello-py")["release"].as_str().unwrap().to_owned();
    assert_ne!(r2, r1);
    assert_eq!(b.get(host, "/version").await.1.trim(), r2);
    // The build's output is kept beside the release.
    let log = b
        .data_dir
        .join("apps/hello-py/releases")
        .join(format!("{r2}.build.log"));
    assert!(log.is_file(), "{}", log.display());
}
