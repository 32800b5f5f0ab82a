//! The vault: an app's secrets per environment, sealed in the store under the master key
//! (berth-secrets), opened only to start instances and for an audited reveal.
//!
//! At start, [`Vault::open`] loads the master key and checks it against the store before
//! anything is decrypted: every sealed value names the key that sealed it, so a wrong key (or
//! none, when the store holds secrets) makes the vault *unavailable*: berth runs, apps without
//! secrets deploy, and every secrets action answers why, naming the key source. Nothing is
//! decrypted and nothing is overwritten then; a new key is created (0600, in the data
//! directory by default) only when the store holds no secret at all, so the embedded default
//! works with no set-up.
//!
//! [`Vault::rotate`] seals every stored value (every version: releases may run with old ones)
//! under a new key in one transaction. With a key file, the new key is written beside it
//! (`<file>.next`) before the transaction and renamed over it after the commit; a start that
//! finds a `.next` file left over finishes (or forgets) the rotation by looking at which key
//! the store's values name.
//!
//! Values never reach a log line, an error or an audit entry: entries carry names and
//! versions only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_secrets::{
    Binding, KeyError, KeySource, Keyring, MasterKey, Sealed, key_id, load_key, nonce,
    read_key_file, write_key_file,
};
use berth_store::{
    Actor, NewAuditEntry, SealedValue, SecretInfo, SecretRow, Store, StoreError, check_secret_name,
};
use serde::Serialize;
use serde_json::json;
use tokio::sync::RwLock;
use zeroize::Zeroizing;

use crate::AppKey;

/// The largest secret value, in bytes (an environment variable's value must also fit the
/// kernel's 128 KiB limit on one argument or variable).
pub const MAX_SECRET_BYTES: usize = 32 * 1024;

/// Why a secrets action failed. Messages never hold a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// No usable master key: missing, wrong, unreadable or too open. Nothing was decrypted.
    #[error("{0}")]
    Unavailable(String),
    /// A stored value does not decrypt under the key that claims to have sealed it.
    #[error("{0}")]
    Corrupt(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadInput(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// What a release runs with: each secret's value and the version it came from.
#[derive(Default)]
pub struct SecretEnv {
    pub values: BTreeMap<String, Zeroizing<String>>,
    pub versions: Vec<(String, i64)>,
}

impl std::fmt::Debug for SecretEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretEnv")
            .field("versions", &self.versions)
            .finish()
    }
}

/// What `berth secrets rotate-key` answers.
#[derive(Debug, Clone, Serialize)]
pub struct RotateReport {
    pub key_id: String,
    pub previous_key_id: String,
    /// Sealed values (every version of every secret) re-sealed under the new key.
    pub resealed: usize,
    /// The key file the new key was written to, when the key lives in a file.
    pub key_file: Option<PathBuf>,
    /// For a key from `BERTH_MASTER_KEY` or a systemd credential, which berth cannot
    /// change: the new key (64 hex digits), shown once. Install it before berth restarts.
    pub new_key: Option<String>,
    pub note: String,
}

/// The master key in use and where it came from.
#[derive(Debug, Clone, Serialize)]
pub struct KeyStatus {
    pub key_id: String,
    pub source: String,
    /// The key was created at this start (no key existed and the store held no secret).
    pub created: bool,
}

enum KeyState {
    Ready {
        ring: Keyring,
        source: KeySource,
        created: bool,
    },
    Unavailable(String),
}

/// See the module docs. Cheap to share (`Arc`).
pub struct Vault {
    store: Store,
    /// Writers (set, import, unset) hold it for reading across seal and commit; a rotation
    /// holds it for writing, so no value can be sealed under a key being retired.
    state: RwLock<KeyState>,
}

fn next_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".next");
    PathBuf::from(name)
}

/// The audit target of an app's secrets: the app key's `app/env`.
fn target(env: &str, app: &str) -> String {
    AppKey::new(env, app).to_string()
}

/// What a stored row's value is bound to.
fn binding(row: &SecretRow) -> Binding<'_> {
    Binding {
        app: &row.app,
        env: &row.environment,
        name: &row.name,
        version: row.version,
    }
}

