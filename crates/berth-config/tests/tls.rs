//! `server.tls_listen` and `[[certificate]]`: what valid tables produce, and where problems
//! (including bad certificate files) are reported.

use std::path::Path;

use berth_config::{Config, Diagnostic, load};
use berth_edge::spec::{CertSource, HostPattern, defaults};
use rcgen::{CertificateParams, IsCa, Issuer, KeyPair, date_time_ymd};
use tempfile::TempDir;

mod support;
use support::assert_at;

struct Files {
    dir: TempDir,
    issuer: Issuer<'static, KeyPair>,
}

impl Files {
    fn new() -> Files {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        Files {
            dir: tempfile::tempdir().unwrap(),
            issuer: Issuer::new(params, key),
        }
    }

    /// `<name>.pem` and `<name>.key` for `names`, valid until `until_year`.
    fn leaf(&self, name: &str, names: &[&str], until_year: i32) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = date_time_ymd(2000, 1, 1);
        params.not_after = date_time_ymd(until_year, 1, 1);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let cert_name = format!("{name}.pem");
        let key_name = format!("{name}.key");
        std::fs::write(self.dir.path().join(&cert_name), cert.pem()).unwrap();
        std::fs::write(self.dir.path().join(&key_name), key.serialize_pem()).unwrap();
        (cert_name, key_name)
    }

    /// Writes `berth.toml` (`head`, then `body`) next to the certificates (relative paths
    /// start there) and loads it.
    fn load_after(&self, head: &str, body: &str) -> Result<Config, Vec<Diagnostic>> {
        let path = self.dir.path().join("berth.toml");
        std::fs::write(&path, format!("{head}{body}")).unwrap();
        load(&path).map_err(|e| e.diagnostics)
    }

    fn load(&self, body: &str) -> Result<Config, Vec<Diagnostic>> {
        self.load_after(HEAD, body)
    }

    /// Like `load`, with `tls_listen` added to `[server]` (one line: what follows HEAD starts
    /// on line 14).
    fn load_tls(&self, body: &str) -> Result<Config, Vec<Diagnostic>> {
        self.load_after(&head_with_tls_listen("127.0.0.1:8443"), body)
    }

    fn only(&self, body: &str) -> Diagnostic {
        one(self.load(body))
    }

    fn only_tls(&self, body: &str) -> Diagnostic {
        one(self.load_tls(body))
    }
}

/// The one diagnostic of a load that must fail.
#[track_caller]
fn one(loaded: Result<Config, Vec<Diagnostic>>) -> Diagnostic {
    let mut all = loaded.expect_err("expected an error");
    assert_eq!(all.len(), 1, "expected one diagnostic, got {all:#?}");
    all.remove(0)
}

