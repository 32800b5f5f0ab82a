//! `[server]`: listeners, the admin listener, process-wide settings and client limits.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use berth_edge::spec::{ClientLimits, defaults};

use super::Checker;
use super::maintenance::network;
use crate::file::{ClientFile, ServerFile};
use crate::path::{index, key};
use crate::{
    ADMIN_SOCKET_FILE, AccessLog, DATABASE_FILE, DEFAULT_ADMIN_LISTEN, DEFAULT_DATA_DIR, ServerSpec,
};

/// Below this a request line plus a handful of ordinary headers no longer fits.
const MIN_HEADER_BYTES: u64 = 1024;

const ACCESS_LOG_STDOUT: &str = "stdout";
/// Turns the access log or the admin socket off.
const OFF: &str = "off";

pub(super) fn check(
    c: &mut Checker<'_>,
    server: &ServerFile,
) -> (ServerSpec, Vec<SocketAddr>, ClientLimits) {
    let listeners = check_listen(c, server);
    let admin_listen = check_admin(c, server, &listeners);
    let workers = match c.int(&server.workers, "server.workers", 0, None, 0usize) {
        // Zero asks for one worker per CPU; if the count is unknowable one worker still runs.
        0 => std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
        n => n,
    };
    // Zero is allowed: it means "do not wait for in-flight requests".
    let shutdown_timeout = c.duration_or_zero(
        &server.shutdown_timeout,
        "server.shutdown_timeout",
        defaults::SHUTDOWN_TIMEOUT,
    );
    let access_log = check_access_log(c, server);
    let client = check_client(c, server.client.as_ref());
    let data_dir = check_data_dir(c, server);
    let spec = ServerSpec {
        admin_listen,
        workers,
        shutdown_timeout,
        access_log,
        database_url: check_database_url(c, server, &data_dir),
        admin_socket: check_admin_socket(c, server, &data_dir),
        admin_networks: check_admin_networks(c, server),
        audit_retention: c.duration(
            &server.audit_retention,
            "server.audit_retention",
            crate::DEFAULT_AUDIT_RETENTION,
        ),
        data_dir,
    };
    (spec, listeners, client)
}

fn check_listen(c: &mut Checker<'_>, server: &ServerFile) -> Vec<SocketAddr> {
    if server.listen.get_ref().is_empty() {
        c.error(
            server.listen.span(),
            "server.listen",
            "at least one listen address is required",
        )
        .hint("e.g. listen = [\"0.0.0.0:8080\"]");
    }
    let mut listeners = Vec::new();
    let mut seen = HashMap::new();
    for (i, text) in server.listen.get_ref().iter().enumerate() {
        let field = index("server.listen", i);
        let Some(addr) = socket_addr(c, text.get_ref(), text.span(), &field) else {
            continue;
        };
        if let Some(first) = seen.insert(addr, i) {
            c.error(
                text.span(),
                &field,
                format!("{addr} is already listed as server.listen[{first}]"),
            );
            continue;
        }
        listeners.push(addr);
    }
    listeners
}

fn check_admin(c: &mut Checker<'_>, server: &ServerFile, listeners: &[SocketAddr]) -> SocketAddr {
    let Some(text) = &server.admin_listen else {
        return DEFAULT_ADMIN_LISTEN;
    };
    let field = "server.admin_listen";
    let Some(addr) = socket_addr(c, text.get_ref(), text.span(), field) else {
        return DEFAULT_ADMIN_LISTEN;
    };
    if listeners.contains(&addr) {
        c.error(
            text.span(),
            field,
            format!("{addr} is also a proxy listener in server.listen"),
        )
        .hint("the admin API needs its own address");
    }
    if !addr.ip().is_loopback() && server.allow_remote_admin != Some(true) {
        c.error(
            text.span(),
            field,
            format!("{addr} is not a loopback address"),
        )
        .hint(
            "the admin listener must stay on loopback because anyone who can reach it can \
             reconfigure the proxy; set `allow_remote_admin = true` only if it is protected \
             some other way",
        );
    }
    addr
}