fn sealed_value(s: Sealed) -> SealedValue {
    SealedValue {
        ciphertext: s.ciphertext,
        nonce: s.nonce.to_vec(),
        key_id: s.key_id.to_string(),
    }
}

fn restore_hint(source: &KeySource) -> String {
    match source {
        KeySource::File(p) => format!(
            "restore the key file {} from your backup (mode 0600), or start berth with \
             BERTH_MASTER_KEY set to the key",
            p.display()
        ),
        other => format!("give berth the right key through {other}"),
    }
}

/// Opens one stored row under `ring`; a failure names the secret, never its value.
fn open_row(ring: &Keyring, row: &SecretRow) -> Result<Zeroizing<String>, SecretsError> {
    let what = format!(
        "secret {} (version {}) of {}",
        row.name,
        row.version,
        target(&row.environment, &row.app)
    );
    let corrupt = |why: &str| {
        SecretsError::Corrupt(format!(
            "{what} {why}; nothing was started with it. Set it again (berth secrets set {} {} \
             --env {}) or restore the database from a backup",
            row.app, row.name, row.environment
        ))
    };
    let (Some(key), Some(nonce)) = (key_id(&row.key_id), nonce(&row.nonce)) else {
        return Err(corrupt("has a malformed key id or nonce"));
    };
    let sealed = Sealed {
        ciphertext: row.ciphertext.clone(),
        nonce,
        key_id: key,
    };
    let plain = berth_secrets::open(ring, &binding(row), &sealed).map_err(|e| match e {
        berth_secrets::SecretError::UnknownKey { .. } => {
            SecretsError::Unavailable(format!("{what}: {e}; nothing was decrypted"))
        }
        berth_secrets::SecretError::Corrupt => corrupt(&format!("{e}")),
    })?;
    String::from_utf8(plain.to_vec())
        .map(Zeroizing::new)
        .map_err(|_| corrupt("is not UTF-8 text"))
}

