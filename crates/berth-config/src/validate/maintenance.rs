//! A route's maintenance mode: who may still pass, and what everyone else sees.

use std::net::IpAddr;

use berth_edge::spec::{Maintenance, defaults};
use ipnet::IpNet;

use super::Checker;
use crate::file::MaintenanceFile;
use crate::path::{index, key};

/// Shown when the file names no page of its own.
const DEFAULT_PAGE: &str = "<!DOCTYPE html>
<html lang=\"en\">
<head><meta charset=\"utf-8\"><title>Down for maintenance</title></head>
<body>
<h1>Down for maintenance</h1>
<p>This site is down for maintenance. Please try again shortly.</p>
</body>
</html>
";

/// Checks the whole table even when `enabled = false`, so switching maintenance on later cannot
/// uncover a mistake at the worst moment.
pub(super) fn check(
    c: &mut Checker<'_>,
    file: Option<&MaintenanceFile>,
    field: &str,
) -> Option<Maintenance> {
    let file = file?;
    let retry_after = c.duration(
        &file.retry_after,
        &key(field, "retry_after"),
        defaults::MAINTENANCE_RETRY_AFTER,
    );
    let mut allow = Vec::new();
    for (i, text) in file.allow.iter().enumerate() {
        match network(text.get_ref()) {
            Some(net) => allow.push(net),
            None => {
                c.error(
                    text.span(),
                    &index(&key(field, "allow"), i),
                    format!("`{}` is not an IP network or address", text.get_ref()),
                )
                .hint(
                    "write a CIDR such as \"10.0.0.0/8\" or a single address such as \"192.0.2.7\"",
                );
            }
        }
    }
    let page = match &file.page {
        None => DEFAULT_PAGE.to_owned(),
        Some(page) => {
            let path = c.dir().join(page.get_ref());
            match std::fs::read_to_string(&path) {
                Ok(html) => html,
                Err(err) => {
                    c.error(
                        page.span(),
                        &key(field, "page"),
                        format!("cannot read maintenance page {}: {err}", path.display()),
                    )
                    .hint("relative paths start from the config file's directory");
                    String::new()
                }
            }
        }
    };
    file.enabled.then_some(Maintenance {
        retry_after,
        allow,
        page,
    })
}

/// A CIDR, or a bare address meaning just that host.
pub(super) fn network(text: &str) -> Option<IpNet> {
    if text.contains('/') {
        // Host bits are dropped so `10.1.2.3/8` means the network it is written in.
        text.parse::<IpNet>().ok().map(|net| net.trunc())
    } else {
        text.parse::<IpAddr>().ok().map(IpNet::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_and_bare_addresses() {
        assert_eq!(network("10.0.0.0/8"), "10.0.0.0/8".parse().ok());
        assert_eq!(network("10.1.2.3/8"), "10.0.0.0/8".parse().ok());
        assert_eq!(network("127.0.0.1"), "127.0.0.1/32".parse().ok());
        assert_eq!(network("::1"), "::1/128".parse().ok());
        assert_eq!(network("10.0.0.0/33"), None);
        assert_eq!(network("localhost"), None);
    }
}
