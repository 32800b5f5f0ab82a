//! TLS termination through the real binary: SNI, ALPN, bad clients, bad certificate files,
//! hot reload of certificate files, the development CA and its CRL, redirects and HSTS.

mod dev_crl;
mod pebble;
mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use berth_testkit::FakeUpstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{eventually, simple};
use support::{
    Dial, H1, H2, Site, Tally, TestCa, cert_dir, files_cert, free_ports, no_redirects,
    start_refused, start_tls, start_tls_on, write_atomic,
};

#[tokio::test]
async fn sni_picks_the_certificate_per_host_and_alpn_picks_the_protocol() {
    let up = FakeUpstream::start_named("a").await;
    let ca = TestCa::new();
    let dir = cert_dir();
    let a = ca.leaf(&["a.test"]);
    let b = ca.leaf(&["*.b.test"]);
    let (a_cert, a_key) = a.write(dir.path(), "a");
    let (b_cert, b_key) = b.write(dir.path(), "b");
    let body = format!(
        "{}{}{}",
        simple(&[up.addr()], "", ""),
        files_cert(&["a.test"], &a_cert, &a_key, ""),
        files_cert(&["*.b.test"], &b_cert, &b_key, "")
    );
    let env = start_tls(&body, "").await;

    let got = Dial::new(&ca, "a.test").get(env.https, "/x").await.unwrap();
    assert_eq!(got.status, 200);
    assert!(got.peer == a.der, "a.test got another certificate");
    assert_eq!(got.alpn.as_deref(), Some(H1));
    assert_eq!(got.version, http::Version::HTTP_11);
    assert_eq!(got.tls_version, Some(rustls::ProtocolVersion::TLSv1_3));
    let seen = up.last_request().unwrap();
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(
        seen.header("host"),
        Some(format!("a.test:{}", env.https.port()).as_str())
    );

    // One label under the wildcard; verified by the client against the name it asked for.
    let got = Dial::new(&ca, "x.b.test")
        .h2()
        .get(env.https, "/")
        .await
        .unwrap();
    assert!(got.peer == b.der, "x.b.test got another certificate");
    assert_eq!(got.alpn.as_deref(), Some(H2));
    assert_eq!(got.version, http::Version::HTTP_2);
    assert_eq!(got.status, 200);
    // h2 from the client, HTTP/1.1 to the upstream.
    assert_eq!(up.last_request().unwrap().version, http::Version::HTTP_11);

    // Two labels under a one-label wildcard: no certificate, no default → no handshake.
    let e = Dial::new(&ca, "y.x.b.test").connect(env.https).await.err();
    assert!(
        e.is_some(),
        "a.b.c under *.b.test must not get a certificate"
    );

    let m = env.metrics().await;
    let count = |p: &str| crate::common::metric_sum(&m, p);
    assert_eq!(
        count("berth_tls_handshakes_total{version=\"TLSv1.3\",alpn=\"http/1.1\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(
        count("berth_tls_handshakes_total{version=\"TLSv1.3\",alpn=\"h2\"}"),
        1.0
    );
    assert_eq!(
        count("berth_tls_handshake_failures_total{reason=\"unknown_sni\"}"),
        1.0
    );
    // Expiry per host: 90 days from the certificate's issue, seconds left.
    for host in ["a.test", "*.b.test"] {
        let left = count(&format!(
            "berth_tls_certificate_expiry_seconds{{host=\"{host}\"}}"
        ));
        let full = 90.0 * 24.0 * 3600.0;
        assert!(left > full - 600.0 && left <= full, "{host}: {left}");
    }
}

#[tokio::test]
async fn tls12_clients_get_an_aead_suite() {
    let up = FakeUpstream::start_named("a").await;
    let site = Site::new();
    let env = start_tls(&site.body(&simple(&[up.addr()], "", ""), ""), "").await;
    let config = site.client_config(&rustls::version::TLS12);
    let tcp = tokio::net::TcpStream::connect(env.https).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("a.test".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let (_, conn) = tls.get_ref();
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let suite = format!("{:?}", conn.negotiated_cipher_suite().unwrap().suite());
    assert!(
        suite.starts_with("TLS_ECDHE_") && (suite.contains("GCM") || suite.contains("CHACHA20")),
        "{suite}"
    );
}

/// A client that comes back resumes its session (docs/tls.md, "Session resumption"): from a
/// ticket over TLS 1.3 and TLS 1.2, and from the server's session cache over TLS 1.2 without
/// tickets.
#[tokio::test]
async fn returning_clients_resume_their_session() {
    use rustls::client::{Resumption, Tls12Resumption};
    let up = FakeUpstream::start_named("a").await;
    let site = Site::new();
    let env = start_tls(&site.body(&simple(&[up.addr()], "", ""), ""), "").await;
    let cases = [
        (
            "TLS 1.3",
            &rustls::version::TLS13,
            Tls12Resumption::SessionIdOrTickets,
        ),
        (
            "TLS 1.2 tickets",
            &rustls::version::TLS12,
            Tls12Resumption::SessionIdOrTickets,
        ),
        (
            "TLS 1.2 session ids",
            &rustls::version::TLS12,
            Tls12Resumption::SessionIdOnly,
        ),
    ];
    for (what, version, tls12) in cases {
        let mut config = site.client_config(version);
        config.resumption = Resumption::in_memory_sessions(8).tls12_resumption(tls12);
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let mut kinds = Vec::new();
        for _ in 0..2 {
            let tcp = tokio::net::TcpStream::connect(env.https).await.unwrap();
            let mut tls = connector
                .connect("a.test".try_into().unwrap(), tcp)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            // A whole exchange, so the client also reads the tickets sent after a TLS 1.3
            // handshake.
            tls.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut answer = Vec::new();
            let _ = tls.read_to_end(&mut answer).await;
            assert!(
                answer.starts_with(b"HTTP/1.1 200"),
                "{what}: {}",
                String::from_utf8_lossy(&answer)
            );
            kinds.push(tls.get_ref().1.handshake_kind());
        }
        assert_ne!(kinds[0], Some(rustls::HandshakeKind::Resumed), "{what}");
        assert_eq!(kinds[1], Some(rustls::HandshakeKind::Resumed), "{what}");
    }
}

#[tokio::test]
async fn clients_without_sni_or_with_an_unknown_name_get_the_default_or_nothing() {
    let up = FakeUpstream::start_named("a").await;
    let site = Site::new();
    let ca = &site.ca;
    let routes = simple(&[up.addr()], "", "");
    let env = start_tls(&site.body(&routes, ""), "").await;

    // No default certificate: both handshakes fail, and berth says why.
    assert!(site.dial().no_sni().connect(env.https).await.is_err());
    assert!(
        Dial::new(ca, "other.test")
            .accept_any()
            .connect(env.https)
            .await
            .is_err()
    );
    assert_eq!(
        env.metric("berth_tls_handshake_failures_total{reason=\"no_sni\"}")
            .await,
        1.0
    );
    assert_eq!(
        env.metric("berth_tls_handshake_failures_total{reason=\"unknown_sni\"}")
            .await,
        1.0
    );
    // The resolver counts these; the failed handshake is not counted again (as `other`).
    assert_eq!(env.metric("berth_tls_handshake_failures_total").await, 2.0);

    // With `default = true` (applied by a reload) both get a.test's certificate.
    env.write_body(&site.body(&routes, "default = true"));
    assert_eq!(env.reload().await.0, 200);
    let got = site.dial().no_sni().get(env.https, "/").await.unwrap();
    assert!(got.peer == site.leaf.der);
    assert_eq!(got.status, 200);
    let got = Dial::new(ca, "other.test")
        .accept_any()
        .get(env.https, "/")
        .await
        .unwrap();
    assert!(got.peer == site.leaf.der);
    // A client that checks names refuses it, as it should.
    assert!(
        Dial::new(ca, "other.test")
            .connect(env.https)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn garbage_and_silence_on_the_tls_port_are_cut_and_berth_keeps_serving() {
    let up = FakeUpstream::start_named("a").await;
    let site = Site::new();
    let env = start_tls(
        &site.body(&simple(&[up.addr()], "", ""), ""),
        "[server.client]\nheader_timeout = \"1s\"\n",
    )
    .await;

    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0x00, 0x05, 0xde, 0xad, 0xbe, 0xef, 0x00][..],
        &[0xff; 64][..],
    ] {
        let mut s = tokio::net::TcpStream::connect(env.https).await.unwrap();
        s.write_all(garbage).await.unwrap();
        let mut buf = Vec::new();
        // Whatever berth answers (at most an alert), it then closes the connection.
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "connection left open after {garbage:?}");
        assert!(
            !String::from_utf8_lossy(&buf).contains("HTTP/1.1"),
            "plain HTTP answered on the TLS port"
        );
    }
    // A client that connects and says nothing is cut at the header timeout.
    let mut silent = tokio::net::TcpStream::connect(env.https).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "silent client not cut: {read:?}"
    );

    let got = site.dial().get(env.https, "/").await.unwrap();
    assert_eq!(got.status, 200);
    assert!(
        env.metric("berth_tls_handshake_failures_total{reason=\"bad_message\"}")
            .await
            >= 3.0
    );
    assert_eq!(
        env.metric("berth_tls_handshake_failures_total{reason=\"timeout\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn expired_and_mismatched_files_are_refused_at_start_naming_file_and_field() {
    let ca = TestCa::new();
    let dir = cert_dir();
    let expired = ca.leaf_valid(&["a.test"], -7200, -3600);
    let (exp_cert, exp_key) = expired.write(dir.path(), "expired");
    let good = ca.leaf(&["a.test"]);
    let other = ca.leaf(&["a.test"]);
    let (good_cert, _) = good.write(dir.path(), "good");
    let (_, other_key) = other.write(dir.path(), "other");
    let up = "127.0.0.1:9";
    let routes = format!(
        "[[route]]\nname = \"app\"\nhosts = [\"*\"]\ngroup = \"app\"\n\n[group.app]\nupstreams = [\"{up}\"]\n\n"
    );

    let refused = |hosts: &[&str], cert: &Path, key: &Path| {
        let body = format!("{routes}{}", files_cert(hosts, cert, key, ""));
        async move { start_refused(&body).await }
    };

    let (code, stderr) = refused(&["a.test"], &exp_cert, &exp_key).await;
    assert_eq!(code, Some(2), "{stderr}");
    // Line 20: 8 lines of [server], 8 of routes, then `cert =` is the 4th line of the table.
    assert!(
        stderr.contains(&format!(
            "berth.toml:20:8: certificate[0].cert: the certificate in {} expired at",
            exp_cert.display()
        )),
        "{stderr}"
    );

    let (code, stderr) = refused(&["a.test"], &good_cert, &other_key).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "berth.toml:21:7: certificate[0].key: the private key in {} does not belong to the certificate in {}",
            other_key.display(),
            good_cert.display()
        )),
        "{stderr}"
    );

    // A certificate that does not cover a listed host.
    let (_, stderr) = refused(
        &["a.test", "b.test"],
        &good_cert,
        &dir.path().join("good.key"),
    )
    .await;
    assert!(
        stderr.contains(
            "certificate[0].cert: the certificate is not valid for b.test (its names: a.test)"
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_bad_file_on_reload_is_refused_and_the_old_certificate_keeps_serving() {
    let up = FakeUpstream::start_named("a").await;
    let site = Site::new();
    let expired = site.ca.leaf_valid(&["a.test"], -7200, -3600);
    let (exp_cert, exp_key) = expired.write(site.dir.path(), "expired");
    let routes = simple(&[up.addr()], "", "");
    let env = start_tls(&site.body(&routes, ""), "").await;

    env.write_body(&format!(
        "{routes}{}",
        files_cert(&["a.test"], &exp_cert, &exp_key, "")
    ));
    let (status, text) = env.reload().await;
    assert_ne!(status, 200, "{text}");
    assert!(text.contains("certificate[0].cert"), "{text}");
    assert!(text.contains("expired at"), "{text}");
    let got = site.dial().get(env.https, "/").await.unwrap();
    assert!(
        got.peer == site.leaf.der,
        "the old certificate no longer serves"
    );
    assert_eq!(got.status, 200);
}

/// Certificates replaced on disk (three times, plus one broken write) while clients open new
/// TLS connections continuously: every request succeeds, the new certificates are picked up
/// without a reload, and the broken one is refused with the previous one kept.
#[tokio::test]
async fn certificate_files_hot_reload_under_load_with_zero_failed_requests() {
    let up = FakeUpstream::start_named("a").await;
    let site = Site::new();
    let env = start_tls(&site.body(&simple(&[up.addr()], "", ""), ""), "").await;
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut load = Vec::new();
    for i in 0..4 {
        let (stop, tally) = (stop.clone(), tally.clone());
        // Half the clients on h2, half on HTTP/1.1; a new connection for every request.
        let dial = if i % 2 == 0 {
            site.dial().h2()
        } else {
            site.dial()
        };
        let addr = env.https;
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match dial.get(addr, "/").await {
                    Ok(g) if g.status == 200 => {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                        let mut seen = tally.seen.lock().unwrap();
                        if !seen.contains(&g.peer) {
                            seen.push(g.peer);
                        }
                    }
                    Ok(g) => tally
                        .failed
                        .lock()
                        .unwrap()
                        .push(format!("status {}", g.status)),
                    Err(e) => tally.failed.lock().unwrap().push(e),
                }
            }
        }));
    }
    let serving = |der: rustls::pki_types::CertificateDer<'static>| {
        let ca_dial = site.dial();
        let addr = env.https;
        async move {
            eventually(Duration::from_secs(15), || async {
                ca_dial.get(addr, "/").await.is_ok_and(|g| g.peer == der)
            })
            .await
        }
    };
    let mut leaves = vec![site.leaf.der.clone()];
    for round in 0..3 {
        let next = site.ca.leaf(&["a.test"]);
        next.write(site.dir.path(), "a");
        assert!(
            serving(next.der.clone()).await,
            "round {round}: new certificate not served"
        );
        leaves.push(next.der.clone());
        if round == 1 {
            // A broken certificate file: refused, counted, and the current one stays.
            let before = env
                .metric("berth_tls_certificate_reload_failures_total{host=\"a.test\"}")
                .await;
            write_atomic(
                &site.cert,
                "-----BEGIN CERTIFICATE-----\nnot base64 at all\n",
            );
            assert!(
                eventually(Duration::from_secs(15), || async {
                    env.metric("berth_tls_certificate_reload_failures_total{host=\"a.test\"}")
                        .await
                        > before
                })
                .await,
                "a broken certificate file was not reported"
            );
            assert!(
                serving(next.der.clone()).await,
                "a broken file replaced the certificate"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let failed = tally.failed.lock().unwrap().clone();
    let ok = tally.ok.load(Ordering::Relaxed);
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok >= 20, "only {ok} requests ran during the reloads");
    let seen = tally.seen.lock().unwrap();
    assert!(
        seen.iter().all(|s| leaves.contains(s)),
        "a certificate that was never written was served"
    );
    assert!(
        seen.len() >= 2,
        "the load saw only {} certificate(s)",
        seen.len()
    );
}

#[tokio::test]
async fn the_dev_ca_is_created_once_and_survives_a_restart() {
    let up = FakeUpstream::start_named("a").await;
    let data = cert_dir();
    let extra = format!("data_dir = \"{}\"\n", data.path().display());
    let body = format!(
        "{}[[certificate]]\nhosts = [\"dev.test\", \"*.dev.test\"]\nsource = \"dev\"\n",
        simple(&[up.addr()], "", "")
    );
    let ca_pem = data.path().join("tls/dev-ca/ca.pem");
    let ca_key = data.path().join("tls/dev-ca/ca.key");

    let mut roots_first = None;
    for run in 0..2 {
        let mut env = start_tls(&body, &extra).await;
        let pem = std::fs::read(&ca_pem).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&ca_key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "key mode {mode:o}");
        let der: rustls::pki_types::CertificateDer<'static> =
            rustls::pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
        match &roots_first {
            None => roots_first = Some(pem.clone()),
            Some(first) => assert_eq!(first, &pem, "run {run}: the dev CA changed"),
        }
        for name in ["dev.test", "api.dev.test"] {
            let dial = Dial {
                alpn: vec![H2.to_vec()],
                ..Dial::trusting(der.clone(), name)
            };
            let got = dial
                .get(env.https, "/")
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got.status, 200);
        }
        env.berth.stop(Duration::from_secs(10)).await;
    }
}

