//! Limits on clients and upstreams: header and body sizes, concurrency, and every timeout.

use std::time::{Duration, Instant};

use berth_testkit::{FakeUpstream, http_get, raw_exchange};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Env, client, eventually, simple, start, start_with};

fn status_line(reply: &[u8]) -> String {
    let text = String::from_utf8_lossy(reply);
    text.lines().next().unwrap_or_default().to_owned()
}

/// Waits until the peer closes the connection (EOF or reset) and returns how long that took,
/// or `None` if it is still open after `limit`. Anything the peer sends first is skipped.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Reads one response of `body_len` body bytes off a kept-alive connection.
async fn read_response(stream: &mut TcpStream, body_len: usize) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got);
        if let Some(end) = text.find("\r\n\r\n")
            && got.len() >= end + 4 + body_len
        {
            return text.into_owned();
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("response within 5 s")
            .expect("read");
        assert!(n > 0, "connection closed mid-response: {text}");
        got.extend_from_slice(&buf[..n]);
    }
}

async fn rejections(env: &Env, reason: &str) -> f64 {
    env.rejections("app", reason).await
}

async fn wait_metric(env: &Env, prefix: &str, want: f64) {
    let ok = eventually(Duration::from_secs(3), || async {
        env.metric(prefix).await >= want
    })
    .await;
    assert!(
        ok,
        "{prefix} never reached {want}; metrics:\n{}",
        env.metrics().await
    );
}

const SMALL_HEADERS: &str = "[server.client]\nmax_header_bytes = \"2KiB\"";

#[tokio::test]
async fn oversized_headers_get_431_naming_the_limit() {
    let up = FakeUpstream::start_named("a").await;
    let env = start_with(&simple(&[up.addr()], "", ""), SMALL_HEADERS).await;
    let big = "x".repeat(3 * 1024);
    let req =
        format!("GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: {big}\r\nConnection: close\r\n\r\n");
    let reply = raw_exchange(env.listen, req.as_bytes(), Duration::from_secs(3)).await;
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{text}"
    );
    assert!(text.contains("2048 bytes"), "{text}");
    assert_eq!(up.request_count(), 0);
    wait_metric(
        &env,
        "berth_rejections_total{route=\"app\",reason=\"headers_too_large\"}",
        1.0,
    )
    .await;

    // A head far beyond the limit is refused by the HTTP parser itself: a bare 431 or a closed
    // connection, but never a forwarded request.
    let huge = "y".repeat(200 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: app.test\r\nX-Huge: {huge}\r\n\r\n");
    let reply = raw_exchange(env.listen, req.as_bytes(), Duration::from_secs(3)).await;
    let line = status_line(&reply);
    assert!(
        reply.is_empty() || line.starts_with("HTTP/1.1 431"),
        "{line}"
    );
    assert_eq!(up.request_count(), 0);

    // The listener still serves normal requests.
    let (status, _, _) = http_get(env.listen, "/", "app.test").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let up = FakeUpstream::start_named("a").await;
    let env = start(&simple(&[up.addr()], "max_body = \"1KiB\"", "")).await;

    // Declared too large: refused before anything is sent upstream.
    let body = "b".repeat(2048);
    let req = format!(
        "POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 2048\r\nConnection: close\r\n\r\n{body}"
    );
    let reply = raw_exchange(env.listen, req.as_bytes(), Duration::from_secs(3)).await;
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
    assert!(text.contains("1024 bytes"), "{text}");
    assert_eq!(up.request_count(), 0);

    // Chunked, so only counting reveals it: the client still gets 413.
    let chunk = "c".repeat(800);
    let req = format!(
        "POST /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n320\r\n{chunk}\r\n320\r\n{chunk}\r\n0\r\n\r\n"
    );
    let reply = raw_exchange(env.listen, req.as_bytes(), Duration::from_secs(3)).await;
    let line = status_line(&reply);
    assert!(line.starts_with("HTTP/1.1 413 "), "{line}");
    // Whatever the upstream saw of it, it never saw the whole body.
    assert!(up.requests().iter().all(|r| r.body.len() < 1600));

    wait_metric(
        &env,
        "berth_rejections_total{route=\"app\",reason=\"body_too_large\"}",
        2.0,
    )
    .await;
    assert_eq!(env.metric("berth_upstream_errors_total").await, 0.0);
}

