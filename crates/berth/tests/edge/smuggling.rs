//! Ambiguous or malformed requests (request smuggling, bad framing, bad header syntax) and
//! broken upstreams: who is answered what, and what the upstream gets to see.

use std::time::{Duration, Instant};

use berth_testkit::{FakeUpstream, raw_exchange};

use crate::common::{Env, client, eventually, simple, start};

fn text(reply: &[u8]) -> String {
    String::from_utf8_lossy(reply).into_owned()
}

fn status_line(reply: &[u8]) -> String {
    text(reply).lines().next().unwrap_or_default().to_owned()
}

/// How many responses a raw reply holds.
fn responses(reply: &[u8]) -> usize {
    text(reply).matches("HTTP/1.1 ").count()
}

async fn app(up: &FakeUpstream) -> Env {
    start(&simple(&[up.addr()], "", "")).await
}

/// Each case, on a connection of its own, is answered 400 with `says` in the reply.
async fn assert_refused(env: &Env, cases: &[(&str, &[u8])], says: &str) {
    for (what, req) in cases {
        let reply = raw_exchange(env.listen, req, Duration::from_secs(2)).await;
        assert!(
            status_line(&reply).starts_with("HTTP/1.1 400 ") && text(&reply).contains(says),
            "{what}: {}",
            text(&reply)
        );
    }
}

#[tokio::test]
async fn content_length_with_transfer_encoding_cannot_smuggle_a_request() {
    let up = FakeUpstream::start_named("a").await;
    let env = app(&up).await;
    let req = b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let reply = raw_exchange(env.listen, req, Duration::from_secs(2)).await;
    let t = text(&reply);
    // Transfer-Encoding wins: the POST has an empty chunked body and is answered...
    assert!(t.starts_with("HTTP/1.1 200 "), "{t}");
    // ...once, on a connection that is then closed: what follows the chunked body is never
    // read as a second request.
    assert_eq!(responses(&reply), 1, "{t}");
    assert!(
        t.to_ascii_lowercase().contains("connection: close\r\n"),
        "{t}"
    );
    // The only request the upstream gets is the POST, framed one way only.
    let seen = up.requests();
    let paths: Vec<String> = seen.iter().map(|r| r.uri.to_string()).collect();
    assert_eq!(paths, ["/"], "the upstream saw {paths:?}");
    let post = &seen[0];
    assert_eq!(post.method, http::Method::POST);
    assert!(
        post.header("content-length").is_none(),
        "both framings reached the upstream: {:?}",
        post.headers
    );
    assert!(post.body.is_empty(), "body {:?}", post.body);
}

#[tokio::test]
async fn conflicting_content_lengths_are_refused() {
    let up = FakeUpstream::start_named("a").await;
    let env = app(&up).await;
    let req = b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!";
    let reply = raw_exchange(env.listen, req, Duration::from_secs(2)).await;
    assert!(
        status_line(&reply).starts_with("HTTP/1.1 400 "),
        "{}",
        text(&reply)
    );
    assert_eq!(responses(&reply), 1, "{}", text(&reply));
    assert_eq!(up.request_count(), 0);
}

#[tokio::test]
async fn malformed_chunk_size_is_a_client_error() {
    let up = FakeUpstream::start_named("a").await;
    let env = app(&up).await;
    let req = b"POST /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n";
    let reply = raw_exchange(env.listen, req, Duration::from_secs(3)).await;
    let t = text(&reply);
    assert!(status_line(&reply).starts_with("HTTP/1.1 400 "), "{t}");
    assert!(t.contains("the request body could not be read"), "{t}");
    // The client sent garbage: the upstream is not blamed for it.
    assert!(up.requests().iter().all(|r| r.body.is_empty()));
    let ok = eventually(Duration::from_secs(3), || async {
        env.rejections("app", "bad_request_body").await == 1.0
    })
    .await;
    assert!(ok, "{}", env.metrics().await);
    assert_eq!(env.metric("berth_upstream_errors_total").await, 0.0);
    assert_eq!(env.metric("berth_upstream_ejections_total").await, 0.0);
    let lines = env.access_log(1).await;
    assert_eq!(lines[0]["status"], 400, "{}", lines[0]);
    assert_eq!(lines[0]["error"], "bad_request_body", "{}", lines[0]);
}

