//! Webhooks: organizations hear about key and member events without polling.
//!
//! An audited event that a webhook subscribes to gets a row in `webhook_deliveries` in the
//! same transaction as the change (see `insert_audit!`), so no event is lost between the
//! change and its announcement. The [`Dispatcher`] sends due deliveries — POST, JSON, signed
//! with HMAC-SHA-256 over `"{timestamp}.{body}"` — and retries failures with exponential
//! backoff. Settings → Webhooks ([`handlers`]) manages endpoints and shows deliveries.

mod handlers;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    routing::{get, post},
};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{
    audit::AuditAction,
    clock::Clock,
    secretbox::SecretBox,
    state::AppState,
    store::{NewAudit, Store, webhooks::Attempt},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/settings/webhooks",
            get(handlers::page).post(handlers::create),
        )
        .route("/settings/webhooks/{id}/delete", post(handlers::delete))
        .route("/settings/webhooks/{id}/test", post(handlers::test))
}

/// The event sent by "Send test event".
pub const TEST_EVENT: &str = AuditAction::WebhookTest.as_str();

/// Deliveries claimed per pass.
const BATCH: i64 = 10;

/// Attempts before a delivery is given up.
pub const MAX_ATTEMPTS: i64 = 10;

/// The webhook event a stored audit action announces, if any (see
/// [`AuditAction::webhook_event`]).
pub fn event_type_for(action: &str) -> Option<&'static str> {
    AuditAction::parse(action)?
        .webhook_event()
        .map(AuditAction::as_str)
}

/// The JSON body every endpoint receives.
pub fn payload(event_id: &str, event_type: &str, ev: &NewAudit) -> String {
    let details: serde_json::Value =
        serde_json::from_str(&ev.details).unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "id": event_id,
        "type": event_type,
        "created_at": crate::templates::rfc3339(ev.occurred_at),
        "organization_id": ev.org_id,
        "data": {
            "actor": ev.actor_id.as_ref().map(|id| serde_json::json!({ "id": id, "email": ev.actor_email })),
            "target": { "type": ev.target_type, "id": ev.target_id, "name": ev.target_name },
            "details": details,
        },
    })
    .to_string()
}

/// `Keyward-Signature` header value: `t=<unix seconds>,v1=<hex HMAC-SHA-256 of "t.body">`.
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Seconds before the next attempt after `attempts` failed ones: 30 s doubling, at most 6 h.
pub fn backoff(attempts: i64) -> i64 {
    let exp = u32::try_from((attempts - 1).clamp(0, 20)).unwrap_or(20);
    (30_i64 << exp).min(6 * 3600)
}

/// The HTTP client for deliveries: no redirects (a redirect could point anywhere), short
/// timeouts.
pub fn http_client(allow_private: bool) -> anyhow::Result<reqwest::Client> {
    crate::net::user_url_client(
        allow_private,
        concat!("Keyward-Webhooks/", env!("CARGO_PKG_VERSION")),
    )
}

/// The delivery job. It holds only what it uses (the store, the clock, the outbound client
/// and the secrets' seal), not the HTTP state.
#[derive(Clone)]
pub struct Dispatcher {
    store: Store,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    secrets: SecretBox,
    allow_private_networks: bool,
    metrics: crate::metrics::Metrics,
}

impl crate::state::Inner {
    pub fn dispatcher(&self) -> Dispatcher {
        Dispatcher {
            store: self.store.clone(),
            clock: self.clock.clone(),
            http: self.http.clone(),
            secrets: self.webhook_secrets.clone(),
            allow_private_networks: self.config.allow_private_networks,
            metrics: self.metrics.clone(),
        }
    }
}

