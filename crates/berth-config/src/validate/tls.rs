//! `server.tls_listen` and `[[certificate]]`: TLS listeners and the certificates served on
//! them. Certificate files are read and checked here (key matches, not expired, valid for the
//! hosts), so a bad file is refused with its field before anything is served, at start and on
//! reload alike.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use berth_edge::spec::{
    AcmeChallenge, AcmeSpec, CertSource, CertificateSpec, ExternalAccountBinding, HostPattern,
    TlsSpec, defaults,
};
use berth_edge::tls::{check_covers, load_pem_files};
use toml::Spanned;

use super::server::socket_addr;
use super::{Checker, DEV_CA_DIR, host};
use crate::ServerSpec;
use crate::file::{AcmeFile, CertificateFile, FileConfig, Text};
use crate::path::{index, key};

const PORT_HINT: &str =
    "a certificate covers host names alone; the ports are those in server.tls_listen";
const SOURCE_FILES: &str = "files";
const SOURCE_DEV: &str = "dev";
const SOURCE_ACME: &str = "acme";
const SOURCE_HINT: &str = "use \"files\" (a PEM chain and key), \"acme\" (issued and renewed by an ACME CA, see [server.acme]) or \"dev\" (berth's development CA)";

/// The ACME state directory inside the data directory.
pub const ACME_DIR: &str = "tls/acme";
const DIRECTORY_LETSENCRYPT: &str = "letsencrypt";
const DIRECTORY_LETSENCRYPT_STAGING: &str = "letsencrypt-staging";
const CHALLENGE_HTTP: &str = "http-01";
const CHALLENGE_TLS_ALPN: &str = "tls-alpn-01";

pub(super) fn check(
    c: &mut Checker<'_>,
    file: &FileConfig,
    server: &ServerSpec,
    plain: &[SocketAddr],
) -> TlsSpec {
    let listeners = check_listen(c, file.server.tls_listen.as_ref(), server, plain);
    let mut claimed: HashMap<String, usize> = HashMap::new();
    let mut default: Option<usize> = None;
    let certificates: Vec<CertificateSpec> = file
        .certificate
        .iter()
        .enumerate()
        .filter_map(|(i, cert)| check_certificate(c, i, cert.get_ref(), &mut claimed, &mut default))
        .collect();
    match (&file.server.tls_listen, file.certificate.first()) {
        (Some(listen), None) if !listen.get_ref().is_empty() => {
            c.error(
                listen.span(),
                "server.tls_listen",
                "TLS listeners need at least one [[certificate]]",
            )
            .hint("add a [[certificate]] table, e.g. with source = \"dev\" for local development");
        }
        (None, Some(first)) => {
            c.error(
                first.span(),
                "certificate[0]",
                "certificates are configured but there is no TLS listener",
            )
            .hint("add server.tls_listen, e.g. tls_listen = [\"0.0.0.0:443\"]");
        }
        (Some(listen), Some(_)) if listen.get_ref().is_empty() => {
            c.error(
                listen.span(),
                "server.tls_listen",
                "certificates are configured but there is no TLS listener",
            )
            .hint("e.g. tls_listen = [\"0.0.0.0:443\"]");
        }
        _ => {}
    }
    TlsSpec {
        listeners,
        certificates,
        dev_ca_dir: server.data_dir.join(DEV_CA_DIR),
        acme: check_acme(c, file.server.acme.as_ref(), server),
    }
}

