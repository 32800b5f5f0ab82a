//! Host and path routing.

use berth_testkit::{FakeUpstream, http_get};

use crate::common::start;

fn route(name: &str, hosts: &str, prefix: &str, group: &str, extra: &str) -> String {
    format!(
        "[[route]]\nname = \"{name}\"\nhosts = [{hosts}]\npath_prefix = \"{prefix}\"\ngroup = \"{group}\"\n{extra}\n"
    )
}

fn group(name: &str, up: &FakeUpstream) -> String {
    format!("[group.{name}]\nupstreams = [\"{}\"]\n", up.addr())
}

#[tokio::test]
async fn routes_by_exact_wildcard_and_any_host_and_longest_prefix() {
    let exact = FakeUpstream::start_named("exact").await;
    let wild = FakeUpstream::start_named("wild").await;
    let deeper = FakeUpstream::start_named("deeper").await;
    let api = FakeUpstream::start_named("api").await;
    let any = FakeUpstream::start_named("any").await;
    let body = [
        route("exact", "\"app.example.com\"", "/", "exact", ""),
        route("wild", "\"*.example.com\"", "/", "wild", ""),
        route("deeper", "\"*.eu.example.com\"", "/", "deeper", ""),
        route(
            "api",
            "\"app.example.com\"",
            "/api",
            "api",
            "strip_prefix = true",
        ),
        route("any", "\"*\"", "/", "any", ""),
        group("exact", &exact),
        group("wild", &wild),
        group("deeper", &deeper),
        group("api", &api),
        group("any", &any),
    ]
    .join("\n");
    let env = start(&body).await;
    let cases = [
        ("app.example.com", "/", "exact"),
        ("APP.example.com:8080", "/x", "exact"),
        ("shop.example.com", "/", "wild"),
        ("a.b.example.com", "/", "wild"),
        ("x.eu.example.com", "/", "deeper"),
        ("app.example.com", "/api", "api"),
        ("app.example.com", "/api/users?id=1", "api"),
        ("app.example.com", "/apix", "exact"),
        ("example.com", "/", "any"),
        ("other.test", "/", "any"),
    ];
    for (host, path, want) in cases {
        let (status, headers, _) = http_get(env.listen, path, host).await;
        assert_eq!(status, 200, "{host}{path}");
        assert_eq!(headers["x-upstream"], want, "{host}{path}");
    }
    // strip_prefix: /api/users?id=1 reaches the upstream as /users?id=1, /api as /.
    let paths: Vec<String> = api.requests().iter().map(|r| r.uri.to_string()).collect();
    assert_eq!(paths, vec!["/".to_owned(), "/users?id=1".to_owned()]);
}

#[tokio::test]
async fn unknown_host_gets_a_404_page_and_is_counted() {
    let up = FakeUpstream::start_named("a").await;
    let body = [
        route("only", "\"known.test\"", "/", "g", ""),
        group("g", &up),
    ]
    .join("\n");
    let env = start(&body).await;
    let (status, headers, body) = http_get(env.listen, "/", "unknown.test").await;
    assert_eq!(status, 404);
    assert!(headers.contains_key("x-request-id"));
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("no site is configured for host 'unknown.test'"),
        "{text}"
    );
    assert_eq!(up.request_count(), 0);
    assert_eq!(
        env.metric("berth_rejections_total{route=\"-\",reason=\"no_route\"}")
            .await,
        1.0
    );
}
