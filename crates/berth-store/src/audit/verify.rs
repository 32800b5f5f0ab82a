//! Verification: walk the chain from its start (genesis or the newest checkpoint) to the
//! head row and name the first entry that does not fit.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::Store;
use crate::audit::chain::GENESIS_HASH;
use crate::audit::{AuditEntry, AuditRow, entry_from_row};
use crate::db::{TxConn, with_tx};
use crate::error::StoreError;

/// Entries read per query while verifying; bounds memory on a year-long log.
const PAGE: i64 = 1000;

/// What verification found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Entries whose link and hash were checked and found good.
    pub entries_checked: u64,
    /// The first entry that does not fit, or `None` when the whole chain verifies.
    pub first_bad: Option<BadEntry>,
    /// Where verification started: the newest checkpoint's sequence number, if retention
    /// has cut the log (entries up to and including it were removed).
    pub checkpoint_seq: Option<i64>,
    /// The chain head as recorded in the database. Recording `head_hash` somewhere else
    /// (a ticket, a log shipper) lets a later check prove nothing before it was rewritten.
    pub head_seq: i64,
    pub head_hash: String,
}

impl VerifyReport {
    pub fn is_valid(&self) -> bool {
        self.first_bad.is_none()
    }
}

/// The first bad entry: its sequence number and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadEntry {
    pub seq: i64,
    pub reason: Defect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Defect {
    /// The entry with this sequence number should be there and is not (deleted).
    Missing,
    /// An entry with a sequence number the chain has no place for (inserted, or an entry
    /// at or before the checkpoint that retention removed).
    Unexpected,
    /// Its `prev_hash` is not the hash of the entry before it (an entry before it was
    /// inserted, removed or moved, or this one was).
    BrokenLink,
    /// Its fields do not hash to its `hash` (edited).
    Altered,
    /// It lies past the recorded chain head (appended outside berth).
    BeyondHead,
    /// The head row records a different hash for the last entry.
    HeadMismatch,
    /// The head row itself is gone.
    HeadMissing,
    /// The checkpoint's signature does not verify with the given key (forged or edited
    /// checkpoint, or the wrong key).
    BadCheckpoint,
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Defect::Missing => "entry is missing (deleted)",
            Defect::Unexpected => "entry does not belong in the chain (inserted or renumbered)",
            Defect::BrokenLink => {
                "previous-hash does not match the entry before it (inserted, deleted or reordered)"
            }
            Defect::Altered => "entry content does not match its hash (edited)",
            Defect::BeyondHead => {
                "entry lies past the recorded chain head (appended outside berth)"
            }
            Defect::HeadMismatch => "chain head records a different hash for the last entry",
            Defect::HeadMissing => "chain head row is missing",
            Defect::BadCheckpoint => {
                "checkpoint signature is invalid (forged or edited checkpoint, or wrong key)"
            }
        })
    }
}

impl fmt::Display for BadEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entry {}: {}", self.seq, self.reason)
    }
}

type HmacSha256 = Hmac<Sha256>;

/// The bytes a checkpoint's HMAC covers.
fn checkpoint_message(seq: i64, hash: &str) -> Vec<u8> {
    format!("berth-audit-checkpoint-v1\n{seq}\n{hash}\n").into_bytes()
}

fn checkpoint_hmac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length (long keys are hashed first): this cannot fail.
    <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length")
}

pub(crate) fn sign_checkpoint(key: &[u8], seq: i64, hash: &str) -> String {
    let mut mac = checkpoint_hmac(key);
    mac.update(&checkpoint_message(seq, hash));
    hex::encode(mac.finalize().into_bytes())
}

/// Constant-time check of a stored signature.
fn checkpoint_signature_ok(key: &[u8], seq: i64, hash: &str, mac_hex: &str) -> bool {
    let Ok(tag) = hex::decode(mac_hex) else {
        return false;
    };
    let mut mac = checkpoint_hmac(key);
    mac.update(&checkpoint_message(seq, hash));
    mac.verify_slice(&tag).is_ok()
}

/// The walk itself, fed one entry at a time in sequence order; knows nothing of SQL.
struct Walk {
    head_seq: i64,
    head_hash: String,
    expected_seq: i64,
    expected_prev: String,
    checked: u64,
}

