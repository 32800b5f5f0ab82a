//! Retries: always on connect failure, on a dead reused connection only for idempotent
//! requests, bounded in attempts; never a replay of a non-idempotent request already sent.

use berth_testkit::FakeUpstream;

use crate::common::{client, simple, start};

#[tokio::test]
async fn idempotent_request_on_a_dead_kept_alive_connection_is_retried() {
    // The upstream closes the connection without answering every second request, which is
    // what a backend that timed out an idle keep-alive connection looks like to berth.
    let up = FakeUpstream::builder()
        .name("a")
        .drop_connections_every(2)
        .start()
        .await;
    let env = start(&simple(&[up.addr()], "", "")).await;
    let c = client();
    for i in 0..10 {
        let r = c.get(env.url(&format!("/item/{i}"))).send().await.unwrap();
        assert_eq!(r.status(), 200, "GET {i}");
    }
    let m = env.metrics().await;
    assert!(
        crate::common::metric_sum(&m, "berth_retries_total{route=\"app\"}") >= 1.0,
        "{m}"
    );
}

#[tokio::test]
async fn non_idempotent_request_whose_body_was_sent_is_never_replayed() {
    let up = FakeUpstream::builder()
        .name("a")
        .drop_connections_every(2)
        .start()
        .await;
    let env = start(&simple(&[up.addr()], "", "")).await;
    let c = client();
    let mut failed = 0;
    for i in 0..10 {
        let r = c
            .post(env.url("/orders"))
            .body(format!("order-{i}"))
            .send()
            .await
            .unwrap();
        if r.status() == 502 {
            failed += 1;
        } else {
            assert_eq!(r.status(), 200);
        }
    }
    // Every order reached the upstream exactly once, including the ones whose answer was lost.
    let mut bodies: Vec<String> = up
        .requests()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    bodies.sort();
    let mut want: Vec<String> = (0..10).map(|i| format!("order-{i}")).collect();
    want.sort();
    assert_eq!(bodies, want);
    assert!(failed >= 1, "the drop never hit a POST");
}

#[tokio::test]
async fn attempts_are_bounded_when_nothing_answers() {
    let dead: Vec<_> = (0..4).map(|_| crate::common::dead_addr()).collect();
    let env = start(&simple(
        &dead,
        "retry = { attempts = 3, budget = \"5s\" }",
        "",
    ))
    .await;
    let r = client().get(env.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let body = r.text().await.unwrap();
    assert!(body.contains("could not be reached"), "{body}");
    for a in &dead {
        assert!(
            !body.contains(&a.to_string()),
            "the body leaks an upstream address: {body}"
        );
    }
    assert_eq!(
        env.metric("berth_upstream_errors_total{route=\"app\",reason=\"connect\"}")
            .await,
        3.0
    );
    assert_eq!(env.metric("berth_retries_total{route=\"app\"}").await, 2.0);
    let log = env.access_log(1).await;
    assert_eq!(log.last().unwrap()["attempts"], 3);
}

#[tokio::test]
async fn a_post_is_retried_elsewhere_when_the_connect_fails() {
    let live = FakeUpstream::start_named("live").await;
    let env = start(&simple(
        &[crate::common::dead_addr(), live.addr()],
        "",
        "balance = \"round_robin\"",
    ))
    .await;
    let c = client();
    for i in 0..6 {
        let r = c
            .post(env.url("/pay"))
            .body(format!("p{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(live.request_count(), 6);
}
