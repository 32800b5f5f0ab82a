//! The edge's validated configuration: what `berth-config` produces from a file and what the
//! supervisor and deployer produce from app state. No `Option` stands for a required value;
//! `Option` here always means "feature off".

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Defaults, named so the file format, the docs and the tests agree.
pub mod defaults {
    use std::time::Duration;

    pub const CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    pub const MAX_HEADER_BYTES: usize = 16 * 1024;
    pub const MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
    pub const MAX_CONCURRENT: usize = 10_000;
    pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
    pub const RESPONSE_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
    pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(300);
    /// Below gunicorn's 2 s and Node's 5 s keep-alive, so berth drops an idle connection before
    /// the backend does and rarely reuses a dead one.
    pub const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_millis(1500);
    pub const UPSTREAM_MAX_IDLE_PER_INSTANCE: usize = 256;

    pub const RETRY_ATTEMPTS: u32 = 3;
    pub const RETRY_BUDGET: Duration = Duration::from_secs(10);

    pub const HEALTH_PATH: &str = "/health";
    pub const HEALTH_INTERVAL: Duration = Duration::from_secs(2);
    pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
    pub const HEALTHY_THRESHOLD: u32 = 2;
    pub const UNHEALTHY_THRESHOLD: u32 = 2;

    pub const PASSIVE_CONSECUTIVE_FAILURES: u32 = 5;
    pub const PASSIVE_WINDOW: Duration = Duration::from_secs(10);
    pub const PASSIVE_WINDOW_FAILURES: u32 = 10;
    pub const PASSIVE_COOL_OFF: Duration = Duration::from_secs(10);
    pub const PASSIVE_MAX_COOL_OFF: Duration = Duration::from_secs(300);

    pub const STICKY_COOKIE: &str = "berth_cohort";
    pub const STICKY_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
    pub const FORCE_HEADER: &str = "x-berth-release";
    pub const FORCE_COOKIE: &str = "berth_release";

    pub const MAINTENANCE_RETRY_AFTER: Duration = Duration::from_secs(120);

    pub const FRAME_OPTIONS: &str = "SAMEORIGIN";
    /// Sent on TLS connections only: a year, without `includeSubDomains`, which would also
    /// commit every other site under the domain to HTTPS.
    pub const HSTS: &str = "max-age=31536000";
    /// A plain-HTTP request for a host that has a certificate is redirected to HTTPS.
    pub const HTTPS_REDIRECT: bool = true;
    pub const ACME_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";
    pub const ACME_STAGING_DIRECTORY: &str =
        "https://acme-staging-v02.api.letsencrypt.org/directory";
    pub const REFERRER_POLICY: &str = "strict-origin-when-cross-origin";

    /// Release name of a group given as a plain upstream list.
    pub const RELEASE: &str = "default";

    /// Distinct clients (keys) one rate limit remembers; more evicts the buckets closest to
    /// full first.
    pub const RATE_LIMIT_MAX_KEYS: usize = 100_000;
    /// Bodies smaller than this are not worth compressing: the framing eats the gain.
    pub const COMPRESSION_MIN_SIZE: u64 = 1024;
    /// `Cache-Control: max-age` of static files whose names carry no content hash.
    pub const STATIC_MAX_AGE: Duration = Duration::from_secs(60);
    pub const STATIC_INDEX: &str = "index.html";
    pub const POOL_WEIGHT: u32 = 100;
    pub const MAX_POOL_WEIGHT: u32 = 1_000_000;
}

/// Everything the data plane needs. Listeners are bound once at start; every other field may be
/// replaced at run time by [`crate::Edge::apply`].
#[derive(Debug, Clone)]
pub struct EdgeSpec {
    pub listeners: Vec<SocketAddr>,
    /// TLS listeners and certificates; `TlsSpec::default()` is no TLS at all.
    pub tls: TlsSpec,
    pub client: ClientLimits,
    /// Which peers may tell berth who the client is (X-Forwarded-For, PROXY protocol).
    pub trusted_proxies: TrustedProxies,
    pub routes: Vec<RouteSpec>,
    pub groups: Vec<GroupSpec>,
}

