//! Response compression: negotiation by Accept-Encoding, the cases that are never compressed,
//! and a compressed event stream that still arrives event by event.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use berth_testkit::FakeUpstream;
use futures_util::StreamExt;

use crate::common::{Env, client, simple, start};

fn page() -> String {
    "<p>berth compresses this paragraph, again and again.</p>\n".repeat(200)
}

async fn html_upstream() -> FakeUpstream {
    FakeUpstream::builder()
        .name("a")
        .body(page())
        .header("content-type", "text/html; charset=utf-8")
        .header("etag", "\"v1\"")
        .start()
        .await
}

async fn fetch(env: &Env, path: &str, accept: &str) -> reqwest::Response {
    env.get_with(path, &[("accept-encoding", accept)]).await
}

fn decode(encoding: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        "gzip" => flate2::read::GzDecoder::new(data).read_to_end(&mut out),
        "br" => brotli::Decompressor::new(data, 4096).read_to_end(&mut out),
        "zstd" => zstd::stream::read::Decoder::new(data).and_then(|mut d| d.read_to_end(&mut out)),
        other => panic!("unexpected encoding {other}"),
    }
    .unwrap_or_else(|e| panic!("{encoding} body does not decode: {e}"));
    out
}

#[tokio::test]
async fn negotiates_br_gzip_and_zstd_only_when_configured() {
    let up = html_upstream().await;
    let env = start(&simple(&[up.addr()], "compression = true", "")).await;
    for (accept, want) in [
        ("gzip, deflate, br", "br"),
        ("gzip", "gzip"),
        ("br;q=0.5, gzip;q=0.9", "gzip"),
        // zstd is not among the defaults.
        ("zstd, gzip;q=0.5", "gzip"),
    ] {
        let r = fetch(&env, "/", accept).await;
        assert_eq!(r.status(), 200);
        let h = r.headers().clone();
        assert_eq!(h["content-encoding"], want, "Accept-Encoding: {accept}");
        assert_eq!(h["vary"], "Accept-Encoding");
        assert!(!h.contains_key("content-length"));
        assert_eq!(h["etag"], "W/\"v1\"");
        let body = r.bytes().await.expect("body");
        assert!(
            body.len() < page().len() / 4,
            "{want} did not shrink the page"
        );
        assert_eq!(decode(want, &body), page().as_bytes());
    }
    // Nothing acceptable: as the app sent it.
    let r = fetch(&env, "/", "identity").await;
    assert!(!r.headers().contains_key("content-encoding"));
    assert_eq!(r.headers()["etag"], "\"v1\"");
    assert_eq!(r.text().await.expect("body"), page());
    let gz = env
        .metric("berth_compressed_responses_total{route=\"app\",encoding=\"gzip\"}")
        .await;
    // "gzip", "br;q=0.5, gzip;q=0.9" and "zstd, gzip;q=0.5".
    assert_eq!(gz, 3.0);

    // Asked for, zstd is offered (first, as listed).
    let env = start(&simple(
        &[up.addr()],
        "compression = { algorithms = [\"zstd\", \"gzip\"], min_size = \"100B\" }",
        "",
    ))
    .await;
    let r = fetch(&env, "/", "gzip, zstd, br").await;
    assert_eq!(r.headers()["content-encoding"], "zstd");
    let body = r.bytes().await.expect("body");
    assert_eq!(decode("zstd", &body), page().as_bytes());
}

#[tokio::test]
async fn already_compressed_binary_and_small_bodies_are_left_alone() {
    let encoded = FakeUpstream::builder()
        .body(page())
        .header("content-type", "text/html")
        .header("content-encoding", "gzip")
        .start()
        .await;
    let image = FakeUpstream::builder()
        .body(vec![0u8; 8192])
        .header("content-type", "image/png")
        .start()
        .await;
    let small = FakeUpstream::builder()
        .body("<p>tiny</p>")
        .header("content-type", "text/html")
        .start()
        .await;
    for (up, vary) in [(&encoded, false), (&image, false), (&small, true)] {
        let env = start(&simple(&[up.addr()], "compression = true", "")).await;
        let r = fetch(&env, "/", "gzip, br").await;
        assert_eq!(r.status(), 200);
        let h = r.headers().clone();
        if up.addr() == encoded.addr() {
            // The app's own encoding passes through untouched.
            assert_eq!(h["content-encoding"], "gzip");
        } else {
            assert!(!h.contains_key("content-encoding"), "{h:?}");
            assert!(h.contains_key("content-length"), "{h:?}");
        }
        assert_eq!(h.contains_key("vary"), vary, "{h:?}");
        let body = r.bytes().await.expect("body");
        let sent = match up.addr() {
            a if a == image.addr() => 8192,
            a if a == small.addr() => 11,
            _ => page().len(),
        };
        assert_eq!(body.len(), sent);
        // HEAD is never compressed either.
        let r = client()
            .head(env.url("/"))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .expect("HEAD");
        if up.addr() != encoded.addr() {
            assert!(!r.headers().contains_key("content-encoding"));
        }
    }
    // A route without compression never compresses.
    let up = html_upstream().await;
    let env = start(&simple(&[up.addr()], "", "")).await;
    let r = fetch(&env, "/", "gzip, br").await;
    assert!(!r.headers().contains_key("content-encoding"));
    assert!(!r.headers().contains_key("vary"));
}

#[tokio::test]
async fn a_compressed_event_stream_arrives_event_by_event() {
    let up = FakeUpstream::start_named("a").await;
    let env = start(&simple(
        &[up.addr()],
        "compression = { min_size = \"1B\" }",
        "",
    ))
    .await;
    let started = Instant::now();
    let r = fetch(&env, "/sse?n=2&interval_ms=2000", "gzip").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let mut stream = r.bytes_stream();
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    // The first event must be readable long before the second is even written.
    while !String::from_utf8_lossy(decoder.get_ref()).contains("data: 0") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("a chunk within 5 s")
            .expect("stream not over")
            .expect("chunk");
        decoder.write_all(&chunk).expect("gzip data");
        decoder.flush().expect("flush");
    }
    let first = started.elapsed();
    assert!(
        first < Duration::from_millis(1500),
        "the first event took {first:?}: the encoder held it back"
    );
    while let Some(chunk) = stream.next().await {
        decoder
            .write_all(&chunk.expect("chunk"))
            .expect("gzip data");
    }
    let all = decoder.finish().expect("complete gzip stream");
    assert_eq!(String::from_utf8_lossy(&all), "data: 0\n\ndata: 1\n\n");
}
