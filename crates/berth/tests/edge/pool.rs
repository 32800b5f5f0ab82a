//! The keep-alive pool towards upstreams, and the connect timeout.

use std::time::{Duration, Instant};

use berth_testkit::FakeUpstream;

use crate::common::{client, simple, start};

#[tokio::test]
async fn sequential_requests_reuse_one_upstream_connection() {
    let up = FakeUpstream::start_named("a").await;
    let env = start(&simple(&[up.addr()], "", "")).await;
    let c = client();
    for _ in 0..20 {
        assert_eq!(c.get(env.url("/")).send().await.unwrap().status(), 200);
    }
    assert_eq!(up.request_count(), 20);
    assert_eq!(up.connections_accepted(), 1);
}

#[tokio::test]
async fn idle_upstream_connections_expire_before_the_backend_would_close_them() {
    let up = FakeUpstream::start_named("a").await;
    let env = start(&simple(
        &[up.addr()],
        "",
        "upstream_idle_timeout = \"200ms\"",
    ))
    .await;
    let c = client();
    assert_eq!(c.get(env.url("/")).send().await.unwrap().status(), 200);
    assert_eq!(c.get(env.url("/")).send().await.unwrap().status(), 200);
    assert_eq!(up.connections_accepted(), 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(c.get(env.url("/")).send().await.unwrap().status(), 200);
    assert_eq!(
        up.connections_accepted(),
        2,
        "an expired connection was reused"
    );
}

/// A listener that never accepts, with its accept queue already full: the kernel drops further
/// SYNs, so a connect to it hangs until the client gives up, all on loopback.
fn blackhole() -> (
    socket2::Socket,
    Vec<std::net::TcpStream>,
    std::net::SocketAddr,
) {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    s.listen(0).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(f) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            fillers.push(f);
        }
    }
    (s, fillers, addr)
}

#[tokio::test]
async fn connect_timeout_gives_up_and_moves_on() {
    let (_listener, _fillers, hole) = blackhole();
    let live = FakeUpstream::start_named("live").await;
    let env = start(&simple(
        &[hole],
        "timeouts = { connect = \"300ms\" }\nretry = { attempts = 1 }",
        "",
    ))
    .await;
    let started = Instant::now();
    let r = client().get(env.url("/")).send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), 502);
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let m = env.metrics().await;
    assert!(
        m.contains("berth_upstream_errors_total{route=\"app\",reason=\"connect\"} 1"),
        "{m}"
    );

    // With a second instance, the timed-out connect is retried there.
    let both = start(&simple(
        &[hole, live.addr()],
        "timeouts = { connect = \"300ms\" }",
        "balance = \"round_robin\"",
    ))
    .await;
    for _ in 0..4 {
        assert_eq!(
            client().get(both.url("/")).send().await.unwrap().status(),
            200
        );
    }
    assert_eq!(live.request_count(), 4);
}