/// Connection-level limits towards clients.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientLimits {
    /// Time allowed to send the whole request head (slowloris guard).
    pub header_timeout: Duration,
    /// Keep-alive idle time between requests.
    pub idle_timeout: Duration,
    /// Request line plus headers; larger is answered 431.
    pub max_header_bytes: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            header_timeout: defaults::CLIENT_HEADER_TIMEOUT,
            idle_timeout: defaults::CLIENT_IDLE_TIMEOUT,
            max_header_bytes: defaults::MAX_HEADER_BYTES,
        }
    }
}

/// Peers whose word on the client's address is taken. With none, the client is always the
/// TCP peer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrustedProxies {
    /// When the TCP peer is in one of these, the client is the rightmost address of
    /// X-Forwarded-For that is not.
    pub networks: Vec<IpNet>,
    /// Read a PROXY protocol v1/v2 header at the start of connections (plain and TLS), and
    /// take the client from it when the peer is trusted; refuse it from anyone else.
    pub proxy_protocol: bool,
}

impl TrustedProxies {
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        self.networks.iter().any(|n| n.contains(&ip))
    }
}

/// TLS on the edge. Listeners are bound once at start; certificates may change at run time.
#[derive(Debug, Clone, Default)]
pub struct TlsSpec {
    pub listeners: Vec<SocketAddr>,
    pub certificates: Vec<CertificateSpec>,
    /// Where the development CA is kept (created on first use, 0700, key 0600).
    pub dev_ca_dir: PathBuf,
    /// How certificates with [`CertSource::Acme`] are obtained.
    pub acme: AcmeSpec,
}

/// The ACME CA and account used for every `acme` certificate.
#[derive(Debug, Clone, PartialEq)]
pub struct AcmeSpec {
    /// Directory URL of the CA.
    pub directory: String,
    /// Account contacts, e.g. `mailto:ops@example.com`.
    pub contact: Vec<String>,
    pub challenge: AcmeChallenge,
    /// A PEM root to trust for the directory's HTTPS instead of the system's (private CAs).
    pub ca_cert: Option<PathBuf>,
    pub eab: Option<ExternalAccountBinding>,
    /// Account key and issued certificates, 0600, in a 0700 directory.
    pub state_dir: PathBuf,
}