/// A value as an environment variable can hold it.
fn check_value(name: &str, value: &str) -> Result<(), SecretsError> {
    if value.len() > MAX_SECRET_BYTES {
        return Err(SecretsError::BadInput(format!(
            "the value of {name} is {} bytes; at most {MAX_SECRET_BYTES} are allowed",
            value.len()
        )));
    }
    if value.contains('\0') {
        return Err(SecretsError::BadInput(format!(
            "the value of {name} contains a NUL character, which an environment variable cannot hold"
        )));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), SecretsError> {
    check_secret_name(name).map_err(|e| match e {
        StoreError::Invalid { reason, .. } => SecretsError::BadInput(reason),
        other => other.into(),
    })
}

impl Vault {
    /// Loads the master key from `source` (`env_value`: `BERTH_MASTER_KEY`'s value, read
    /// once at start) and checks it against the store. Never fails: a vault without a usable
    /// key is unavailable, with the reason.
    pub async fn open(
        store: Store,
        source: KeySource,
        env_value: Option<Zeroizing<String>>,
    ) -> Arc<Vault> {
        let state =
            match Self::load(&store, &source, env_value.as_deref().map(|s| s.as_str())).await {
                Ok((ring, created)) => KeyState::Ready {
                    ring,
                    source,
                    created,
                },
                Err(why) => KeyState::Unavailable(why),
            };
        Arc::new(Vault {
            store,
            state: RwLock::new(state),
        })
    }

    async fn load(
        store: &Store,
        source: &KeySource,
        env_value: Option<&str>,
    ) -> Result<(Keyring, bool), String> {
        let stored = store
            .secret_key_ids()
            .await
            .map_err(|e| format!("cannot read the secrets' key ids from the store: {e}"))?;
        let count: i64 = stored.iter().map(|(_, n)| n).sum();
        let describe_stored = || {
            stored
                .iter()
                .map(|(id, n)| format!("{id} ({n} value(s))"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let key = load_key(source, env_value).map_err(|e: KeyError| {
            format!("secrets are unavailable: {e}; nothing was decrypted")
        })?;
        // A rotation that stopped half-way left the new key beside the file.
        if let Some(file) = source.writable_file() {
            let next = next_path(file);
            if let Some(next_key) =
                read_key_file(&next, true).map_err(|e| format!("secrets are unavailable: {e}"))?
            {
                let uses_next =
                    !stored.is_empty() && stored.iter().all(|(id, _)| id == next_key.id().as_str());
                if uses_next {
                    std::fs::rename(&next, file).map_err(|e| {
                        format!(
                            "secrets are unavailable: cannot finish the key rotation by renaming {} to {}: {e}",
                            next.display(),
                            file.display()
                        )
                    })?;
                    tracing::warn!(key_file = %file.display(), key_id = %next_key.id(), "finished a master key rotation that an earlier run left half-way");
                    return Ok((Keyring::new(next_key), false));
                }
                // The rotation never committed: the new key sealed nothing.
                let _ = std::fs::remove_file(&next);
            }
        }
        let key = match key {
            Some(k) => k,
            None if count > 0 => {
                return Err(format!(
                    "secrets are unavailable: no master key ({source} does not exist) but the \
                     store holds {count} secret value(s) sealed with {}; {}. Nothing was \
                     decrypted and no new key was made",
                    describe_stored(),
                    restore_hint(source)
                ));
            }
            None => {
                let Some(file) = source.writable_file() else {
                    return Err(format!("secrets are unavailable: {source} is not set"));
                };
                let key = MasterKey::generate();
                if let Some(dir) = file.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                }
                write_key_file(file, &key).map_err(|e| format!("secrets are unavailable: {e}"))?;
                tracing::warn!(
                    key_file = %file.display(),
                    key_id = %key.id(),
                    "created a new master key for secrets; back this file up (apart from the database): without it the secrets cannot be decrypted"
                );
                return Ok((Keyring::new(key), true));
            }
        };
        if stored.iter().any(|(id, _)| id != key.id().as_str()) {
            return Err(format!(
                "secrets are unavailable: the store's secrets are sealed with {}, but the master \
                 key from {source} is {}: it is not the key they were sealed with. Nothing was \
                 decrypted or overwritten; {}",
                describe_stored(),
                key.id(),
                restore_hint(source)
            ));
        }
        Ok((Keyring::new(key), false))
    }

    /// The key in use, or why there is none.
    pub async fn status(&self) -> Result<KeyStatus, SecretsError> {
        match &*self.state.read().await {
            KeyState::Ready {
                ring,
                source,
                created,
            } => Ok(KeyStatus {
                key_id: ring.primary().id().to_string(),
                source: source.to_string(),
                created: *created,
            }),
            KeyState::Unavailable(why) => Err(SecretsError::Unavailable(why.clone())),
        }
    }

    fn ring(state: &KeyState) -> Result<&Keyring, SecretsError> {
        match state {
            KeyState::Ready { ring, .. } => Ok(ring),
            KeyState::Unavailable(why) => Err(SecretsError::Unavailable(why.clone())),
        }
    }

    /// The app's current secrets (names, versions, who, when); needs no key.
    pub async fn list(&self, env: &str, app: &str) -> Result<Vec<SecretInfo>, SecretsError> {
        Ok(self.store.list_secrets(env, app).await?)
    }

    /// Sets `name` to `value` as a new version; audited as `secret.set` (name and version).
    pub async fn set(
        &self,
        actor: &Actor,
        env: &str,
        app: &str,
        name: &str,
        value: &str,
    ) -> Result<i64, SecretsError> {
        let set = self
            .set_many(actor, env, app, &[(name, value)], "secret.set")
            .await?;
        Ok(set.first().map_or(0, |(_, v)| *v))
    }

    /// Sets several secrets in one transaction; audited as one `secret.import` entry.
    pub async fn import(
        &self,
        actor: &Actor,
        env: &str,
        app: &str,
        values: &[(&str, &str)],
    ) -> Result<Vec<(String, i64)>, SecretsError> {
        if values.is_empty() {
            return Err(SecretsError::BadInput("nothing to import".into()));
        }
        self.set_many(actor, env, app, values, "secret.import")
            .await
    }

    async fn set_many(
        &self,
        actor: &Actor,
        env: &str,
        app: &str,
        values: &[(&str, &str)],
        action: &'static str,
    ) -> Result<Vec<(String, i64)>, SecretsError> {
        for (i, (name, value)) in values.iter().enumerate() {
            check_name(name)?;
            check_value(name, value)?;
            if values[..i].iter().any(|(n, _)| n == name) {
                return Err(SecretsError::BadInput(format!("{name} is given twice")));
            }
        }
        let state = self.state.read().await;
        let ring = Self::ring(&state)?;
        let mut tx = self.store.transaction().await?;
        let mut done = Vec::with_capacity(values.len());
        for &(name, value) in values {
            let (latest, _) = tx.latest_secret_version(env, app, name).await?;
            let version = latest + 1;
            let binding = Binding {
                app,
                env,
                name,
                version,
            };
            let sealed = berth_secrets::seal(ring.primary(), &binding, value.as_bytes());
            tx.insert_secret_version(actor, env, app, name, version, Some(&sealed_value(sealed)))
                .await?;
            done.push((name.to_owned(), version));
        }
        let params = if action == "secret.set" {
            json!({ "name": done[0].0, "version": done[0].1 })
        } else {
            json!({ "set": done.iter().map(|(n, v)| json!({"name": n, "version": v})).collect::<Vec<_>>() })
        };
        tx.audit(NewAuditEntry::new(actor, action, target(env, app), params))
            .await?;
        tx.commit().await?;
        Ok(done)
    }

    /// Removes `name` (a removal version; history stays); audited as `secret.unset`. Needs
    /// no key: nothing is sealed or opened.
    pub async fn unset(
        &self,
        actor: &Actor,
        env: &str,
        app: &str,
        name: &str,
    ) -> Result<i64, SecretsError> {
        check_name(name)?;
        let mut tx = self.store.transaction().await?;
        let (latest, live) = tx.latest_secret_version(env, app, name).await?;
        if !live {
            return Err(SecretsError::NotFound(format!(
                "{app} has no secret {name} in {env}"
            )));
        }
        tx.insert_secret_version(actor, env, app, name, latest + 1, None)
            .await?;
        tx.audit(NewAuditEntry::new(
            actor,
            "secret.unset",
            target(env, app),
            json!({ "name": name, "version": latest + 1 }),
        ))
        .await?;
        tx.commit().await?;
        Ok(latest + 1)
    }

    /// The current value of `name`, for an admin; audited as `secret.reveal` (name and
    /// version) in the same transaction that reads it.
    pub async fn reveal(
        &self,
        actor: &Actor,
        env: &str,
        app: &str,
        name: &str,
    ) -> Result<(i64, Zeroizing<String>), SecretsError> {
        check_name(name)?;
        let state = self.state.read().await;
        let ring = Self::ring(&state)?;
        let mut tx = self.store.transaction().await?;
        let Some(row) = tx.current_secret(env, app, name).await? else {
            return Err(SecretsError::NotFound(format!(
                "{app} has no secret {name} in {env}"
            )));
        };
        let value = open_row(ring, &row)?;
        tx.audit(NewAuditEntry::new(
            actor,
            "secret.reveal",
            target(env, app),
            json!({ "name": name, "version": row.version }),
        ))
        .await?;
        tx.commit().await?;
        Ok((row.version, value))
    }

    /// The app's current secrets, opened: what a deploy or restart starts instances with.
    /// Needs the key only when the app has secrets.
    pub async fn current_env(&self, env: &str, app: &str) -> Result<SecretEnv, SecretsError> {
        let rows = self.store.current_secrets(env, app).await?;
        self.open_rows(rows).await
    }

    /// The secret versions `release` was recorded running with, opened (none: it ran with no
    /// secrets, or never ran).
    pub async fn env_of_release(
        &self,
        release: &berth_store::ReleaseRecord,
    ) -> Result<SecretEnv, SecretsError> {
        let versions = self.store.release_secrets(release.id).await?;
        self.env_for(&release.environment, &release.app, &versions)
            .await
    }

    /// Exactly these versions, opened: what a release ran with (restore at start).
    pub async fn env_for(
        &self,
        env: &str,
        app: &str,
        versions: &[(String, i64)],
    ) -> Result<SecretEnv, SecretsError> {
        if versions.is_empty() {
            return Ok(SecretEnv::default());
        }
        let rows = self
            .store
            .secret_versions(env, app, versions)
            .await
            .map_err(|e| match e {
                StoreError::NotFound { name, .. } => SecretsError::NotFound(format!(
                    "the release ran with secret {name}, which is no longer stored"
                )),
                other => other.into(),
            })?;
        self.open_rows(rows).await
    }

    async fn open_rows(&self, rows: Vec<SecretRow>) -> Result<SecretEnv, SecretsError> {
        let mut out = SecretEnv::default();
        if rows.is_empty() {
            return Ok(out);
        }
        let state = self.state.read().await;
        let ring = Self::ring(&state)?;
        for row in rows {
            let value = open_row(ring, &row)?;
            out.versions.push((row.name.clone(), row.version));
            out.values.insert(row.name, value);
        }
        Ok(out)
    }

    /// Re-seals every stored value under a new master key, in one transaction; audited as
    /// `secret.rotate_key`. Running instances are not touched (they hold their values).
    pub async fn rotate(&self, actor: &Actor) -> Result<RotateReport, SecretsError> {
        let mut state = self.state.write().await;
        let (ring, source) = match &*state {
            KeyState::Ready { ring, source, .. } => (ring.clone(), source.clone()),
            KeyState::Unavailable(why) => return Err(SecretsError::Unavailable(why.clone())),
        };
        let new = MasterKey::generate();
        // The key file berth replaces, and the `.next` file the new key waits in.
        let files = source.writable_file().map(|f| (f.to_owned(), next_path(f)));
        if let Some((_, next)) = &files {
            write_key_file(next, &new).map_err(|e| {
                SecretsError::Unavailable(format!("cannot rotate the master key: {e}"))
            })?;
        }
        let resealed = async {
            let mut tx = self.store.transaction().await?;
            let rows = tx.all_secret_rows().await?;
            for row in &rows {
                let value = open_row(&ring, row)?;
                let sealed = berth_secrets::seal(&new, &binding(row), value.as_bytes());
                tx.reseal_secret(row.id, &sealed_value(sealed)).await?;
            }
            tx.audit(NewAuditEntry::new(
                actor,
                "secret.rotate_key",
                "secrets",
                json!({
                    "from": ring.primary().id().to_string(),
                    "to": new.id().to_string(),
                    "resealed": rows.len(),
                }),
            ))
            .await?;
            tx.commit().await?;
            Ok::<usize, SecretsError>(rows.len())
        }
        .await;
        let resealed = match resealed {
            Ok(n) => n,
            Err(e) => {
                if let Some((_, next)) = &files {
                    let _ = std::fs::remove_file(next);
                }
                return Err(e);
            }
        };
        let previous = ring.primary().id().to_string();
        let key_id = new.id().to_string();
        let (key_file, new_key, note) = match files {
            Some((file, next)) => {
                if let Err(e) = std::fs::rename(&next, &file) {
                    // The next start finishes the rename (see the module docs).
                    tracing::error!(error = %e, next = %next.display(), "the new master key could not be renamed into place; the next start will finish it");
                }
                let note = format!(
                    "the new key is in {}; back it up (backups of the old key open nothing now)",
                    file.display()
                );
                (Some(file), None, note)
            }
            None => (
                None,
                Some(new.to_text().trim().to_owned()),
                format!(
                    "berth cannot change {source}: install this new key there before berth \
                     next starts (the store is sealed with it now); it is shown only once"
                ),
            ),
        };
        tracing::info!(from = %previous, to = %key_id, resealed, "master key rotated");
        *state = KeyState::Ready {
            ring: ring.rotated(new),
            source,
            created: false,
        };
        Ok(RotateReport {
            key_id,
            previous_key_id: previous,
            resealed,
            key_file,
            new_key,
            note,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin() -> Actor {
        Actor::new("root", "admin", "local")
    }

    async fn store(dir: &Path) -> Store {
        Store::open_sqlite_file(&dir.join("berth.db"))
            .await
            .expect("store")
    }

    async fn ready(v: &Vault) -> String {
        v.status().await.expect("vault ready").key_id
    }

    #[tokio::test]
    async fn first_start_makes_a_key_and_a_rotation_cut_short_is_finished_or_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path()).await;
        let file = dir.path().join("master.key");
        let source = KeySource::File(file.clone());
        let v = Vault::open(s.clone(), source.clone(), None).await;
        assert!(v.status().await.unwrap().created);
        v.set(&admin(), "production", "shop", "A", "one")
            .await
            .unwrap();
        let k1 = std::fs::read_to_string(&file).unwrap();

        // Rotated, then put back as if berth died after the commit and before the rename:
        // the old key in the file, the new one beside it.
        let report = v.rotate(&admin()).await.unwrap();
        assert_eq!(report.resealed, 1);
        let k2 = std::fs::read_to_string(&file).unwrap();
        write_key_file(&next_path(&file), &MasterKey::parse(&k2, "test").unwrap()).unwrap();
        write_key_file(&file, &MasterKey::parse(&k1, "test").unwrap()).unwrap();
        let v = Vault::open(s.clone(), source.clone(), None).await;
        assert_eq!(ready(&v).await, report.key_id);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), k2);
        assert!(!next_path(&file).exists());
        let (_, value) = v.reveal(&admin(), "production", "shop", "A").await.unwrap();
        assert_eq!(value.as_str(), "one");

        // A `.next` whose key sealed nothing (berth died before the commit) is dropped.
        let stray = MasterKey::generate();
        write_key_file(&next_path(&file), &stray).unwrap();
        let v = Vault::open(s.clone(), source.clone(), None).await;
        assert_eq!(ready(&v).await, report.key_id);
        assert!(!next_path(&file).exists());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), k2);
    }

    #[tokio::test]
    async fn a_key_from_the_environment_is_never_written_and_rotation_hands_the_new_one_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path()).await;
        let key = MasterKey::generate();
        let text = Zeroizing::new(key.to_text().trim().to_owned());
        let v = Vault::open(s.clone(), KeySource::Env, Some(text.clone())).await;
        assert_eq!(ready(&v).await, key.id().to_string());
        v.set(&admin(), "staging", "shop", "A", "one")
            .await
            .unwrap();
        let report = v.rotate(&admin()).await.unwrap();
        let new_key = report.new_key.clone().expect("the new key is handed back");
        assert!(report.key_file.is_none());
        assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| {
            let name = e.unwrap().file_name();
            !name.to_string_lossy().contains("key")
        }));
        // The old key is now the wrong one; the new one opens everything.
        let v = Vault::open(s.clone(), KeySource::Env, Some(text)).await;
        let e = v.status().await.unwrap_err().to_string();
        assert!(e.contains("not the key they were sealed with"), "{e}");
        assert!(matches!(
            v.set(&admin(), "staging", "shop", "B", "x").await,
            Err(SecretsError::Unavailable(_))
        ));
        let v = Vault::open(s, KeySource::Env, Some(Zeroizing::new(new_key))).await;
        let (_, value) = v.reveal(&admin(), "staging", "shop", "A").await.unwrap();
        assert_eq!(value.as_str(), "one");
        // Apps without secrets need no key at all.
        assert!(
            v.current_env("staging", "blog")
                .await
                .unwrap()
                .values
                .is_empty()
        );
    }

    #[tokio::test]
    async fn values_and_names_are_checked_and_never_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path()).await;
        let v = Vault::open(s, KeySource::File(dir.path().join("k")), None).await;
        let big = "x".repeat(MAX_SECRET_BYTES + 1);
        for (name, value) in [
            ("A", big.as_str()),
            ("A", "nul\0here"),
            ("BERTH_X", "v"),
            ("1A", "v"),
        ] {
            let e = v
                .set(&admin(), "production", "shop", name, value)
                .await
                .unwrap_err();
            assert!(matches!(e, SecretsError::BadInput(_)), "{e}");
            assert!(!e.to_string().contains("nul\0here") && !e.to_string().contains(&big));
        }
        let e = v
            .import(&admin(), "production", "shop", &[("A", "1"), ("A", "2")])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        assert!(matches!(
            v.unset(&admin(), "production", "shop", "A").await,
            Err(SecretsError::NotFound(_))
        ));
    }
}
