//! Secrets at rest, for berth's store: the master key and the sealing of each secret value.
//!
//! - [`MasterKey`]: 32 random bytes, written as 64 hex digits. Its [`KeyId`] (`k-` and 12
//!   hex digits of a hash of the key) is stored beside every sealed value, so a rotation can
//!   tell which key sealed which row, and a wrong key is noticed before anything is tried.
//!   Key material is zeroed when dropped ([`zeroize`]) and never printed (`Debug` shows the
//!   id only).
//! - [`KeySource`] / [`load_key`]: where the key comes from, in this order: the
//!   `BERTH_MASTER_KEY` environment variable, a systemd credential
//!   (`$CREDENTIALS_DIRECTORY/berth-master-key`), the file named by `BERTH_MASTER_KEY_FILE`,
//!   else `master.key` in the data directory. A key file must be a regular file that only its
//!   owner can read or write (mode 0600 or stricter): anything else is refused with a message
//!   naming the file and the `chmod 600` that fixes it.
//! - [`seal`] / [`open`]: XChaCha20-Poly1305 with a random 24-byte nonce per value. The
//!   associated data binds the ciphertext to its app, environment, name and version, so a
//!   ciphertext copied into another row (another app, environment, name or version) does not
//!   open, and neither does a modified one: both are [`SecretError::Corrupt`].
//!
//! Errors never contain key material or secret values.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Bytes in a master key.
pub const KEY_LEN: usize = 32;
/// Bytes in an XChaCha20-Poly1305 nonce.
pub const NONCE_LEN: usize = 24;
/// The environment variable that may hold the master key (64 hex digits).
pub const ENV_KEY: &str = "BERTH_MASTER_KEY";
/// The environment variable that may name the master key file.
pub const ENV_KEY_FILE: &str = "BERTH_MASTER_KEY_FILE";
/// The systemd credential's name (`LoadCredential=berth-master-key:/etc/berth/master.key`).
pub const CREDENTIAL_NAME: &str = "berth-master-key";
/// The master key file in the data directory, used when nothing else names a key.
pub const DEFAULT_KEY_FILE: &str = "master.key";
/// Version tag of the associated data; changing the format means a new tag.
const AAD_TAG: &[u8] = b"berth-secret-v1";

/// Which key sealed a value: `k-` and 12 hex digits of SHA-256 over the key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(String);

impl KeyId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A master key. Zeroed on drop; `Debug` shows its id only.
pub struct MasterKey {
    id: KeyId,
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish()
    }
}

impl Clone for MasterKey {
    fn clone(&self) -> Self {
        MasterKey::from_bytes(*self.bytes)
    }
}

impl MasterKey {
    /// A new key from the operating system's random generator.
    pub fn generate() -> MasterKey {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        rand::rng().fill_bytes(bytes.as_mut());
        MasterKey::from_bytes(*bytes)
    }

    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> MasterKey {
        let mut hasher = Sha256::new();
        hasher.update(b"berth-master-key-id-v1\n");
        hasher.update(bytes);
        let digest = hasher.finalize();
        MasterKey {
            id: KeyId(format!("k-{}", &hex::encode(&digest[..6]))),
            bytes: Zeroizing::new(bytes),
        }
    }

    /// Parses the text form: 64 hex digits, surrounding whitespace ignored. `from` names
    /// where the text came from, for the error.
    pub fn parse(text: &str, from: &str) -> Result<MasterKey, KeyError> {
        let t = text.trim();
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        // Decoding fails exactly when the text is not 64 hex digits.
        if hex::decode_to_slice(t, bytes.as_mut()).is_err() {
            let all_hex = t.bytes().all(|b| b.is_ascii_hexdigit());
            return Err(KeyError::Malformed {
                from: from.to_owned(),
                // The length and the kind of text only: never the text itself.
                reason: format!(
                    "expected {} hex digits, found {} characters{}",
                    KEY_LEN * 2,
                    t.chars().count(),
                    if all_hex {
                        ""
                    } else {
                        " that are not all hex digits"
                    }
                ),
            });
        }
        Ok(MasterKey::from_bytes(*bytes))
    }

    /// The text form (64 hex digits and a newline), for writing to a file.
    pub fn to_text(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(hex::encode(*self.bytes));
        s.push('\n');
        s
    }

    pub fn id(&self) -> &KeyId {
        &self.id
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.bytes.as_ref().into())
    }
}

/// Where the master key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `BERTH_MASTER_KEY`.
    Env,
    /// `$CREDENTIALS_DIRECTORY/berth-master-key` (systemd `LoadCredential=`).
    Credential(PathBuf),
    /// `BERTH_MASTER_KEY_FILE`, or `master.key` in the data directory.
    File(PathBuf),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Env => write!(f, "the {ENV_KEY} environment variable"),
            KeySource::Credential(p) => write!(f, "the systemd credential {}", p.display()),
            KeySource::File(p) => write!(f, "the key file {}", p.display()),
        }
    }
}