impl Default for AcmeSpec {
    fn default() -> Self {
        Self {
            directory: defaults::ACME_DIRECTORY.to_owned(),
            contact: Vec::new(),
            challenge: AcmeChallenge::Http01,
            ca_cert: None,
            eab: None,
            state_dir: PathBuf::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AcmeChallenge {
    /// Answered by the edge on its plain-HTTP listeners (port 80 for public CAs).
    #[default]
    Http01,
    /// Answered by the edge on its TLS listeners (port 443 for public CAs).
    TlsAlpn01,
}

/// External Account Binding (RFC 8555 §7.3.4), for CAs that require it.
#[derive(Clone, PartialEq)]
pub struct ExternalAccountBinding {
    pub kid: String,
    pub hmac_key: Vec<u8>,
}

impl std::fmt::Debug for ExternalAccountBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalAccountBinding")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// One certificate and the host names it is served for.
#[derive(Debug, Clone)]
pub struct CertificateSpec {
    /// `Exact` or `Wildcard` only. A wildcard covers one label, as TLS clients require:
    /// `*.example.com` covers `a.example.com`, not `a.b.example.com`.
    pub hosts: Vec<HostPattern>,
    pub source: CertSource,
    /// Served when a client sends no SNI or a name no certificate covers. Without a default
    /// such handshakes fail.
    pub default: bool,
}

#[derive(Debug, Clone)]
pub enum CertSource {
    /// PEM files, loaded and checked when the config is; watched for changes afterwards.
    Files {
        cert: PathBuf,
        key: PathBuf,
        loaded: Arc<crate::tls::LoadedCert>,
    },
    /// Issued by berth's development CA.
    Dev,
    /// Obtained and renewed from an ACME CA ([`TlsSpec::acme`]).
    Acme,
}

/// A host pattern a route answers for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `example.com` (stored lower-case, without port).
    Exact(String),
    /// `*.example.com`: any single or multi-label subdomain, stored as the suffix `.example.com`.
    Wildcard(String),
    /// `*`: any host.
    Any,
}

/// As written in a config file: `example.com`, `*.example.com`, `*`.
impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Wildcard(suffix) => write!(f, "*{suffix}"),
            HostPattern::Any => f.write_str("*"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub name: String,
    pub hosts: Vec<HostPattern>,
    /// Starts with `/`; `/` matches everything.
    pub path_prefix: String,
    pub strip_prefix: bool,
    /// Name of a [`GroupSpec`]; empty for a route served only from static files (no
    /// fallback).
    pub group: String,
    pub max_body_bytes: u64,
    pub max_concurrent: usize,
    pub timeouts: UpstreamTimeouts,
    pub retry: RetryPolicy,
    pub security: SecurityHeaders,
    pub request_headers: HeaderRules,
    pub response_headers: HeaderRules,
    pub maintenance: Option<Maintenance>,
    /// Answer plain-HTTP requests with a 308 to HTTPS when the request's host has a
    /// certificate (and a TLS listener is up).
    pub https_redirect: bool,
    /// Access lists, rate limits, compression and static files; `Default` is none of them.
    pub policies: RoutePolicies,
}

impl RouteSpec {
    /// A route for any host and path to `group`, with every limit and policy at its default.
    pub fn to_group(name: &str, group: &str) -> RouteSpec {
        RouteSpec {
            name: name.to_owned(),
            hosts: vec![HostPattern::Any],
            path_prefix: "/".to_owned(),
            strip_prefix: false,
            group: group.to_owned(),
            max_body_bytes: defaults::MAX_BODY_BYTES,
            max_concurrent: defaults::MAX_CONCURRENT,
            timeouts: Default::default(),
            retry: Default::default(),
            security: Default::default(),
            request_headers: Default::default(),
            response_headers: Default::default(),
            maintenance: None,
            https_redirect: false,
            policies: Default::default(),
        }
    }
}

/// What a route does besides forwarding. Each part is off by default, and a route with none
/// of them pays a few branches for them, nothing more.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoutePolicies {
    pub access: Option<IpAccess>,
    /// Checked in order; a request must pass every limit whose paths match it.
    pub rate_limits: Vec<RateLimitSpec>,
    pub compression: Option<CompressionSpec>,
    pub static_files: Option<StaticSpec>,
}

/// Client networks a route accepts (403 otherwise). `deny` wins over `allow`; an empty
/// `allow` allows everyone not denied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IpAccess {
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
}

impl IpAccess {
    pub fn permits(&self, ip: std::net::IpAddr) -> bool {
        !self.deny.iter().any(|n| n.contains(&ip))
            && (self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip)))
    }
}

/// A token bucket per key: `burst` tokens, refilled at `rate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateLimitSpec {
    pub kind: RateLimitKind,
    /// Path prefixes (segment boundaries, percent-decoded) the limit applies to; empty is
    /// every path of the route.
    pub paths: Vec<String>,
    pub rate: Rate,
    pub burst: u32,
    pub key: RateKey,
    /// Keys remembered at most; see [`defaults::RATE_LIMIT_MAX_KEYS`].
    pub max_keys: usize,
}

/// `count` requests per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RateLimitKind {
    /// `rate_limit`: the whole route.
    Route,
    /// `auth_rate_limit`: the route's login-like paths, usually stricter.
    Auth,
}

