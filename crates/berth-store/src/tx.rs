//! Write transactions: the unit in which a change and its audit entry land together.

use crate::Store;
use crate::db::TxConn;
use crate::error::StoreError;

/// A write transaction. Changes made through it and the audit entries appended with
/// [`Tx::audit`] become visible together on [`Tx::commit`]; dropping it without committing
/// (an error, a panic, a crash of the process) rolls everything back, so the next start
/// finds the state as it was before.
///
/// Writers are serialised while one is open (see `Pool::begin_write`): keep transactions
/// short and do no slow work (network, process starts) while holding one.
///
/// After any method returns an error the transaction must be dropped: PostgreSQL refuses
/// further statements in a failed transaction.
pub struct Tx {
    pub(crate) conn: TxConn,
}

impl Store {
    /// Starts a write transaction.
    pub async fn transaction(&self) -> Result<Tx, StoreError> {
        Ok(Tx {
            conn: self.pool.begin_write().await?,
        })
    }
}

impl Tx {
    pub async fn commit(self) -> Result<(), StoreError> {
        self.conn.commit().await
    }

    /// Undoes everything done in this transaction (dropping it does the same).
    pub async fn rollback(self) -> Result<(), StoreError> {
        self.conn.rollback().await
    }
}