fn check_acme(c: &mut Checker<'_>, file: Option<&AcmeFile>, server: &ServerSpec) -> AcmeSpec {
    let mut spec = AcmeSpec {
        state_dir: server.data_dir.join(ACME_DIR),
        ..AcmeSpec::default()
    };
    let Some(file) = file else {
        return spec;
    };
    let field = |name| key("server.acme", name);
    if let Some(d) = &file.directory {
        spec.directory = match d.get_ref().as_str() {
            DIRECTORY_LETSENCRYPT => defaults::ACME_DIRECTORY.to_owned(),
            DIRECTORY_LETSENCRYPT_STAGING => defaults::ACME_STAGING_DIRECTORY.to_owned(),
            url if url.starts_with("https://") && url.parse::<http::Uri>().is_ok() => {
                url.to_owned()
            }
            other => {
                c.error(d.span(), &field("directory"), format!("`{other}` is not an ACME directory"))
                    .hint("\"letsencrypt\", \"letsencrypt-staging\" or the https:// URL of the CA's directory");
                spec.directory
            }
        };
    }
    for (i, t) in file.contact.iter().flatten().enumerate() {
        if !t.get_ref().starts_with("mailto:") || t.get_ref().len() <= "mailto:".len() {
            c.error(
                t.span(),
                &index(&field("contact"), i),
                format!("`{}` is not a mailto: contact", t.get_ref()),
            )
            .hint("e.g. \"mailto:ops@example.com\"");
        } else {
            spec.contact.push(t.get_ref().clone());
        }
    }
    if let Some(t) = &file.challenge {
        spec.challenge = match t.get_ref().as_str() {
            CHALLENGE_HTTP => AcmeChallenge::Http01,
            CHALLENGE_TLS_ALPN => AcmeChallenge::TlsAlpn01,
            other => {
                c.error(t.span(), &field("challenge"), format!("unknown challenge `{other}`"))
                    .hint("\"http-01\" (answered on the plain-HTTP listeners, port 80 for public CAs) or \"tls-alpn-01\" (on the TLS listeners, port 443)");
                spec.challenge
            }
        };
    }
    if let Some(t) = &file.ca_cert {
        let path = c.dir().join(t.get_ref());
        match std::fs::read_to_string(&path) {
            Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => spec.ca_cert = Some(path),
            Ok(_) => {
                c.error(
                    t.span(),
                    &field("ca_cert"),
                    format!("{} holds no PEM certificate", path.display()),
                );
            }
            Err(e) => {
                c.error(
                    t.span(),
                    &field("ca_cert"),
                    format!("cannot read {}: {e}", path.display()),
                )
                .hint("relative paths start from the config file's directory");
            }
        }
    }
    if let Some(eab) = &file.eab {
        use base64::Engine;
        let raw = eab.hmac_key.get_ref().trim_end_matches('=');
        match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw) {
            Ok(hmac_key) if !hmac_key.is_empty() => {
                spec.eab = Some(ExternalAccountBinding {
                    kid: eab.kid.get_ref().clone(),
                    hmac_key,
                });
            }
            _ => {
                // Never echo the key.
                c.error(
                    eab.hmac_key.span(),
                    &key(&field("eab"), "hmac_key"),
                    "not a base64url key",
                )
                .hint("paste the HMAC key exactly as the CA shows it");
            }
        }
    }
    spec
}

fn check_listen(
    c: &mut Checker<'_>,
    listen: Option<&Spanned<Vec<Text>>>,
    server: &ServerSpec,
    plain: &[SocketAddr],
) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    let mut seen = HashMap::new();
    for (i, text) in listen
        .map(|l| l.get_ref().as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let field = index("server.tls_listen", i);
        let Some(addr) = socket_addr(c, text.get_ref(), text.span(), &field) else {
            continue;
        };
        let clash = if let Some(first) = seen.insert(addr, i) {
            Some(format!(
                "{addr} is already listed as server.tls_listen[{first}]"
            ))
        } else if let Some(p) = plain.iter().position(|p| *p == addr) {
            Some(format!(
                "{addr} is also a plain-HTTP listener, server.listen[{p}]"
            ))
        } else if server.admin_listen == addr {
            Some(format!("{addr} is also server.admin_listen"))
        } else {
            None
        };
        if let Some(message) = clash {
            c.error(text.span(), &field, message)
                .hint("a port serves either HTTP or HTTPS");
            continue;
        }
        out.push(addr);
    }
    out
}

fn check_certificate(
    c: &mut Checker<'_>,
    i: usize,
    file: &CertificateFile,
    claimed: &mut HashMap<String, usize>,
    default: &mut Option<usize>,
) -> Option<CertificateSpec> {
    let field = index("certificate", i);
    let at = |name| key(&field, name);
    let hosts = check_hosts(c, file, &at("hosts"), i, claimed);
    let is_default = match &file.default {
        Some(d) if *d.get_ref() => {
            if let Some(first) = default {
                c.error(
                    d.span(),
                    &at("default"),
                    format!("certificate[{first}] is already the default certificate"),
                )
                .hint("one certificate answers clients that send no or an unknown name");
            } else {
                *default = Some(i);
            }
            true
        }
        _ => false,
    };
    let source = match file.source.get_ref().as_str() {
        SOURCE_FILES => check_files(c, file, &field, &hosts)?,
        SOURCE_DEV => {
            refuse_files(
                c,
                file,
                &field,
                "the development CA issues the certificate itself",
            );
            CertSource::Dev
        }
        SOURCE_ACME => {
            refuse_files(
                c,
                file,
                &field,
                "the ACME CA issues the certificate; berth keeps it under data_dir/tls/acme",
            );
            for (h, text) in file.hosts.get_ref().iter().enumerate() {
                if text.get_ref().starts_with("*.") {
                    c.error(
                        text.span(),
                        &index(&at("hosts"), h),
                        "ACME wildcard certificates need the DNS-01 challenge, which berth does not do",
                    )
                    .hint("list each name, or get the wildcard certificate elsewhere and use source = \"files\"");
                }
            }
            CertSource::Acme
        }
        other => {
            c.error(
                file.source.span(),
                &at("source"),
                format!("unknown certificate source `{other}`"),
            )
            .hint(SOURCE_HINT);
            return None;
        }
    };
    if hosts.is_empty() {
        return None;
    }
    Some(CertificateSpec {
        hosts,
        source,
        default: is_default,
    })
}

