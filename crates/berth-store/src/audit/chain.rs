//! The hash chain: canonical serialisation of an entry, its hash, and appending.
//!
//! ```text
//! hash = hex(SHA-256( "berth-audit-v1\n"
//!                     || field(seq) || field(time_ms) || field(actor) || field(role)
//!                     || field(source) || field(action) || field(target) || field(params)
//!                     || field(outcome) || field(prev_hash) ))
//! field(v) = decimal byte length of v || ":" || v || "\n"     (integers in decimal)
//! ```
//! Length prefixes make the encoding injective: no two different entries serialise to the
//! same bytes, whatever characters their fields hold, so moving text from one field to the
//! next changes the hash. The sequence number is hashed too, so renumbering an entry (to
//! reorder or to fill a gap) breaks it.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::audit::{AuditEntry, NewAuditEntry};
use crate::db::with_tx;
use crate::error::StoreError;
use crate::time::{from_ms, now_ms, to_ms};
use crate::tx::Tx;

/// `prev_hash` of the first entry ever written.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const DOMAIN: &[u8] = b"berth-audit-v1\n";

/// The fields covered by an entry's hash, in hashing order.
pub(crate) struct Fields<'a> {
    pub seq: i64,
    pub time_ms: i64,
    pub actor: &'a str,
    pub role: &'a str,
    pub source: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub params: &'a str,
    pub outcome: &'a str,
    pub prev_hash: &'a str,
}

impl Fields<'_> {
    pub(crate) fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(DOMAIN);
        let seq = self.seq.to_string();
        let time = self.time_ms.to_string();
        for field in [
            seq.as_str(),
            time.as_str(),
            self.actor,
            self.role,
            self.source,
            self.action,
            self.target,
            self.params,
            self.outcome,
            self.prev_hash,
        ] {
            out.extend_from_slice(field.len().to_string().as_bytes());
            out.push(b':');
            out.extend_from_slice(field.as_bytes());
            out.push(b'\n');
        }
        out
    }

    pub(crate) fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.canonical()))
    }
}

impl AuditEntry {
    pub(crate) fn fields(&self) -> Fields<'_> {
        Fields {
            seq: self.seq,
            time_ms: to_ms(self.time),
            actor: &self.actor,
            role: &self.role,
            source: &self.source,
            action: &self.action,
            target: &self.target,
            params: &self.params,
            outcome: &self.outcome,
            prev_hash: &self.prev_hash,
        }
    }

    /// Recomputes this entry's hash from its fields (what [`AuditEntry::hash`] must equal).
    /// Public so that an external tool can check an exported log with the same rules.
    pub fn compute_hash(&self) -> String {
        self.fields().hash()
    }
}

/// Keys whose values never enter the log, whatever the caller passes: the log is kept for
/// a year and read by every admin, so a secret written there is a secret leaked. Callers
/// should not pass secrets at all; this is the safety net.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "secret",
        "password",
        "passphrase",
        "private_key",
        "credential",
        "api_key",
    ]
    .iter()
    .any(|s| k.contains(s))
        || k == "token"
        || k.ends_with("_token")
}

pub(crate) const REDACTED: &str = "[redacted]";

/// Replaces the value of every secret-looking key (at any depth) with `"[redacted]"`.
pub(crate) fn redact(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    if is_secret_key(&k) {
                        (k, Value::String(REDACTED.to_owned()))
                    } else {
                        (k, redact(v))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redact).collect()),
        other => other,
    }
}

impl Tx {
    /// Appends an entry to the audit chain inside this transaction: it becomes visible, with
    /// its sequence number, only if the transaction commits, together with the change it
    /// records. Returns the entry as stored.
    pub async fn audit(&mut self, entry: NewAuditEntry) -> Result<AuditEntry, StoreError> {
        let params = serde_json::to_string(&redact(entry.params))
            .map_err(|e| StoreError::invalid("audit parameters", e.to_string()))?;
        // The head row is already locked by this transaction (see `Pool::begin_write`), so no
        // other writer can take the same sequence number between this read and the update.
        let (head_seq, head_hash): (i64, String) = with_tx!(&mut self.conn, c => {
            sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
                .fetch_one(&mut *c)
                .await
        })?;
        let seq = head_seq + 1;
        let time_ms = now_ms();
        let fields = Fields {
            seq,
            time_ms,
            actor: &entry.actor.name,
            role: &entry.actor.role,
            source: &entry.actor.source,
            action: &entry.action,
            target: &entry.target,
            params: &params,
            outcome: &entry.outcome,
            prev_hash: &head_hash,
        };
        let hash = fields.hash();
        with_tx!(&mut self.conn, c => {
            sqlx::query(
                "INSERT INTO audit_log (seq, time_ms, actor, role, source, action, target, \
                 params, outcome, prev_hash, hash) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(seq)
            .bind(time_ms)
            .bind(&entry.actor.name)
            .bind(&entry.actor.role)
            .bind(&entry.actor.source)
            .bind(&entry.action)
            .bind(&entry.target)
            .bind(&params)
            .bind(&entry.outcome)
            .bind(&head_hash)
            .bind(&hash)
            .execute(&mut *c)
            .await?;
            sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                .bind(seq)
                .bind(&hash)
                .execute(&mut *c)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(AuditEntry {
            seq,
            time: from_ms(time_ms),
            actor: entry.actor.name,
            role: entry.actor.role,
            source: entry.actor.source,
            action: entry.action,
            target: entry.target,
            params,
            outcome: entry.outcome,
            prev_hash: head_hash,
            hash,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields<'a>(actor: &'a str, role: &'a str) -> Fields<'a> {
        Fields {
            seq: 1,
            time_ms: 5,
            actor,
            role,
            source: "127.0.0.1",
            action: "user.add",
            target: "bob",
            params: "{}",
            outcome: "ok",
            prev_hash: GENESIS_HASH,
        }
    }

    #[test]
    fn moving_text_between_fields_changes_the_hash() {
        // Plain concatenation would make these two equal ("ab" + "c" == "a" + "bc").
        assert_ne!(fields("ab", "c").hash(), fields("a", "bc").hash());
        assert_eq!(fields("ab", "c").hash(), fields("ab", "c").hash());
        assert_eq!(fields("a", "b").hash().len(), 64);
    }

    #[test]
    fn canonical_form_is_stable() {
        // Pinned: changing the serialisation would invalidate every existing log.
        let f = fields("alice", "admin");
        let text = String::from_utf8(f.canonical()).unwrap();
        assert!(text.starts_with("berth-audit-v1\n1:1\n1:5\n5:alice\n5:admin\n9:127.0.0.1\n"));
        assert!(text.ends_with(&format!("2:ok\n64:{GENESIS_HASH}\n")));
    }

    #[test]
    fn secrets_are_redacted_at_any_depth() {
        let v = redact(json!({
            "token_id": 3,
            "token": "berth_x",
            "nested": [{"db_password": "hunter2", "name": "n"}],
            "client_secret": "s",
            "api_token": "t",
        }));
        assert_eq!(
            v,
            json!({
                "token_id": 3,
                "token": REDACTED,
                "nested": [{"db_password": REDACTED, "name": "n"}],
                "client_secret": REDACTED,
                "api_token": REDACTED,
            })
        );
    }
}