#[tokio::test]
async fn plain_http_gets_a_308_to_https_and_hsts_is_sent_only_over_tls() {
    let up = FakeUpstream::start_named("a").await;
    let ca = TestCa::new();
    let dir = cert_dir();
    let leaf = ca.leaf(&["a.test", "open.test", "nohsts.test", "custom.test"]);
    let (cert, key) = leaf.write(dir.path(), "a");
    let upstream = up.addr();
    let route = |name: &str, host: &str, extra: &str| {
        format!("[[route]]\nname = \"{name}\"\nhosts = [\"{host}\"]\ngroup = \"app\"\n{extra}\n\n")
    };
    let body = format!(
        "{}{}{}{}{}[group.app]\nupstreams = [\"{upstream}\"]\n\n{}",
        route("main", "a.test", ""),
        route("any", "*", ""),
        route("open", "open.test", "https_redirect = false"),
        route(
            "nohsts",
            "nohsts.test",
            "security_headers = { hsts = \"off\" }"
        ),
        route(
            "custom",
            "custom.test",
            "security_headers = { hsts = \"max-age=60; includeSubDomains\" }"
        ),
        files_cert(
            &["a.test", "open.test", "nohsts.test", "custom.test"],
            &cert,
            &key,
            ""
        )
    );
    let env = start_tls(&body, "").await;
    let plain = no_redirects();
    let get = |host: &'static str, path: &'static str| {
        plain
            .get(format!("http://{}{path}", env.http))
            .header("host", host)
            .send()
    };

    let r = get("a.test", "/some/path?q=1").await.unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()["location"],
        format!("https://a.test:{}/some/path?q=1", env.https.port()).as_str()
    );
    assert!(r.headers().get("strict-transport-security").is_none());
    assert_eq!(
        up.request_count(),
        0,
        "a redirected request reached the app"
    );

    // A host without a certificate is served over plain HTTP, without HSTS.
    let r = get("nocert.test", "/").await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("strict-transport-security").is_none());
    // A route that opted out of the redirect.
    let r = get("open.test", "/").await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("strict-transport-security").is_none());

    let hsts = |host: &'static str| {
        let dial = Dial::new(&ca, host);
        let addr = env.https;
        async move {
            let got = dial.get(addr, "/").await.unwrap();
            assert_eq!(got.status, 200, "{host}");
            got.headers
                .get("strict-transport-security")
                .map(|v| v.to_str().unwrap().to_owned())
        }
    };
    assert_eq!(hsts("a.test").await.as_deref(), Some("max-age=31536000"));
    assert_eq!(hsts("open.test").await.as_deref(), Some("max-age=31536000"));
    assert_eq!(hsts("nohsts.test").await, None);
    assert_eq!(
        hsts("custom.test").await.as_deref(),
        Some("max-age=60; includeSubDomains")
    );
}