impl KeySource {
    /// Picks the source: the variable if set, else the systemd credential if present, else
    /// the file `BERTH_MASTER_KEY_FILE` names, else `master.key` in `data_dir`.
    pub fn locate(
        env_key_set: bool,
        credentials_dir: Option<&Path>,
        key_file: Option<&Path>,
        data_dir: &Path,
    ) -> KeySource {
        if env_key_set {
            return KeySource::Env;
        }
        if let Some(dir) = credentials_dir {
            let p = dir.join(CREDENTIAL_NAME);
            if p.exists() {
                return KeySource::Credential(p);
            }
        }
        match key_file {
            Some(p) => KeySource::File(p.to_owned()),
            None => KeySource::File(data_dir.join(DEFAULT_KEY_FILE)),
        }
    }

    /// The file berth may write a new key to (rotation, first start): only a key file.
    /// The environment variable and systemd credentials are the operator's to change.
    pub fn writable_file(&self) -> Option<&Path> {
        match self {
            KeySource::File(p) => Some(p),
            _ => None,
        }
    }
}

/// Loads the key from `source`: `Ok(None)` when the source is a file that does not exist.
/// `env_value` is the value of `BERTH_MASTER_KEY` (read once, early, by the caller).
pub fn load_key(
    source: &KeySource,
    env_value: Option<&str>,
) -> Result<Option<MasterKey>, KeyError> {
    match source {
        KeySource::Env => match env_value {
            Some(v) => MasterKey::parse(v, &source.to_string()).map(Some),
            None => Ok(None),
        },
        // systemd makes credentials readable by the service only; their mode is its business.
        KeySource::Credential(p) => read_key_file(p, false),
        KeySource::File(p) => read_key_file(p, true),
    }
}

/// Reads a key file; `None` when it does not exist. With `check_mode`, the file must be a
/// regular file with no permission bits for group or others.
pub fn read_key_file(path: &Path, check_mode: bool) -> Result<Option<MasterKey>, KeyError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(KeyError::Unreadable {
                path: path.to_owned(),
                reason: e.to_string(),
            });
        }
    };
    if check_mode {
        if !meta.is_file() {
            return Err(KeyError::NotAFile {
                path: path.to_owned(),
            });
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| KeyError::Unreadable {
            path: path.to_owned(),
            reason: e.to_string(),
        })?,
    );
    MasterKey::parse(&text, &format!("the key file {}", path.display())).map(Some)
}

/// Writes `key` to `path` with mode 0600, atomically (a temporary file beside it, synced,
/// then renamed): a crash leaves the old file or the new one, never half of one.
pub fn write_key_file(path: &Path, key: &MasterKey) -> Result<(), KeyError> {
    let fail = |e: std::io::Error| KeyError::Write {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(fail)?;
    f.write_all(key.to_text().as_bytes()).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// What a sealed value is bound to: opening it under any other binding fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding<'a> {
    pub app: &'a str,
    pub env: &'a str,
    pub name: &'a str,
    pub version: i64,
}

impl Binding<'_> {
    /// Length-prefixed fields after a version tag: unambiguous, so no two bindings share
    /// associated data.
    fn aad(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(AAD_TAG);
        let version = self.version.to_string();
        for field in [self.app, self.env, self.name, version.as_str()] {
            out.extend_from_slice(&(field.len() as u32).to_be_bytes());
            out.extend_from_slice(field.as_bytes());
        }
        out
    }
}

/// A sealed value as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Ciphertext with its 16-byte tag.
    pub ciphertext: Vec<u8>,
    pub nonce: [u8; NONCE_LEN],
    pub key_id: KeyId,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("len", &self.ciphertext.len())
            .field("key_id", &self.key_id)
            .finish()
    }
}

/// Seals `plaintext` under `key`, bound to `binding`, with a fresh random nonce.
pub fn seal(key: &MasterKey, binding: &Binding<'_>, plaintext: &[u8]) -> Sealed {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    let aad = binding.aad();
    // Encryption fails only for inputs beyond the cipher's 2^38-byte limit; the API caps
    // values far below that.
    let ciphertext = key
        .cipher()
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .unwrap_or_default();
    Sealed {
        ciphertext,
        nonce,
        key_id: key.id().clone(),
    }
}

/// Opens a sealed value with the key it names from `keys`.
pub fn open(
    keys: &Keyring,
    binding: &Binding<'_>,
    sealed: &Sealed,
) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    let key = keys
        .get(&sealed.key_id)
        .ok_or_else(|| SecretError::UnknownKey {
            key_id: sealed.key_id.clone(),
        })?;
    let aad = binding.aad();
    key.cipher()
        .decrypt(
            &XNonce::from(sealed.nonce),
            Payload {
                msg: &sealed.ciphertext,
                aad: &aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| SecretError::Corrupt)
}

