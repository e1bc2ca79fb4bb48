//! Expiry warnings: a background job finds keys expiring within 7 days and within 1 day,
//! and keys that just expired, and announces each once — an audit event (`key.expiring`,
//! `key.expired`, which webhooks subscribe to) and an email. "Once" holds across restarts
//! and across nodes: the `key_notices` row is claimed in the same transaction as the event.

use std::{sync::Arc, time::Duration};

use crate::{
    audit::AuditAction,
    clock::Clock,
    mail::Mailer,
    store::{ApiKey, NewAudit, Store},
    templates::exact_utc,
};

/// The notice job. It holds only what it uses, not the HTTP state.
#[derive(Clone)]
pub struct Notices {
    store: Store,
    clock: Arc<dyn Clock>,
    mailer: Mailer,
    /// The dashboard's public URL, for the link in each email.
    base_url: String,
}

impl crate::state::Inner {
    pub fn notices(&self) -> Notices {
        Notices {
            store: self.store.clone(),
            clock: self.clock.clone(),
            mailer: self.mailer.clone(),
            base_url: self.config.base_url.clone(),
        }
    }
}

const DAY: i64 = 24 * 3600;
/// Keys that expired longer ago than this when the job first sees them get no notice (so
/// turning the feature on does not announce every key that ever expired).
const EXPIRED_LOOKBACK: i64 = 7 * DAY;

/// Keys fetched per query; a pass goes on until a window has no key left to notify.
const PAGE: i64 = 500;

impl Notices {
    /// Runs one pass; returns how many notices were sent.
    pub async fn run(&self) -> anyhow::Result<usize> {
        run(self).await
    }

    /// Runs the job every minute until the process ends.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = self.run().await {
                    tracing::warn!(error = %e, "expiry notices");
                }
            }
        })
    }
}

async fn run(state: &Notices) -> anyhow::Result<usize> {
    let now = state.clock.unix();
    let mut sent = 0;
    // Most urgent first: a key inside one day gets the 1-day notice, and its 7-day notice
    // is claimed silently so it never arrives late and out of order.
    let windows = [
        (now, now + DAY, "expiring_1d"),
        (now + DAY, now + 7 * DAY, "expiring_7d"),
        (now - EXPIRED_LOOKBACK, now, "expired"),
    ];
    for (from, to, kind) in windows {
        loop {
            // Only keys without this notice yet: each one notified drops out of the query.
            let batch = state.store.keys_due_notice(from, to, kind, PAGE).await?;
            for key in &batch {
                if kind == "expiring_1d" {
                    state
                        .store
                        .claim_key_notice(&key.id, "expiring_7d", None)
                        .await?;
                }
                if notify(state, key, kind, now).await? {
                    sent += 1;
                }
            }
            if (batch.len() as i64) < PAGE {
                break;
            }
        }
    }
    Ok(sent)
}

async fn notify(state: &Notices, key: &ApiKey, kind: &str, now: i64) -> anyhow::Result<bool> {
    let Some(expires_at) = key.expires_at else {
        return Ok(false);
    };
    let action = if kind == "expired" {
        AuditAction::KeyExpired
    } else {
        AuditAction::KeyExpiring
    };
    let audit = NewAudit::new(action, now)
        .org(&key.org_id)
        .target("api_key", &key.id, &key.name)
        .details(serde_json::json!({
            "expires_at": crate::templates::rfc3339(expires_at),
            "notice": kind,
            "environment": key.environment,
            "display": format!("{}…{}", key.display_prefix, key.last4),
        }));
    if !state
        .store
        .claim_key_notice(&key.id, kind, Some(&audit))
        .await?
    {
        return Ok(false);
    }
    let when = exact_utc(crate::clock::from_unix(expires_at));
    let (subject, lead) = match kind {
        "expired" => (
            format!("API key “{}” has expired", key.name),
            format!(
                "The API key “{}” ({}…{}) expired at {when}. Requests using it are now refused.",
                key.name, key.display_prefix, key.last4
            ),
        ),
        _ => (
            format!(
                "API key “{}” expires {}",
                key.name,
                if kind == "expiring_1d" {
                    "within a day"
                } else {
                    "within 7 days"
                }
            ),
            format!(
                "The API key “{}” ({}…{}) expires at {when}. Requests using it will be refused after that.",
                key.name, key.display_prefix, key.last4
            ),
        ),
    };
    let body = format!(
        "{lead}\n\nTo keep your integration working, roll the key (you get a new key; the old one keeps working for a grace period) or change its expiry:\n{}/settings/api-keys/{}\n",
        state.base_url, key.id
    );
    for to in recipients(state, key).await? {
        state.mailer.send(&to, &subject, &body).await;
    }
    tracing::info!(event = %action, key_id = %key.id, notice = kind, "expiry notice sent");
    Ok(true)
}

/// The key's creator while they are a member; otherwise the organization's admins and owners.
async fn recipients(state: &Notices, key: &ApiKey) -> anyhow::Result<Vec<String>> {
    let members = state.store.members(&key.org_id).await?;
    if let Some(creator) = &key.created_by
        && let Some(m) = members.iter().find(|m| &m.user_id == creator)
    {
        return Ok(vec![m.email.clone()]);
    }
    Ok(members
        .into_iter()
        .filter(|m| m.role == "owner" || m.role == "admin")
        .map(|m| m.email)
        .collect())
}
