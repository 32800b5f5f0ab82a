//! Route policies through the real binary: rate limits (429 with Retry-After, stricter auth
//! paths, bounded memory), client address lists (403) and trusted proxies (X-Forwarded-For).

use std::time::Duration;

use berth_testkit::{FakeUpstream, raw_exchange};
use futures_util::StreamExt;

use crate::common::{Env, client, simple, start, start_with};

/// One request an hour per client: the second is refused.
const ONE_AN_HOUR: &str = "rate_limit = { rate = \"1/h\", burst = 1 }";

/// A berth whose single route allows [`ONE_AN_HOUR`], with `server_extra` in `[server]`.
async fn one_an_hour(up: &FakeUpstream, server_extra: &str) -> Env {
    start_with(&simple(&[up.addr()], ONE_AN_HOUR, ""), server_extra).await
}

/// A GET for the route's host, `app.test`, with these headers too.
async fn get(env: &Env, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut all = vec![("host", "app.test")];
    all.extend_from_slice(headers);
    env.get_with(path, &all).await
}

/// The X-Forwarded-For the upstream saw, from its `/echo` answer.
async fn forwarded_for(resp: reqwest::Response) -> String {
    let doc: serde_json::Value = resp.json().await.expect("echo JSON");
    doc["headers"]["x-forwarded-for"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after_once_the_burst_is_spent() {
    let up = FakeUpstream::start_named("a").await;
    let env = start(&simple(
        &[up.addr()],
        "rate_limit = { rate = \"1/m\", burst = 3 }",
        "",
    ))
    .await;
    for i in 0..3 {
        assert_eq!(get(&env, "/", &[]).await.status(), 200, "request {i}");
    }
    let refused = get(&env, "/", &[]).await;
    assert_eq!(refused.status(), 429);
    // One token a minute, and the bucket was just emptied: the next one is a minute away.
    assert_eq!(refused.headers()["retry-after"], "60");
    let body = refused.text().await.expect("body");
    assert!(body.contains("too many requests"), "{body}");
    assert!(body.contains("request id"), "{body}");
    assert_eq!(up.request_count(), 3, "a refused request reached the app");
    assert_eq!(env.rejections("app", "rate_limited").await, 1.0);
}

#[tokio::test]
async fn a_header_key_gives_each_api_key_its_own_bucket() {
    let up = FakeUpstream::start_named("a").await;
    let env = start(&simple(
        &[up.addr()],
        "rate_limit = { rate = \"1/h\", burst = 1, key = \"header:X-Api-Key\" }",
        "",
    ))
    .await;
    assert_eq!(get(&env, "/", &[("x-api-key", "k1")]).await.status(), 200);
    assert_eq!(get(&env, "/", &[("x-api-key", "k1")]).await.status(), 429);
    assert_eq!(get(&env, "/", &[("x-api-key", "k2")]).await.status(), 200);
    // Without the header the client's address is the key: a bucket of its own.
    assert_eq!(get(&env, "/", &[]).await.status(), 200);
    assert_eq!(get(&env, "/", &[]).await.status(), 429);
}

#[tokio::test]
async fn auth_paths_get_their_stricter_limit_and_encoding_does_not_dodge_it() {
    let up = FakeUpstream::start_named("a").await;
    let env = start(&simple(
        &[up.addr()],
        "rate_limit = { rate = \"100/s\", burst = 100 }\n\
         auth_rate_limit = { paths = [\"/login\", \"/token\"], rate = \"2/m\", burst = 2 }",
        "",
    ))
    .await;
    assert_eq!(get(&env, "/login", &[]).await.status(), 200);
    assert_eq!(get(&env, "/login/", &[]).await.status(), 200);
    let refused = get(&env, "/login?next=/", &[]).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "30");
    // Percent-encoding is what the app decodes: still /login.
    assert_eq!(get(&env, "/%6Cogin", &[]).await.status(), 429);
    // The auth limit is shared by its paths, per client.
    assert_eq!(get(&env, "/token", &[]).await.status(), 429);
    // Elsewhere only the route's generous limit applies.
    for _ in 0..10 {
        assert_eq!(get(&env, "/logins", &[]).await.status(), 200);
        assert_eq!(get(&env, "/page", &[]).await.status(), 200);
    }
    assert_eq!(env.rejections("app", "auth_rate_limited").await, 3.0);
    assert_eq!(env.rejections("app", "rate_limited").await, 0.0);
}

#[tokio::test]
async fn limiter_memory_stays_bounded_under_a_flood_of_forwarded_addresses() {
    let up = FakeUpstream::start_named("a").await;
    let env = start_with(
        &simple(
            &[up.addr()],
            "rate_limit = { rate = \"1/h\", burst = 1, max_keys = 1000 }",
            "",
        ),
        "trusted_proxies = [\"127.0.0.1\"]\naccess_log = \"off\"",
    )
    .await;
    const FLOOD: u32 = 100_000;
    let http = client();
    let url = env.url("/");
    let statuses = futures_util::stream::iter(0..FLOOD)
        .map(|n| {
            let req = http.get(&url).header("host", "app.test").header(
                "x-forwarded-for",
                std::net::Ipv4Addr::from(0x0a00_0000 + n).to_string(),
            );
            async move { req.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
        })
        .buffer_unordered(32)
        .collect::<Vec<u16>>()
        .await;
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    // Each address was new, so each had a token.
    assert_eq!(ok, FLOOD as usize, "statuses other than 200 in the flood");
    let keys = env
        .metric("berth_rate_limit_keys{route=\"app\",limit=\"route\"}")
        .await;
    assert!(keys <= 1000.0, "{keys} keys held, max_keys is 1000");
    assert!(keys >= 500.0, "{keys} keys: eviction went too far");
    // The limit still works after the flood: a fresh address gets one request.
    let fresh = [("x-forwarded-for", "192.0.2.200")];
    assert_eq!(get(&env, "/", &fresh).await.status(), 200);
    assert_eq!(get(&env, "/", &fresh).await.status(), 429);
}

#[tokio::test]
async fn forwarded_for_is_ignored_from_an_untrusted_peer() {
    let up = FakeUpstream::start_named("a").await;
    let env = one_an_hour(&up, "trusted_proxies = [\"10.0.0.0/8\"]").await;
    let spoofed = [("x-forwarded-for", "203.0.113.1")];
    let resp = get(&env, "/echo", &spoofed).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(forwarded_for(resp).await, "127.0.0.1");
    // Another spoofed address is still the same client to the limiter.
    let other = [("x-forwarded-for", "203.0.113.2")];
    assert_eq!(get(&env, "/echo", &other).await.status(), 429);
    let log = env.access_log(2).await;
    assert!(log.iter().all(|l| l["client"] == "127.0.0.1"), "{log:#?}");
}

#[tokio::test]
async fn a_trusted_peer_names_the_client_for_the_app_the_log_and_the_limits() {
    let up = FakeUpstream::start_named("a").await;
    let env = one_an_hour(&up, "trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]").await;
    // The client put 6.6.6.6 in front; the load balancer appended the real address and an
    // inner proxy its own.
    let chain = [("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.1.1")];
    let resp = get(&env, "/echo", &chain).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(forwarded_for(resp).await, "198.51.100.7");
    // Same client, whatever it prepends: its bucket is empty now.
    let again = [("x-forwarded-for", "7.7.7.7, 198.51.100.7")];
    assert_eq!(get(&env, "/echo", &again).await.status(), 429);
    let other = [("x-forwarded-for", "198.51.100.8")];
    assert_eq!(get(&env, "/echo", &other).await.status(), 200);
    let log = env.access_log(3).await;
    let clients: Vec<&str> = log.iter().filter_map(|l| l["client"].as_str()).collect();
    assert_eq!(clients, ["198.51.100.7", "198.51.100.7", "198.51.100.8"]);
}

#[tokio::test]
async fn allow_and_deny_lists_answer_403_and_count_it() {
    let up = FakeUpstream::start_named("a").await;
    let ups = format!("\"{}\"", up.addr());
    let body = format!(
        "[[route]]\nname = \"admin\"\nhosts = [\"*\"]\npath_prefix = \"/admin\"\ngroup = \"app\"\n\
         allow = [\"10.0.0.0/8\"]\n\n\
         [[route]]\nname = \"site\"\nhosts = [\"*\"]\ngroup = \"app\"\ndeny = [\"192.0.2.0/24\"]\n\n\
         [group.app]\nupstreams = [{ups}]\n"
    );
    let env = start_with(&body, "trusted_proxies = [\"127.0.0.1\"]").await;
    // From the office network (through the trusted proxy): the admin pages open.
    let office = [("x-forwarded-for", "10.20.30.40")];
    assert_eq!(get(&env, "/admin/users", &office).await.status(), 200);
    // From anywhere else: 403 with a body that says why.
    let refused = get(&env, "/admin/users", &[]).await;
    assert_eq!(refused.status(), 403);
    let text = refused.text().await.expect("body");
    assert!(
        text.contains("your address 127.0.0.1 may not use this site"),
        "{text}"
    );
    // The denied network gets nothing of the site; others do.
    let denied = [("x-forwarded-for", "192.0.2.5")];
    assert_eq!(get(&env, "/", &denied).await.status(), 403);
    assert_eq!(get(&env, "/", &[]).await.status(), 200);
    assert_eq!(up.request_count(), 2, "a refused request reached the app");
    assert_eq!(env.rejections("admin", "ip_denied").await, 1.0);
    assert_eq!(env.rejections("site", "ip_denied").await, 1.0);
    // A raw request with no usable address still gets an answer and the process stays up.
    let reply = raw_exchange(
        env.listen,
        b"GET /admin HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: nonsense\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(
        reply.starts_with(b"HTTP/1.1 403"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
}

/// `maintenance.allow` sees the client trusted proxies name, like the other policies.
#[tokio::test]
async fn maintenance_lets_through_the_client_a_trusted_proxy_names() {
    let up = FakeUpstream::start_named("a").await;
    let env = start_with(
        &simple(
            &[up.addr()],
            r#"maintenance = { enabled = true, allow = ["10.0.0.0/8"] }"#,
            "",
        ),
        "trusted_proxies = [\"127.0.0.1\"]",
    )
    .await;
    let office = [("x-forwarded-for", "10.1.2.3")];
    assert_eq!(get(&env, "/", &office).await.status(), 200);
    assert_eq!(get(&env, "/", &[]).await.status(), 503);
    assert_eq!(up.request_count(), 1);
}

/// A reload (a deploy, a SIGHUP) must not hand every client a fresh burst; a changed limit
/// starts afresh.
#[tokio::test]
async fn buckets_survive_a_reload_that_keeps_the_limit() {
    let up = FakeUpstream::start_named("a").await;
    let env = one_an_hour(&up, "").await;
    assert_eq!(get(&env, "/", &[]).await.status(), 200);
    assert_eq!(get(&env, "/", &[]).await.status(), 429);
    let reloads = |n: f64| {
        let env = &env;
        async move {
            crate::common::eventually(Duration::from_secs(5), || async {
                env.metric("berth_config_reloads_total{result=\"applied\"}")
                    .await
                    >= n
            })
            .await
        }
    };
    // Another setting of the route changes; the limit does not.
    env.write_body(&simple(
        &[up.addr()],
        &format!("{ONE_AN_HOUR}\nmax_body = \"1MiB\""),
        "",
    ));
    env.berth.signal(libc::SIGHUP).expect("SIGHUP");
    assert!(reloads(1.0).await, "the reload was not applied");
    assert_eq!(get(&env, "/", &[]).await.status(), 429);
    // A new limit: new buckets.
    env.write_body(&simple(
        &[up.addr()],
        "rate_limit = { rate = \"1/h\", burst = 2 }",
        "",
    ));
    env.berth.signal(libc::SIGHUP).expect("SIGHUP");
    assert!(reloads(2.0).await, "the second reload was not applied");
    assert_eq!(get(&env, "/", &[]).await.status(), 200);
    assert_eq!(get(&env, "/", &[]).await.status(), 200);
    assert_eq!(get(&env, "/", &[]).await.status(), 429);
}
