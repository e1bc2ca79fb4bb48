//! What the store can tell about itself, for the metrics endpoint: the key cache's
//! counters, the connection pool, and the outboxes' backlogs.

use super::{Db, Result, Store, cache::CacheStats, with_pool};

/// The connection pool right now.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolStats {
    pub size: u32,
    pub idle: usize,
    pub max: u32,
}

/// Work waiting in the store.
#[derive(Debug, Clone, Copy, Default)]
pub struct Backlogs {
    /// Webhook deliveries not yet delivered and not given up.
    pub webhooks_pending: i64,
    pub emails_sent: i64,
    /// Kept in the outbox because no SMTP server is configured.
    pub emails_logged: i64,
    pub emails_failed: i64,
}

impl Store {
    pub fn cache_stats(&self) -> CacheStats {
        self.key_cache.stats()
    }

    pub fn pool_stats(&self) -> PoolStats {
        match &self.db {
            Db::Sqlite(p) => PoolStats {
                size: p.size(),
                idle: p.num_idle(),
                max: p.options().get_max_connections(),
            },
            Db::Postgres(p) => PoolStats {
                size: p.size(),
                idle: p.num_idle(),
                max: p.options().get_max_connections(),
            },
        }
    }

    /// Two small aggregate queries (the outboxes are bounded by their retention).
    pub async fn backlogs(&self) -> Result<Backlogs> {
        with_pool!(self, |pool| {
            let (webhooks_pending,): (i64,) =
                sqlx::query_as("SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending'")
                    .fetch_one(pool)
                    .await?;
            let rows: Vec<(String, i64)> =
                sqlx::query_as("SELECT status, COUNT(*) FROM outbox GROUP BY status")
                    .fetch_all(pool)
                    .await?;
            let count = |s: &str| {
                rows.iter()
                    .find(|(status, _)| status == s)
                    .map_or(0, |(_, n)| *n)
            };
            Ok(Backlogs {
                webhooks_pending,
                emails_sent: count("sent"),
                emails_logged: count("logged"),
                emails_failed: count("failed"),
            })
        })
    }
}
