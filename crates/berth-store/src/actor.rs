//! Who did something: recorded in every audit entry.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The user name (or `"system"` for berth itself).
    pub name: String,
    /// The role that authorised the action, as checked by the caller (e.g. `"admin"`).
    pub role: String,
    /// Where the request came from: the client IP address, or `"local"`.
    pub source: String,
}

impl Actor {
    pub fn new(
        name: impl Into<String>,
        role: impl Into<String>,
        source: impl Into<String>,
    ) -> Self {
        Actor {
            name: name.into(),
            role: role.into(),
            source: source.into(),
        }
    }

    /// berth acting on its own behalf (bootstrap, scheduled retention, recovery at start).
    pub fn system() -> Self {
        Actor::new("system", "system", "local")
    }
}
