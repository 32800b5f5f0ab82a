//! Behaviour of FakeUpstream over real sockets.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use berth_testkit::{
    FakeUpstream, free_addr, free_port, http_get, raw_exchange, send_request, try_http_get,
};
use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(3);

/// `GET /` on a fresh connection, read until the upstream closes it or `WAIT` passes: the
/// reply's bytes, and its text in lower case for matching header lines.
async fn raw_get(addr: SocketAddr) -> (Vec<u8>, String) {
    let reply = raw_exchange(addr, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", WAIT).await;
    let text = String::from_utf8_lossy(&reply).to_lowercase();
    (reply, text)
}

fn body_after_head(reply: &[u8]) -> &[u8] {
    let at = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response has a head");
    &reply[at + 4..]
}

#[tokio::test]
async fn status_mix_is_exact_and_deterministic() {
    let up = FakeUpstream::builder()
        .name("a")
        .status_mix(&[(200, 90), (500, 10)])
        .start()
        .await;
    let mut statuses = Vec::new();
    for i in 0..100 {
        let (status, headers, body) = http_get(up.addr(), &format!("/r{i}"), "h").await;
        assert_eq!(headers["x-upstream"], "a");
        assert_eq!(body, "a");
        statuses.push(status.as_u16());
    }
    assert_eq!(statuses.iter().filter(|&&s| s == 500).count(), 10);
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 90);
    assert_eq!(up.request_count(), 100);

    // A second upstream with the same mix answers in the same order.
    let again = FakeUpstream::builder()
        .status_mix(&[(200, 90), (500, 10)])
        .start()
        .await;
    for (i, expected) in statuses.iter().enumerate().take(20) {
        let (status, _, _) = http_get(again.addr(), &format!("/r{i}"), "h").await;
        assert_eq!(status.as_u16(), *expected, "request {i}");
    }
}

#[tokio::test]
async fn drops_every_nth_request_without_a_response() {
    let up = FakeUpstream::builder()
        .drop_connections_every(3)
        .start()
        .await;
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        outcomes.push(try_http_get(up.addr(), "/", "h").await.is_ok());
    }
    assert_eq!(outcomes, [true, true, false, true, true]);
    // The 6th is dropped too: no byte at all comes back.
    let (reply, _) = raw_get(up.addr()).await;
    assert!(
        reply.is_empty(),
        "got {:?}",
        String::from_utf8_lossy(&reply)
    );
    // Dropped requests are still recorded; health checks never dropped or counted.
    assert_eq!(up.request_count(), 6);
    for _ in 0..4 {
        assert_eq!(http_get(up.addr(), "/health", "h").await.0, 200);
    }
    assert_eq!(up.health_checks(), 4);
    assert_eq!(up.request_count(), 6);
}

#[tokio::test]
async fn latency_delays_the_head_of_normal_requests_only() {
    let up = FakeUpstream::builder()
        .latency(Duration::from_millis(500))
        .start()
        .await;
    let started = Instant::now();
    let (status, _, _) = http_get(up.addr(), "/", "h").await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(500));

    let started = Instant::now();
    http_get(up.addr(), "/health", "h").await;
    assert!(started.elapsed() < Duration::from_millis(400));
}

#[tokio::test]
async fn slow_body_streams_in_chunks_with_content_length() {
    let up = FakeUpstream::builder()
        .body("abcdefgh")
        .slow_body(4, Duration::from_millis(100))
        .start()
        .await;
    let stream = TcpStream::connect(up.addr()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let started = Instant::now();
    let req = http::Request::get("/")
        .header("host", "h")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    let head_at = started.elapsed();
    assert_eq!(res.headers()["content-length"], "8");
    let mut body = res.into_body();
    let mut chunks = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            chunks.push((data, started.elapsed()));
        }
    }
    let all: Vec<u8> = chunks.iter().flat_map(|(d, _)| d.to_vec()).collect();
    assert_eq!(all, b"abcdefgh");
    assert_eq!(chunks.len(), 4, "chunks: {chunks:?}");
    // The head comes at once, not after the body's three pauses (300 ms); the body takes
    // those pauses after it.
    assert!(
        head_at < Duration::from_millis(250),
        "head took {head_at:?}"
    );
    let body_time = chunks.last().unwrap().1 - head_at;
    assert!(
        body_time >= Duration::from_millis(250),
        "body took {body_time:?}"
    );
}

