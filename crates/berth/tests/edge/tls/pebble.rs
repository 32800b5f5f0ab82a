//! Debian's pebble (a test ACME CA) and pebble-challtestsrv (its DNS, answering 127.0.0.1 for
//! every name) on loopback, validating against berth's own listeners.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use berth_testkit::free_addr;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tempfile::TempDir;
use tokio::process::{Child, Command};

use super::support::{Dial, TestCa, cert_dir, write_atomic};
use crate::common::eventually;

pub struct Pebble {
    _dir: TempDir,
    pebble: Child,
    _dns: Child,
    listen: SocketAddr,
    management: SocketAddr,
    ca: TestCa,
    /// The root that pebble's own HTTPS listener chains to: berth's `server.acme.ca_cert`.
    pub listener_root: PathBuf,
}

impl Pebble {
    /// Pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port` of 127.0.0.1,
    /// issuing certificates valid for `validity`; with `eab` (key id, base64url HMAC key) it
    /// requires External Account Binding.
    pub async fn start(
        http_port: u16,
        tls_port: u16,
        validity: Duration,
        eab: Option<(&str, &str)>,
    ) -> Pebble {
        let dir = cert_dir();
        let ca = TestCa::new();
        let leaf = ca.leaf(&["127.0.0.1", "localhost"]);
        let (cert, key) = leaf.write(dir.path(), "listener");
        let listener_root = dir.path().join("listener-root.pem");
        write_atomic(&listener_root, &ca.pem);
        let (listen, management, dns, dns_mgmt) =
            (free_addr(), free_addr(), free_addr(), free_addr());
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": listen.to_string(),
                "managementListenAddress": management.to_string(),
                "certificate": cert,
                "privateKey": key,
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": eab.is_some(),
                "externalAccountMACKeys": eab.map(|(kid, key)| serde_json::json!({ kid: key })),
                "certificateValidityPeriod": validity.as_secs(),
            }
        });
        let config_path = dir.path().join("pebble.json");
        write_atomic(&config_path, &config.to_string());
        let dns_child = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args([
                "-dns01",
                &dns.to_string(),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
            ])
            .args(["-management", &dns_mgmt.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("pebble-challtestsrv runs (Debian package pebble; scripts/test installs it)");
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &dns.to_string()])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("pebble runs (Debian package pebble; scripts/test installs it)");
        let up = |addr: SocketAddr| async move {
            eventually(Duration::from_secs(10), || async {
                tokio::net::TcpStream::connect(addr).await.is_ok()
            })
            .await
        };
        assert!(
            up(listen).await && up(management).await && up(dns).await,
            "pebble did not start"
        );
        Pebble {
            _dir: dir,
            pebble,
            _dns: dns_child,
            listen,
            management,
            ca,
            listener_root,
        }
    }

    pub fn directory(&self) -> String {
        format!("https://{}/dir", self.listen)
    }

    /// The root of the certificates pebble issues (new at every pebble start).
    pub async fn issuing_root(&self) -> CertificateDer<'static> {
        let got = Dial::new(&self.ca, "127.0.0.1")
            .get(self.management, "/roots/0")
            .await
            .expect("pebble's management API answers");
        assert_eq!(got.status, 200);
        CertificateDer::from_pem_slice(&got.body).expect("a PEM root")
    }

    /// `[server.acme]` lines for berth.
    pub fn acme_section(&self, challenge: &str) -> String {
        format!(
            "[server.acme]\ndirectory = \"{}\"\nca_cert = \"{}\"\nchallenge = \"{challenge}\"\ncontact = [\"mailto:ops@example.test\"]\n",
            self.directory(),
            self.listener_root.display()
        )
    }

    /// Stops the CA: orders fail from now on.
    pub async fn stop(&mut self) {
        let _ = self.pebble.kill().await;
    }
}
