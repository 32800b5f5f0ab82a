//! What the TLS tests need: a test CA (rcgen) issuing certificates into files, a berth with a
//! TLS listener, and a rustls client that reports the certificate and protocol it got.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_testkit::{BerthProcess, StartError, free_addr};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme, SupportedProtocolVersion,
};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::common::BIN;

pub const H2: &[u8] = b"h2";
pub const H1: &[u8] = b"http/1.1";

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A CA for tests, and the certificates it issues.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub der: CertificateDer<'static>,
    pub pem: String,
}

/// A leaf certificate written to `<dir>/<name>.pem` and `<name>.key`.
pub struct Leaf {
    pub der: CertificateDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "berth test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            der: cert.der().clone(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `names`, valid from `from` to `until` seconds relative to now.
    pub fn leaf_valid(&self, names: &[&str], from: i64, until: i64) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].clone());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::seconds(from);
        params.not_after = now + time::Duration::seconds(until);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            der: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Valid from an hour ago for 90 days.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_valid(names, -3600, 90 * 24 * 3600)
    }

    pub fn roots(&self) -> RootCertStore {
        only_root(self.der.clone())
    }
}

fn only_root(root: CertificateDer<'static>) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.add(root).unwrap();
    roots
}

impl Leaf {
    /// Writes the pair as `<name>.pem` and `<name>.key` in `dir`, each through a rename so a
    /// watcher never sees half a file. Returns the two paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        write_atomic(&key, &self.key_pem);
        write_atomic(&cert, &self.cert_pem);
        (cert, key)
    }
}

pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("writing");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `[[certificate]]` from files.
pub fn files_cert(hosts: &[&str], cert: &Path, key: &Path, extra: &str) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    format!(
        "[[certificate]]\nhosts = [{}]\nsource = \"files\"\ncert = \"{}\"\nkey = \"{}\"\n{extra}\n",
        hosts.join(", "),
        cert.display(),
        key.display()
    )
}

pub struct TlsEnv {
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    pub berth: BerthProcess,
    server_extra: String,
}

pub fn server_section(
    http: SocketAddr,
    https: SocketAddr,
    admin: SocketAddr,
    extra: &str,
) -> String {
    format!(
        "[server]\nlisten = [\"{http}\"]\ntls_listen = [\"{https}\"]\nadmin_listen = \"{admin}\"\nworkers = 2\nshutdown_timeout = \"10s\"\naccess_log = \"off\"\n{extra}\n"
    )
}

/// Plain-HTTP, HTTPS and admin addresses.
pub fn free_ports() -> (SocketAddr, SocketAddr, SocketAddr) {
    (free_addr(), free_addr(), free_addr())
}

async fn launch(
    (http, https, admin): (SocketAddr, SocketAddr, SocketAddr),
    body: &str,
    server_extra: &str,
) -> Result<TlsEnv, StartError> {
    let toml = format!("{}{body}", server_section(http, https, admin, server_extra));
    let berth = BerthProcess::builder(BIN)
        .config_toml(toml)
        .admin_addr(admin)
        .start()
        .await?;
    Ok(TlsEnv {
        http,
        https,
        admin,
        berth,
        server_extra: server_extra.to_owned(),
    })
}

/// Starts berth on given ports (for ACME, whose CA must know them in advance).
pub async fn start_tls_on(
    ports: (SocketAddr, SocketAddr, SocketAddr),
    body: &str,
    server_extra: &str,
) -> TlsEnv {
    launch(ports, body, server_extra)
        .await
        .unwrap_or_else(|e| panic!("berth did not start: {e:?}"))
}

