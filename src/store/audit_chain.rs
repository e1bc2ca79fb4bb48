//! The audit log's chain heads and checkpoints (see `crate::audit::chain`). Rows are chained
//! as they are written, by `insert_audit!`.

use serde::Serialize;

use super::{AuditEvent, Result, Store, with_pool};
use crate::audit::chain::{GENESIS, row_hash};

/// A chain's last position and hash.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChainHead {
    /// The organization id, `""` for account events.
    pub chain: String,
    pub seq: i64,
    pub hash: String,
}

/// A signed chain head.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct Checkpoint {
    pub id: i64,
    pub chain: String,
    pub seq: i64,
    pub head_hash: String,
    pub signed_at: i64,
    pub key_id: String,
    pub signature: String,
}

/// Rows of one chain in position order (then id, so that a duplicated position shows).
fn chain_page_sql(chain: &str) -> &'static str {
    if chain.is_empty() {
        "SELECT * FROM audit_events WHERE org_id IS NULL AND $4 = '' AND chain_seq IS NOT NULL \
         AND (chain_seq > $1 OR (chain_seq = $1 AND id > $2)) \
         ORDER BY chain_seq, id LIMIT $3"
    } else {
        "SELECT * FROM audit_events WHERE org_id = $4 AND chain_seq IS NOT NULL \
         AND (chain_seq > $1 OR (chain_seq = $1 AND id > $2)) \
         ORDER BY chain_seq, id LIMIT $3"
    }
}

impl Store {
    /// Gives rows written before the chain existed (positioned by migration 0017, without
    /// a hash) their hashes, in one transaction per chain. Idempotent; a no-op once done.
    /// Runs from [`Store::migrate`], so before anything else writes.
    pub(crate) async fn chain_pending_audit(&self) -> Result<u64> {
        let mut chained = 0u64;
        with_pool!(self, |pool| {
            let pending: Vec<String> =
                sqlx::query_scalar("SELECT chain FROM audit_chain_heads WHERE hash = ''")
                    .fetch_all(pool)
                    .await?;
            for chain in pending {
                let mut tx = pool.begin().await?;
                // Lock the head; another node may have finished this chain meanwhile.
                let head: Option<i64> = sqlx::query_scalar(
                    "UPDATE audit_chain_heads SET seq = seq WHERE chain = $1 AND hash = '' \
                     RETURNING seq",
                )
                .bind(&chain)
                .fetch_optional(&mut *tx)
                .await?;
                if head.is_none() {
                    continue;
                }
                let sql = chain_page_sql(&chain);
                let mut prev = GENESIS.to_string();
                let mut after = (0i64, 0i64);
                loop {
                    let rows: Vec<AuditEvent> = sqlx::query_as(sql)
                        .bind(after.0)
                        .bind(after.1)
                        .bind(1000i64)
                        .bind(&chain)
                        .fetch_all(&mut *tx)
                        .await?;
                    for row in &rows {
                        let seq = row.chain_seq.unwrap_or_default();
                        after = (seq, row.id);
                        let hash = match &row.chain_hash {
                            Some(h) => h.clone(),
                            None => {
                                let h = row_hash(row.into(), seq, &prev);
                                sqlx::query(
                                    "UPDATE audit_events SET chain_hash = $1 WHERE id = $2",
                                )
                                .bind(&h)
                                .bind(row.id)
                                .execute(&mut *tx)
                                .await?;
                                chained += 1;
                                h
                            }
                        };
                        prev = hash;
                    }
                    if rows.len() < 1000 {
                        break;
                    }
                }
                sqlx::query("UPDATE audit_chain_heads SET hash = $2 WHERE chain = $1")
                    .bind(&chain)
                    .bind(&prev)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(())
        })?;
        Ok(chained)
    }

    /// Every chain's head (or one chain's), by chain.
    pub async fn audit_chain_heads(&self, only: Option<&str>) -> Result<Vec<ChainHead>> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_as(
                "SELECT chain, seq, hash FROM audit_chain_heads \
                 WHERE $1 IS NULL OR chain = $1 ORDER BY chain",
            )
            .bind(only)
            .fetch_all(pool)
            .await?)
        })
    }

    /// Up to `limit` rows of `chain` after position `after.0` (and id `after.1`), in
    /// position order.
    pub async fn audit_chain_rows(
        &self,
        chain: &str,
        after: (i64, i64),
        limit: i64,
    ) -> Result<Vec<AuditEvent>> {
        let sql = chain_page_sql(chain);
        with_pool!(self, |pool| {
            Ok(sqlx::query_as(sql)
                .bind(after.0)
                .bind(after.1)
                .bind(limit)
                .bind(chain)
                .fetch_all(pool)
                .await?)
        })
    }

    /// The first row (by id) that is in no chain: without a position or hash, or of a
    /// chain that has no head. Keyward never writes one.
    pub async fn first_unchained_audit(&self, only: Option<&str>) -> Result<Option<i64>> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_scalar(
                "SELECT MIN(e.id) FROM audit_events e \
                 WHERE ($1 IS NULL OR COALESCE(e.org_id, '') = $1) \
                 AND (e.chain_seq IS NULL OR e.chain_hash IS NULL OR NOT EXISTS \
                     (SELECT 1 FROM audit_chain_heads h WHERE h.chain = COALESCE(e.org_id, '')))",
            )
            .bind(only)
            .fetch_one(pool)
            .await?)
        })
    }

    /// Checkpoints of every chain (or one), oldest first per chain.
    pub async fn audit_checkpoints(&self, only: Option<&str>) -> Result<Vec<Checkpoint>> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_as(
                "SELECT * FROM audit_checkpoints WHERE $1 IS NULL OR chain = $1 \
                 ORDER BY chain, seq, id",
            )
            .bind(only)
            .fetch_all(pool)
            .await?)
        })
    }

    /// Heads that have advanced past their chain's last checkpoint, with that
    /// checkpoint's time (None: never checkpointed).
    pub async fn audit_heads_to_checkpoint(
        &self,
        only: Option<&str>,
    ) -> Result<Vec<(ChainHead, Option<i64>)>> {
        let rows: Vec<(String, i64, String, Option<i64>)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT h.chain, h.seq, h.hash, \
                    (SELECT MAX(c.signed_at) FROM audit_checkpoints c WHERE c.chain = h.chain) \
                 FROM audit_chain_heads h \
                 WHERE ($1 IS NULL OR h.chain = $1) AND h.seq > 0 AND h.hash <> '' \
                 AND h.seq > COALESCE((SELECT MAX(c.seq) FROM audit_checkpoints c \
                     WHERE c.chain = h.chain), 0) \
                 ORDER BY h.chain",
            )
            .bind(only)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(chain, seq, hash, last)| (ChainHead { chain, seq, hash }, last))
            .collect())
    }

    /// Stores a checkpoint; false when this position was already checkpointed (another
    /// node got there first).
    pub async fn insert_audit_checkpoint(
        &self,
        head: &ChainHead,
        signed_at: i64,
        key_id: &str,
        signature: &str,
    ) -> Result<bool> {
        with_pool!(self, |pool| {
            let n = sqlx::query(
                "INSERT INTO audit_checkpoints (chain, seq, head_hash, signed_at, key_id, signature) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (chain, seq) DO NOTHING",
            )
            .bind(&head.chain)
            .bind(head.seq)
            .bind(&head.hash)
            .bind(signed_at)
            .bind(key_id)
            .bind(signature)
            .execute(pool)
            .await?
            .rows_affected();
            Ok(n == 1)
        })
    }
}
