//! The append-only audit log.

use serde::Serialize;

use super::{Result, Store, with_pool};

/// An event to record. Build it with [`NewAudit::new`] and the `with_*` helpers.
#[derive(Debug, Clone, Default)]
pub struct NewAudit {
    pub occurred_at: i64,
    pub org_id: Option<String>,
    pub actor_id: Option<String>,
    pub actor_email: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub target_name: String,
    pub ip: String,
    pub user_agent: String,
    pub details: String,
}

impl NewAudit {
    /// `action` is an [`AuditAction`](crate::audit::AuditAction); the application never
    /// spells one out (tests and tools may pass the stored form).
    pub fn new(action: impl AsRef<str>, occurred_at: i64) -> Self {
        Self {
            action: action.as_ref().to_string(),
            occurred_at,
            details: "{}".into(),
            ..Self::default()
        }
    }
    pub fn org(mut self, org_id: &str) -> Self {
        self.org_id = Some(org_id.to_string());
        self
    }
    pub fn actor(mut self, id: Option<&str>, email: &str) -> Self {
        self.actor_id = id.map(str::to_string);
        self.actor_email = email.to_string();
        self
    }
    pub fn target(mut self, kind: &str, id: &str, name: &str) -> Self {
        self.target_type = kind.into();
        self.target_id = id.into();
        self.target_name = name.into();
        self
    }
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details.to_string();
        self
    }
}

/// Inserts one audit row through any executor (a pool or an open transaction).
macro_rules! insert_audit {
    ($exec:expr, $ev:expr) => {{
        let ev: &$crate::store::NewAudit = $ev;
        async {
            // The chain: take the next position from the chain's head row. The UPDATE locks
            // that row until the transaction ends, so concurrent writers to one chain queue
            // here (Postgres) and each sees its predecessor's hash; SQLite has one writer.
            let chain = $crate::audit::chain::chain_of(ev.org_id.as_deref());
            let next =
                "UPDATE audit_chain_heads SET seq = seq + 1 WHERE chain = $1 RETURNING seq, hash";
            let head: Option<(i64, String)> = sqlx::query_as(next)
                .bind(chain)
                .fetch_optional($exec)
                .await?;
            let (seq, prev) = match head {
                Some(head) => head,
                None => {
                    // A chain's first row. Of two racing first writers one inserts the head
                    // and the other waits for it, then both queue on the UPDATE.
                    sqlx::query(
                        "INSERT INTO audit_chain_heads (chain, seq, hash) VALUES ($1, 0, $2) \
                         ON CONFLICT (chain) DO NOTHING",
                    )
                    .bind(chain)
                    .bind($crate::audit::chain::GENESIS)
                    .execute($exec)
                    .await?;
                    sqlx::query_as(next).bind(chain).fetch_one($exec).await?
                }
            };
            if prev.is_empty() {
                // Rows from before the chain still await their hashes (`Store::migrate`).
                return Err(sqlx::Error::Protocol(
                    "the audit chain is not initialised; run `keyward migrate`".into(),
                ));
            }
            let hash = $crate::audit::chain::row_hash(ev.into(), seq, &prev);
            sqlx::query("UPDATE audit_chain_heads SET hash = $2 WHERE chain = $1")
                .bind(chain)
                .bind(&hash)
                .execute($exec)
                .await?;
            sqlx::query(
                "INSERT INTO audit_events (occurred_at, org_id, actor_id, actor_email, action, \
             target_type, target_id, target_name, ip, user_agent, details, chain_seq, chain_hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .bind(ev.occurred_at)
            .bind(&ev.org_id)
            .bind(&ev.actor_id)
            .bind(&ev.actor_email)
            .bind(&ev.action)
            .bind(&ev.target_type)
            .bind(&ev.target_id)
            .bind(&ev.target_name)
            .bind(&ev.ip)
            .bind(&ev.user_agent)
            .bind(&ev.details)
            .bind(seq)
            .bind(&hash)
            .execute($exec)
            .await?;
            // Webhooks subscribed to this event get a delivery in the same transaction.
            if let Some(fanout) = $crate::store::webhooks::Fanout::of(ev) {
                sqlx::query(
                    "INSERT INTO webhook_deliveries (id, webhook_id, org_id, event_type, payload, \
                 next_attempt_at, created_at) \
                 SELECT $1 || '.' || w.id, w.id, w.org_id, $2, $3, $4, $4 FROM webhooks w \
                 WHERE w.org_id = $5 AND (' ' || w.events || ' ') LIKE $6",
                )
                .bind(&fanout.event_id)
                .bind(fanout.event_type)
                .bind(&fanout.payload)
                .bind(ev.occurred_at)
                .bind(&fanout.org_id)
                .bind(format!("% {} %", fanout.event_type))
                .execute($exec)
                .await?;
            }
            Ok::<(), sqlx::Error>(())
        }
        .await
    }};
}
pub(crate) use insert_audit;

#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct AuditEvent {
    pub id: i64,
    pub occurred_at: i64,
    pub org_id: Option<String>,
    pub actor_id: Option<String>,
    pub actor_email: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub target_name: String,
    pub ip: String,
    pub user_agent: String,
    pub details: String,
    /// Position in the organization's chain (`None` only on a row inserted behind
    /// Keyward's back).
    pub chain_seq: Option<i64>,
    pub chain_hash: Option<String>,
}