/// h2load (Debian's nghttp2-client) over TLS and HTTP/2, through berth to an HTTP/1.1
/// upstream: every request succeeds, all of them on h2.
#[tokio::test]
async fn h2load_over_tls_and_h2_to_an_http1_upstream() {
    let up = FakeUpstream::start_named("a").await;
    let site = Site::new();
    // h2load sends no SNI to an IP address: the certificate is the default.
    let env = start_tls(
        &site.body(&simple(&[up.addr()], "", ""), "default = true"),
        "",
    )
    .await;
    let url = format!("https://{}/", env.https);
    let out = tokio::process::Command::new("h2load")
        .args(["-n", "2000", "-c", "8", "-m", "10", "-t", "1", &url])
        .output()
        .await
        .expect("h2load runs (Debian package nghttp2-client; scripts/test installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Application protocol: h2"), "{text}");
    assert!(
        text.contains(
            "requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored"
        ),
        "{text}"
    );
    assert!(text.contains("status codes: 2000 2xx"), "{text}");
    assert!(up.request_count() >= 2000);
    assert!(
        up.requests()
            .iter()
            .all(|r| r.version == http::Version::HTTP_11)
    );
    assert_eq!(
        env.metric("berth_tls_handshakes_total{version=\"TLSv1.3\",alpn=\"h2\"}")
            .await,
        8.0
    );
}