impl Walk {
    fn feed(&mut self, e: &AuditEntry) -> Result<(), BadEntry> {
        let bad = |seq, reason| Err(BadEntry { seq, reason });
        if e.seq < self.expected_seq {
            return bad(e.seq, Defect::Unexpected);
        }
        if e.seq > self.expected_seq {
            // A gap: the expected entry was removed, unless the chain already ended at the
            // head, in which case this one was added behind berth's back.
            return if self.expected_seq <= self.head_seq {
                bad(self.expected_seq, Defect::Missing)
            } else {
                bad(e.seq, Defect::BeyondHead)
            };
        }
        if e.seq > self.head_seq {
            return bad(e.seq, Defect::BeyondHead);
        }
        if e.prev_hash != self.expected_prev {
            return bad(e.seq, Defect::BrokenLink);
        }
        if e.compute_hash() != e.hash {
            return bad(e.seq, Defect::Altered);
        }
        self.expected_seq = e.seq + 1;
        self.expected_prev.clone_from(&e.hash);
        self.checked += 1;
        Ok(())
    }

    fn finish(&self) -> Result<(), BadEntry> {
        if self.expected_seq <= self.head_seq {
            // The tail was cut off.
            return Err(BadEntry {
                seq: self.expected_seq,
                reason: Defect::Missing,
            });
        }
        if self.expected_prev != self.head_hash {
            return Err(BadEntry {
                seq: self.head_seq,
                reason: Defect::HeadMismatch,
            });
        }
        Ok(())
    }
}

