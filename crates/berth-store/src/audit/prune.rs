//! Retention: cut old entries off the front of the chain, leaving a signed checkpoint that
//! verification starts from.

use std::time::SystemTime;

use crate::Store;
use crate::actor::Actor;
use crate::audit::NewAuditEntry;
use crate::audit::verify::{sign_checkpoint, verify_in};
use crate::db::with_tx;
use crate::error::StoreError;
use crate::time::{now_ms, to_ms};
use crate::tx::Tx;

/// Shortest accepted checkpoint key. HMAC-SHA-256 is as strong as its key; 16 random bytes
/// is the least that is not guessable, 32 is what berth generates.
pub const MIN_CHECKPOINT_KEY_LEN: usize = 16;

impl Store {
    /// Removes entries older than `older_than` (the longest prefix of the chain whose times
    /// all lie before it) and writes a checkpoint signed with `checkpoint_key`, which must be
    /// kept outside the database. The prune itself is audited. Returns how many entries were
    /// removed.
    pub async fn audit_prune(
        &self,
        actor: &Actor,
        older_than: SystemTime,
        checkpoint_key: &[u8],
    ) -> Result<u64, StoreError> {
        let mut tx = self.transaction().await?;
        let removed = tx.audit_prune(actor, older_than, checkpoint_key).await?;
        tx.commit().await?;
        Ok(removed)
    }
}

impl Tx {
    /// [`Store::audit_prune`] inside this transaction.
    pub async fn audit_prune(
        &mut self,
        actor: &Actor,
        older_than: SystemTime,
        checkpoint_key: &[u8],
    ) -> Result<u64, StoreError> {
        if checkpoint_key.len() < MIN_CHECKPOINT_KEY_LEN {
            return Err(StoreError::invalid(
                "checkpoint key",
                format!("shorter than {MIN_CHECKPOINT_KEY_LEN} bytes"),
            ));
        }
        // Signing a checkpoint vouches for everything before it. Verify first, under the
        // write lock, so that a tampered prefix is reported instead of being laundered into a
        // valid-looking checkpoint.
        let report = verify_in(&mut self.conn, checkpoint_key).await?;
        if let Some(bad) = report.first_bad {
            return Err(StoreError::AuditChainBroken(bad));
        }
        let cutoff_ms = to_ms(older_than);
        // Cut only a prefix: stop at the first entry at or after the cutoff even if a later
        // one is older (a clock stepped back), since the chain must stay contiguous.
        let first_kept: Option<i64> = with_tx!(&mut self.conn, c => {
            sqlx::query_scalar("SELECT MIN(seq) FROM audit_log WHERE time_ms >= $1")
                .bind(cutoff_ms)
                .fetch_one(&mut *c)
                .await
        })?;
        let cut = first_kept.map_or(report.head_seq, |s| s - 1);
        let start = report.checkpoint_seq.unwrap_or(0);
        let mut removed = 0;
        if cut > start {
            let cut_hash: String = with_tx!(&mut self.conn, c => {
                sqlx::query_scalar("SELECT hash FROM audit_log WHERE seq = $1")
                    .bind(cut)
                    .fetch_one(&mut *c)
                    .await
            })?;
            let mac = sign_checkpoint(checkpoint_key, cut, &cut_hash);
            removed = with_tx!(&mut self.conn, c => {
                let deleted = sqlx::query("DELETE FROM audit_log WHERE seq <= $1")
                    .bind(cut)
                    .execute(&mut *c)
                    .await?;
                sqlx::query(
                    "INSERT INTO audit_checkpoints (seq, hash, created_ms, mac) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(cut)
                .bind(&cut_hash)
                .bind(now_ms())
                .bind(&mac)
                .execute(&mut *c)
                .await?;
                // Verification starts from the newest checkpoint only; older ones vouch for
                // entries that are gone.
                sqlx::query("DELETE FROM audit_checkpoints WHERE seq < $1")
                    .bind(cut)
                    .execute(&mut *c)
                    .await?;
                Ok::<u64, sqlx::Error>(deleted.rows_affected())
            })?;
        }
        self.audit(NewAuditEntry::new(
            actor,
            "audit.prune",
            "audit",
            serde_json::json!({
                "older_than_ms": cutoff_ms,
                "removed": removed,
                "checkpoint_seq": if removed > 0 { Some(cut) } else { None },
            }),
        ))
        .await?;
        Ok(removed)
    }
}