fn acme_body(upstream: std::net::SocketAddr, hosts: &str) -> String {
    format!(
        "{}[[certificate]]\nhosts = {hosts}\nsource = \"acme\"\n",
        simple(&[upstream], "", "")
    )
}

/// HTTP-01 answered by berth's plain listener: issued, then renewed when a third of the
/// (30 s) lifetime is left, then a renewal fails because the CA is gone and the certificate
/// in use keeps serving.
#[tokio::test]
async fn acme_http01_issues_renews_and_survives_a_failed_renewal() {
    let up = FakeUpstream::start_named("a").await;
    let ports = free_ports();
    let mut ca = pebble::Pebble::start(
        ports.0.port(),
        ports.1.port(),
        Duration::from_secs(30),
        None,
    )
    .await;
    let data = cert_dir();
    let extra = format!(
        "data_dir = \"{}\"\n{}",
        data.path().display(),
        ca.acme_section("http-01")
    );
    let env = start_tls_on(
        ports,
        &acme_body(up.addr(), "[\"a.test\", \"www.a.test\"]"),
        &extra,
    )
    .await;
    let root = ca.issuing_root().await;
    // Trusting only pebble's issuing root: served only with a certificate pebble issued for
    // that name.
    let served = |host: &'static str| {
        let dial = Dial::trusting(root.clone(), host);
        let addr = env.https;
        async move { dial.served(addr).await }
    };
    assert!(
        eventually(Duration::from_secs(30), || async {
            served("a.test").await.is_some()
        })
        .await,
        "no certificate issued: {}",
        env.berth.stderr_text()
    );
    let first = served("a.test").await.unwrap();
    assert_eq!(
        served("www.a.test").await.as_ref(),
        Some(&first),
        "one certificate for both names"
    );
    assert_eq!(
        env.metric("berth_acme_orders_total{host=\"a.test\",result=\"issued\"}")
            .await,
        1.0
    );
    // Account key and certificate are kept, private.
    use std::os::unix::fs::PermissionsExt;
    let state = data.path().join("tls/acme").join(format!(
        "127.0.0.1_{}",
        ca.directory()
            .split(':')
            .nth(2)
            .unwrap()
            .trim_end_matches("/dir")
    ));
    for f in ["account.json", "certs/a.test.pem", "certs/a.test.key"] {
        let mode = std::fs::metadata(state.join(f))
            .unwrap_or_else(|e| panic!("{f}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    // Now that a.test has a certificate, plain HTTP is redirected.
    let r = no_redirects()
        .get(format!("http://{}/", env.http))
        .header("host", "a.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);

    // Renewal: due after 20 s of 30 (less up to 3 s of jitter).
    let renewed = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(c) = served("a.test").await.filter(|c| *c != first) {
                break c;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not renewed: {}",
                env.berth.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    assert_eq!(
        env.metric("berth_acme_orders_total{host=\"a.test\",result=\"issued\"}")
            .await,
        2.0
    );

    // The CA goes away: the next renewal fails, is counted and logged, and the certificate in
    // use stays.
    ca.stop().await;
    assert!(
        eventually(Duration::from_secs(40), || async {
            env.metric("berth_acme_orders_total{host=\"a.test\",result=\"failed\"}")
                .await
                >= 1.0
        })
        .await,
        "no failed renewal: {}",
        env.berth.stderr_text()
    );
    assert_eq!(served("a.test").await.as_ref(), Some(&renewed));
    assert!(env.berth.stderr_text().contains("ACME order failed"));
}

/// TLS-ALPN-01 answered by berth's TLS listener, with a CA that requires External Account
/// Binding; after a restart the stored certificate serves at once and nothing is ordered again.
#[tokio::test]
async fn acme_tls_alpn01_issues_and_a_restart_reuses_the_stored_certificate() {
    let up = FakeUpstream::start_named("a").await;
    let ports = free_ports();
    const EAB_KID: &str = "berth-test";
    const EAB_KEY: &str = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let ca = pebble::Pebble::start(
        ports.0.port(),
        ports.1.port(),
        Duration::from_secs(3600),
        Some((EAB_KID, EAB_KEY)),
    )
    .await;
    let data = cert_dir();
    let extra = format!(
        "data_dir = \"{}\"\n{}eab = {{ kid = \"{EAB_KID}\", hmac_key = \"{EAB_KEY}\" }}\n",
        data.path().display(),
        ca.acme_section("tls-alpn-01")
    );
    let body = acme_body(up.addr(), "[\"b.test\"]");
    let root = ca.issuing_root().await;
    let dial = Dial::trusting(root, "b.test");
    let served = |https| dial.served(https);
    let mut env = start_tls_on(ports, &body, &extra).await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            served(env.https).await.is_some()
        })
        .await,
        "no certificate issued: {}",
        env.berth.stderr_text()
    );
    let first = served(env.https).await.unwrap();
    assert!(
        env.metric("berth_tls_handshakes_total{version=\"TLSv1.3\",alpn=\"acme-tls/1\"}")
            .await
            + env
                .metric("berth_tls_handshakes_total{version=\"TLSv1.2\",alpn=\"acme-tls/1\"}")
                .await
            >= 1.0,
        "validated without TLS-ALPN-01?"
    );
    env.berth.stop(Duration::from_secs(10)).await;

    let env = start_tls_on(ports, &body, &extra).await;
    assert_eq!(served(env.https).await.as_ref(), Some(&first));
    // An order against pebble ends within a second (the first one above took no longer), so
    // one started at this start would be counted by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.metric("berth_acme_orders_total").await, 0.0);
}

/// The PROXY protocol header comes before the TLS handshake; believed from a trusted peer,
/// refused (the handshake never starts) from anyone else.
#[tokio::test]
async fn a_proxy_protocol_header_before_the_handshake_names_the_client() {
    let up = FakeUpstream::start_named("a").await;
    let site = Site::new();
    let body = site.body(&simple(&[up.addr()], "https_redirect = false", ""), "");
    let header = b"PROXY TCP4 198.51.100.7 127.0.0.1 4711 443\r\n";
    let env = start_tls(
        &body,
        "trusted_proxies = [\"127.0.0.1\"]\nproxy_protocol = true",
    )
    .await;
    let got = site
        .dial()
        .preface(header)
        .get(env.https, "/echo")
        .await
        .expect("served over TLS after the PROXY header");
    assert_eq!(got.status, 200);
    let doc: serde_json::Value = serde_json::from_slice(&got.body).expect("echo JSON");
    assert_eq!(doc["headers"]["x-forwarded-for"][0], "198.51.100.7");

    let env = start_tls(
        &body,
        "trusted_proxies = [\"10.0.0.0/8\"]\nproxy_protocol = true",
    )
    .await;
    let refused = site.dial().preface(header).get(env.https, "/echo").await;
    assert!(refused.is_err(), "an untrusted PROXY header was served");
    // Without the header the same peer is served.
    let got = site.dial().get(env.https, "/echo").await.expect("served");
    let doc: serde_json::Value = serde_json::from_slice(&got.body).expect("echo JSON");
    assert_eq!(doc["headers"]["x-forwarded-for"][0], "127.0.0.1");
}
