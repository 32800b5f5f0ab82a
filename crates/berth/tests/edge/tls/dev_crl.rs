//! The development CA's CRL: named by its leaf certificates, served by berth itself over plain
//! HTTP and TLS for the development hosts, signed by the CA, and kept across a restart.

use std::sync::Arc;
use std::time::Duration;

use berth_testkit::FakeUpstream;
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use super::support::{Dial, cert_dir, no_redirects, provider, start_tls};
use crate::common::simple;

const CRL_PATH: &str = "/.well-known/berth/dev-ca.crl";

/// The URIs of a certificate's CRL distribution points extension.
fn crl_uris(cert: &X509Certificate<'_>) -> Vec<String> {
    let mut uris = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::CRLDistributionPoints(points) = ext.parsed_extension() {
            for point in points.iter() {
                if let Some(DistributionPointName::FullName(names)) = &point.distribution_point {
                    for name in names {
                        if let GeneralName::URI(u) = name {
                            uris.push((*u).to_owned());
                        }
                    }
                }
            }
        }
    }
    uris
}

fn authority_key_id(crl: &CertificateRevocationList<'_>) -> Option<Vec<u8>> {
    crl.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
}

fn subject_key_id(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
}

/// Checks that `crl` is a current CRL of `ca` and that a client checking revocation with it
/// accepts `leaf` for `name`.
fn check_crl(crl: &[u8], ca: &CertificateDer<'static>, leaf: &CertificateDer<'static>, name: &str) {
    let (_, ca_cert) = X509Certificate::from_der(ca).unwrap();
    let (rest, parsed) = CertificateRevocationList::from_der(crl).expect("a DER CRL");
    assert!(rest.is_empty(), "trailing bytes after the CRL");
    assert_eq!(
        parsed.issuer().as_raw(),
        ca_cert.subject().as_raw(),
        "issuer: {}",
        parsed.issuer()
    );
    let ski = subject_key_id(&ca_cert).expect("the CA has a subject key identifier");
    assert_eq!(authority_key_id(&parsed), Some(ski), "CRL authority key id");
    parsed
        .verify_signature(ca_cert.public_key())
        .expect("the CRL is signed by the CA's key");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let next = parsed.next_update().expect("nextUpdate").timestamp();
    assert!(
        next > now + 24 * 3600,
        "nextUpdate {next} is not days ahead of {now}"
    );
    assert!(
        parsed.last_update().timestamp() <= now,
        "thisUpdate in the future"
    );
    assert_eq!(parsed.iter_revoked_certificates().count(), 0);

    // What a revocation-checking client does (webpki, rustls's verifier): the CRL must be
    // authoritative for the leaf, correctly signed and not expired, or the leaf is refused.
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .with_crls([CertificateRevocationListDer::from(crl.to_vec())])
        .enforce_revocation_expiration()
        .build()
        .unwrap();
    let server = ServerName::try_from(name.to_owned()).unwrap();
    verifier
        .verify_server_cert(leaf, &[], &server, &[], UnixTime::now())
        .expect("a client checking the CRL accepts the leaf");
}

#[tokio::test]
async fn dev_certificates_name_a_crl_that_berth_serves_signed_by_the_dev_ca() {
    let up = FakeUpstream::start_named("a").await;
    let data = cert_dir();
    let extra = format!("data_dir = \"{}\"\n", data.path().display());
    let body = format!(
        "{}[[certificate]]\nhosts = [\"crl.test\", \"*.crl.test\"]\nsource = \"dev\"\n",
        simple(&[up.addr()], "", "")
    );
    let ca_dir = data.path().join("tls/dev-ca");

    let mut first_crl = None;
    for run in 0..2 {
        let mut env = start_tls(&body, &extra).await;
        let ca: CertificateDer<'static> =
            CertificateDer::from_pem_slice(&std::fs::read(ca_dir.join("ca.pem")).unwrap()).unwrap();

        // The leaf served names the CRL on berth's plain-HTTP listener.
        let got = Dial::trusting(ca.clone(), "crl.test")
            .get(env.https, "/")
            .await
            .unwrap();
        assert_eq!(got.status, 200);
        let (_, leaf) = X509Certificate::from_der(&got.peer).unwrap();
        let url = format!("http://crl.test:{}{CRL_PATH}", env.http.port());
        assert_eq!(crl_uris(&leaf), [url], "run {run}");

        // Fetched as a client would: that URL, over plain HTTP, no redirect to HTTPS.
        let r = no_redirects()
            .get(format!("http://{}{CRL_PATH}", env.http))
            .header("host", format!("crl.test:{}", env.http.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "run {run}");
        assert_eq!(r.headers()["content-type"], "application/pkix-crl");
        let crl = r.bytes().await.unwrap().to_vec();
        check_crl(&crl, &ca, &got.peer, "crl.test");
        assert_eq!(up.request_count(), 1, "the CRL request reached the app");

        // The same over TLS, for a name under the wildcard.
        let tls = Dial::trusting(ca.clone(), "a.crl.test")
            .get(env.https, CRL_PATH)
            .await
            .unwrap();
        assert_eq!(tls.status, 200);
        assert_eq!(tls.body.as_ref(), crl.as_slice());

        // Not for a host without a development certificate: that goes to the app.
        let other = no_redirects()
            .get(format!("http://{}{CRL_PATH}", env.http))
            .header("host", "other.test")
            .send()
            .await
            .unwrap();
        assert_ne!(
            other.headers().get("content-type").map(|v| v.as_bytes()),
            Some(&b"application/pkix-crl"[..])
        );
        assert_eq!(up.request_count(), 2, "other.test was not routed");

        // Stored next to the CA, public, and the same after a restart.
        let path = ca_dir.join("ca.crl");
        assert_eq!(std::fs::read(&path).unwrap(), crl);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644, "ca.crl mode {mode:o}");
        match &first_crl {
            None => first_crl = Some(crl),
            Some(first) => assert_eq!(first, &crl, "the CRL changed across a restart"),
        }
        env.berth.stop(Duration::from_secs(10)).await;
        up.clear_requests();
    }
}