#[tokio::test]
async fn drop_mid_body_announces_full_length_then_closes() {
    let up = FakeUpstream::builder()
        .body("0123456789")
        .drop_mid_body(4)
        .start()
        .await;
    let (reply, text) = raw_get(up.addr()).await;
    assert!(text.starts_with("http/1.1 200 ok\r\n"), "{text}");
    assert!(text.contains("content-length: 10\r\n"), "{text}");
    assert_eq!(body_after_head(&reply), b"0123");
    // A real client sees a truncated body as an error.
    assert!(try_http_get(up.addr(), "/", "h").await.is_err());
}

#[tokio::test]
async fn drop_mid_body_pads_short_bodies() {
    let up = FakeUpstream::builder()
        .name("a")
        .drop_mid_body(3)
        .start()
        .await;
    let (reply, text) = raw_get(up.addr()).await;
    assert!(text.contains("content-length: 4\r\n"), "{text}");
    assert_eq!(body_after_head(&reply), b"axx");
}

#[tokio::test]
async fn health_toggles_and_status_override() {
    let up = FakeUpstream::builder()
        .health_path("/healthz")
        .unhealthy(true)
        .start()
        .await;
    assert_eq!(http_get(up.addr(), "/healthz", "h").await.0, 503);
    up.set_healthy(true);
    let (status, _, body) = http_get(up.addr(), "/healthz", "h").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
    assert_eq!(up.health_checks(), 2);
    assert_eq!(up.health_requests()[0].path(), "/healthz");
    // "/health" is an ordinary path once another health path is set.
    assert_eq!(http_get(up.addr(), "/health", "h").await.0, 200);
    assert_eq!(up.request_count(), 1);

    up.set_status(502);
    assert_eq!(http_get(up.addr(), "/", "h").await.0, 502);
    assert_eq!(http_get(up.addr(), "/healthz", "h").await.0, 200);
    up.clear_status();
    assert_eq!(http_get(up.addr(), "/", "h").await.0, 200);

    up.clear_requests();
    assert_eq!((up.request_count(), up.health_checks()), (0, 0));
}

#[tokio::test]
async fn records_requests_with_bodies_and_connections() {
    let up = FakeUpstream::start_named("rec").await;
    let req = http::Request::post("/submit?x=1")
        .header("host", "app.test")
        .header("x-multi", "1")
        .header("x-multi", "2")
        .body(Bytes::from_static(b"payload"))
        .unwrap();
    let res = send_request(up.addr(), req).await.unwrap();
    assert_eq!(res.status(), 200);

    // Two keep-alive requests on one connection, the second with a chunked body
    // and a trailer.
    let raw = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n\
        POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
        3\r\nabc\r\n0\r\nx-sum: 9\r\n\r\n";
    let reply = raw_exchange(up.addr(), raw, WAIT).await;
    let text = String::from_utf8_lossy(&reply);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");

    let seen = up.requests();
    assert_eq!(seen.len(), 3);
    let first = &seen[0];
    assert_eq!(first.method, http::Method::POST);
    assert_eq!(first.path(), "/submit");
    assert_eq!(first.query(), Some("x=1"));
    assert_eq!(first.header("host"), Some("app.test"));
    assert_eq!(first.header_all("x-multi"), ["1", "2"]);
    assert_eq!(first.body, "payload");
    assert_eq!(first.version, http::Version::HTTP_11);
    assert!(first.peer.ip().is_loopback());

    assert_eq!(seen[1].connection, seen[2].connection);
    assert_ne!(seen[0].connection, seen[1].connection);
    assert_eq!(seen[2].body, "abc");
    assert_eq!(seen[2].trailers.as_ref().unwrap()["x-sum"], "9");
    assert_eq!(up.connections_accepted(), 2);
    assert_eq!(up.last_request().unwrap().path(), "/b");
}

