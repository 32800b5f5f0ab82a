//! Roles and per-environment grants (RBAC).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a user may do. Ordered by power, so `Admin > Deployer > Viewer` and a higher role
/// includes every lower one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads state, logs and metrics.
    Viewer,
    /// Viewer, plus deploys, rollbacks, restarts and scaling.
    Deployer,
    /// Everything, including users, tokens and the audit log.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Deployer, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Deployer => "deployer",
            Role::Viewer => "viewer",
        }
    }

    /// True when this role is at least `needed`.
    pub fn includes(self, needed: Role) -> bool {
        self >= needed
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?} (expected admin, deployer or viewer)")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "deployer" => Ok(Role::Deployer),
            "viewer" => Ok(Role::Viewer),
            _ => Err(UnknownRole(s.to_owned())),
        }
    }
}

/// The environment name that stands for every environment.
pub const ALL_ENVIRONMENTS: &str = "*";

/// A role on one environment, or on all of them (`"*"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Grant {
    pub role: Role,
    pub environment: String,
}

impl Grant {
    pub fn new(role: Role, environment: impl Into<String>) -> Self {
        Grant {
            role,
            environment: environment.into(),
        }
    }

    /// A grant on every environment.
    pub fn everywhere(role: Role) -> Self {
        Grant::new(role, ALL_ENVIRONMENTS)
    }

    /// True when this grant allows `needed` on `environment`. Asking about `"*"` (an action
    /// that spans environments, such as managing users) needs a `"*"` grant.
    pub fn allows(&self, needed: Role, environment: &str) -> bool {
        self.role.includes(needed)
            && (self.environment == ALL_ENVIRONMENTS || self.environment == environment)
    }
}

/// `ROLE@ENVIRONMENT`, e.g. `deployer@production`; `admin` alone means `admin@*`.
impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.role, self.environment)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantParseError {
    #[error(transparent)]
    Role(#[from] UnknownRole),
    #[error("empty environment in grant {0:?} (use ROLE@ENVIRONMENT or ROLE@*)")]
    EmptyEnvironment(String),
}

impl FromStr for Grant {
    type Err = GrantParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (role, environment) = s.split_once('@').unwrap_or((s, ALL_ENVIRONMENTS));
        if environment.is_empty() {
            return Err(GrantParseError::EmptyEnvironment(s.to_owned()));
        }
        Ok(Grant::new(role.parse()?, environment))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_and_order() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!(Role::Admin.includes(Role::Deployer));
        assert!(Role::Deployer.includes(Role::Viewer));
        assert!(!Role::Viewer.includes(Role::Deployer));
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn grants_parse_and_allow() {
        let g: Grant = "deployer@production".parse().unwrap();
        assert_eq!(g, Grant::new(Role::Deployer, "production"));
        assert_eq!(g.to_string(), "deployer@production");
        assert!(g.allows(Role::Viewer, "production"));
        assert!(!g.allows(Role::Viewer, "staging"));
        assert!(!g.allows(Role::Admin, "production"));
        assert!(!g.allows(Role::Viewer, ALL_ENVIRONMENTS));
        let all: Grant = "admin".parse().unwrap();
        assert_eq!(all, Grant::everywhere(Role::Admin));
        assert!(all.allows(Role::Admin, ALL_ENVIRONMENTS));
        assert!(all.allows(Role::Deployer, "staging"));
        assert!("admin@".parse::<Grant>().is_err());
    }
}