impl Dispatcher {
    /// Sends every due delivery once; returns how many were attempted. Safe to run on
    /// several nodes at once (deliveries are claimed first).
    pub async fn deliver_due(&self) -> anyhow::Result<usize> {
        let now = self.clock.unix();
        // A lease long enough for the whole batch (each attempt is bounded: 5 s to resolve,
        // 10 s for the request), so no other node takes a delivery that is still being sent.
        let lease = BATCH * 20;
        let due = self.store.claim_deliveries(now, lease, BATCH).await?;
        let claimed_until = now + lease;
        let n = due.len();
        for d in due {
            let outcome = match self.store.webhook_by_id(&d.webhook_id).await? {
                None => Attempt::Failed {
                    status_code: None,
                    error: "the endpoint was deleted".into(),
                    retry_at: None,
                },
                Some(w) => self.attempt(&w, &d.id, &d.event_type, &d.payload).await,
            };
            let outcome = match outcome {
                Attempt::Failed {
                    status_code, error, ..
                } => Attempt::Failed {
                    status_code,
                    error,
                    retry_at: (d.attempts + 1 < MAX_ATTEMPTS)
                        .then(|| self.clock.unix() + backoff(d.attempts + 1)),
                },
                ok => ok,
            };
            let label = match &outcome {
                Attempt::Failed { retry_at: None, .. } => "failed",
                Attempt::Failed { .. } => "retrying",
                Attempt::Delivered { .. } => "delivered",
            };
            self.metrics
                .count("keyward_webhook_deliveries_total", &[("outcome", label)]);
            if let Attempt::Failed {
                error, retry_at, ..
            } = &outcome
            {
                tracing::warn!(event = "webhook.failed", delivery = %d.id, webhook = %d.webhook_id, error = %error, retry_at = ?retry_at, "webhook delivery failed");
            }
            self.store
                .finish_delivery(&d.id, claimed_until, self.clock.unix(), &outcome)
                .await?;
        }
        Ok(n)
    }

    async fn attempt(
        &self,
        w: &crate::store::webhooks::Webhook,
        delivery_id: &str,
        event_type: &str,
        body: &str,
    ) -> Attempt {
        let failed = |status_code: Option<i64>, error: String| Attempt::Failed {
            status_code,
            error,
            retry_at: None,
        };
        if let Err(msg) = crate::net::check_outbound(&w.url, self.allow_private_networks).await {
            return failed(None, msg);
        }
        let secret = match self.secrets.open(&w.secret, &w.id) {
            Ok(s) => s,
            Err(e) => return failed(None, e.to_string()),
        };
        use secrecy::ExposeSecret;
        let sig = signature(secret.expose_secret(), self.clock.unix(), body);
        let res = self
            .http
            .post(&w.url)
            .header("content-type", "application/json")
            .header("keyward-event", event_type)
            .header("keyward-delivery", delivery_id)
            .header("keyward-signature", sig)
            .body(body.to_string())
            .send()
            .await;
        match res {
            Ok(r) if r.status().is_success() => Attempt::Delivered {
                status_code: i64::from(r.status().as_u16()),
            },
            Ok(r) => failed(
                Some(i64::from(r.status().as_u16())),
                format!("the endpoint answered HTTP {}", r.status()),
            ),
            // Without the URL: it may carry a token.
            Err(e) => failed(None, e.without_url().to_string()),
        }
    }

    /// Delivers due webhooks every second until the process ends.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = self.deliver_due().await {
                    tracing::warn!(error = %e, "webhook dispatcher");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_reference_hmac() {
        // echo -n '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec_test
        assert_eq!(
            signature("whsec_test", 1_700_000_000, r#"{"a":1}"#),
            "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), 30);
        assert_eq!(backoff(2), 60);
        assert_eq!(backoff(5), 480);
        assert_eq!(backoff(30), 6 * 3600);
    }

    #[test]
    fn event_mapping() {
        assert_eq!(event_type_for("key.revoked"), Some("key.revoked"));
        assert_eq!(event_type_for("key.disabled"), Some("key.updated"));
        assert_eq!(event_type_for("auth.signed_in"), None);
    }
}
