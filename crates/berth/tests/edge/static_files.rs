//! Static files served by the edge: validators and 304, ranges, cache headers, precompressed
//! siblings, fallback to the app, and every traversal trick refused with the process up.

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_testkit::{FakeUpstream, raw_exchange};

use crate::common::{client, start};

const CSS: &str = "body { color: #333; } /* a stylesheet */\n";

/// `<tmp>/secret.txt` outside the root, and `<tmp>/root` with a few files.
struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new() -> Tree {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("css")).expect("mkdir");
        std::fs::create_dir_all(root.join("docs")).expect("mkdir");
        std::fs::write(dir.path().join("secret.txt"), "TOP SECRET").expect("write");
        std::fs::write(root.join("css/site.css"), CSS).expect("write");
        std::fs::write(root.join("app.3f2a9c1b.js"), "console.log(1);\n").expect("write");
        std::fs::write(root.join("docs/index.html"), "<h1>docs</h1>\n").expect("write");
        std::fs::write(root.join(".env"), "SECRET_KEY=x").expect("write");
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("link.txt"))
            .expect("symlink");
        // A symlink that stays inside is fine.
        std::os::unix::fs::symlink(root.join("css/site.css"), root.join("same.css"))
            .expect("symlink");
        Tree { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn write(&self, rel: &str, data: &[u8]) {
        std::fs::write(self.root().join(rel), data).expect("write");
    }
}

fn config(root: &Path, static_extra: &str, up: &FakeUpstream) -> String {
    format!(
        "[[route]]\nname = \"files\"\nhosts = [\"*\"]\npath_prefix = \"/static\"\n{}\
         static = {{ dir = \"{}\"{static_extra} }}\n\n\
         [[route]]\nname = \"app\"\nhosts = [\"*\"]\ngroup = \"app\"\n\n\
         [group.app]\nupstreams = [\"{}\"]\n",
        if static_extra.contains("fallback") {
            "group = \"app\"\n"
        } else {
            ""
        },
        root.display(),
        up.addr()
    )
}

#[tokio::test]
async fn files_with_validators_304_ranges_and_cache_headers() {
    let tree = Tree::new();
    let up = FakeUpstream::start_named("app").await;
    let env = start(&config(&tree.root(), "", &up)).await;

    let r = env.get_with("/static/css/site.css", &[]).await;
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "text/css; charset=utf-8");
    assert_eq!(h["content-length"], CSS.len().to_string());
    assert_eq!(h["cache-control"], "public, max-age=60");
    assert_eq!(h["accept-ranges"], "bytes");
    // The route's security headers apply to files too.
    assert_eq!(h["x-content-type-options"], "nosniff");
    let etag = h["etag"].to_str().expect("etag").to_owned();
    let modified = h["last-modified"].to_str().expect("date").to_owned();
    assert_eq!(r.text().await.expect("body"), CSS);

    let r = env
        .get_with("/static/css/site.css", &[("if-none-match", &etag)])
        .await;
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"], etag.as_str());
    assert!(r.text().await.expect("body").is_empty());
    let r = env
        .get_with("/static/css/site.css", &[("if-modified-since", &modified)])
        .await;
    assert_eq!(r.status(), 304);
    let r = env
        .get_with("/static/css/site.css", &[("if-none-match", "\"stale\"")])
        .await;
    assert_eq!(r.status(), 200);

    let r = env
        .get_with("/static/css/site.css", &[("range", "bytes=0-3")])
        .await;
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 0-3/{}", CSS.len()).as_str()
    );
    assert_eq!(r.text().await.expect("body"), "body");
    let r = env
        .get_with("/static/css/site.css", &[("range", "bytes=-6")])
        .await;
    assert_eq!(r.status(), 206);
    assert_eq!(r.text().await.expect("body"), &CSS[CSS.len() - 6..]);
    let r = env
        .get_with("/static/css/site.css", &[("range", "bytes=9999-")])
        .await;
    assert_eq!(r.status(), 416);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes */{}", CSS.len()).as_str()
    );
    // If-Range with an old validator: the whole file.
    let r = env
        .get_with(
            "/static/css/site.css",
            &[("range", "bytes=0-3"), ("if-range", "\"old\"")],
        )
        .await;
    assert_eq!(r.status(), 200);

    let r = client()
        .head(env.url("/static/css/site.css"))
        .send()
        .await
        .expect("HEAD");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], CSS.len().to_string());

    // A content hash in the name: cached for a year.
    let r = env.get_with("/static/app.3f2a9c1b.js", &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert!(
        r.headers()["content-type"]
            .to_str()
            .expect("type")
            .contains("javascript")
    );
    // Directories serve their index; missing files and dot-files are 404; other methods 405.
    let r = env.get_with("/static/docs/", &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "<h1>docs</h1>\n");
    assert_eq!(env.get_with("/static/missing.css", &[]).await.status(), 404);
    assert_eq!(env.get_with("/static/.env", &[]).await.status(), 404);
    let r = client()
        .post(env.url("/static/css/site.css"))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD");
    assert_eq!(up.request_count(), 0, "a static request reached the app");
    // Other routes still go to the app.
    assert_eq!(env.get_with("/page", &[]).await.status(), 200);
    assert_eq!(up.request_count(), 1);
}