pub(super) fn socket_addr(
    c: &mut Checker<'_>,
    text: &str,
    span: std::ops::Range<usize>,
    field: &str,
) -> Option<SocketAddr> {
    match text.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            c.error(
                span,
                field,
                format!("`{text}` is not an IP address and port"),
            )
            .hint("e.g. \"0.0.0.0:8080\" or \"[::1]:8080\"; host names are not resolved here");
            None
        }
    }
}

fn check_access_log(c: &mut Checker<'_>, server: &ServerFile) -> AccessLog {
    let Some(text) = &server.access_log else {
        return AccessLog::Stdout;
    };
    match text.get_ref().as_str() {
        ACCESS_LOG_STDOUT => AccessLog::Stdout,
        OFF => AccessLog::Off,
        "" => {
            c.error(text.span(), "server.access_log", "empty path")
                .hint("use \"stdout\", \"off\" or a file path");
            AccessLog::Stdout
        }
        path => AccessLog::File(c.dir().join(path)),
    }
}

fn check_data_dir(c: &mut Checker<'_>, server: &ServerFile) -> PathBuf {
    match &server.data_dir {
        None => PathBuf::from(DEFAULT_DATA_DIR),
        Some(t) if t.get_ref().is_empty() => {
            c.error(t.span(), "server.data_dir", "empty path")
                .hint("e.g. data_dir = \"/var/lib/berth\"");
            PathBuf::from(DEFAULT_DATA_DIR)
        }
        Some(t) => c.dir().join(t.get_ref()),
    }
}

fn check_database_url(c: &mut Checker<'_>, server: &ServerFile, data_dir: &Path) -> String {
    let Some(t) = &server.database_url else {
        return format!(
            "sqlite://{}?mode=rwc",
            data_dir.join(DATABASE_FILE).display()
        );
    };
    let url = t.get_ref();
    let known = ["sqlite:", "postgres://", "postgresql://"];
    if !known.iter().any(|p| url.starts_with(p)) {
        // The URL may carry a password: never echo it.
        c.error(
            t.span(),
            "server.database_url",
            "not a sqlite: or postgres:// URL",
        )
        .hint("e.g. \"postgres://berth@127.0.0.1/berth\"; leave it out for SQLite in data_dir");
    }
    url.clone()
}

fn check_admin_socket(
    c: &mut Checker<'_>,
    server: &ServerFile,
    data_dir: &Path,
) -> Option<PathBuf> {
    match &server.admin_socket {
        None => Some(data_dir.join(ADMIN_SOCKET_FILE)),
        Some(t) if t.get_ref() == OFF => None,
        Some(t) if t.get_ref().is_empty() => {
            c.error(t.span(), "server.admin_socket", "empty path")
                .hint("give a path, or \"off\" for no Unix socket");
            None
        }
        Some(t) => Some(c.dir().join(t.get_ref())),
    }
}

fn check_admin_networks(c: &mut Checker<'_>, server: &ServerFile) -> Vec<ipnet::IpNet> {
    let mut nets = Vec::new();
    for (i, t) in server.admin_networks.iter().flatten().enumerate() {
        match network(t.get_ref()) {
            Some(n) => nets.push(n),
            None => {
                c.error(
                    t.span(),
                    &index("server.admin_networks", i),
                    format!("`{}` is not a CIDR or an IP address", t.get_ref()),
                )
                .hint("e.g. \"10.20.0.0/16\" or \"192.0.2.7\"");
            }
        }
    }
    nets
}

fn check_client(c: &mut Checker<'_>, client: Option<&ClientFile>) -> ClientLimits {
    let Some(client) = client else {
        return ClientLimits::default();
    };
    let field = |name| key("server.client", name);
    let max_header_bytes = c.size(
        &client.max_header_bytes,
        &field("max_header_bytes"),
        defaults::MAX_HEADER_BYTES as u64,
        MIN_HEADER_BYTES,
    );
    ClientLimits {
        header_timeout: c.duration(
            &client.header_timeout,
            &field("header_timeout"),
            defaults::CLIENT_HEADER_TIMEOUT,
        ),
        idle_timeout: c.duration(
            &client.idle_timeout,
            &field("idle_timeout"),
            defaults::CLIENT_IDLE_TIMEOUT,
        ),
        max_header_bytes: usize::try_from(max_header_bytes).unwrap_or(usize::MAX),
    }
}
