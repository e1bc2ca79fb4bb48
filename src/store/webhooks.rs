//! Webhook endpoints, their durable delivery outbox, and the expiry notices already sent.

use super::{NewAudit, Result, Store, audit::insert_audit, with_pool};

/// An organization's webhook endpoint. `secret` is sealed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Webhook {
    pub id: String,
    pub org_id: String,
    pub url: String,
    pub description: String,
    /// Space-separated event types.
    pub events: String,
    pub secret: String,
    pub created_by: Option<String>,
    pub created_at: i64,
}

impl Webhook {
    pub fn event_list(&self) -> Vec<&str> {
        self.events.split_whitespace().collect()
    }
}

/// One event on its way to one endpoint.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Delivery {
    pub id: String,
    pub webhook_id: String,
    pub org_id: String,
    pub event_type: String,
    pub payload: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub locked_until: Option<i64>,
    pub last_attempt_at: Option<i64>,
    pub last_status_code: Option<i64>,
    pub last_error: String,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

/// What an audited event sends to the organization's webhooks (see `insert_audit!`).
pub struct Fanout {
    pub event_id: String,
    pub event_type: &'static str,
    pub org_id: String,
    pub payload: String,
}

impl Fanout {
    /// The webhook event for an audit event, if it is one webhooks can subscribe to.
    pub fn of(ev: &NewAudit) -> Option<Self> {
        let event_type = crate::webhooks::event_type_for(&ev.action)?;
        let org_id = ev.org_id.clone()?;
        let event_id = format!("evt_{}", uuid::Uuid::now_v7().simple());
        let payload = crate::webhooks::payload(&event_id, event_type, ev);
        Some(Self {
            event_id,
            event_type,
            org_id,
            payload,
        })
    }
}

/// How a delivery attempt ended.
pub enum Attempt {
    Delivered {
        status_code: i64,
    },
    Failed {
        status_code: Option<i64>,
        error: String,
        /// `None`: give up.
        retry_at: Option<i64>,
    },
}

const DELIVERY_COLUMNS: &str = "id, webhook_id, org_id, event_type, payload, status, attempts, \
     next_attempt_at, locked_until, last_attempt_at, last_status_code, last_error, created_at, delivered_at";