/// Starts berth with a TLS listener; `server_extra` goes into `[server]` (e.g. a data_dir,
/// which defaults to `data` in berth's temporary directory).
pub async fn start_tls(body: &str, server_extra: &str) -> TlsEnv {
    let extra = if server_extra.contains("data_dir") {
        server_extra.to_owned()
    } else {
        format!("data_dir = \"data\"\n{server_extra}")
    };
    // A free port can be taken by a parallel test between being picked and being bound;
    // only that case is retried, with new ports.
    let mut last = String::new();
    for _ in 0..3 {
        match launch(free_ports(), body, &extra).await {
            Ok(env) => return env,
            Err(e) => {
                last = format!("{e:?}");
                if !last.contains("cannot listen on") {
                    break;
                }
            }
        }
    }
    panic!("berth did not start: {last}");
}

/// Starts berth expecting it to refuse the config; returns its stderr.
pub async fn start_refused(body: &str) -> (Option<i32>, String) {
    match launch(free_ports(), body, "data_dir = \"data\"").await {
        Ok(_) => panic!("berth started with a config it should refuse"),
        Err(StartError::Exited { status, stderr, .. }) => (status.code(), stderr),
        Err(e) => panic!("berth did not exit as expected: {e:?}"),
    }
}

/// A test CA and a certificate for `a.test` from it, written to a directory of their own.
pub struct Site {
    pub ca: TestCa,
    pub leaf: Leaf,
    pub dir: TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Site {
    pub fn new() -> Site {
        let ca = TestCa::new();
        let dir = cert_dir();
        let leaf = ca.leaf(&["a.test"]);
        let (cert, key) = leaf.write(dir.path(), "a");
        Site {
            ca,
            leaf,
            dir,
            cert,
            key,
        }
    }

    /// `routes`, then the `[[certificate]]` of `a.test` from the site's files with `extra`.
    pub fn body(&self, routes: &str, extra: &str) -> String {
        format!(
            "{routes}{}",
            files_cert(&["a.test"], &self.cert, &self.key, extra)
        )
    }

    /// A client for `a.test` that trusts the site's CA.
    pub fn dial(&self) -> Dial {
        Dial::new(&self.ca, "a.test")
    }

    /// A client configuration that trusts the site's CA and speaks only `version`.
    pub fn client_config(&self, version: &'static SupportedProtocolVersion) -> ClientConfig {
        ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(self.ca.roots())
            .with_no_client_auth()
    }
}

/// A client that shows redirects instead of following them.
pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

impl TlsEnv {
    pub fn write_body(&self, body: &str) {
        let toml = format!(
            "{}{body}",
            server_section(self.http, self.https, self.admin, &self.server_extra)
        );
        self.berth.write_config(toml).unwrap();
    }

    pub fn token(&self) -> String {
        let data = self
            .server_extra
            .lines()
            .find_map(|l| l.strip_prefix("data_dir = \"")?.strip_suffix('"'))
            .unwrap_or("data");
        let path = self.berth.dir().join(data).join("admin.token");
        std::fs::read_to_string(path).unwrap().trim().to_owned()
    }

    /// `POST /api/v1/reload`: the status and the answer's text.
    pub async fn reload(&self) -> (u16, String) {
        let r = crate::common::client()
            .post(format!("http://{}/api/v1/reload", self.admin))
            .bearer_auth(self.token())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    pub async fn metrics(&self) -> String {
        crate::common::client()
            .get(format!("http://{}/api/v1/metrics", self.admin))
            .bearer_auth(self.token())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn metric(&self, prefix: &str) -> f64 {
        crate::common::metric_sum(&self.metrics().await, prefix)
    }
}

/// How the test client connects.
#[derive(Clone)]
pub struct Dial {
    pub roots: Arc<RootCertStore>,
    /// Sent as SNI, and the name the certificate is checked against.
    pub name: String,
    pub send_sni: bool,
    pub alpn: Vec<Vec<u8>>,
    /// Accept any certificate (and record it), to see what the server sends for a name it
    /// has no certificate for.
    pub accept_any: bool,
    /// Written before the handshake, e.g. a PROXY protocol header.
    pub preface: Vec<u8>,
}

impl Dial {
    pub fn new(ca: &TestCa, name: &str) -> Dial {
        Dial::trusting(ca.der.clone(), name)
    }

    /// A client for `name` that trusts `root` alone.
    pub fn trusting(root: CertificateDer<'static>, name: &str) -> Dial {
        Dial {
            roots: Arc::new(only_root(root)),
            name: name.to_owned(),
            send_sni: true,
            alpn: vec![H1.to_vec()],
            accept_any: false,
            preface: Vec::new(),
        }
    }

    /// Sends `bytes` on the TCP connection before the TLS handshake.
    pub fn preface(mut self, bytes: &[u8]) -> Dial {
        self.preface = bytes.to_vec();
        self
    }

    pub fn h2(mut self) -> Dial {
        self.alpn = vec![H2.to_vec(), H1.to_vec()];
        self
    }

    pub fn no_sni(mut self) -> Dial {
        self.send_sni = false;
        self
    }

    pub fn accept_any(mut self) -> Dial {
        self.accept_any = true;
        self
    }

    fn config(&self) -> ClientConfig {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let mut config = if self.accept_any {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny))
                .with_no_client_auth()
        } else {
            builder
                .with_root_certificates(self.roots.clone())
                .with_no_client_auth()
        };
        config.enable_sni = self.send_sni;
        config.alpn_protocols = self.alpn.clone();
        config
    }