#[tokio::test]
async fn precompressed_siblings_are_sent_to_clients_that_accept_them() {
    let tree = Tree::new();
    tree.write("css/site.css.br", b"BROTLI BYTES");
    tree.write("css/site.css.gz", b"GZIP BYTES");
    let up = FakeUpstream::start_named("app").await;
    let env = start(&config(&tree.root(), "", &up)).await;

    let r = env
        .get_with("/static/css/site.css", &[("accept-encoding", "gzip, br")])
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-encoding"], "br");
    assert_eq!(r.headers()["content-type"], "text/css; charset=utf-8");
    assert_eq!(r.headers()["vary"], "Accept-Encoding");
    let br_etag = r.headers()["etag"].to_str().expect("etag").to_owned();
    assert_eq!(r.bytes().await.expect("body").as_ref(), b"BROTLI BYTES");

    let r = env
        .get_with("/static/css/site.css", &[("accept-encoding", "gzip")])
        .await;
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert_ne!(r.headers()["etag"], br_etag.as_str());
    assert_eq!(r.bytes().await.expect("body").as_ref(), b"GZIP BYTES");

    let r = env.get_with("/static/css/site.css", &[]).await;
    assert!(!r.headers().contains_key("content-encoding"));
    assert_eq!(r.headers()["vary"], "Accept-Encoding");
    assert_eq!(r.text().await.expect("body"), CSS);

    // A range gets the file itself, whatever the client accepts.
    let r = env
        .get_with(
            "/static/css/site.css",
            &[("accept-encoding", "br"), ("range", "bytes=0-3")],
        )
        .await;
    assert_eq!(r.status(), 206);
    assert!(!r.headers().contains_key("content-encoding"));
    assert_eq!(r.text().await.expect("body"), "body");
}

#[tokio::test]
async fn missing_files_fall_back_to_the_app_when_asked() {
    let tree = Tree::new();
    let up = FakeUpstream::start_named("app").await;
    let env = start(&config(&tree.root(), ", fallback = true", &up)).await;
    let r = env.get_with("/static/css/site.css", &[]).await;
    assert_eq!(r.text().await.expect("body"), CSS);
    assert_eq!(up.request_count(), 0);
    let r = env.get_with("/static/generated.css", &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-upstream"], "app");
    assert_eq!(up.request_count(), 1);
    assert_eq!(up.requests()[0].path(), "/static/generated.css");
    // Methods files do not answer go to the app too.
    let r = client()
        .post(env.url("/static/css/site.css"))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.headers()["x-upstream"], "app");
    assert_eq!(up.request_count(), 2);
    // A refused path is refused, never handed to the app.
    let reply = raw_exchange(
        env.listen,
        b"GET /static/%2e%2e/secret.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(
        reply.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert_eq!(up.request_count(), 2, "a refused path reached the app");
}

#[tokio::test]
async fn traversal_attempts_are_refused_and_the_process_stays_up() {
    let tree = Tree::new();
    let up = FakeUpstream::start_named("app").await;
    let env = start(&config(&tree.root(), "", &up)).await;
    let attempts = [
        "/static/../secret.txt",
        "/static/css/../../secret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/%2E%2E/secret.txt",
        "/static/.%2e/secret.txt",
        "/static/..%2fsecret.txt",
        "/static/%252e%252e/secret.txt",
        "/static/..%252fsecret.txt",
        "/static/..%5csecret.txt",
        "/static/..\\secret.txt",
        "/static/css%2f..%2f..%2fsecret.txt",
        "/static/secret.txt%00.css",
        "/static/link.txt",
        "/static/..",
    ];
    for path in attempts {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let reply = raw_exchange(env.listen, req.as_bytes(), Duration::from_secs(3)).await;
        let text = String::from_utf8_lossy(&reply);
        assert!(
            !text.contains("TOP SECRET"),
            "{path} served the secret:\n{text}"
        );
        let status = text.get(9..12).unwrap_or("");
        assert!(
            matches!(status, "400" | "403" | "404"),
            "{path}: expected a refusal, got:\n{text}"
        );
    }
    assert_eq!(up.request_count(), 0, "a traversal attempt reached the app");
    // Refusals are loud: counted by reason.
    let bad_path = env
        .metric("berth_rejections_total{route=\"files\",reason=\"bad_path\"}")
        .await;
    assert!(bad_path >= 10.0, "bad_path counted {bad_path} times");
    let outside = env
        .metric("berth_rejections_total{route=\"files\",reason=\"outside_root\"}")
        .await;
    assert_eq!(outside, 1.0);
    // A symlink that stays under the root is served.
    let r = env.get_with("/static/same.css", &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), CSS);
    // Still up and serving.
    let mut berth = env.berth;
    assert!(berth.try_wait().is_none(), "berth exited");
}

#[tokio::test]
async fn large_files_stream_whole_and_in_ranges() {
    let tree = Tree::new();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    tree.write("big.bin", &big);
    let up = FakeUpstream::start_named("app").await;
    let env = start(&config(&tree.root(), "", &up)).await;
    let r = env.get_with("/static/big.bin", &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert_eq!(r.bytes().await.expect("body").as_ref(), &big[..]);
    let r = env
        .get_with("/static/big.bin", &[("range", "bytes=100000-250000")])
        .await;
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.bytes().await.expect("body").as_ref(),
        &big[100_000..=250_000]
    );
}