/// Filters of the audit page; empty strings mean "any".
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub action: String,
    pub actor_email: String,
    pub target_id: String,
    /// Inclusive lower bound (Unix seconds).
    pub from: Option<i64>,
    /// Exclusive upper bound (Unix seconds).
    pub to: Option<i64>,
    /// Only events with a smaller id (cursor pagination, newest first).
    pub before_id: Option<i64>,
}

/// The events an organization's audit log shows: its own events, plus account events
/// (sign-in, sign-out, …) of its current members from the time each joined.
const AUDIT_WHERE: &str = "\
    (e.org_id = $1 OR (e.org_id IS NULL AND e.actor_id IN \
        (SELECT m.user_id FROM memberships m WHERE m.org_id = $1 AND m.created_at <= e.occurred_at))) \
    AND ($2 = '' OR e.action = $2) \
    AND ($3 = '' OR e.actor_email = $3) \
    AND ($4 = '' OR e.target_id = $4) \
    AND e.occurred_at >= $5 AND e.occurred_at < $6 \
    AND e.id < $7";

impl Store {
    /// Records an event that is not part of a larger change (sign-in, sign-out, …).
    pub async fn record(&self, ev: &NewAudit) -> Result<()> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            insert_audit!(&mut *tx, ev)?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// A page of an organization's audit log, newest first, with the total count.
    pub async fn list_audit(
        &self,
        org_id: &str,
        f: &AuditFilter,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<AuditEvent>, i64)> {
        let list_sql = format!(
            "SELECT e.* FROM audit_events e WHERE {AUDIT_WHERE} ORDER BY e.id DESC LIMIT $8 OFFSET $9"
        );
        let count_sql = format!("SELECT COUNT(*) FROM audit_events e WHERE {AUDIT_WHERE}");
        let from = f.from.unwrap_or(i64::MIN);
        let to = f.to.unwrap_or(i64::MAX);
        with_pool!(self, |pool| {
            let rows = sqlx::query_as::<_, AuditEvent>(&list_sql)
                .bind(org_id)
                .bind(&f.action)
                .bind(&f.actor_email)
                .bind(&f.target_id)
                .bind(from)
                .bind(to)
                .bind(f.before_id.unwrap_or(i64::MAX))
                .bind(limit)
                .bind(offset)
                .fetch_all(pool)
                .await?;
            let total: i64 = sqlx::query_scalar(&count_sql)
                .bind(org_id)
                .bind(&f.action)
                .bind(&f.actor_email)
                .bind(&f.target_id)
                .bind(from)
                .bind(to)
                .bind(f.before_id.unwrap_or(i64::MAX))
                .fetch_one(pool)
                .await?;
            Ok((rows, total))
        })
    }

    /// The distinct actions present in an organization's log (for the filter menu).
    pub async fn audit_actions(&self, org_id: &str) -> Result<Vec<String>> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_scalar(
                "SELECT DISTINCT e.action FROM audit_events e WHERE e.org_id = $1 \
                 OR (e.org_id IS NULL AND e.actor_id IN \
                    (SELECT m.user_id FROM memberships m WHERE m.org_id = $1 \
                     AND m.created_at <= e.occurred_at)) \
                 ORDER BY e.action",
            )
            .bind(org_id)
            .fetch_all(pool)
            .await?)
        })
    }
}
