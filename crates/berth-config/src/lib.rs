//! berth's config file: TOML in, the edge's validated spec out.
//!
//! Problems come back as [`ConfigError`], listing every one found with the file, line, column
//! and dotted field it concerns. The format is documented in `docs/config.md`.

pub mod app;
mod diagnostic;
mod file;
mod locate;
mod path;
mod units;
mod validate;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use diagnostic::{ConfigError, Diagnostic};

use diagnostic::Source;

/// How long audit entries are kept (one year, as berth_store::DEFAULT_RETENTION).
pub const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Where berth keeps its state when the file does not say.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/berth";
/// The SQLite database file inside the data directory.
pub const DATABASE_FILE: &str = "berth.db";
/// The admin API's Unix socket inside the data directory.
pub const ADMIN_SOCKET_FILE: &str = "berth.sock";

/// Where the admin API listens when the file does not say.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9180);

/// A loaded and validated config file.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerSpec,
    pub edge: berth_edge::spec::EdgeSpec,
}

/// Process-wide settings that are not part of the edge's spec.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSpec {
    pub admin_listen: SocketAddr,
    /// Already resolved: a `0` in the file becomes the number of CPUs.
    pub workers: usize,
    pub shutdown_timeout: Duration,
    pub access_log: AccessLog,
    /// Where berth keeps its state (database, keys, the admin socket). Resolved against the
    /// config file's directory.
    pub data_dir: PathBuf,
    /// `sqlite:` or `postgres://` URL; the default is a SQLite file in `data_dir`.
    pub database_url: String,
    /// Unix socket for the admin API (`None` when turned off).
    pub admin_socket: Option<PathBuf>,
    /// When not empty, admin and deployer actions are accepted only from these networks.
    pub admin_networks: Vec<ipnet::IpNet>,
    /// Audit entries older than this are cut daily, behind a signed checkpoint.
    pub audit_retention: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    Stdout,
    Off,
    /// Resolved against the config file's directory.
    File(PathBuf),
}

/// Reads and parses the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        let source = Source { path, text: "" };
        ConfigError {
            diagnostics: vec![source.whole_file(format!("cannot read config file: {err}"))],
        }
    })?;
    parse(&text, path)
}

/// Parses config text. `path` names the file in diagnostics, and relative paths in the file
/// (maintenance pages, the access log) are resolved against its directory.
pub fn parse(src: &str, path: &Path) -> Result<Config, ConfigError> {
    let source = Source { path, text: src };
    let file: file::FileConfig = toml::from_str(src).map_err(|err| ConfigError {
        diagnostics: vec![locate::toml_error(&source, &err)],
    })?;
    validate::validate(&file, &source)
}