#[tokio::test]
async fn max_concurrent_turns_away_the_excess_with_503_and_retry_after() {
    let up = FakeUpstream::builder()
        .name("slow")
        .latency(Duration::from_secs(1))
        .start()
        .await;
    let env = start(&simple(&[up.addr()], "max_concurrent = 2", "")).await;
    let c = client();
    let started = Instant::now();
    let sends = (0..5).map(|i| {
        let c = c.clone();
        let url = env.url(&format!("/{i}"));
        async move {
            let r = c.get(url).send().await.expect("response");
            let status = r.status().as_u16();
            let retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, retry_after)
        }
    });
    let results = futures_util::future::join_all(sends).await;
    assert!(started.elapsed() < Duration::from_secs(4));
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let refused: Vec<_> = results.iter().filter(|(s, _)| *s == 503).collect();
    assert_eq!(ok, 2, "{results:?}");
    assert_eq!(refused.len(), 3, "{results:?}");
    assert!(refused.iter().all(|(_, ra)| ra.is_some()), "{results:?}");
    assert_eq!(up.request_count(), 2);
    assert_eq!(rejections(&env, "overloaded").await, 3.0);

    // The permits come back: the next request is admitted.
    let r = c.get(env.url("/after")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

const SHORT_HEADER_TIMEOUT: &str = "[server.client]\nheader_timeout = \"1s\"";

#[tokio::test]
async fn slowloris_head_is_cut_off_after_header_timeout() {
    let up = FakeUpstream::start_named("a").await;
    let env = start_with(&simple(&[up.addr()], "", ""), SHORT_HEADER_TIMEOUT).await;
    let mut slow = TcpStream::connect(env.listen).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();

    // Meanwhile, everyone else is served.
    let (status, _, _) = http_get(env.listen, "/", "app.test").await;
    assert_eq!(status, 200);

    let closed = closed_within(&mut slow, Duration::from_secs(3)).await;
    assert!(
        closed.is_some(),
        "a half-sent head kept its connection for 3 s"
    );
    assert_eq!(up.request_count(), 1);
    wait_metric(
        &env,
        "berth_connection_errors_total{kind=\"header_timeout\"}",
        1.0,
    )
    .await;
}

#[tokio::test]
async fn silent_connection_is_cut_off_after_header_timeout() {
    // The classic slowloris opens connections and sends nothing at all; header_timeout must
    // cover that too, not only a head that has started.
    let up = FakeUpstream::start_named("a").await;
    let env = start_with(&simple(&[up.addr()], "", ""), SHORT_HEADER_TIMEOUT).await;
    let mut silent = TcpStream::connect(env.listen).await.unwrap();
    let closed = closed_within(&mut silent, Duration::from_secs(3)).await;
    assert!(
        closed.is_some(),
        "a connection that sent nothing was still open 3 s later (header_timeout = 1s)"
    );
}

#[tokio::test]
async fn response_header_timeout_gives_504_without_retrying() {
    let up = FakeUpstream::builder()
        .name("slow")
        .latency(Duration::from_secs(3))
        .start()
        .await;
    let env = start(&simple(
        &[up.addr()],
        "timeouts = { response_header = \"500ms\" }",
        "",
    ))
    .await;
    let started = Instant::now();
    let r = client().get(env.url("/")).send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), 504);
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(took >= Duration::from_millis(400), "took {took:?}");
    let body = r.text().await.unwrap();
    assert!(
        body.contains("the application did not answer in time"),
        "{body}"
    );
    // A request that may have reached the application is not sent again, even a GET.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(up.request_count(), 1);
    let lines = env.access_log(1).await;
    assert_eq!(lines[0]["status"], 504);
    assert_eq!(lines[0]["attempts"], 1);
}

#[tokio::test]
async fn total_timeout_cuts_a_slow_body() {
    let up = FakeUpstream::builder()
        .name("dribble")
        .body("0123456789".repeat(10))
        .slow_body(10, Duration::from_millis(300))
        .start()
        .await;
    let env = start(&simple(&[up.addr()], "timeouts = { total = \"1s\" }", "")).await;
    let started = Instant::now();
    let r = client().get(env.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut got = 0usize;
    let mut failed = false;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => got += c.len(),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    let took = started.elapsed();
    assert!(
        got < 100,
        "the whole body arrived ({got} bytes) in {took:?}"
    );
    assert!(
        failed,
        "the cut body ended like a complete one after {got} bytes"
    );
    assert!(took < Duration::from_millis(2000), "took {took:?}");
    let line = env
        .berth
        .wait_for_stdout(
            |l| l.contains("\"error\":\"total_timeout\""),
            Duration::from_secs(3),
        )
        .await;
    assert!(line.is_ok(), "{line:?}");
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let up = FakeUpstream::start_named("a").await;
    let env = start_with(
        &simple(&[up.addr()], "", ""),
        "[server.client]\nidle_timeout = \"1s\"",
    )
    .await;
    let mut conn = TcpStream::connect(env.listen).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let head = read_response(&mut conn, 1).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let closed = closed_within(&mut conn, Duration::from_secs(3)).await;
    let closed = closed.expect("an idle keep-alive connection was still open after 3 s");
    assert!(
        closed >= Duration::from_millis(900),
        "closed after {closed:?}"
    );
    // Closing an idle connection is routine, not a connection error.
    assert_eq!(env.metric("berth_connection_errors_total").await, 0.0);
}

#[tokio::test]
async fn idle_timeout_longer_than_header_timeout_is_honoured() {
    // idle_timeout is the documented limit between requests; header_timeout only bounds
    // sending a head. An idle connection must live past header_timeout.
    let up = FakeUpstream::start_named("a").await;
    let env = start_with(
        &simple(&[up.addr()], "", ""),
        "[server.client]\nheader_timeout = \"1s\"\nidle_timeout = \"10s\"",
    )
    .await;
    let mut conn = TcpStream::connect(env.listen).await.unwrap();
    let req = b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n";
    conn.write_all(req).await.unwrap();
    let head = read_response(&mut conn, 1).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let closed = closed_within(&mut conn, Duration::from_millis(2500)).await;
    if closed.is_some() {
        let errors: Vec<String> = env
            .metrics()
            .await
            .lines()
            .filter(|l| l.starts_with("berth_connection_errors_total"))
            .map(str::to_owned)
            .collect();
        panic!(
            "idle connection closed after {closed:?}, long before idle_timeout = 10s; {errors:?}"
        );
    }
    conn.write_all(req).await.unwrap();
    let head = read_response(&mut conn, 1).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}
