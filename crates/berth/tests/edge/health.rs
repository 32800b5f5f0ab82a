//! Active checks, passive ejection and failing open.

use std::time::Duration;

use berth_testkit::FakeUpstream;

use crate::common::{client, eventually, simple, start};

const FAST_CHECKS: &str = "health = { path = \"/health\", interval = \"200ms\", timeout = \"100ms\", healthy_threshold = 2, unhealthy_threshold = 2 }";

#[tokio::test]
async fn active_checks_take_an_instance_out_and_bring_it_back() {
    let a = FakeUpstream::start_named("a").await;
    let b = FakeUpstream::start_named("b").await;
    let env = start(&simple(&[a.addr(), b.addr()], "", FAST_CHECKS)).await;
    let c = client();
    assert!(eventually(Duration::from_secs(5), || async { a.health_checks() >= 2 }).await);

    a.set_healthy(false);
    let gauge = format!(
        "berth_upstream_healthy{{group=\"app\",release=\"default\",upstream=\"{}\"}}",
        a.addr()
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            env.metric(&gauge).await == 0.0
        })
        .await
    );
    let before = a.request_count();
    for _ in 0..20 {
        let r = c.get(env.url("/")).send().await.unwrap();
        assert_eq!(r.headers()["x-upstream"], "b");
    }
    assert_eq!(a.request_count(), before);

    a.set_healthy(true);
    assert!(
        eventually(Duration::from_secs(5), || async {
            env.metric(&gauge).await == 1.0
        })
        .await
    );
    let mut saw_a = false;
    for _ in 0..20 {
        let r = c.get(env.url("/")).send().await.unwrap();
        saw_a |= r.headers()["x-upstream"] == "a";
    }
    assert!(saw_a, "a never came back");
    assert!(env.metric("berth_health_checks_failed_total").await >= 2.0);
}

#[tokio::test]
async fn passive_ejection_after_consecutive_failures() {
    let bad = FakeUpstream::builder()
        .name("bad")
        .status(500)
        .start()
        .await;
    let good = FakeUpstream::start_named("good").await;
    let passive = "passive = { consecutive_failures = 3, window_failures = 0, cool_off = \"30s\" }\nbalance = \"round_robin\"";
    let env = start(&simple(&[bad.addr(), good.addr()], "", passive)).await;
    let c = client();
    for _ in 0..30 {
        c.get(env.url("/")).send().await.unwrap();
    }
    // Three 500s eject `bad`; after that every request goes to `good`.
    assert_eq!(bad.request_count(), 3);
    assert_eq!(good.request_count(), 27);
    let ejections = format!(
        "berth_upstream_ejections_total{{group=\"app\",release=\"default\",upstream=\"{}\"}}",
        bad.addr()
    );
    assert_eq!(env.metric(&ejections).await, 1.0);
}

#[tokio::test]
async fn fails_open_when_every_instance_is_down_and_counts_it() {
    let only = FakeUpstream::builder()
        .name("only")
        .unhealthy(true)
        .start()
        .await;
    let env = start(&simple(&[only.addr()], "", FAST_CHECKS)).await;
    let gauge = format!(
        "berth_upstream_healthy{{group=\"app\",release=\"default\",upstream=\"{}\"}}",
        only.addr()
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            env.metric(&gauge).await == 0.0
        })
        .await
    );
    // The health endpoint fails but the app still answers: better some service than none.
    let r = client().get(env.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        env.metric("berth_fail_open_total{group=\"app\"}").await,
        1.0
    );
}

#[tokio::test]
async fn a_dead_instance_is_avoided_without_failing_requests() {
    let dead = crate::common::dead_addr();
    let live = FakeUpstream::start_named("live").await;
    let env = start(&simple(&[dead, live.addr()], "", FAST_CHECKS)).await;
    let c = client();
    // Connect failures are retried on the other instance: no request fails, even before the
    // checks have marked the dead one down.
    for _ in 0..20 {
        let r = c.post(env.url("/")).body("payload").send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(live.request_count(), 20);
    assert!(
        live.requests()
            .iter()
            .all(|r| r.body.as_ref() == b"payload")
    );
}