impl RateLimitKind {
    /// The `limit` label of `berth_rate_limit_keys`.
    pub fn label(self) -> &'static str {
        match self {
            RateLimitKind::Route => "route",
            RateLimitKind::Auth => "auth",
        }
    }

    /// The `reason` label of `berth_rejections_total`.
    pub fn reason(self) -> &'static str {
        match self {
            RateLimitKind::Route => "rate_limited",
            RateLimitKind::Auth => "auth_rate_limited",
        }
    }
}

/// What a rate limit counts requests by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateKey {
    /// The client's address (after trusted proxies).
    ClientIp,
    /// A header's value, e.g. an API key; requests without it are counted by client address.
    Header(#[serde(with = "header_name")] HeaderName),
}

/// Compression of responses the route sends (from the app or from static files).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompressionSpec {
    /// In the server's order of preference, for clients that like several equally.
    pub algorithms: Vec<Encoding>,
    /// Responses with a known length below this go out as they are.
    pub min_size: u64,
}

impl Default for CompressionSpec {
    fn default() -> Self {
        Self {
            algorithms: vec![Encoding::Brotli, Encoding::Gzip],
            min_size: defaults::COMPRESSION_MIN_SIZE,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Brotli,
    Gzip,
    Zstd,
}

impl Encoding {
    /// The Content-Encoding token.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Brotli => "br",
            Encoding::Gzip => "gzip",
            Encoding::Zstd => "zstd",
        }
    }
}

/// Files served by the edge itself under the route's path prefix (which is removed to find
/// the file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StaticSpec {
    /// Directories searched in order for each file, at least one. Canonical (absolute,
    /// symlinks resolved): nothing outside them is ever served. An app's static path lists
    /// the copy in every release taking traffic, newest first, so a user still on the old
    /// release during a canary gets the old release's fingerprinted assets.
    pub roots: Vec<PathBuf>,
    /// File served for a directory, e.g. `index.html`; `None` answers directories 404.
    pub index: Option<String>,
    /// Send requests for missing files (and methods other than GET and HEAD) to the route's
    /// group instead of answering 404 (405).
    pub fallback: bool,
    /// `Cache-Control: max-age` for names without a content hash.
    pub max_age: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTimeouts {
    pub connect: Duration,
    /// From the request being sent to the response head arriving.
    pub response_header: Duration,
    /// Whole exchange, including streaming the response body.
    pub total: Duration,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        Self {
            connect: defaults::CONNECT_TIMEOUT,
            response_header: defaults::RESPONSE_HEADER_TIMEOUT,
            total: defaults::TOTAL_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Total tries including the first (1 = no retries).
    pub attempts: u32,
    /// No new attempt starts after this much time since the first.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: defaults::RETRY_ATTEMPTS,
            budget: defaults::RETRY_BUDGET,
        }
    }
}

/// Response security headers added when the upstream did not set them. `Default` is all off;
/// [`SecurityHeaders::recommended`] is what a route gets when its config says nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SecurityHeaders {
    pub hsts: Option<HeaderValue>,
    pub nosniff: bool,
    pub frame_options: Option<HeaderValue>,
    pub referrer_policy: Option<HeaderValue>,
    pub csp: Option<HeaderValue>,
}

