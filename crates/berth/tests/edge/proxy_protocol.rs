//! PROXY protocol v1 and v2 in front of connections: believed from trusted peers only.

use std::time::Duration;

use berth_testkit::{FakeUpstream, raw_exchange};

use crate::common::{Env, simple, start_with};

fn v1(source: &str, port: u16) -> Vec<u8> {
    format!("PROXY TCP4 {source} 127.0.0.1 {port} 80\r\n").into_bytes()
}

fn v2(source: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21); // version 2, PROXY
    h.push(0x11); // TCP over IPv4
    h.extend_from_slice(&12u16.to_be_bytes());
    h.extend_from_slice(&source);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&80u16.to_be_bytes());
    h
}

const ECHO: &[u8] = b"GET /echo HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";

async fn exchange(env: &Env, header: &[u8]) -> String {
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(ECHO);
    let reply = raw_exchange(env.listen, &bytes, Duration::from_secs(3)).await;
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test]
async fn v1_and_v2_headers_from_a_trusted_peer_name_the_client() {
    let up = FakeUpstream::start_named("a").await;
    let env = start_with(
        &simple(&[up.addr()], "", ""),
        "trusted_proxies = [\"127.0.0.1\"]\nproxy_protocol = true",
    )
    .await;
    let reply = exchange(&env, &v1("198.51.100.7", 4711)).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.contains("\"x-forwarded-for\":[\"198.51.100.7\"]"),
        "{reply}"
    );
    let reply = exchange(&env, &v2([203, 0, 113, 9], 4712)).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.contains("\"x-forwarded-for\":[\"203.0.113.9\"]"),
        "{reply}"
    );
    // A connection without a header is its own client.
    let reply = exchange(&env, b"").await;
    assert!(
        reply.contains("\"x-forwarded-for\":[\"127.0.0.1\"]"),
        "{reply}"
    );
    let log = env.access_log(3).await;
    let clients: Vec<&str> = log.iter().filter_map(|l| l["client"].as_str()).collect();
    assert_eq!(clients, ["198.51.100.7", "203.0.113.9", "127.0.0.1"]);
}

#[tokio::test]
async fn headers_from_an_untrusted_peer_or_malformed_close_the_connection() {
    let up = FakeUpstream::start_named("a").await;
    let env = start_with(
        &simple(&[up.addr()], "", ""),
        "trusted_proxies = [\"10.0.0.0/8\"]\nproxy_protocol = true",
    )
    .await;
    for header in [v1("198.51.100.7", 1), v2([203, 0, 113, 9], 2)] {
        let reply = exchange(&env, &header).await;
        assert!(
            reply.is_empty(),
            "an untrusted PROXY header was answered: {reply}"
        );
    }
    let reply = exchange(&env, b"PROXY TCP4 nonsense\r\n").await;
    assert!(
        reply.is_empty(),
        "a malformed PROXY header was answered: {reply}"
    );
    assert_eq!(up.request_count(), 0);
    let untrusted = env
        .metric("berth_connection_errors_total{kind=\"proxy_protocol_untrusted\"}")
        .await;
    assert_eq!(untrusted, 2.0);
    let malformed = env
        .metric("berth_connection_errors_total{kind=\"proxy_protocol_malformed\"}")
        .await;
    assert_eq!(malformed, 1.0);
    // Plain requests from the same peer are still served.
    let reply = exchange(&env, b"").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}
