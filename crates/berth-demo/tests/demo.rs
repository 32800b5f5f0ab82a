//! Runs the real berth-demo binary and exercises its routes and switches.

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use berth_testkit::{free_port, http_get, raw_exchange, send_request};
use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(5);

struct Demo {
    child: Child,
    addr: SocketAddr,
    banner: String,
}

impl Demo {
    async fn start(env: &[(&str, &str)]) -> Demo {
        Demo::start_with(&["--listen", "127.0.0.1:0"], env).await
    }

    /// Spawns the binary and waits for its "listening on" line, which carries
    /// the bound address (so port 0 can be used and no port is raced for).
    async fn start_with(args: &[&str], env: &[(&str, &str)]) -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth-demo"))
            .args(args)
            .env_remove("PORT")
            .env_remove("BERTH_RELEASE")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn berth-demo");
        let stdout = child.stdout.take().unwrap();
        let mut banner = String::new();
        tokio::time::timeout(WAIT, BufReader::new(stdout).read_line(&mut banner))
            .await
            .expect("banner in time")
            .unwrap();
        let banner = banner.trim_end().to_string();
        let addr = banner
            .strip_prefix("berth-demo listening on ")
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_else(|| panic!("unexpected banner {banner:?}"))
            .parse()
            .unwrap();
        Demo {
            child,
            addr,
            banner,
        }
    }

    async fn get(&self, path: &str) -> (u16, Bytes) {
        let (status, _, body) = http_get(self.addr, path, "demo.test").await;
        (status.as_u16(), body)
    }

    async fn post(&self, path: &str) -> (u16, Bytes) {
        let req = http::Request::post(path).body(Bytes::new()).unwrap();
        let res = send_request(self.addr, req).await.unwrap();
        (res.status().as_u16(), res.into_body())
    }

    async fn wait_exit(&mut self) -> ExitStatus {
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("demo exits in time")
            .unwrap()
    }
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(body)))
}

async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(WAIT, stream.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).to_lowercase()
}

#[tokio::test]
async fn root_and_health() {
    let demo = Demo::start(&[("BERTH_RELEASE", "r42"), ("DEMO_VERSION", "1.2.3")]).await;
    assert_eq!(
        demo.banner,
        format!("berth-demo listening on {} release r42", demo.addr)
    );
    let (status, headers, body) = http_get(demo.addr, "/", "demo.test").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    let root = json(&body);
    assert_eq!(
        root,
        serde_json::json!({"app": "berth-demo", "release": "r42", "version": "1.2.3"})
    );
    assert_eq!(demo.get("/health").await, (200, Bytes::from("ok")));
    let (status, body) = demo.get("/health/version").await;
    assert_eq!(status, 200);
    assert_eq!(
        json(&body),
        serde_json::json!({"status": "ok", "version": "1.2.3", "release": "r42"})
    );
    assert_eq!(demo.get("/nope").await.0, 404);
}

#[tokio::test]
async fn port_env_and_threads() {
    let port = free_port();
    let demo = Demo::start_with(&["--threads", "2"], &[("PORT", &port.to_string())]).await;
    assert_eq!(demo.addr, SocketAddr::from(([127, 0, 0, 1], port)));
    assert_eq!(
        demo.banner,
        format!("berth-demo listening on 127.0.0.1:{port} release dev")
    );
    let root = json(&demo.get("/").await.1);
    assert_eq!(root["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn bad_arguments_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_berth-demo"))
        .arg("--bogus")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));
}

#[tokio::test]
async fn echo_bytes_and_status() {
    let demo = Demo::start(&[("BERTH_RELEASE", "e1")]).await;
    let req = http::Request::post("/echo?a=1&b=2")
        .header("host", "demo.test")
        .header("x-multi", "one")
        .header("x-multi", "two")
        .body(Bytes::from(vec![7u8; 1000]))
        .unwrap();
    let res = send_request(demo.addr, req).await.unwrap();
    assert_eq!(res.status(), 200);
    let doc = json(res.body());
    assert_eq!(doc["method"], "POST");
    assert_eq!(doc["path"], "/echo");
    assert_eq!(doc["query"], "a=1&b=2");
    assert_eq!(doc["headers"]["x-multi"], serde_json::json!(["one", "two"]));
    assert_eq!(doc["headers"]["host"], serde_json::json!(["demo.test"]));
    assert_eq!(doc["body_bytes"], 1000);
    assert_eq!(doc["release"], "e1");

    let (status, headers, body) = http_get(demo.addr, "/bytes?n=100000", "d").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-length"], "100000");
    assert!(body.len() == 100_000 && body.iter().all(|&b| b == b'x'));
    assert_eq!(demo.get("/bytes?n=0").await, (200, Bytes::new()));
    assert_eq!(demo.get("/bytes?n=lots").await.0, 400);
    let (_, headers, _) = http_get(demo.addr, "/bytes?n=999999999999", "d").await;
    assert_eq!(headers["content-length"], (64 * 1024 * 1024).to_string());

    assert_eq!(demo.get("/status/418").await.0, 418);
    assert_eq!(demo.get("/status/204").await.0, 204);
    assert_eq!(demo.get("/status/101").await.0, 400);
    assert_eq!(demo.get("/status/abc").await.0, 400);
}

