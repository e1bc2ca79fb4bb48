//! Outgoing email (invitations, password resets).
//!
//! With `KEYWARD_SMTP_URL` set, mail goes out through that SMTP server (lettre). Without
//! it, a single-machine install still works: each email is written to the log and kept,
//! with its body, in the outbox table (`keyward mail outbox` prints it). Every email is
//! recorded in the outbox with its delivery status either way.
//!
//! Kept bodies hold live one-time links (password resets, invitations, email
//! verification), so they are sealed at rest with a key derived from the deployment's
//! pepper ([`crate::secretbox`]): a database dump alone does not hold usable links.

use std::sync::Arc;

use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor, message::Mailbox};

use crate::{
    clock::Clock,
    config::KeyPepper,
    secretbox::SecretBox,
    store::{OutboxEmail, Store},
};

/// The box that seals kept email bodies (bound to the recipient).
pub fn outbox_box(pepper: &KeyPepper) -> SecretBox {
    SecretBox::new(pepper, "outbox")
}

/// The most recent emails, newest first, with their bodies opened. A body that does not
/// open (another deployment's pepper) is shown as such, never as garbage.
pub async fn open_outbox(
    store: &Store,
    seal: &SecretBox,
    limit: i64,
) -> crate::store::Result<Vec<OutboxEmail>> {
    let mut emails = store.outbox(limit).await?;
    for e in &mut emails {
        if e.body.starts_with(SEALED) {
            e.body = match seal.open(&e.body, &e.recipient) {
                Ok(b) => secrecy::ExposeSecret::expose_secret(&b).to_string(),
                Err(_) => "(sealed with another pepper: cannot be opened here)".into(),
            };
        }
    }
    Ok(emails)
}

/// How a sealed body starts (the secret box's version tag).
const SEALED: &str = "v1:";

#[derive(Clone)]
pub struct Mailer {
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Mailbox,
    store: Store,
    clock: Arc<dyn Clock>,
    seal: SecretBox,
    /// Appended to every body: where to get help (`KEYWARD_SUPPORT_*`), or nothing.
    signature: String,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("smtp", &self.transport.is_some())
            .finish()
    }
}

impl Mailer {
    /// `smtp_url`: e.g. `smtp://127.0.0.1:2525`, `smtp://user:pass@host:587?tls=required`,
    /// `smtps://user:pass@host`.
    pub fn new(
        smtp_url: Option<&str>,
        from: &str,
        branding: &crate::branding::Branding,
        store: Store,
        clock: Arc<dyn Clock>,
        pepper: &KeyPepper,
    ) -> anyhow::Result<Self> {
        let transport = smtp_url
            .filter(|u| !u.trim().is_empty())
            .map(|u| AsyncSmtpTransport::<Tokio1Executor>::from_url(u).map(|b| b.build()))
            .transpose()
            .map_err(|e| anyhow::anyhow!("KEYWARD_SMTP_URL: {e}"))?;
        let from: Mailbox = from
            .parse()
            .map_err(|e| anyhow::anyhow!("KEYWARD_MAIL_FROM {from:?}: {e}"))?;
        // The display name is the branding's (`KEYWARD_MAIL_SENDER_NAME`).
        let from = Mailbox::new(Some(branding.mail_sender_name.clone()), from.email);
        Ok(Self {
            transport,
            from,
            store,
            clock,
            seal: outbox_box(pepper),
            signature: branding.email_signature(),
        })
    }

    pub fn smtp_configured(&self) -> bool {
        self.transport.is_some()
    }

    /// Sends (or, without SMTP, logs) an email and records it in the outbox. Delivery
    /// failures are recorded and logged, never raised: the action that sends the email
    /// (an invitation, a reset request) has already happened.
    pub async fn send(&self, to: &str, subject: &str, body: &str) {
        let body = &format!("{body}{}", self.signature);
        let mut record = OutboxEmail {
            id: 0,
            created_at: self.clock.unix(),
            recipient: to.to_string(),
            subject: subject.to_string(),
            body: String::new(),
            status: String::new(),
            error: String::new(),
        };
        match &self.transport {
            None => {
                // The body may hold a one-time link: it goes to the outbox (for the operator,
                // `keyward mail outbox`), never to the log.
                tracing::info!(
                    event = "mail.logged",
                    to,
                    subject,
                    "no SMTP server configured; email kept in the outbox (keyward mail outbox)"
                );
                record.status = "logged".into();
                record.body = match self.seal.seal(body, to) {
                    Ok(sealed) => sealed,
                    Err(e) => {
                        tracing::error!(error = %e, "could not seal the email body; it is not kept");
                        String::new()
                    }
                };
            }
            Some(transport) => {
                let result = async {
                    let message = Message::builder()
                        .from(self.from.clone())
                        .to(to.parse::<Mailbox>()?)
                        .subject(subject)
                        .body(body.to_string())?;
                    transport.send(message).await?;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                }
                .await;
                match result {
                    Ok(()) => {
                        tracing::info!(event = "mail.sent", to, subject, "email sent");
                        record.status = "sent".into();
                    }
                    Err(e) => {
                        tracing::error!(event = "mail.failed", to, subject, error = %e, "email could not be sent");
                        record.status = "failed".into();
                        record.error = e.to_string();
                    }
                }
            }
        }
        if let Err(e) = self.store.record_email(&record).await {
            tracing::error!(error = %e, "could not record the email in the outbox");
        }
    }

    /// The most recent emails, newest first, bodies opened.
    pub async fn outbox(&self, limit: i64) -> crate::store::Result<Vec<OutboxEmail>> {
        open_outbox(&self.store, &self.seal, limit).await
    }

    /// Seals bodies kept before sealing existed (run at start-up).
    pub async fn seal_kept_bodies(&self) -> crate::store::Result<u64> {
        let mut sealed = 0;
        for e in self.store.unsealed_outbox(SEALED).await? {
            match self.seal.seal(&e.body, &e.recipient) {
                Ok(s) => {
                    self.store.set_outbox_body(e.id, &s).await?;
                    sealed += 1;
                }
                Err(err) => tracing::error!(error = %err, "could not seal a kept email body"),
            }
        }
        Ok(sealed)
    }
}