/// The keys berth can open values with: the primary one (new values are sealed with it)
/// and, during a rotation, the one it replaces.
#[derive(Debug, Clone)]
pub struct Keyring {
    primary: MasterKey,
    others: Vec<MasterKey>,
}

impl Keyring {
    pub fn new(primary: MasterKey) -> Keyring {
        Keyring {
            primary,
            others: Vec::new(),
        }
    }

    /// This keyring with `primary` as the primary key and the current keys kept for
    /// opening.
    pub fn rotated(&self, primary: MasterKey) -> Keyring {
        let mut others = vec![self.primary.clone()];
        others.extend(self.others.iter().cloned());
        others.retain(|k| k.id() != primary.id());
        Keyring { primary, others }
    }

    pub fn primary(&self) -> &MasterKey {
        &self.primary
    }

    /// Every key, primary first.
    fn keys(&self) -> impl Iterator<Item = &MasterKey> {
        std::iter::once(&self.primary).chain(&self.others)
    }

    pub fn get(&self, id: &KeyId) -> Option<&MasterKey> {
        self.keys().find(|k| k.id() == id)
    }

    /// Every key id the keyring holds, primary first.
    pub fn ids(&self) -> Vec<KeyId> {
        self.keys().map(|k| k.id().clone()).collect()
    }
}

/// Why a key could not be had. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "the master key file {} has mode {mode:03o}: it must be readable by berth's user only; run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("the master key file {} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("cannot read the master key file {}: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("the master key in {from} is malformed: {reason}")]
    Malformed { from: String, reason: String },
    #[error("cannot write the master key file {}: {reason}", path.display())]
    Write { path: PathBuf, reason: String },
}

/// Why a sealed value could not be opened. Never contains the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("it was sealed with master key {key_id}, which is not loaded")]
    UnknownKey { key_id: KeyId },
    /// The ciphertext, its nonce or its row (app, environment, name, version) was changed,
    /// or the key with that id is not the key that sealed it.
    #[error("it does not decrypt: the ciphertext or its row was altered")]
    Corrupt,
}

