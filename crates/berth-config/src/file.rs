//! The file's shape, as serde sees it: every key the format knows, nothing validated yet.
//!
//! Values that need checking beyond their TOML type are `Spanned` so a problem can be reported
//! at the value itself. Integers are read as `i64` so a negative or oversized number becomes a
//! diagnostic naming the allowed range rather than a bare type error.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use toml::Spanned;

pub type Text = Spanned<String>;
pub type Int = Spanned<i64>;
pub type DurationField = Option<Spanned<Scalar<DurationKind>>>;
pub type SizeField = Option<Spanned<Scalar<SizeKind>>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub server: ServerFile,
    #[serde(default)]
    pub route: Vec<Spanned<RouteFile>>,
    #[serde(default)]
    pub group: BTreeMap<Text, Spanned<GroupFile>>,
    #[serde(default)]
    pub certificate: Vec<Spanned<CertificateFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    pub listen: Spanned<Vec<Text>>,
    pub tls_listen: Option<Spanned<Vec<Text>>>,
    pub admin_listen: Option<Text>,
    pub allow_remote_admin: Option<bool>,
    pub workers: Option<Int>,
    pub shutdown_timeout: DurationField,
    pub access_log: Option<Text>,
    pub data_dir: Option<Text>,
    pub database_url: Option<Text>,
    pub admin_socket: Option<Text>,
    pub admin_networks: Option<Vec<Text>>,
    pub audit_retention: DurationField,
    pub client: Option<ClientFile>,
    pub acme: Option<AcmeFile>,
    pub trusted_proxies: Option<Vec<Text>>,
    pub proxy_protocol: Option<Spanned<bool>>,
}

/// `[server.acme]`: the ACME CA and account for certificates with `source = "acme"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeFile {
    pub directory: Option<Text>,
    pub contact: Option<Vec<Text>>,
    pub challenge: Option<Text>,
    pub ca_cert: Option<Text>,
    pub eab: Option<EabFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EabFile {
    pub kid: Text,
    pub hmac_key: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    pub header_timeout: DurationField,
    pub idle_timeout: DurationField,
    pub max_header_bytes: SizeField,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub name: Text,
    pub hosts: Spanned<Vec<Text>>,
    pub path_prefix: Option<Text>,
    pub strip_prefix: Option<bool>,
    /// Required unless the route serves static files without falling back.
    pub group: Option<Text>,
    pub max_body: SizeField,
    pub max_concurrent: Option<Int>,
    pub retry: Option<RetryFile>,
    pub timeouts: Option<TimeoutsFile>,
    pub security_headers: Option<SecurityFile>,
    pub request_headers: Option<HeaderRulesFile>,
    pub response_headers: Option<HeaderRulesFile>,
    pub maintenance: Option<MaintenanceFile>,
    pub https_redirect: Option<bool>,
    pub allow: Option<Vec<Text>>,
    pub deny: Option<Vec<Text>>,
    pub rate_limit: Option<RateLimitFile>,
    pub auth_rate_limit: Option<AuthRateLimitFile>,
    pub compression: Option<Toggle<CompressionFile>>,
    #[serde(rename = "static")]
    pub static_files: Option<Spanned<StaticFile>>,
}

/// `rate_limit = { rate = "10/s", burst = 20, key = "ip" }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitFile {
    pub rate: Text,
    pub burst: Option<Int>,
    pub key: Option<Text>,
    pub max_keys: Option<Int>,
}

