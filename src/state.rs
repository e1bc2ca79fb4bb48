//! `AppState`: what every feature's handlers share (configuration, store, clock and the
//! services built on them). Features depend on this file, not on the router (`crate::app`)
//! that imports them all.

use std::{ops::Deref, sync::Arc};

use crate::{
    auth::{self, password::Passwords},
    clock::Clock,
    config::Config,
    store::Store,
    verify::{Verifier, VerifierOptions, shared::SharedLimits},
};

/// Everything handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub passwords: Passwords,
    /// Sign-in, sign-up, reset and invitation budgets; one turn per account at a time.
    pub throttle: auth::throttle::Throttle,
    pub verifier: Verifier,
    pub mailer: crate::mail::Mailer,
    pub sso: crate::sso::Sso,
    /// Seals webhook signing secrets.
    pub webhook_secrets: crate::secretbox::SecretBox,
    /// Seals authenticator-app (TOTP) secrets.
    pub totp_secrets: crate::secretbox::SecretBox,
    /// The WebAuthn relying party (passkeys); `None` when the base URL's host is an IP
    /// address, where browsers do not offer passkeys.
    pub webauthn: Option<webauthn_rs::Webauthn>,
    /// Outbound HTTP for webhook deliveries (no redirects, short timeouts).
    pub http: reqwest::Client,
    /// Prometheus metrics (`GET /metrics`).
    pub metrics: crate::metrics::Metrics,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(config: Config, store: Store, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let verifier = Verifier::with_options(
            store.clone(),
            config.key_prefix.clone(),
            crate::config::KeyPepper::new(config.key_pepper.expose().to_vec()),
            clock.clone(),
            VerifierOptions {
                invalid_attempts_per_minute: config.invalid_attempts_per_minute,
                shared: match &config.redis {
                    Some(r) => Some(SharedLimits::new(
                        &r.url,
                        &r.prefix,
                        r.rate_failure,
                        r.quota_failure,
                    )?),
                    None => None,
                },
            },
        );
        let mailer = crate::mail::Mailer::new(
            config.smtp_url.as_deref(),
            &config.mail_from,
            &config.branding,
            store.clone(),
            clock.clone(),
            &config.key_pepper,
        )?;
        let sso = crate::sso::Sso {
            oidc: crate::sso::Oidc::new(config.allow_private_networks)?,
            secrets: crate::sso::SecretBox::new(&config.key_pepper, "sso-client-secret"),
        };
        Ok(Self(Arc::new(Inner {
            sso,
            webhook_secrets: crate::secretbox::SecretBox::new(&config.key_pepper, "webhook-secret"),
            totp_secrets: crate::secretbox::SecretBox::new(&config.key_pepper, "totp-secret"),
            webauthn: crate::two_step::relying_party(&config.base_url),
            http: crate::webhooks::http_client(config.allow_private_networks)?,
            mailer,
            metrics: crate::metrics::Metrics::new(),
            passwords: Passwords::new()?,
            throttle: auth::throttle::Throttle::new(config.source_budget_scale),
            config,
            store,
            clock,
            verifier,
        })))
    }
}

impl Inner {
    /// Whether passkeys can be used on this deployment.
    pub fn passkeys_available(&self) -> bool {
        self.webauthn.is_some()
    }
}