/// Verifies the chain as seen by the open transaction `conn`.
pub(crate) async fn verify_in(
    conn: &mut TxConn,
    checkpoint_key: &[u8],
) -> Result<VerifyReport, StoreError> {
    let checkpoint: Option<(i64, String, String)> = with_tx!(conn, c => {
        sqlx::query_as("SELECT seq, hash, mac FROM audit_checkpoints ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *c)
            .await
    })?;
    let head: Option<(i64, String)> = with_tx!(conn, c => {
        sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_optional(&mut *c)
            .await
    })?;
    let (head_seq, head_hash) = head.clone().unwrap_or((0, String::new()));
    let mut report = VerifyReport {
        entries_checked: 0,
        first_bad: None,
        checkpoint_seq: checkpoint.as_ref().map(|c| c.0),
        head_seq,
        head_hash: head_hash.clone(),
    };
    if head.is_none() {
        report.first_bad = Some(BadEntry {
            seq: 0,
            reason: Defect::HeadMissing,
        });
        return Ok(report);
    }
    let (start_seq, start_hash) = match checkpoint {
        Some((seq, hash, mac)) => {
            if !checkpoint_signature_ok(checkpoint_key, seq, &hash, &mac) {
                report.first_bad = Some(BadEntry {
                    seq,
                    reason: Defect::BadCheckpoint,
                });
                return Ok(report);
            }
            (seq, hash)
        }
        None => (0, GENESIS_HASH.to_owned()),
    };
    let mut walk = Walk {
        head_seq,
        head_hash,
        expected_seq: start_seq + 1,
        expected_prev: start_hash,
        checked: 0,
    };
    // Start below any possible sequence number so entries left (or planted) at or before
    // the checkpoint are seen and reported, not skipped.
    let mut after = i64::MIN;
    let outcome = 'pages: loop {
        let rows: Vec<AuditRow> = with_tx!(conn, c => {
            sqlx::query_as(
                "SELECT seq, time_ms, actor, role, source, action, target, params, outcome, \
                 prev_hash, hash FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(after)
            .bind(PAGE)
            .fetch_all(&mut *c)
            .await
        })?;
        let full_page = rows.len() as i64 == PAGE;
        for row in rows {
            let entry = entry_from_row(row);
            if let Err(bad) = walk.feed(&entry) {
                break 'pages Err(bad);
            }
            after = entry.seq;
        }
        if !full_page {
            break walk.finish();
        }
    };
    report.entries_checked = walk.checked;
    report.first_bad = outcome.err();
    Ok(report)
}

impl Store {
    /// Checks the whole audit chain against one consistent snapshot. `checkpoint_key` is
    /// the retention HMAC key (needed only once the log has been pruned).
    ///
    /// Errors are database failures; a broken chain is a normal result, reported in
    /// [`VerifyReport::first_bad`].
    pub async fn audit_verify(&self, checkpoint_key: &[u8]) -> Result<VerifyReport, StoreError> {
        let mut conn = self.pool.begin_snapshot().await?;
        let report = verify_in(&mut conn, checkpoint_key).await?;
        conn.rollback().await?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn chain(n: i64) -> Vec<AuditEntry> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let mut e = AuditEntry {
                    seq,
                    time: UNIX_EPOCH,
                    actor: "alice".into(),
                    role: "admin".into(),
                    source: "127.0.0.1".into(),
                    action: "user.add".into(),
                    target: format!("u{seq}"),
                    params: "{}".into(),
                    outcome: "ok".into(),
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                e.hash = e.compute_hash();
                prev.clone_from(&e.hash);
                e
            })
            .collect()
    }

    fn walk(entries: &[AuditEntry], head: &AuditEntry) -> Result<u64, BadEntry> {
        let mut w = Walk {
            head_seq: head.seq,
            head_hash: head.hash.clone(),
            expected_seq: 1,
            expected_prev: GENESIS_HASH.to_owned(),
            checked: 0,
        };
        for e in entries {
            w.feed(e)?;
        }
        w.finish()?;
        Ok(w.checked)
    }

    fn bad(seq: i64, reason: Defect) -> Result<u64, BadEntry> {
        Err(BadEntry { seq, reason })
    }

    #[test]
    fn intact_chain_verifies() {
        let c = chain(5);
        assert_eq!(walk(&c, &c[4]), Ok(5));
    }

    #[test]
    fn each_kind_of_tampering_is_named() {
        let c = chain(5);
        let head = c[4].clone();

        let mut edited = c.clone();
        edited[2].target = "mallory".into();
        assert_eq!(walk(&edited, &head), bad(3, Defect::Altered));

        let mut deleted = c.clone();
        deleted.remove(1);
        assert_eq!(walk(&deleted, &head), bad(2, Defect::Missing));

        let truncated = &c[..4];
        assert_eq!(walk(truncated, &head), bad(5, Defect::Missing));

        let mut swapped = c.clone();
        swapped.swap(1, 2);
        swapped[1].seq = 2;
        swapped[2].seq = 3;
        assert_eq!(walk(&swapped, &head), bad(2, Defect::BrokenLink));

        let mut extended = chain(6);
        assert_eq!(walk(&extended, &head), bad(6, Defect::BeyondHead));
        extended[5].seq = 9;
        assert_eq!(walk(&extended, &head), bad(9, Defect::BeyondHead));

        let other_head = chain(5).pop().map(|mut e| {
            e.hash = "f".repeat(64);
            e
        });
        let other_head = other_head.expect("five entries");
        assert_eq!(walk(&c, &other_head), bad(5, Defect::HeadMismatch));

        // Starting from a checkpoint at 2: an entry at or before it is out of place.
        let mut from_checkpoint = Walk {
            head_seq: head.seq,
            head_hash: head.hash.clone(),
            expected_seq: 3,
            expected_prev: c[1].hash.clone(),
            checked: 0,
        };
        assert_eq!(
            from_checkpoint.feed(&c[1]),
            Err(BadEntry {
                seq: 2,
                reason: Defect::Unexpected
            })
        );
        for e in &c[2..] {
            assert_eq!(from_checkpoint.feed(e), Ok(()));
        }
        assert_eq!(
            (from_checkpoint.finish(), from_checkpoint.checked),
            (Ok(()), 3)
        );
    }

    #[test]
    fn checkpoint_signatures() {
        let key = b"0123456789abcdef0123456789abcdef";
        let mac = sign_checkpoint(key, 7, &"a".repeat(64));
        assert!(checkpoint_signature_ok(key, 7, &"a".repeat(64), &mac));
        assert!(!checkpoint_signature_ok(key, 8, &"a".repeat(64), &mac));
        assert!(!checkpoint_signature_ok(key, 7, &"b".repeat(64), &mac));
        assert!(!checkpoint_signature_ok(
            b"another key, 32 bytes long......",
            7,
            &"a".repeat(64),
            &mac
        ));
        assert!(!checkpoint_signature_ok(key, 7, &"a".repeat(64), "not hex"));
    }
}