/// `cert` and `key` in a certificate whose source issues it: reported, with `hint` saying who.
fn refuse_files(c: &mut Checker<'_>, file: &CertificateFile, field: &str, hint: &str) {
    for (name, value) in [("cert", &file.cert), ("key", &file.key)] {
        if let Some(v) = value {
            c.error(
                v.span(),
                &key(field, name),
                format!("`{name}` is only used with source = \"files\""),
            )
            .hint(hint);
        }
    }
}

fn check_hosts(
    c: &mut Checker<'_>,
    file: &CertificateFile,
    field: &str,
    i: usize,
    claimed: &mut HashMap<String, usize>,
) -> Vec<HostPattern> {
    if file.hosts.get_ref().is_empty() {
        c.error(
            file.hosts.span(),
            field,
            "a certificate needs at least one host",
        )
        .hint("e.g. hosts = [\"example.com\", \"*.example.com\"]");
    }
    let mut hosts = Vec::new();
    for (h, text) in file.hosts.get_ref().iter().enumerate() {
        let field = index(field, h);
        let pattern = match host::parse(text.get_ref(), PORT_HINT) {
            Ok(HostPattern::Any) => {
                c.error(text.span(), &field, "`*` cannot be a certificate host")
                    .hint("list the names; for clients that send none or an unknown one, set `default = true` on one certificate");
                continue;
            }
            Ok(HostPattern::Exact(name)) if is_ip(&name) => {
                c.error(
                    text.span(),
                    &field,
                    format!("`{}` is an IP address", text.get_ref()),
                )
                .hint("clients send no name (SNI) when they connect to an IP address; set `default = true` on the certificate they should get");
                continue;
            }
            Ok(p) => p,
            Err(err) => {
                err.report(c, text.span(), &field);
                continue;
            }
        };
        let name = pattern.to_string();
        match claimed.get(&name) {
            Some(&owner) if owner == i => {
                c.error(
                    text.span(),
                    &field,
                    format!("host `{name}` is listed twice in this certificate"),
                );
                continue;
            }
            Some(&owner) => {
                c.error(
                    text.span(),
                    &field,
                    format!("host `{name}` already has a certificate, certificate[{owner}]"),
                )
                .hint("each host name may have one certificate");
                continue;
            }
            None => {
                claimed.insert(name, i);
            }
        }
        hosts.push(pattern);
    }
    hosts
}

fn is_ip(name: &str) -> bool {
    name.parse::<std::net::IpAddr>().is_ok() || name.starts_with('[')
}

fn check_files(
    c: &mut Checker<'_>,
    file: &CertificateFile,
    field: &str,
    hosts: &[HostPattern],
) -> Option<CertSource> {
    let (Some(cert), Some(key_text)) = (&file.cert, &file.key) else {
        let missing: Vec<&str> = [("cert", &file.cert), ("key", &file.key)]
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(n, _)| *n)
            .collect();
        c.error(
            file.source.span(),
            &key(field, "source"),
            format!(
                "source = \"files\" needs `cert` and `key`; missing: {}",
                missing.join(", ")
            ),
        )
        .hint("cert = \"fullchain.pem\", key = \"privkey.pem\"; relative paths start from the config file's directory");
        return None;
    };
    let cert_path = c.dir().join(cert.get_ref());
    let key_path = c.dir().join(key_text.get_ref());
    match load_pem_files(&cert_path, &key_path) {
        Ok(loaded) => {
            if let Err(message) = check_covers(&loaded, hosts) {
                c.error(cert.span(), &key(field, "cert"), message)
                    .hint("list only names the certificate is valid for, or use a certificate that covers them");
                return None;
            }
            Some(CertSource::Files {
                cert: cert_path,
                key: key_path,
                loaded: Arc::new(loaded),
            })
        }
        Err(e) => {
            let (span, name) = if e.path() == key_path {
                (key_text.span(), "key")
            } else {
                (cert.span(), "cert")
            };
            c.error(span, &key(field, name), e.to_string())
                .hint("relative paths start from the config file's directory");
            None
        }
    }
}
