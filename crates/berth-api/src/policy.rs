//! Who may do what from where: the pure decision behind every authorised request.
//!
//! A request needs either just a valid token ([`Need::Token`]: reading one's own identity,
//! managing one's own tokens) or a role on an environment ([`Need::Role`]; `"*"` for actions
//! that are not about one environment). The role check comes first: a caller without the
//! role is `forbidden` wherever they are. A caller with the role is then `network_denied`
//! when the role is admin or deployer and the client address is outside the restricted
//! networks, so the network rule only ever narrows what a grant allows and viewers can
//! read from anywhere.

use std::fmt;

use berth_store::{ALL_ENVIRONMENTS, Role, User};

use crate::{AccessPolicy, ClientSource};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Need {
    /// Any valid token.
    Token,
    /// At least this role on this environment (or on `"*"`).
    Role(Role, String),
}

impl Need {
    pub(crate) fn everywhere(role: Role) -> Need {
        Need::Role(role, ALL_ENVIRONMENTS.to_owned())
    }

    pub(crate) fn on(role: Role, environment: &str) -> Need {
        Need::Role(role, environment.to_owned())
    }
}

/// `admin@*`, `deployer@staging`, or `a valid token`: what error messages and denied audit
/// entries say was needed.
impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Need::Token => f.write_str("a valid token"),
            Need::Role(role, env) => write!(f, "{role}@{env}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denial {
    /// The user's grants do not include the role on that environment.
    Forbidden,
    /// The user has the role but the client is outside the restricted networks.
    NetworkDenied,
}

impl AccessPolicy {
    /// True when `source` lies inside the restricted networks (always, when there are none
    /// or the request came over the Unix socket).
    pub(crate) fn inside(&self, source: ClientSource) -> bool {
        match source {
            ClientSource::Unix => true,
            ClientSource::Ip(ip) => {
                let ip = ip.to_canonical();
                self.restricted_networks.is_empty()
                    || self.restricted_networks.iter().any(|n| n.contains(&ip))
            }
        }
    }
}

/// The strongest role `user` holds that applies to `environment` (for `"*"`, only grants on
/// `"*"` apply), or for [`Need::Token`] the strongest role it holds anywhere.
pub(crate) fn effective_role(user: &User, need: &Need) -> Option<Role> {
    match need {
        Need::Token => user.grants.iter().map(|g| g.role).max(),
        Need::Role(_, env) => user
            .grants
            .iter()
            .filter(|g| g.environment == ALL_ENVIRONMENTS || g.environment == *env)
            .map(|g| g.role)
            .max(),
    }
}

/// Whether `user`, calling from inside (`inside`) or outside the restricted networks, may do
/// something that needs `need`.
pub(crate) fn decide(user: &User, need: &Need, inside: bool) -> Result<(), Denial> {
    match need {
        Need::Token => Ok(()),
        Need::Role(role, env) => {
            if !user.can(*role, env) {
                Err(Denial::Forbidden)
            } else if role.includes(Role::Deployer) && !inside {
                Err(Denial::NetworkDenied)
            } else {
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use berth_store::Grant;

    use super::*;

    fn user(grants: &[&str]) -> User {
        User {
            id: 1,
            name: "u".into(),
            grants: grants.iter().map(|g| g.parse().unwrap()).collect(),
            created: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn roles_environments_and_networks() {
        let d = user(&["deployer@staging", "viewer@*"]);
        let staging = Need::on(Role::Deployer, "staging");
        assert_eq!(decide(&d, &staging, true), Ok(()));
        assert_eq!(decide(&d, &staging, false), Err(Denial::NetworkDenied));
        let prod = Need::on(Role::Deployer, "production");
        assert_eq!(decide(&d, &prod, true), Err(Denial::Forbidden));
        // Role first: no role is `forbidden` even from outside.
        assert_eq!(decide(&d, &prod, false), Err(Denial::Forbidden));
        // Viewing needs no network.
        assert_eq!(
            decide(&d, &Need::on(Role::Viewer, "production"), false),
            Ok(())
        );
        assert_eq!(decide(&d, &Need::everywhere(Role::Viewer), false), Ok(()));
        assert_eq!(
            decide(&d, &Need::everywhere(Role::Deployer), true),
            Err(Denial::Forbidden)
        );
        assert_eq!(decide(&d, &Need::Token, false), Ok(()));

        assert_eq!(effective_role(&d, &staging), Some(Role::Deployer));
        assert_eq!(effective_role(&d, &prod), Some(Role::Viewer));
        assert_eq!(effective_role(&d, &Need::Token), Some(Role::Deployer));
        assert_eq!(
            effective_role(&user(&["admin@qa"]), &Need::everywhere(Role::Viewer)),
            None
        );
        assert_eq!(Need::everywhere(Role::Admin).to_string(), "admin@*");
        assert_eq!(
            Grant::new(Role::Admin, "x").to_string(),
            Need::on(Role::Admin, "x").to_string()
        );
    }

    #[test]
    fn network_membership() {
        let mut p = AccessPolicy::default();
        let ip = |s: &str| ClientSource::Ip(s.parse().unwrap());
        assert!(p.inside(ip("203.0.113.9")));
        p.restricted_networks = vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()];
        assert!(p.inside(ip("10.1.2.3")));
        assert!(p.inside(ip("::ffff:10.1.2.3")), "IPv4-mapped IPv6");
        assert!(p.inside(ip("fd12::1")));
        assert!(!p.inside(ip("127.0.0.1")));
        assert!(!p.inside(ip("2001:db8::1")));
        assert!(p.inside(ClientSource::Unix));
    }
}
