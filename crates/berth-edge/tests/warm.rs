//! Warming: a switch to a new release finds connections to its instances already open, so
//! the requests right after it do not each wait for a connect.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use berth_edge::spec::{EdgeSpec, GroupSpec, RouteSpec};
use berth_edge::{AccessLogTarget, Edge, WARM_TIMEOUT};
use berth_testkit::{FakeUpstream, free_addr, http_get};
use prometheus_client::registry::Registry;

/// One route for any host to group `g`, whose one pool is `release` on `upstream`.
fn spec(release: &str, upstream: SocketAddr) -> EdgeSpec {
    let route = RouteSpec::to_group("r", "g");
    let group = GroupSpec::one_pool("g", release, vec![upstream]);
    EdgeSpec {
        listeners: Vec::new(),
        tls: Default::default(),
        client: Default::default(),
        trusted_proxies: Default::default(),
        routes: vec![route],
        groups: vec![group],
    }
}

/// An upstream that takes 300 ms to answer, so requests to it stay in flight.
async fn slow(name: &str) -> FakeUpstream {
    FakeUpstream::builder()
        .name(name)
        .latency(Duration::from_millis(300))
        .start()
        .await
}

async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `n` requests at once, each on its own client connection.
fn wave(edge: SocketAddr, n: usize) -> Vec<tokio::task::JoinHandle<u16>> {
    (0..n)
        .map(|_| tokio::spawn(async move { http_get(edge, "/", "app.test").await.0.as_u16() }))
        .collect()
}

/// A [`wave`] of `n` requests through `edge`, once `upstream` (a [`slow`] one) has them all.
async fn in_flight_to(
    upstream: &FakeUpstream,
    edge: SocketAddr,
    n: usize,
) -> Vec<tokio::task::JoinHandle<u16>> {
    let requests = wave(edge, n);
    wait_until("every request reached the upstream", || {
        upstream.request_count() == n
    })
    .await;
    requests
}

async fn statuses(wave: Vec<tokio::task::JoinHandle<u16>>) -> Vec<u16> {
    let mut out = Vec::new();
    for r in wave {
        out.push(r.await.expect("request task"));
    }
    out
}

async fn edge_on(spec: &EdgeSpec) -> (Edge, SocketAddr) {
    let mut edge =
        Edge::new(spec, &mut Registry::default(), AccessLogTarget::Off).expect("edge starts");
    let addr = edge.listen(&[free_addr()]).await.expect("edge listens")[0];
    (edge, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_finds_connections_to_the_new_release_open() {
    const CLIENTS: usize = 6;
    let old = slow("old").await;
    let new = slow("new").await;
    let (edge, addr) = edge_on(&spec("r1", old.addr())).await;

    // The group's demand: CLIENTS requests in flight to the old release.
    let first = in_flight_to(&old, addr, CLIENTS).await;
    let next = spec("r2", new.addr());
    let warm = edge.warm(&next, WARM_TIMEOUT).await;
    assert_eq!(warm.opened(), CLIENTS);
    wait_until("the new release accepted them", || {
        new.connections_accepted() == CLIENTS
    })
    .await;
    assert_eq!(new.request_count(), 0, "warming sends no request");

    edge.apply(&next);
    drop(warm);
    assert_eq!(statuses(first).await, [200; CLIENTS]);
    assert_eq!(statuses(wave(addr, CLIENTS)).await, [200; CLIENTS]);
    assert_eq!(new.request_count(), CLIENTS);
    assert_eq!(
        new.connections_accepted(),
        CLIENTS,
        "requests after the switch opened connections of their own"
    );

    // The connections those requests used, now idle, are the demand of the next switch. (At
    // least: a request whose end the edge is recording this instant counts as in flight and
    // as returned.)
    let third = FakeUpstream::start_named("third").await;
    let warm = edge.warm(&spec("r3", third.addr()), WARM_TIMEOUT).await;
    assert!(warm.opened() >= CLIENTS, "{} opened", warm.opened());
}

/// Connections opened ahead and never used are no demand: otherwise every deploy would open
/// as many again, however little traffic there is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_opened_ahead_and_never_used_are_no_demand() {
    let old = slow("old").await;
    let new = FakeUpstream::start_named("new").await;
    let third = FakeUpstream::start_named("third").await;
    let (edge, addr) = edge_on(&spec("r1", old.addr())).await;
    let first = in_flight_to(&old, addr, 3).await;
    let next = spec("r2", new.addr());
    let warm = edge.warm(&next, WARM_TIMEOUT).await;
    assert_eq!(warm.opened(), 3);
    edge.apply(&next);
    drop(warm);
    assert_eq!(statuses(first).await, [200; 3]);
    // No request has used r2's connections.
    let warm = edge.warm(&spec("r3", third.addr()), WARM_TIMEOUT).await;
    assert_eq!(warm.opened(), 0);
}

/// What was warmed is held by the [`berth_edge::Warm`] alone (a deploy that fails after
/// warming leaves nothing behind), so a table applied after dropping it starts cold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_dropped_before_the_switch_hands_nothing_over() {
    let old = slow("old").await;
    let new = FakeUpstream::start_named("new").await;
    let (edge, addr) = edge_on(&spec("r1", old.addr())).await;
    let first = in_flight_to(&old, addr, 2).await;
    let warm = edge.warm(&spec("r2", new.addr()), WARM_TIMEOUT).await;
    assert_eq!(warm.opened(), 2);
    drop(warm);
    // Applied later, the table starts from a fresh instance: its first request connects.
    edge.apply(&spec("r2", new.addr()));
    assert_eq!(statuses(first).await, [200, 200]);
    assert_eq!(statuses(wave(addr, 1)).await, [200]);
    wait_until("the request's own connection was accepted", || {
        new.connections_accepted() == 3
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_group_is_not_warmed() {
    let old = FakeUpstream::start_named("old").await;
    let new = FakeUpstream::start_named("new").await;
    let (edge, _addr) = edge_on(&spec("r1", old.addr())).await;
    let warm = edge.warm(&spec("r2", new.addr()), WARM_TIMEOUT).await;
    assert_eq!(warm.opened(), 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(new.connections_accepted(), 0);
}