/// Parses a stored key id (`k-` and 12 hex digits).
pub fn key_id(text: &str) -> Option<KeyId> {
    let hex_part = text.strip_prefix("k-")?;
    (hex_part.len() == 12
        && hex_part
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then(|| KeyId(text.to_owned()))
}

/// Parses a stored nonce.
pub fn nonce(bytes: &[u8]) -> Option<[u8; NONCE_LEN]> {
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(name: &str, version: i64) -> Binding<'_> {
        Binding {
            app: "shop",
            env: "production",
            name,
            version,
        }
    }

    #[test]
    fn seal_and_open_round_trip_with_a_fresh_nonce_each_time() {
        let k = MasterKey::generate();
        let ring = Keyring::new(k.clone());
        let a = seal(&k, &binding("DB_PASSWORD", 1), b"hunter2");
        let b = seal(&k, &binding("DB_PASSWORD", 1), b"hunter2");
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
        assert_eq!(a.ciphertext.len(), 7 + 16);
        assert!(!a.ciphertext.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(
            &open(&ring, &binding("DB_PASSWORD", 1), &a).unwrap()[..],
            b"hunter2"
        );
        assert_eq!(a.key_id, *k.id());
    }

    #[test]
    fn a_ciphertext_moved_to_another_row_or_altered_does_not_open() {
        let k = MasterKey::generate();
        let ring = Keyring::new(k.clone());
        let s = seal(&k, &binding("TOKEN", 3), b"value");
        for other in [
            binding("TOKEN", 4),
            binding("OTHER", 3),
            Binding {
                app: "blog",
                ..binding("TOKEN", 3)
            },
            Binding {
                env: "staging",
                ..binding("TOKEN", 3)
            },
        ] {
            assert_eq!(open(&ring, &other, &s), Err(SecretError::Corrupt));
        }
        let mut flipped = s.clone();
        flipped.ciphertext[0] ^= 1;
        assert_eq!(
            open(&ring, &binding("TOKEN", 3), &flipped),
            Err(SecretError::Corrupt)
        );
        let mut nonce = s.clone();
        nonce.nonce[5] ^= 0x80;
        assert_eq!(
            open(&ring, &binding("TOKEN", 3), &nonce),
            Err(SecretError::Corrupt)
        );
        // The fields are length-prefixed: moving a character from one to the next differs.
        let a = Binding {
            app: "ab",
            env: "c",
            name: "N",
            version: 1,
        };
        let b = Binding {
            app: "a",
            env: "bc",
            name: "N",
            version: 1,
        };
        assert_ne!(a.aad(), b.aad());
    }

    #[test]
    fn the_wrong_key_is_named_and_a_key_posing_under_its_id_fails() {
        let k1 = MasterKey::generate();
        let k2 = MasterKey::generate();
        assert_ne!(k1.id(), k2.id());
        let s = seal(&k1, &binding("X", 1), b"v");
        let e = open(&Keyring::new(k2.clone()), &binding("X", 1), &s).unwrap_err();
        assert_eq!(
            e,
            SecretError::UnknownKey {
                key_id: k1.id().clone()
            }
        );
        assert!(e.to_string().contains(k1.id().as_str()));
        // A row claiming the other key's id still does not open.
        let mut lying = s.clone();
        lying.key_id = k2.id().clone();
        assert_eq!(
            open(&Keyring::new(k2), &binding("X", 1), &lying),
            Err(SecretError::Corrupt)
        );
    }

    #[test]
    fn a_rotated_keyring_opens_old_and_seals_new() {
        let old = MasterKey::generate();
        let new = MasterKey::generate();
        let s = seal(&old, &binding("X", 1), b"v");
        let ring = Keyring::new(old.clone()).rotated(new.clone());
        assert_eq!(ring.primary().id(), new.id());
        assert_eq!(&open(&ring, &binding("X", 1), &s).unwrap()[..], b"v");
        assert_eq!(ring.ids(), vec![new.id().clone(), old.id().clone()]);
        // Rotating to a key already held does not list it twice.
        assert_eq!(ring.rotated(old.clone()).ids().len(), 2);
    }

    #[test]
    fn key_text_and_ids() {
        let k = MasterKey::generate();
        let text = k.to_text();
        assert_eq!(text.len(), 65);
        let again = MasterKey::parse(&format!("  {}  ", text.trim()), "test").unwrap();
        assert_eq!(again.id(), k.id());
        assert!(key_id(k.id().as_str()).is_some());
        assert!(key_id("k-XYZ").is_none());
        let dbg = format!("{k:?}");
        assert!(dbg.contains(k.id().as_str()) && !dbg.contains(text.trim()));
        for bad in ["", "abc", &"g".repeat(64), &"a".repeat(63)] {
            let e = MasterKey::parse(bad, "the BERTH_MASTER_KEY environment variable")
                .unwrap_err()
                .to_string();
            assert!(e.contains("BERTH_MASTER_KEY"), "{e}");
            assert!(bad.is_empty() || !e.contains(bad), "{e}");
        }
    }

    #[test]
    fn key_files_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        assert!(read_key_file(&path, true).unwrap().is_none());
        let k = MasterKey::generate();
        write_key_file(&path, &k).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(read_key_file(&path, true).unwrap().unwrap().id(), k.id());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_key_file(&path, true).unwrap_err().to_string();
        assert!(
            e.contains(&path.display().to_string()) && e.contains("chmod 600"),
            "{e}"
        );
        assert!(!e.contains(k.to_text().trim()));
        // systemd credentials are not checked for mode.
        assert!(read_key_file(&path, false).unwrap().is_some());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(read_key_file(&path, true).unwrap().is_some());
        // A malformed file names itself.
        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, "not a key").unwrap();
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = read_key_file(&bad, true).unwrap_err().to_string();
        assert!(e.contains("bad.key") && !e.contains("not a key"), "{e}");
        // A directory is not a key file.
        let e = read_key_file(dir.path(), true).unwrap_err();
        assert!(matches!(e, KeyError::NotAFile { .. }), "{e}");
    }

    #[test]
    fn sources_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        assert_eq!(
            KeySource::locate(true, Some(dir.path()), None, &data),
            KeySource::Env
        );
        // A credentials directory without the credential is passed over.
        assert_eq!(
            KeySource::locate(false, Some(dir.path()), None, &data),
            KeySource::File(data.join(DEFAULT_KEY_FILE))
        );
        std::fs::write(dir.path().join(CREDENTIAL_NAME), "x").unwrap();
        assert_eq!(
            KeySource::locate(false, Some(dir.path()), None, &data),
            KeySource::Credential(dir.path().join(CREDENTIAL_NAME))
        );
        let custom = dir.path().join("k");
        assert_eq!(
            KeySource::locate(false, None, Some(&custom), &data),
            KeySource::File(custom.clone())
        );
        assert!(KeySource::Env.writable_file().is_none());
        assert_eq!(
            KeySource::File(custom.clone()).writable_file(),
            Some(custom.as_path())
        );
        let k = MasterKey::generate();
        let text = k.to_text();
        let loaded = load_key(&KeySource::Env, Some(text.trim()))
            .unwrap()
            .unwrap();
        assert_eq!(loaded.id(), k.id());
        assert!(load_key(&KeySource::Env, None).unwrap().is_none());
    }
}