/// Lines 1-12; what follows starts on line 13.
const HEAD: &str = "[server]
listen = [\"127.0.0.1:8080\"]
data_dir = \"state\"

[[route]]
name = \"web\"
hosts = [\"*\"]
group = \"web\"

[group.web]
upstreams = [\"127.0.0.1:9001\"]

";

/// HEAD with `tls_listen = ["<addr>"]` as line 3.
fn head_with_tls_listen(addr: &str) -> String {
    const LISTEN: &str = "listen = [\"127.0.0.1:8080\"]\n";
    HEAD.replacen(LISTEN, &format!("{LISTEN}tls_listen = [\"{addr}\"]\n"), 1)
}

#[track_caller]
fn assert_mentions(d: &Diagnostic, text: &str) {
    assert!(d.to_string().contains(text), "{text:?} not in {d}");
}

fn files_table(hosts: &str, cert: &str, key: &str) -> String {
    format!(
        "[[certificate]]\nhosts = {hosts}\nsource = \"files\"\ncert = \"{cert}\"\nkey = \"{key}\"\n"
    )
}

#[test]
fn without_tls_nothing_changes_and_routes_redirect_by_default() {
    let f = Files::new();
    let config = f.load("").unwrap();
    assert!(config.edge.tls.listeners.is_empty());
    assert!(config.edge.tls.certificates.is_empty());
    assert_eq!(
        config.edge.routes[0].https_redirect,
        defaults::HTTPS_REDIRECT
    );
}

#[test]
fn files_and_dev_certificates() {
    let f = Files::new();
    let (cert, key) = f.leaf("site", &["example.com", "*.example.com"], 2100);
    let body = format!(
        "{}default = true\n\n[[certificate]]\nhosts = [\"app.test\", \"*.App.test\"]\nsource = \"dev\"\n",
        files_table(
            "[\"example.com\", \"*.example.com\", \"www.example.com\"]",
            &cert,
            &key
        )
    );
    let config = f.load_tls(&body).unwrap_or_else(|d| panic!("{d:#?}"));
    let tls = &config.edge.tls;
    assert_eq!(tls.listeners, ["127.0.0.1:8443".parse().unwrap()]);
    assert_eq!(tls.dev_ca_dir, f.dir.path().join("state/tls/dev-ca"));
    assert_eq!(tls.certificates.len(), 2);
    let files = &tls.certificates[0];
    assert!(files.default);
    assert_eq!(
        files.hosts,
        [
            HostPattern::Exact("example.com".into()),
            HostPattern::Wildcard(".example.com".into()),
            HostPattern::Exact("www.example.com".into()),
        ]
    );
    match &files.source {
        CertSource::Files {
            cert: c, loaded, ..
        } => {
            assert_eq!(c, &f.dir.path().join(&cert));
            assert_eq!(loaded.names, ["example.com", "*.example.com"]);
        }
        other => panic!("{other:?}"),
    }
    let dev = &tls.certificates[1];
    assert!(!dev.default);
    assert!(matches!(dev.source, CertSource::Dev));
    assert_eq!(dev.hosts[1], HostPattern::Wildcard(".app.test".into()));
}

#[test]
fn expired_certificate_is_reported_at_cert() {
    let f = Files::new();
    let (cert, key) = f.leaf("old", &["example.com"], 2001);
    let d = f.only_tls(&files_table("[\"example.com\"]", &cert, &key));
    assert_at(&d, 17, 8, "certificate[0].cert");
    let path = f.dir.path().join(&cert);
    assert_mentions(
        &d,
        &format!(
            "the certificate in {} expired at 2001-01-01T00:00:00Z",
            path.display()
        ),
    );
}

#[test]
fn a_key_of_another_certificate_is_reported_at_key() {
    let f = Files::new();
    let (cert, _) = f.leaf("one", &["example.com"], 2100);
    let (_, key) = f.leaf("two", &["example.com"], 2100);
    let d = f.only_tls(&files_table("[\"example.com\"]", &cert, &key));
    assert_at(&d, 18, 7, "certificate[0].key");
    assert_mentions(&d, "does not belong to the certificate in");
}

#[test]
fn unreadable_and_non_pem_files_name_the_file() {
    let f = Files::new();
    let (cert, _) = f.leaf("one", &["example.com"], 2100);
    let d = f.only_tls(&files_table("[\"example.com\"]", "missing.pem", "one.key"));
    assert_at(&d, 17, 8, "certificate[0].cert");
    assert_mentions(&d, "cannot read");
    assert_mentions(&d, "missing.pem");
    std::fs::write(f.dir.path().join("junk.key"), "hello\n").unwrap();
    let d = f.only_tls(&files_table("[\"example.com\"]", &cert, "junk.key"));
    assert_at(&d, 18, 7, "certificate[0].key");
    assert_mentions(&d, "holds no PEM private key");
}

#[test]
fn a_certificate_must_cover_its_hosts_one_wildcard_label_deep() {
    let f = Files::new();
    let (cert, key) = f.leaf("w", &["*.example.com"], 2100);
    assert!(
        f.load_tls(&files_table(
            "[\"a.example.com\", \"*.example.com\"]",
            &cert,
            &key
        ))
        .is_ok()
    );
    let d = f.only_tls(&files_table(
        "[\"a.b.example.com\", \"example.com\"]",
        &cert,
        &key,
    ));
    assert_at(&d, 17, 8, "certificate[0].cert");
    assert_mentions(
        &d,
        "not valid for a.b.example.com, example.com (its names: *.example.com)",
    );
}

#[test]
fn table_problems_point_at_their_keys() {
    let f = Files::new();
    let (cert, key) = f.leaf("one", &["example.com"], 2100);
    let d = f.only_tls("[[certificate]]\nhosts = [\"a.test\"]\nsource = \"acme-ish\"\n");
    assert_at(&d, 16, 10, "certificate[0].source");
    assert_mentions(&d, "unknown certificate source `acme-ish`");

    let d = f.only_tls(&format!(
        "[[certificate]]\nhosts = [\"a.test\"]\nsource = \"files\"\ncert = \"{cert}\"\n"
    ));
    assert_at(&d, 16, 10, "certificate[0].source");
    assert_mentions(&d, "missing: key");

    let d =
        f.only_tls("[[certificate]]\nhosts = [\"a.test\"]\nsource = \"dev\"\nkey = \"x.key\"\n");
    assert_at(&d, 17, 7, "certificate[0].key");

    let d = f.only_tls("[[certificate]]\nhosts = [\"*\"]\nsource = \"dev\"\n");
    assert_at(&d, 15, 10, "certificate[0].hosts[0]");
    let d = f.only_tls("[[certificate]]\nhosts = [\"a.test\", \"127.0.0.1\"]\nsource = \"dev\"\n");
    assert_at(&d, 15, 20, "certificate[0].hosts[1]");
    assert_mentions(&d, "IP address");

    let two = format!(
        "{}default = true\n\n[[certificate]]\nhosts = [\"b.test\", \"example.com\"]\nsource = \"dev\"\ndefault = true\n",
        files_table("[\"example.com\"]", &cert, &key)
    );
    let all = f.load_tls(&two).err().unwrap();
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_at(&all[0], 22, 20, "certificate[1].hosts[1]");
    assert_mentions(&all[0], "already has a certificate, certificate[0]");
    assert_at(&all[1], 24, 11, "certificate[1].default");
}

#[test]
fn listeners_and_certificates_come_together() {
    let f = Files::new();
    let d = f.only("[[certificate]]\nhosts = [\"a.test\"]\nsource = \"dev\"\n");
    assert_at(&d, 13, 1, "certificate[0]");
    assert_mentions(&d, "no TLS listener");

    let all = f
        .load_after(&head_with_tls_listen("127.0.0.1:8080"), "")
        .err()
        .unwrap();
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_at(&all[0], 3, 14, "server.tls_listen");
    assert_mentions(&all[0], "need at least one [[certificate]]");
    assert_at(&all[1], 3, 15, "server.tls_listen[0]");
    assert_mentions(&all[1], "also a plain-HTTP listener, server.listen[0]");
}

#[test]
fn relative_paths_start_from_the_config_directory() {
    let f = Files::new();
    let (cert, key) = f.leaf("site", &["example.com"], 2100);
    let config = f
        .load_tls(&files_table("[\"example.com\"]", &cert, &key))
        .unwrap();
    let CertSource::Files { key: k, .. } = &config.edge.tls.certificates[0].source else {
        panic!("not files");
    };
    assert_eq!(k, &f.dir.path().join(&key));
    assert!(Path::new(k).is_absolute());
}

#[test]
fn acme_defaults_to_lets_encrypt_over_http01() {
    let f = Files::new();
    let config = f
        .load_tls("[[certificate]]\nhosts = [\"a.test\"]\nsource = \"acme\"\n")
        .unwrap_or_else(|d| panic!("{d:#?}"));
    let tls = &config.edge.tls;
    assert!(matches!(tls.certificates[0].source, CertSource::Acme));
    assert_eq!(tls.acme.directory, defaults::ACME_DIRECTORY);
    assert_eq!(tls.acme.challenge, berth_edge::spec::AcmeChallenge::Http01);
    assert_eq!(tls.acme.state_dir, f.dir.path().join("state/tls/acme"));
    assert!(tls.acme.eab.is_none() && tls.acme.contact.is_empty());
}

#[test]
fn acme_settings_are_checked() {
    let f = Files::new();
    std::fs::write(f.dir.path().join("root.pem"), "not a certificate").unwrap();
    let all = f
        .load_tls(
            "[server.acme]\ndirectory = \"http://ca.test/dir\"\ncontact = [\"ops@example.com\"]\n\
             challenge = \"dns-01\"\nca_cert = \"root.pem\"\neab = { kid = \"k\", hmac_key = \"!!\" }\n\n\
             [[certificate]]\nhosts = [\"*.a.test\"]\nsource = \"acme\"\n",
        )
        .expect_err("invalid");
    let fields: Vec<&str> = all.iter().map(|d| d.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "server.acme.directory",
            "server.acme.contact[0]",
            "server.acme.challenge",
            "server.acme.ca_cert",
            "server.acme.eab.hmac_key",
            "certificate[0].hosts[0]",
        ],
        "{all:#?}"
    );
    assert_mentions(&all[5], "DNS-01");
    // The key is never echoed.
    assert!(!all[4].to_string().contains("!!"));
}

#[test]
fn the_tls_example_is_valid() {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/tls.toml"
    ));
    let config = load(path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.edge.tls.listeners.len(), 1);
    assert!(config.edge.tls.certificates[0].default);
}
