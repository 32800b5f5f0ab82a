//! berth's data directory: the store, the audit checkpoint key and the first admin token.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use berth_config::ServerSpec;
use berth_store::Store;
use rand::RngCore;

/// The first admin's token, written once at bootstrap.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// HMAC key that signs audit retention checkpoints; kept out of the database on purpose.
pub const CHECKPOINT_KEY_FILE: &str = "audit.key";
const CHECKPOINT_KEY_BYTES: usize = 32;

pub struct State {
    pub store: Store,
    pub checkpoint_key: Arc<[u8]>,
}

pub async fn open(server: &ServerSpec) -> anyhow::Result<State> {
    let dir = &server.data_dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))?;
    let checkpoint_key = checkpoint_key(dir)?;
    let store = Store::open(&server.database_url)
        .await
        // The URL may carry a password, so the message names the kind of store only.
        .with_context(|| format!("opening the {} store", store_kind(&server.database_url)))?;
    if let Some(secret) = store
        .bootstrap_admin()
        .await
        .context("creating the first admin")?
    {
        let path = dir.join(ADMIN_TOKEN_FILE);
        write_private(&path, secret.as_bytes())?;
        tracing::warn!(
            token_file = %path.display(),
            "created the first admin user; its token is in the token file (readable by this user only). \
             Log in with: berth login --token-file {}",
            path.display()
        );
    }
    Ok(State {
        store,
        checkpoint_key,
    })
}

fn store_kind(url: &str) -> &'static str {
    if url.starts_with("sqlite:") {
        "SQLite"
    } else {
        "PostgreSQL"
    }
}

fn checkpoint_key(dir: &Path) -> anyhow::Result<Arc<[u8]>> {
    let path = dir.join(CHECKPOINT_KEY_FILE);
    match std::fs::read(&path) {
        Ok(key) if key.len() >= berth_store::MIN_CHECKPOINT_KEY_LEN => Ok(key.into()),
        Ok(_) => anyhow::bail!(
            "{} is shorter than {} bytes; restore it from a backup (audit checkpoints are signed with it)",
            path.display(),
            berth_store::MIN_CHECKPOINT_KEY_LEN
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = vec![0u8; CHECKPOINT_KEY_BYTES];
            rand::rng().fill_bytes(&mut key);
            write_private(&path, &key)?;
            Ok(key.into())
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes a secret file with mode 0600, atomically: a crash leaves the old file or none.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp: PathBuf = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// How often the audit retention runs; the first run is at start.
const RETENTION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Cuts audit entries older than `retention` once a day. Failures are logged loudly: a
/// broken chain is refused by the store rather than signed over.
pub async fn audit_retention(store: Store, key: Arc<[u8]>, retention: std::time::Duration) {
    let mut tick = tokio::time::interval(RETENTION_INTERVAL);
    loop {
        tick.tick().await;
        let cutoff = std::time::SystemTime::now()
            .checked_sub(retention)
            .unwrap_or(std::time::UNIX_EPOCH);
        match store
            .audit_prune(&berth_store::Actor::system(), cutoff, &key)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                removed = n,
                "audit retention: removed old entries behind a signed checkpoint"
            ),
            Err(e) => {
                tracing::error!(error = %e, "audit retention failed; the audit log was left as it is")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn retention_defaults_agree() {
        assert_eq!(
            berth_config::DEFAULT_AUDIT_RETENTION,
            berth_store::DEFAULT_RETENTION
        );
    }
}