impl Store {
    pub async fn webhooks(&self, org_id: &str) -> Result<Vec<Webhook>> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, Webhook>(
                "SELECT * FROM webhooks WHERE org_id = $1 ORDER BY created_at, id",
            )
            .bind(org_id)
            .fetch_all(pool)
            .await?)
        })
    }

    pub async fn webhook(&self, org_id: &str, id: &str) -> Result<Option<Webhook>> {
        with_pool!(self, |pool| {
            Ok(
                sqlx::query_as::<_, Webhook>(
                    "SELECT * FROM webhooks WHERE org_id = $1 AND id = $2",
                )
                .bind(org_id)
                .bind(id)
                .fetch_optional(pool)
                .await?,
            )
        })
    }

    /// Adds an endpoint, audited.
    pub async fn insert_webhook(&self, w: &Webhook, audit: &NewAudit) -> Result<()> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO webhooks (id, org_id, url, description, events, secret, created_by, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&w.id)
            .bind(&w.org_id)
            .bind(&w.url)
            .bind(&w.description)
            .bind(&w.events)
            .bind(&w.secret)
            .bind(&w.created_by)
            .bind(w.created_at)
            .execute(&mut *tx)
            .await?;
            insert_audit!(&mut *tx, audit)?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Deletes an endpoint and its deliveries, audited.
    pub async fn delete_webhook(&self, org_id: &str, id: &str, audit: &NewAudit) -> Result<bool> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "DELETE FROM webhook_deliveries WHERE webhook_id = \
                 (SELECT id FROM webhooks WHERE id = $1 AND org_id = $2)",
            )
            .bind(id)
            .bind(org_id)
            .execute(&mut *tx)
            .await?;
            let n = sqlx::query("DELETE FROM webhooks WHERE id = $1 AND org_id = $2")
                .bind(id)
                .bind(org_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 0 {
                return Ok(false);
            }
            insert_audit!(&mut *tx, audit)?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Queues one delivery to one endpoint (the "Send test event" button).
    pub async fn enqueue_delivery(&self, d: &Delivery) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO webhook_deliveries (id, webhook_id, org_id, event_type, payload, \
                 next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&d.id)
            .bind(&d.webhook_id)
            .bind(&d.org_id)
            .bind(&d.event_type)
            .bind(&d.payload)
            .bind(d.next_attempt_at)
            .bind(d.created_at)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// The endpoint's most recent deliveries.
    pub async fn deliveries(&self, webhook_id: &str, limit: i64) -> Result<Vec<Delivery>> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, Delivery>(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1 \
                 ORDER BY created_at DESC, id DESC LIMIT $2"
            ))
            .bind(webhook_id)
            .bind(limit)
            .fetch_all(pool)
            .await?)
        })
    }

    /// Claims up to `limit` due deliveries for `lease` seconds. A delivery claimed by
    /// another node (lease not over) is skipped, so each attempt happens once.
    pub async fn claim_deliveries(
        &self,
        now: i64,
        lease: i64,
        limit: i64,
    ) -> Result<Vec<Delivery>> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, Delivery>(&format!(
                "UPDATE webhook_deliveries SET locked_until = $2 \
                 WHERE id IN (SELECT id FROM webhook_deliveries WHERE status = 'pending' \
                   AND next_attempt_at <= $1 AND (locked_until IS NULL OR locked_until <= $1) \
                   ORDER BY next_attempt_at LIMIT $3) \
                 AND status = 'pending' AND (locked_until IS NULL OR locked_until <= $1) \
                 RETURNING {DELIVERY_COLUMNS}"
            ))
            .bind(now)
            .bind(now + lease)
            .bind(limit)
            .fetch_all(pool)
            .await?)
        })
    }

    /// Records an attempt's outcome and releases the claim — only while this claim
    /// (`claimed_until`) still holds: a node whose lease ran out must not overwrite the
    /// result of the node that took the delivery over.
    pub async fn finish_delivery(
        &self,
        id: &str,
        claimed_until: i64,
        now: i64,
        outcome: &Attempt,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            match outcome {
                Attempt::Delivered { status_code } => {
                    sqlx::query(
                        "UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1, \
                         last_attempt_at = $2, last_status_code = $3, last_error = '', delivered_at = $2, \
                         locked_until = NULL WHERE id = $1 AND locked_until = $4 AND status = 'pending'",
                    )
                    .bind(id)
                    .bind(now)
                    .bind(status_code)
                    .bind(claimed_until)
                    .execute(pool)
                    .await?;
                }
                Attempt::Failed {
                    status_code,
                    error,
                    retry_at,
                } => {
                    sqlx::query(
                        "UPDATE webhook_deliveries SET attempts = attempts + 1, last_attempt_at = $2, \
                         last_status_code = $3, last_error = $4, locked_until = NULL, \
                         status = CASE WHEN $5 IS NULL THEN 'failed' ELSE 'pending' END, \
                         next_attempt_at = COALESCE($5, next_attempt_at) \
                         WHERE id = $1 AND locked_until = $6 AND status = 'pending'",
                    )
                    .bind(id)
                    .bind(now)
                    .bind(status_code)
                    .bind(error)
                    .bind(retry_at)
                    .bind(claimed_until)
                    .execute(pool)
                    .await?;
                }
            }
            Ok(())
        })
    }

    pub async fn webhook_by_id(&self, id: &str) -> Result<Option<Webhook>> {
        with_pool!(self, |pool| {
            Ok(
                sqlx::query_as::<_, Webhook>("SELECT * FROM webhooks WHERE id = $1")
                    .bind(id)
                    .fetch_optional(pool)
                    .await?,
            )
        })
    }

    /// Claims an expiry notice for a key, once ever (across restarts and nodes), and
    /// records its audit event (which fans out to webhooks) in the same transaction.
    /// False when the notice was sent already.
    pub async fn claim_key_notice(
        &self,
        key_id: &str,
        kind: &str,
        audit: Option<&NewAudit>,
    ) -> Result<bool> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(
                "INSERT INTO key_notices (key_id, kind, sent_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (key_id, kind) DO NOTHING",
            )
            .bind(key_id)
            .bind(kind)
            .bind(audit.map_or(0, |a| a.occurred_at))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                return Ok(false);
            }
            if let Some(a) = audit {
                insert_audit!(&mut *tx, a)?;
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Up to `limit` keys (of every organization), not revoked, whose expiry lies in
    /// `(from, to]` and that have not had the `kind` notice yet.
    pub async fn keys_due_notice(
        &self,
        from: i64,
        to: i64,
        kind: &str,
        limit: i64,
    ) -> Result<Vec<super::ApiKey>> {
        let sql = format!(
            "{} WHERE k.expires_at > $1 AND k.expires_at <= $2 AND k.revoked_at IS NULL \
             AND NOT EXISTS (SELECT 1 FROM key_notices n WHERE n.key_id = k.id AND n.kind = $3) \
             ORDER BY k.expires_at LIMIT $4",
            super::keys::KEY_SELECT
        );
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, super::ApiKey>(&sql)
                .bind(from)
                .bind(to)
                .bind(kind)
                .bind(limit)
                .fetch_all(pool)
                .await?)
        })
    }

    /// Switches "API keys may create keys" for an organization, audited.
    pub async fn set_api_keys_can_create_keys(
        &self,
        org_id: &str,
        on: bool,
        audit: &NewAudit,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE organizations SET api_keys_can_create_keys = $2 WHERE id = $1")
                .bind(org_id)
                .bind(on)
                .execute(&mut *tx)
                .await?;
            insert_audit!(&mut *tx, audit)?;
            tx.commit().await?;
            Ok(())
        })
    }
}