#[tokio::test]
async fn echo_describes_the_request() {
    let up = FakeUpstream::builder()
        .name("e")
        .status(500)
        .drop_connections_every(1)
        .start()
        .await;
    let req = http::Request::put("/echo?q=2")
        .header("host", "h")
        .header("x-a", "1")
        .body(Bytes::from_static(b"hey"))
        .unwrap();
    let res = send_request(up.addr(), req).await.unwrap();
    // Faults do not apply to the special paths.
    assert_eq!(res.status(), 200);
    let doc: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
    assert_eq!(doc["upstream"], "e");
    assert_eq!(doc["method"], "PUT");
    assert_eq!(doc["path"], "/echo");
    assert_eq!(doc["query"], "q=2");
    assert_eq!(doc["headers"]["x-a"][0], "1");
    assert_eq!(doc["body_bytes"], 3);
    assert_eq!(doc["body"], "hey");
    assert_eq!(up.request_count(), 1);
}

#[tokio::test]
async fn sse_events_arrive_one_by_one() {
    let up = FakeUpstream::start_named("s").await;
    let mut stream = TcpStream::connect(up.addr()).await.unwrap();
    stream
        .write_all(b"GET /sse?n=3&interval_ms=200 HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut seen = String::new();
    let mut first_event_at = None;
    let mut buf = [0u8; 1024];
    while !seen.contains("data: 2\n\n") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_ne!(n, 0, "closed early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        if first_event_at.is_none() && seen.contains("data: 0\n\n") {
            first_event_at = Some(started.elapsed());
        }
    }
    assert!(seen.to_lowercase().contains("transfer-encoding: chunked"));
    // Streamed, not buffered: the last event comes two intervals after the first.
    let spread = started.elapsed() - first_event_at.unwrap();
    assert!(spread >= Duration::from_millis(300), "spread {spread:?}");
}

#[tokio::test]
async fn trailers_are_sent_when_asked_for() {
    let up = FakeUpstream::start_named("t").await;
    let reply = raw_exchange(
        up.addr(),
        b"GET /trailers HTTP/1.1\r\nHost: h\r\nTE: trailers\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    let text = String::from_utf8_lossy(&reply).to_lowercase();
    assert!(text.contains("trailer: x-checksum\r\n"), "{text}");
    assert!(
        text.ends_with("5\r\nhello\r\n0\r\nx-checksum: abc123\r\n\r\n"),
        "{text}"
    );
}

#[tokio::test]
async fn ws_upgrade_echoes_raw_bytes() {
    let up = FakeUpstream::start_named("w").await;
    let mut stream = TcpStream::connect(up.addr()).await.unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: raw-echo\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(
        head.starts_with("http/1.1 101 switching protocols"),
        "{head}"
    );
    assert!(head.contains("upgrade: raw-echo"), "{head}");
    for msg in [&b"ping"[..], b"\x00\x01binary\xff"] {
        stream.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(WAIT, stream.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, msg);
    }
    // stop() reaches upgraded connections too.
    up.stop().await;
    let n = tokio::time::timeout(WAIT, stream.read(&mut byte))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn stop_closes_listener_and_open_connections() {
    let up = FakeUpstream::start_named("x").await;
    let addr = up.addr();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"));

    up.stop().await;
    let n = tokio::time::timeout(WAIT, idle.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "kept-alive connection should be closed");
    assert!(TcpStream::connect(addr).await.is_err());

    // The port can be taken again, e.g. to bring the upstream back.
    let back = FakeUpstream::builder()
        .name("back")
        .bind(addr)
        .start()
        .await;
    let (_, headers, _) = http_get(addr, "/", "h").await;
    assert_eq!(headers["x-upstream"], "back");
    drop(back);
}

#[tokio::test]
async fn default_name_includes_port() {
    let up = FakeUpstream::builder().start().await;
    assert_eq!(up.name(), format!("upstream-{}", up.addr().port()));
    assert_eq!(up.url(), format!("http://{}", up.addr()));
}

#[test]
fn free_ports_are_bindable() {
    let port = free_port();
    std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let addr = free_addr();
    assert!(addr.ip().is_loopback());
    std::net::TcpListener::bind(addr).unwrap();
}