/// The edge routes on one Host while the application might read another: RFC 9112 §3.2
/// asks for a 400 instead, and so does a Host that is not one.
#[tokio::test]
async fn ambiguous_or_missing_hosts_are_refused_before_the_upstream() {
    let up = FakeUpstream::start_named("a").await;
    let env = app(&up).await;
    let cases: [(&str, &[u8]); 4] = [
        (
            "two Host headers",
            b"GET / HTTP/1.1\r\nHost: app.test\r\nHost: admin.test\r\n\r\n",
        ),
        ("no Host header", b"GET / HTTP/1.1\r\n\r\n"),
        (
            "user info in Host",
            b"GET / HTTP/1.1\r\nHost: user@app.test\r\n\r\n",
        ),
        (
            "a path in Host",
            b"GET / HTTP/1.1\r\nHost: app.test/x\r\n\r\n",
        ),
    ];
    assert_refused(&env, &cases, "bad Host header").await;
    assert_eq!(up.request_count(), 0);
    let counted = eventually(Duration::from_secs(3), || async {
        env.rejections("-", "bad_host").await == 4.0
    })
    .await;
    assert!(counted, "{}", env.metrics().await);
    let lines = env.access_log(4).await;
    let logged = lines.iter().filter(|l| l["error"] == "bad_host").count();
    assert_eq!(logged, 4, "{lines:?}");
    // HTTP/1.0 has no Host requirement, and an empty Host is allowed: both are served.
    for req in [
        &b"GET / HTTP/1.0\r\n\r\n"[..],
        &b"GET / HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n"[..],
    ] {
        let reply = raw_exchange(env.listen, req, Duration::from_secs(2)).await;
        assert!(status_line(&reply).contains(" 200 "), "{}", text(&reply));
    }
}

#[tokio::test]
async fn malformed_header_syntax_is_refused_before_the_upstream() {
    let up = FakeUpstream::start_named("a").await;
    let env = app(&up).await;
    let cases: [(&str, &[u8]); 4] = [
        (
            "obs-fold",
            b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Folded: first\r\n second\r\n\r\n",
        ),
        (
            "space in a header name",
            b"GET / HTTP/1.1\r\nHost: app.test\r\nBad Header: x\r\n\r\n",
        ),
        (
            "space before the colon",
            b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Name : x\r\n\r\n",
        ),
        (
            "NUL in a header value",
            b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Nul: a\0b\r\n\r\n",
        ),
    ];
    assert_refused(&env, &cases, "").await;
    assert_eq!(up.request_count(), 0);
}

#[tokio::test]
async fn upstream_dropping_mid_body_truncates_the_response() {
    let up = FakeUpstream::builder()
        .name("cut")
        .body("z".repeat(100))
        .drop_mid_body(10)
        .start()
        .await;
    let env = app(&up).await;
    let started = Instant::now();
    let reply = raw_exchange(
        env.listen,
        b"GET /file HTTP/1.1\r\nHost: app.test\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "the client hung for {took:?}"
    );
    let t = text(&reply);
    assert!(t.starts_with("HTTP/1.1 200 "), "{t}");
    assert!(
        t.to_ascii_lowercase().contains("content-length: 100\r\n"),
        "{t}"
    );
    let (_, body) = t.split_once("\r\n\r\n").expect("a head");
    assert!(body.len() < 100, "{} body bytes: {t}", body.len());

    // reqwest sees the same thing as an error, never as a complete body.
    let r = client().get(env.url("/file")).send().await.unwrap();
    assert!(r.bytes().await.is_err());

    let line = env
        .berth
        .wait_for_stdout(|l| l.contains("\"path\":\"/file\""), Duration::from_secs(3))
        .await
        .expect("access log line");
    let doc: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(doc["error"], "upstream_body", "{line}");
    assert_eq!(doc["status"], 200, "{line}");
    assert!(doc["bytes"].as_u64().unwrap() < 100, "{line}");
}

#[tokio::test]
async fn every_upstream_down_gives_502_without_leaking_addresses() {
    let down = [crate::common::dead_addr(), crate::common::dead_addr()];
    let env = start(&simple(&down, "", "")).await;
    let r = client().get(env.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let body = r.text().await.unwrap();
    for addr in down {
        assert!(!body.contains(&addr.port().to_string()), "{body}");
    }
    assert!(!body.contains("127.0.0.1"), "{body}");
    assert!(!body.to_lowercase().contains("refused"), "{body}");
    let lines = env.access_log(1).await;
    let attempts = lines[0]["attempts"].as_f64().expect("attempts");
    assert!(attempts >= 1.0, "{:?}", lines[0]);
    let connect_errors = env
        .metric("berth_upstream_errors_total{route=\"app\",reason=\"connect\"}")
        .await;
    assert!(connect_errors > 0.0);
    // The metric counts failed attempts, each once.
    assert_eq!(
        connect_errors, attempts,
        "failed attempts counted {connect_errors} times for {attempts} attempts"
    );
}