#[tokio::test]
async fn fail_switch() {
    let demo = Demo::start(&[]).await;
    assert_eq!(demo.post("/_demo/fail?on=true").await.0, 200);
    assert_eq!(demo.get("/").await.0, 500);
    assert_eq!(demo.get("/echo").await.0, 500);
    assert_eq!(demo.get("/health").await, (503, Bytes::from("failing")));
    let (status, body) = demo.get("/health/version").await;
    assert_eq!(status, 503);
    assert_eq!(json(&body)["status"], "failing");
    let state = json(&demo.get("/_demo/state").await.1);
    assert_eq!(state["fail"], true);

    assert_eq!(demo.post("/_demo/fail?on=false").await.0, 200);
    assert_eq!(demo.get("/").await.0, 200);
    assert_eq!(demo.get("/health").await.0, 200);

    // Control endpoints check their method and input.
    assert_eq!(demo.get("/_demo/fail").await.0, 405);
    assert_eq!(demo.post("/_demo/fail?on=maybe").await.0, 400);
    assert_eq!(demo.post("/_demo/unknown").await.0, 404);
}

#[tokio::test]
async fn fail_from_env() {
    let demo = Demo::start(&[("DEMO_FAIL", "1")]).await;
    assert_eq!(demo.get("/health").await.0, 503);
    assert_eq!(demo.get("/").await.0, 500);
}

#[tokio::test]
async fn slow_switch() {
    let demo = Demo::start(&[]).await;
    assert_eq!(demo.post("/_demo/slow?ms=500").await.0, 200);
    let started = Instant::now();
    assert_eq!(demo.get("/health").await.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(500));
    // The switches themselves are never slowed.
    let started = Instant::now();
    let state = json(&demo.get("/_demo/state").await.1);
    assert!(started.elapsed() < Duration::from_millis(400));
    assert_eq!(state["delay_ms"], 500);
    assert_eq!(demo.post("/_demo/slow?ms=0").await.0, 200);
    let started = Instant::now();
    demo.get("/").await;
    assert!(started.elapsed() < Duration::from_millis(400));
    assert_eq!(demo.post("/_demo/slow").await.0, 400);
}

#[tokio::test]
async fn slow_from_env() {
    let demo = Demo::start(&[("DEMO_DELAY_MS", "200")]).await;
    let started = Instant::now();
    demo.get("/").await;
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn crash_switch_exits_with_code() {
    let mut demo = Demo::start(&[]).await;
    let (status, body) = demo.post("/_demo/crash?code=3").await;
    assert_eq!(status, 200);
    assert_eq!(json(&body)["code"], 3);
    let exit = demo.wait_exit().await;
    assert_eq!(exit.code(), Some(3));
}

#[tokio::test]
async fn crash_after_n_requests() {
    let mut demo = Demo::start(&[("DEMO_CRASH_AFTER", "2"), ("DEMO_CRASH_CODE", "9")]).await;
    // Control requests do not count.
    assert_eq!(demo.get("/_demo/state").await.0, 200);
    assert_eq!(demo.get("/").await.0, 200);
    assert_eq!(demo.get("/health").await.0, 200);
    assert_eq!(demo.wait_exit().await.code(), Some(9));
}

#[tokio::test]
async fn trailers_follow_the_body() {
    let demo = Demo::start(&[]).await;
    let reply = raw_exchange(
        demo.addr,
        b"GET /trailers HTTP/1.1\r\nHost: d\r\nTE: trailers\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    let text = String::from_utf8_lossy(&reply).to_lowercase();
    assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
    assert!(text.contains("trailer: x-checksum\r\n"), "{text}");
    assert!(
        text.ends_with("5\r\nhello\r\n0\r\nx-checksum: abc123\r\n\r\n"),
        "{text}"
    );
}

#[tokio::test]
async fn ws_upgrade_echoes_raw_bytes() {
    let demo = Demo::start(&[]).await;
    let mut stream = TcpStream::connect(demo.addr).await.unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    assert!(
        head.starts_with("http/1.1 101 switching protocols\r\n"),
        "{head}"
    );
    assert!(head.contains("upgrade: websocket\r\n"), "{head}");
    for msg in [
        &b"hello"[..],
        &[0u8, 1, 2, 255][..],
        &vec![b'z'; 100_000][..],
    ] {
        stream.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(WAIT, stream.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, msg);
    }
    // Without an Upgrade header there is nothing to switch to.
    assert_eq!(demo.get("/ws").await.0, 426);
}

#[tokio::test]
async fn sse_streams_events_as_produced() {
    let demo = Demo::start(&[]).await;
    let mut stream = TcpStream::connect(demo.addr).await.unwrap();
    stream
        .write_all(b"GET /sse?n=3&interval_ms=200 HTTP/1.1\r\nHost: d\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let head = read_head(&mut stream).await;
    assert!(
        head.contains("content-type: text/event-stream\r\n"),
        "{head}"
    );
    let mut seen = String::new();
    let mut arrivals = Vec::new();
    let mut buf = [0u8; 1024];
    while arrivals.len() < 3 {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_ne!(n, 0, "closed early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        while arrivals.len() < 3 && seen.contains(&format!("data: {}\n\n", arrivals.len())) {
            arrivals.push(started.elapsed());
        }
    }
    // Streamed, not buffered: each event comes about an interval after the last.
    assert!(
        arrivals[1] - arrivals[0] >= Duration::from_millis(150),
        "{arrivals:?}"
    );
    assert!(
        arrivals[2] - arrivals[0] >= Duration::from_millis(350),
        "{arrivals:?}"
    );
}

#[tokio::test]
async fn sigterm_exits_cleanly() {
    let mut demo = Demo::start(&[]).await;
    assert_eq!(demo.get("/").await.0, 200);
    let pid = demo.child.id().unwrap() as i32;
    // SAFETY: kill(2) has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert_eq!(demo.wait_exit().await.code(), Some(0));
}
