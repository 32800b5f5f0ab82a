//! Release pools: exact weighted split, sticky cohorts, forced releases, instance balancing.

use std::collections::HashMap;
use std::time::Duration;

use berth_testkit::FakeUpstream;

use crate::common::{client, start};

fn canary_config(
    canary: &FakeUpstream,
    stable: &FakeUpstream,
    group_extra: &str,
    w: (u32, u32),
) -> String {
    format!(
        "[[route]]\nname = \"web\"\nhosts = [\"*\"]\ngroup = \"web\"\n\n[group.web]\n{group_extra}\n\n\
         [[group.web.pool]]\nrelease = \"canary\"\nweight = {}\nupstreams = [\"{}\"]\n\n\
         [[group.web.pool]]\nrelease = \"stable\"\nweight = {}\nupstreams = [\"{}\"]\n",
        w.0,
        canary.addr(),
        w.1,
        stable.addr()
    )
}

async fn tally(url: &str, n: usize, cookie: Option<&str>) -> HashMap<String, usize> {
    let c = client();
    let mut counts = HashMap::new();
    for _ in 0..n {
        let mut req = c.get(url);
        if let Some(ck) = cookie {
            req = req.header("cookie", ck);
        }
        let r = req.send().await.expect("answer");
        assert_eq!(r.status(), 200);
        let who = r.headers()["x-upstream"].to_str().unwrap().to_owned();
        *counts.entry(who).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn weighted_split_is_exact_over_100_requests() {
    let canary = FakeUpstream::start_named("canary").await;
    let stable = FakeUpstream::start_named("stable").await;
    let env = start(&canary_config(&canary, &stable, "", (10, 90))).await;
    for _ in 0..2 {
        let counts = tally(&env.url("/"), 100, None).await;
        assert_eq!(counts.get("canary"), Some(&10), "{counts:?}");
        assert_eq!(counts.get("stable"), Some(&90), "{counts:?}");
    }
    let m = env.metrics().await;
    assert!(
        m.contains("berth_requests_total{route=\"web\",release=\"canary\",status=\"2xx\"} 20"),
        "{m}"
    );
    assert!(
        m.contains("berth_requests_total{route=\"web\",release=\"stable\",status=\"2xx\"} 180"),
        "{m}"
    );
}

#[tokio::test]
async fn sticky_cohort_keeps_a_user_on_one_release() {
    let canary = FakeUpstream::start_named("canary").await;
    let stable = FakeUpstream::start_named("stable").await;
    let env = start(&canary_config(&canary, &stable, "sticky = true", (50, 50))).await;
    let c = client();
    let mut releases_seen = HashMap::new();
    for _ in 0..20 {
        // A new user: no cookie. berth assigns a cohort and sets it.
        let r = c.get(env.url("/")).send().await.unwrap();
        let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(set.starts_with("berth_cohort="), "{set}");
        assert!(
            set.contains("HttpOnly") && set.contains("Max-Age="),
            "{set}"
        );
        let first = r.headers()["x-upstream"].to_str().unwrap().to_owned();
        let cookie = set.split(';').next().unwrap().to_owned();
        // The same user, ten more times: always the same release, no new cookie.
        for _ in 0..10 {
            let r = c
                .get(env.url("/"))
                .header("cookie", &cookie)
                .send()
                .await
                .unwrap();
            assert!(!r.headers().contains_key("set-cookie"));
            assert_eq!(
                r.headers()["x-upstream"],
                first.as_str(),
                "cohort {cookie} flipped"
            );
        }
        *releases_seen.entry(first).or_insert(0) += 1;
    }
    // 20 random users at 50/50 land on both sides (chance of not: 2 in a million).
    assert_eq!(releases_seen.len(), 2, "{releases_seen:?}");
    // A tampered cookie is treated as absent, never an error.
    let r = c
        .get(env.url("/"))
        .header("cookie", "berth_cohort=99999999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("set-cookie"));
}

#[tokio::test]
async fn header_or_cookie_forces_a_release_even_at_weight_zero() {
    let canary = FakeUpstream::start_named("canary").await;
    let stable = FakeUpstream::start_named("stable").await;
    let env = start(&canary_config(&canary, &stable, "", (0, 100))).await;
    assert_eq!(
        tally(&env.url("/"), 20, None).await.get("stable"),
        Some(&20)
    );
    let c = client();
    for _ in 0..5 {
        let r = c
            .get(env.url("/"))
            .header("x-berth-release", "canary")
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-upstream"], "canary");
    }
    let counts = tally(&env.url("/"), 5, Some("berth_release=canary")).await;
    assert_eq!(counts.get("canary"), Some(&5));
    // An unknown release name falls back to the weights.
    let r = c
        .get(env.url("/"))
        .header("x-berth-release", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-upstream"], "stable");
}

#[tokio::test]
async fn least_outstanding_prefers_the_idle_instance() {
    let slow = FakeUpstream::builder()
        .name("slow")
        .latency(Duration::from_millis(400))
        .start()
        .await;
    let fast = FakeUpstream::start_named("fast").await;
    let body = crate::common::simple(&[slow.addr(), fast.addr()], "", "balance = \"p2c\"");
    let env = start(&body).await;
    // 40 requests, 8 at a time: the slow instance keeps requests outstanding, so with two
    // instances p2c sends nearly everything to the fast one.
    let c = client();
    let url = env.url("/");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (c, url) = (c.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                c.get(&url).send().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(slow.request_count() + fast.request_count(), 40);
    assert!(
        fast.request_count() >= 30,
        "slow {} fast {}",
        slow.request_count(),
        fast.request_count()
    );
}

#[tokio::test]
async fn round_robin_alternates() {
    let a = FakeUpstream::start_named("a").await;
    let b = FakeUpstream::start_named("b").await;
    let body = crate::common::simple(&[a.addr(), b.addr()], "", "balance = \"round_robin\"");
    let env = start(&body).await;
    let counts = tally(&env.url("/"), 10, None).await;
    assert_eq!(counts.get("a"), Some(&5));
    assert_eq!(counts.get("b"), Some(&5));
}
