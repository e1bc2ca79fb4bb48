//! Key usage: per-day verification counts and last-used times, written in batches by the
//! verifier (about once a second) so that a verification costs no database write.

use super::{NewAudit, Result, Store, audit::insert_audit, with_pool};
use crate::audit::AuditAction;

/// Verifications of one key on one UTC day since the last flush.
#[derive(Debug, Clone)]
pub struct UsageDelta {
    pub key_id: String,
    pub org_id: String,
    pub key_name: String,
    /// Unix day number (`unix_seconds / 86400`).
    pub day: i64,
    pub count: i64,
    pub first_used_at: i64,
    pub last_used_at: i64,
}

impl Store {
    /// Adds a batch of usage in one transaction; a key's first use ever also writes
    /// `key.first_used` to the audit log. Returns each (key, day)'s new stored total.
    pub async fn flush_usage(&self, deltas: &[UsageDelta]) -> Result<Vec<(String, i64, i64)>> {
        if deltas.is_empty() {
            return Ok(vec![]);
        }
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let mut totals = Vec::with_capacity(deltas.len());
            for d in deltas {
                let total: i64 = sqlx::query_scalar(
                    "INSERT INTO key_usage_daily (key_id, day, count) VALUES ($1, $2, $3) \
                     ON CONFLICT (key_id, day) DO UPDATE SET count = key_usage_daily.count + excluded.count \
                     RETURNING count",
                )
                .bind(&d.key_id)
                .bind(d.day)
                .bind(d.count)
                .fetch_one(&mut *tx)
                .await?;
                totals.push((d.key_id.clone(), d.day, total));
                let first = sqlx::query(
                    "UPDATE api_keys SET last_used_at = $2 WHERE id = $1 AND last_used_at IS NULL",
                )
                .bind(&d.key_id)
                .bind(d.last_used_at)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if first {
                    let audit = NewAudit::new(AuditAction::KeyFirstUsed, d.first_used_at)
                        .org(&d.org_id)
                        .target("api_key", &d.key_id, &d.key_name);
                    insert_audit!(&mut *tx, &audit)?;
                } else {
                    sqlx::query(
                        "UPDATE api_keys SET last_used_at = $2 WHERE id = $1 AND last_used_at < $2",
                    )
                    .bind(&d.key_id)
                    .bind(d.last_used_at)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            tx.commit().await?;
            Ok(totals)
        })
    }

    /// Verifications recorded for a key on a day.
    pub async fn usage_count(&self, key_id: &str, day: i64) -> Result<i64> {
        with_pool!(self, |pool| {
            let n: Option<i64> = sqlx::query_scalar(
                "SELECT count FROM key_usage_daily WHERE key_id = $1 AND day = $2",
            )
            .bind(key_id)
            .bind(day)
            .fetch_optional(pool)
            .await?;
            Ok(n.unwrap_or(0))
        })
    }

    /// `(day, count)` for the days in `from..=to` that have usage, oldest first.
    pub async fn usage_series(&self, key_id: &str, from: i64, to: i64) -> Result<Vec<(i64, i64)>> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_as(
                "SELECT day, count FROM key_usage_daily WHERE key_id = $1 AND day >= $2 AND day <= $3 ORDER BY day",
            )
            .bind(key_id)
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await?)
        })
    }
}
