//! The deployer's error: what kind of failure it was decides the API's status code and the
//! CLI's exit code, and the message is what the person deploying reads.

/// Why a deploy (or a query) failed. Every message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The upload, the app spec or the request is wrong; nothing changed.
    #[error("{0}")]
    BadInput(String),
    /// The app or release does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Another deploy of the same app holds the lock, or a host is taken.
    #[error("{0}")]
    Conflict(String),
    /// The build command failed; nothing changed.
    #[error("{0}")]
    Build(String),
    /// The new release's instances did not become healthy; the old release keeps serving.
    #[error("{0}")]
    Unhealthy(String),
    /// The pre-deploy hook failed; no traffic moved.
    #[error("{0}")]
    Hook(String),
    /// Analysis, an operator or a smoke check rolled the new release back; the old one
    /// serves all traffic.
    #[error("{0}")]
    RolledBack(String),
    /// A deploy waiting for approval was cancelled (`berth abort`); nothing was started.
    #[error("{0}")]
    Cancelled(String),
    /// The approver is the deployer (`requires_approval` wants a second person).
    #[error("{0}")]
    SelfApproval(String),
    #[error("store: {0}")]
    Store(#[from] berth_store::StoreError),
    /// The app's secrets could not be had (no usable master key, a value that does not
    /// decrypt); nothing was started.
    #[error("{0}")]
    Secrets(#[from] crate::secrets::SecretsError),
    #[error("{0}")]
    Internal(String),
}

impl From<berth_release::Error> for DeployError {
    fn from(e: berth_release::Error) -> Self {
        use berth_release::Error as E;
        match e {
            E::Build { .. } => DeployError::Build(e.to_string()),
            E::BadEntry { .. }
            | E::TooLarge { .. }
            | E::TooManyEntries { .. }
            | E::BadSource { .. }
            | E::Archive { .. }
            | E::InvalidId(_) => {
                DeployError::BadInput(format!("the upload is not a valid release: {e}"))
            }
            E::Collision { .. } | E::Io { .. } | E::Meta { .. } => {
                DeployError::Internal(e.to_string())
            }
        }
    }
}
