//! Proxy semantics: what the upstream and the client see of each other.

use std::time::{Duration, Instant};

use berth_testkit::{FakeUpstream, raw_exchange};
use futures_util::StreamExt;

use crate::common::{client, simple, start, start_with};

#[tokio::test]
async fn strips_hop_by_hop_sets_forwarding_and_request_id() {
    let up = FakeUpstream::start_named("a").await;
    let env = start(&simple(&[up.addr()], "", "")).await;
    let req = b"GET /page HTTP/1.1\r\nHost: app.test\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic eA==\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Request-Id: trace-abc-123\r\nX-Custom: kept\r\n\r\n";
    let resp = raw_exchange(env.listen, req, Duration::from_secs(2)).await;
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("x-request-id: trace-abc-123"),
        "{text}"
    );
    let seen = up.last_request().expect("upstream saw the request");
    for gone in ["connection", "x-hop", "keep-alive", "proxy-authorization"] {
        assert!(seen.header(gone).is_none(), "{gone} reached the upstream");
    }
    assert_eq!(seen.header("x-custom"), Some("kept"));
    assert_eq!(seen.header("host"), Some("app.test"));
    // Spoofed forwarding headers are replaced, not trusted.
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some("app.test"));
    assert_eq!(seen.header("x-request-id"), Some("trace-abc-123"));
}

#[tokio::test]
async fn generates_a_request_id_when_missing_or_malformed() {
    let up = FakeUpstream::start_named("a").await;
    let env = start(&simple(&[up.addr()], "", "")).await;
    let c = client();
    let r1 = c.get(env.url("/")).send().await.unwrap();
    let id1 = r1.headers()["x-request-id"].to_str().unwrap().to_owned();
    let r2 = c
        .get(env.url("/"))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let id2 = r2.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id1.len(), 32);
    assert_eq!(id2.len(), 32);
    assert_ne!(id1, id2);
    let seen: Vec<String> = up
        .requests()
        .iter()
        .map(|r| r.header("x-request-id").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(seen, vec![id1, id2]);
}

#[tokio::test]
async fn security_and_custom_headers_follow_the_route_policy() {
    let up = FakeUpstream::start_named("a").await;
    let route = r#"security_headers = { hsts = "max-age=63072000", csp = "default-src 'self'", frame_options = "DENY" }
request_headers = { set = { "X-Env" = "prod" }, remove = ["X-Debug"] }
response_headers = { set = { "Cache-Control" = "no-store" }, remove = ["X-Upstream"] }"#;
    let env = start(&simple(&[up.addr()], route, "")).await;
    let r = client()
        .get(env.url("/"))
        .header("x-debug", "1")
        .send()
        .await
        .unwrap();
    let h = r.headers();
    // HSTS is configured but this is plain HTTP: never sent here (tls.rs checks it over TLS).
    assert!(!h.contains_key("strict-transport-security"));
    assert_eq!(h["content-security-policy"], "default-src 'self'");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "strict-origin-when-cross-origin");
    assert_eq!(h["cache-control"], "no-store");
    assert!(!h.contains_key("x-upstream"));
    let seen = up.last_request().unwrap();
    assert_eq!(seen.header("x-env"), Some("prod"));
    assert!(seen.header("x-debug").is_none());
}

#[tokio::test]
async fn websocket_style_upgrade_passes_through() {
    let up = FakeUpstream::start_named("a").await;
    let env = start(&simple(&[up.addr()], "", "")).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(env.listen).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    for msg in [&b"hello"[..], b"second message"] {
        s.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, msg);
    }
}

#[tokio::test]
async fn server_sent_events_stream_without_buffering() {
    let up = FakeUpstream::start_named("a").await;
    let env = start(&simple(&[up.addr()], "", "")).await;
    let started = Instant::now();
    let r = client()
        .get(env.url("/sse?n=4&interval_ms=300"))
        .send()
        .await
        .unwrap();
    let mut stream = r.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    let first_at = started.elapsed();
    assert!(String::from_utf8_lossy(&first).contains("data: 0"));
    let mut rest = Vec::new();
    while let Some(chunk) = stream.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    let total = started.elapsed();
    assert!(String::from_utf8_lossy(&rest).contains("data: 3"));
    // The first event arrives long before the stream ends (4 × 300 ms), so nothing buffered it.
    assert!(
        total - first_at >= Duration::from_millis(600),
        "first {first_at:?} total {total:?}"
    );
}

#[tokio::test]
async fn trailers_are_preserved() {
    let up = FakeUpstream::start_named("a").await;
    let env = start(&simple(&[up.addr()], "", "")).await;
    let resp = raw_exchange(
        env.listen,
        b"GET /trailers HTTP/1.1\r\nHost: app.test\r\nTE: trailers\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    let text = String::from_utf8_lossy(&resp).to_ascii_lowercase();
    assert!(text.contains("transfer-encoding: chunked"), "{text}");
    assert!(text.ends_with("0\r\nx-checksum: abc123\r\n\r\n"), "{text}");
}

#[tokio::test]
async fn maintenance_mode_serves_503_except_to_allowed_networks() {
    let up = FakeUpstream::start_named("a").await;
    let env = start(&simple(
        &[up.addr()],
        r#"maintenance = { enabled = true, retry_after = "90s", allow = ["10.0.0.0/8"] }"#,
        "",
    ))
    .await;
    let r = client().get(env.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "90");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        r.text()
            .await
            .unwrap()
            .to_lowercase()
            .contains("maintenance")
    );
    assert_eq!(up.request_count(), 0);

    // The same route with loopback allowed lets this client through.
    let allowed = start_with(
        &simple(
            &[up.addr()],
            r#"maintenance = { enabled = true, allow = ["127.0.0.0/8"] }"#,
            "",
        ),
        "",
    )
    .await;
    let r = client().get(allowed.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.request_count(), 1);
}

#[tokio::test]
async fn request_bodies_stream_to_the_upstream_without_buffering() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A raw upstream socket, so the test sees bytes as they arrive rather than whole requests.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let env = start(&simple(&[upstream.local_addr().unwrap()], "", "")).await;
    let mut client = tokio::net::TcpStream::connect(env.listen).await.unwrap();
    client
        .write_all(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        .await
        .unwrap();
    let (mut up, _) = tokio::time::timeout(Duration::from_secs(5), upstream.accept())
        .await
        .expect("berth connects upstream before the body is complete")
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("first") {
        let n = tokio::time::timeout(Duration::from_secs(5), up.read(&mut buf))
            .await
            .expect("the first chunk arrives while the client is still sending")
            .unwrap();
        assert!(n > 0, "upstream connection closed early");
        seen.extend_from_slice(&buf[..n]);
    }
    // Only now does the client finish its body.
    client.write_all(b"6\r\nsecond\r\n0\r\n\r\n").await.unwrap();
    while !String::from_utf8_lossy(&seen).contains("0\r\n\r\n") {
        let n = up.read(&mut buf).await.unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&seen).contains("second"));
    up.write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n")
        .await
        .unwrap();
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 201"));
}