/// `auth_rate_limit = { paths = ["/login"], rate = "5/m" }`: a second, stricter limit for
/// some paths of the route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthRateLimitFile {
    pub paths: Spanned<Vec<Text>>,
    pub rate: Text,
    pub burst: Option<Int>,
    pub key: Option<Text>,
    pub max_keys: Option<Int>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionFile {
    pub algorithms: Option<Spanned<Vec<Text>>>,
    pub min_size: SizeField,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticFile {
    pub dir: Text,
    pub fallback: Option<bool>,
    pub index: Option<Text>,
    pub max_age: DurationField,
}

/// `[[certificate]]`: one certificate and the hosts it is served for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFile {
    pub hosts: Spanned<Vec<Text>>,
    /// `"files"`, `"dev"` or `"acme"`.
    pub source: Text,
    /// PEM chain, leaf first (`source = "files"`).
    pub cert: Option<Text>,
    /// PEM private key (`source = "files"`).
    pub key: Option<Text>,
    pub default: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryFile {
    pub attempts: Option<Int>,
    pub budget: DurationField,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsFile {
    pub connect: DurationField,
    pub response_header: DurationField,
    pub total: DurationField,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityFile {
    pub hsts: Option<Text>,
    pub nosniff: Option<bool>,
    pub frame_options: Option<Text>,
    pub referrer_policy: Option<Text>,
    pub csp: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRulesFile {
    #[serde(default)]
    pub set: BTreeMap<Text, Text>,
    #[serde(default)]
    pub remove: Vec<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceFile {
    /// Required: maintenance turns every visitor away, so it is never switched on by default
    /// and a table without `enabled` is more likely a mistake than a wish.
    pub enabled: bool,
    pub retry_after: DurationField,
    #[serde(default)]
    pub allow: Vec<Text>,
    pub page: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupFile {
    pub balance: Option<Text>,
    pub sticky: Option<Toggle<StickyFile>>,
    pub force: Option<ForceFile>,
    pub upstream_idle_timeout: DurationField,
    pub health: Option<Toggle<HealthFile>>,
    pub passive: Option<PassiveFile>,
    pub upstreams: Option<Spanned<Vec<Text>>>,
    pub pool: Option<Spanned<Vec<Spanned<PoolFile>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StickyFile {
    pub cookie: Option<Text>,
    pub ttl: DurationField,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForceFile {
    pub header: Option<Text>,
    pub cookie: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthFile {
    pub path: Option<Text>,
    pub interval: DurationField,
    pub timeout: DurationField,
    pub healthy_threshold: Option<Int>,
    pub unhealthy_threshold: Option<Int>,
    pub expect: Option<Spanned<Vec<Int>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveFile {
    pub consecutive_failures: Option<Int>,
    pub window_failures: Option<Int>,
    pub window: DurationField,
    pub cool_off: DurationField,
    pub max_cool_off: DurationField,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolFile {
    pub release: Text,
    pub weight: Option<Int>,
    /// A pool may be declared before it has instances, e.g. the next release's slot.
    #[serde(default)]
    pub upstreams: Vec<Text>,
}

/// A table that may also be written as `true` (on, with defaults) or `false` (off).
#[derive(Debug)]
pub enum Toggle<T> {
    Bool(bool),
    Table(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Toggle<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ToggleVisitor(PhantomData))
    }
}

struct ToggleVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ToggleVisitor<T> {
    type Value = Toggle<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("true, false or a table")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Self::Value, E> {
        Ok(Toggle::Bool(value))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Toggle::Table)
    }
}

/// A value written either as a string with a unit or as a bare integer; which of the two is
/// acceptable is decided during validation so the diagnostic can carry a hint.
#[derive(Debug)]
pub enum Scalar<K> {
    Text(String, PhantomData<K>),
    Integer(i64),
}

/// What a [`Scalar`] holds, for the type error serde reports when it is neither.
pub trait ScalarKind {
    const EXPECTING: &'static str;
}

#[derive(Debug)]
pub struct DurationKind;

impl ScalarKind for DurationKind {
    const EXPECTING: &'static str = "a duration string such as \"30s\" or \"1m30s\"";
}

#[derive(Debug)]
pub struct SizeKind;

impl ScalarKind for SizeKind {
    const EXPECTING: &'static str = "a size: a number of bytes or a string such as \"16KiB\"";
}

impl<'de, K: ScalarKind> Deserialize<'de> for Scalar<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor(PhantomData))
    }
}

struct ScalarVisitor<K>(PhantomData<K>);

impl<K: ScalarKind> Visitor<'_> for ScalarVisitor<K> {
    type Value = Scalar<K>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(K::EXPECTING)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Text(value.to_owned(), PhantomData))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Integer(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        i64::try_from(value)
            .map(Scalar::Integer)
            .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(value), &self))
    }
}