impl SecurityHeaders {
    /// nosniff, same-origin framing, a strict referrer policy and HSTS (which is only ever sent
    /// on TLS connections); CSP stays off because it depends on the app.
    pub fn recommended() -> Self {
        Self {
            hsts: Some(HeaderValue::from_static(defaults::HSTS)),
            nosniff: true,
            frame_options: Some(HeaderValue::from_static(defaults::FRAME_OPTIONS)),
            referrer_policy: Some(HeaderValue::from_static(defaults::REFERRER_POLICY)),
            csp: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeaderRules {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Maintenance {
    pub retry_after: Duration,
    /// Clients in these networks bypass the maintenance page.
    pub allow: Vec<IpNet>,
    /// HTML shown to everyone else.
    pub page: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// Least outstanding requests between two random instances.
    #[default]
    P2cLeastOutstanding,
    RoundRobin,
}

#[derive(Debug, Clone)]
pub struct GroupSpec {
    pub name: String,
    pub balance: Balance,
    pub sticky: Option<StickySpec>,
    pub force: ForceSpec,
    pub health: Option<ActiveHealthSpec>,
    pub passive: PassiveHealthSpec,
    pub upstream_idle_timeout: Duration,
    /// Releases in cohort order: sticky cohorts are assigned to pools in this order, so a
    /// deployer puts the newest release first and raising its weight only moves users to it.
    pub pools: Vec<PoolSpec>,
}

impl GroupSpec {
    /// A group of one pool, `release` at the default weight on `upstreams`, with health
    /// checks off and every other setting at its default.
    pub fn one_pool(name: &str, release: &str, upstreams: Vec<SocketAddr>) -> GroupSpec {
        GroupSpec {
            name: name.to_owned(),
            balance: Default::default(),
            sticky: None,
            force: Default::default(),
            health: None,
            passive: Default::default(),
            upstream_idle_timeout: defaults::UPSTREAM_IDLE_TIMEOUT,
            pools: vec![PoolSpec {
                release: release.to_owned(),
                weight: defaults::POOL_WEIGHT,
                upstreams,
            }],
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolSpec {
    pub release: String,
    /// Relative weight; 0 takes no traffic unless forced.
    pub weight: u32,
    pub upstreams: Vec<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StickySpec {
    pub cookie: String,
    pub ttl: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ForceSpec {
    pub header: HeaderName,
    pub cookie: String,
}

impl Default for ForceSpec {
    fn default() -> Self {
        Self {
            header: HeaderName::from_static(defaults::FORCE_HEADER),
            cookie: defaults::FORCE_COOKIE.to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ActiveHealthSpec {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    pub expect: StatusMatch,
}

impl Default for ActiveHealthSpec {
    fn default() -> Self {
        Self {
            path: defaults::HEALTH_PATH.to_owned(),
            interval: defaults::HEALTH_INTERVAL,
            timeout: defaults::HEALTH_TIMEOUT,
            healthy_threshold: defaults::HEALTHY_THRESHOLD,
            unhealthy_threshold: defaults::UNHEALTHY_THRESHOLD,
            expect: StatusMatch::Success,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusMatch {
    /// Any 2xx.
    Success,
    Exact(Vec<StatusCode>),
}

impl StatusMatch {
    pub fn matches(&self, status: StatusCode) -> bool {
        match self {
            StatusMatch::Success => status.is_success(),
            StatusMatch::Exact(list) => list.contains(&status),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PassiveHealthSpec {
    /// Eject after this many failures in a row (0 disables).
    pub consecutive_failures: u32,
    /// ... or after this many failures within `window` (0 disables).
    pub window_failures: u32,
    pub window: Duration,
    /// First ejection length; doubled for each ejection that follows without a healthy period.
    pub cool_off: Duration,
    pub max_cool_off: Duration,
}

impl Default for PassiveHealthSpec {
    fn default() -> Self {
        Self {
            consecutive_failures: defaults::PASSIVE_CONSECUTIVE_FAILURES,
            window_failures: defaults::PASSIVE_WINDOW_FAILURES,
            window: defaults::PASSIVE_WINDOW,
            cool_off: defaults::PASSIVE_COOL_OFF,
            max_cool_off: defaults::PASSIVE_MAX_COOL_OFF,
        }
    }
}

/// Header names in a stored app spec, as their lower-case text.
mod header_name {
    use http::HeaderName;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(name: &HeaderName, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(name.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HeaderName, D::Error> {
        let text = String::deserialize(d)?;
        HeaderName::from_bytes(text.as_bytes()).map_err(D::Error::custom)
    }
}
