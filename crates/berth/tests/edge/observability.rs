//! What operators see: Prometheus metrics, the JSON access log, the admin endpoints, and
//! HTTP/2 clients showing up as such.

use std::time::Duration;

use berth_testkit::{FakeUpstream, http_get};

use crate::common::{Env, client, metric_sum, start};

/// Route `app` for `app.test` only, so other hosts get the edge's 404.
fn app_only(up: &FakeUpstream) -> String {
    format!(
        "[[route]]\nname = \"app\"\nhosts = [\"app.test\"]\ngroup = \"app\"\n\n[group.app]\nupstreams = [\"{}\"]\n",
        up.addr()
    )
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z`.
fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && s.ends_with('Z')
        && (b.len() == 20 || (b[19] == b'.' && digits(20..b.len() - 1) && b.len() > 21))
}

async fn metrics_when(env: &Env, ready: impl Fn(&str) -> bool) -> String {
    let end = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let text = env.metrics().await;
        if ready(&text) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "metrics never got there:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn metrics_count_requests_rejections_and_connections() {
    let up = FakeUpstream::start_named("a").await;
    let env = start(&app_only(&up)).await;
    for _ in 0..3 {
        let (status, _, _) = http_get(env.listen, "/", "app.test").await;
        assert_eq!(status, 200);
    }
    let (status, _, _) = http_get(env.listen, "/", "unknown.test").await;
    assert_eq!(status, 404);
    up.set_status(500);
    let (status, _, _) = http_get(env.listen, "/", "app.test").await;
    assert_eq!(status, 500);

    let two = "berth_requests_total{route=\"app\",release=\"default\",status=\"2xx\"}";
    let five = "berth_requests_total{route=\"app\",release=\"default\",status=\"5xx\"}";
    let text = metrics_when(&env, |t| metric_sum(t, five) >= 1.0).await;
    assert_eq!(metric_sum(&text, two), 3.0, "{text}");
    assert_eq!(metric_sum(&text, five), 1.0, "{text}");
    let buckets: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("berth_request_duration_seconds_bucket{"))
        .filter(|l| l.contains("route=\"app\"") && l.contains("release=\"default\""))
        .collect();
    assert!(!buckets.is_empty(), "{text}");
    let inf = buckets
        .iter()
        .find(|l| l.contains("le=\"+Inf\""))
        .expect("+Inf bucket");
    assert_eq!(
        metric_sum(inf, "berth_request_duration_seconds_bucket"),
        4.0,
        "{text}"
    );
    let healthy = format!(
        "berth_upstream_healthy{{group=\"app\",release=\"default\",upstream=\"{}\"}}",
        up.addr()
    );
    assert_eq!(metric_sum(&text, &healthy), 1.0, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("berth_open_connections ")),
        "{text}"
    );
    assert!(
        metric_sum(&text, "berth_connections_total") >= 5.0,
        "{text}"
    );
    assert_eq!(
        metric_sum(
            &text,
            "berth_rejections_total{route=\"-\",reason=\"no_route\"}"
        ),
        1.0,
        "{text}"
    );
}

#[tokio::test]
async fn access_log_has_one_complete_json_line_per_request() {
    let up = FakeUpstream::builder()
        .name("a")
        .body("hello, access log")
        .start()
        .await;
    let env = start(&app_only(&up)).await;
    let r = client()
        .get(env.url("/some/path?q=1"))
        .header("host", "app.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body = r.bytes().await.unwrap();
    assert_eq!(&body[..], b"hello, access log");

    let lines = env.access_log(1).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    let l = &lines[0];
    assert!(
        is_rfc3339_utc(l["time"].as_str().unwrap_or_default()),
        "{l}"
    );
    assert_eq!(l["request_id"], id.as_str(), "{l}");
    assert_eq!(l["client"], "127.0.0.1", "{l}");
    assert_eq!(l["host"], "app.test", "{l}");
    assert_eq!(l["method"], "GET", "{l}");
    assert_eq!(l["path"], "/some/path?q=1", "{l}");
    assert_eq!(l["protocol"], "HTTP/1.1", "{l}");
    assert_eq!(l["status"], 200, "{l}");
    assert_eq!(l["bytes"], body.len(), "{l}");
    assert!(l["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{l}");
    assert_eq!(l["route"], "app", "{l}");
    assert_eq!(l["release"], "default", "{l}");
    assert_eq!(l["upstream"], up.addr().to_string(), "{l}");
    assert_eq!(l["attempts"], 1, "{l}");
    assert!(l.get("error").is_none(), "{l}");
    // Every stdout line is an access-log line.
    assert!(
        env.berth
            .stdout_lines()
            .iter()
            .all(|line| serde_json::from_str::<serde_json::Value>(line).is_ok()),
        "{}",
        env.berth.stdout_text()
    );

    // An edge answer is logged too, with the edge's own route and no upstream.
    let (status, headers, _) = http_get(env.listen, "/x", "other.test").await;
    assert_eq!(status, 404);
    let lines = env.access_log(2).await;
    let l = &lines[1];
    assert_eq!(l["status"], 404, "{l}");
    assert_eq!(l["host"], "other.test", "{l}");
    assert_eq!(
        l["request_id"],
        headers["x-request-id"].to_str().unwrap(),
        "{l}"
    );
    assert!(l["upstream"].is_null(), "{l}");
    assert_eq!(l["attempts"], 0, "{l}");
}

#[tokio::test]
async fn admin_endpoints() {
    let up = FakeUpstream::start_named("a").await;
    let env = start(&app_only(&up)).await;
    let c = client();
    for path in ["/health", "/ready"] {
        let r = c
            .get(format!("http://{}{path}", env.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let r = c
        .get(format!("http://{}/nope", env.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let doc: serde_json::Value = r.json().await.unwrap();
    assert!(doc["code"].is_string(), "{doc}");
    // Admin requests are not proxied requests.
    assert_eq!(up.request_count(), 0);
    assert!(env.berth.stdout_lines().is_empty());
}

#[tokio::test]
async fn h2c_prior_knowledge_is_proxied_to_an_http1_upstream() {
    let up = FakeUpstream::start_named("a").await;
    let env = start(&crate::common::simple(&[up.addr()], "", "")).await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let r = h2.get(env.url("/h2?x=1")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-upstream"], "a");
    assert_eq!(r.text().await.unwrap(), "a");

    let seen = up.last_request().expect("upstream saw it");
    assert_eq!(seen.version, http::Version::HTTP_11);
    assert_eq!(seen.header("host"), Some(env.listen.to_string().as_str()));
    assert_eq!(seen.uri.to_string(), "/h2?x=1");

    let lines = env.access_log(1).await;
    assert_eq!(lines[0]["protocol"], "HTTP/2", "{}", lines[0]);
    assert_eq!(lines[0]["status"], 200, "{}", lines[0]);
    assert_eq!(lines[0]["host"], "127.0.0.1", "{}", lines[0]);
}