    /// A TLS connection, or the handshake error.
    pub async fn connect(
        &self,
        addr: SocketAddr,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let mut tcp = TcpStream::connect(addr).await?;
        if !self.preface.is_empty() {
            tokio::io::AsyncWriteExt::write_all(&mut tcp, &self.preface).await?;
        }
        let name = ServerName::try_from(self.name.clone())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let connector = TlsConnector::from(Arc::new(self.config()));
        tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timeout"))?
    }

    /// One GET over a new connection, HTTP/2 when ALPN chose it.
    pub async fn get(&self, addr: SocketAddr, path: &str) -> Result<Got, String> {
        let tls = self.connect(addr).await.map_err(|e| e.to_string())?;
        let (_, conn) = tls.get_ref();
        let peer = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .cloned()
            .ok_or("no peer certificate")?;
        let alpn = conn.alpn_protocol().map(|p| p.to_vec());
        let version = conn.protocol_version();
        let io = TokioIo::new(tls);
        let authority = format!("{}:{}", self.name, addr.port());
        let resp = if alpn.as_deref() == Some(H2) {
            let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let req = http::Request::get(format!("https://{authority}{path}"))
                .body(Empty::<Bytes>::new())
                .unwrap();
            send.send_request(req).await.map_err(|e| e.to_string())?
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let req = http::Request::get(path)
                .header(http::header::HOST, authority)
                .body(Empty::<Bytes>::new())
                .unwrap();
            send.send_request(req).await.map_err(|e| e.to_string())?
        };
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Got {
            status: parts.status.as_u16(),
            headers: parts.headers,
            version: parts.version,
            body,
            peer,
            alpn,
            tls_version: version,
        })
    }

    /// The certificate a `GET /` was answered 200 with, if it was.
    pub async fn served(&self, addr: SocketAddr) -> Option<CertificateDer<'static>> {
        self.get(addr, "/")
            .await
            .ok()
            .filter(|g| g.status == 200)
            .map(|g| g.peer)
    }
}

pub struct Got {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub version: http::Version,
    pub body: Bytes,
    pub peer: CertificateDer<'static>,
    pub alpn: Option<Vec<u8>>,
    pub tls_version: Option<rustls::ProtocolVersion>,
}

/// Accepts any server certificate; signatures are still checked, so the handshake is real.
#[derive(Debug)]
struct AcceptAny;

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A directory for certificate files that outlives berth's own.
pub fn cert_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("berth-tls-test-")
        .tempdir()
        .unwrap()
}

/// Results shared between load tasks.
#[derive(Default)]
pub struct Tally {
    pub ok: std::sync::atomic::AtomicUsize,
    pub failed: Mutex<Vec<String>>,
    pub seen: Mutex<Vec<CertificateDer<'static>>>,
}
