//! Single sign-on with OpenID Connect.
//!
//! - [`oidc`]: the relying party (discovery, authorization request, callback checks).
//! - [`handlers`]: `/sso/start`, `/sso/callback`, linking and unlinking identities, and
//!   what a verified identity becomes (a session, a linked identity, a new member).
//! - [`settings`]: Settings → SSO, an organization's connections.
//! - [`account`]: Settings → Account, the signed-in person's linked identities.
//!
//! Two kinds of source: operator-wide providers from a TOML file
//! (`KEYWARD_SSO_PROVIDERS_FILE`, discovered at start-up) and per-organization connections
//! that claim email domains. Connection client secrets are sealed at rest
//! ([`crate::secretbox`]).

mod account;
mod handlers;
pub mod oidc;
mod settings;

use std::path::Path;

use anyhow::{Context, bail};
use axum::{
    Router,
    http::StatusCode,
    routing::{get, post},
};
use secrecy::SecretString;
use serde::Deserialize;

use crate::{state::AppState, store::SsoConnection};

pub use crate::secretbox::SecretBox;
pub(crate) use handlers::link_after_password;
pub use oidc::{ClientParams, Oidc, VerifiedIdentity};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sso/start", post(handlers::start))
        .route("/sso/callback", get(handlers::callback))
        .route("/sso/link", post(handlers::link))
        .route("/sso/unlink", post(handlers::unlink))
        .route("/settings/account", get(account::page))
        .route("/settings/sso", get(settings::list).post(settings::create))
        .route("/settings/sso/new", get(settings::new_page))
        .route(
            "/settings/sso/{id}",
            get(settings::edit).post(settings::update),
        )
        .route("/settings/sso/{id}/delete", post(settings::delete))
        .route("/settings/sso/{id}/test", post(settings::test))
}

/// An operator-wide provider ("Sign in with Google Workspace").
#[derive(Clone, Deserialize)]
pub struct OperatorProvider {
    pub id: String,
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<SecretString>,
    /// Read the secret from this environment variable instead of the file.
    #[serde(default)]
    pub client_secret_env: Option<String>,
}

impl std::fmt::Debug for OperatorProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorProvider")
            .field("id", &self.id)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProvidersFile {
    #[serde(default)]
    providers: Vec<OperatorProvider>,
}

/// Reads and checks `KEYWARD_SSO_PROVIDERS_FILE`.
pub fn load_providers(path: &Path) -> anyhow::Result<Vec<OperatorProvider>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading SSO providers file {}", path.display()))?;
    let file: ProvidersFile = toml::from_str(&text)
        .with_context(|| format!("parsing SSO providers file {}", path.display()))?;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for mut p in file.providers {
        let valid_id = !p.id.is_empty()
            && p.id.len() <= 32
            && p.id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid_id {
            bail!(
                "SSO provider id {:?}: use 1-32 characters a-z, 0-9 and -",
                p.id
            );
        }
        if !seen.insert(p.id.clone()) {
            bail!("SSO provider id {:?} appears twice", p.id);
        }
        if !(p.issuer.starts_with("https://") || p.issuer.starts_with("http://")) {
            bail!("SSO provider {:?}: issuer must be an http(s) URL", p.id);
        }
        if let Some(var) = &p.client_secret_env {
            let value = std::env::var(var).with_context(|| {
                format!(
                    "SSO provider {:?}: environment variable {var} is not set",
                    p.id
                )
            })?;
            p.client_secret = Some(SecretString::from(value));
        }
        if p.client_secret.is_none() {
            bail!(
                "SSO provider {:?}: set client_secret or client_secret_env",
                p.id
            );
        }
        out.push(p);
    }
    Ok(out)
}

/// Everything SSO handlers share: the relying party and the secret box.
#[derive(Clone, Debug)]
pub struct Sso {
    pub oidc: Oidc,
    pub secrets: SecretBox,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Oidc")
    }
}

impl AppState {
    /// Discovers every operator-wide provider; start-up fails with the reason when one
    /// does not answer or its metadata names another issuer.
    pub async fn check_sso_providers(&self) -> anyhow::Result<()> {
        for p in &self.config.sso_providers {
            self.sso
                .oidc
                .discover(&p.issuer, true)
                .await
                .map_err(|e| anyhow::anyhow!("SSO provider {:?} ({}): {e}", p.id, p.issuer))?;
            tracing::info!(provider = %p.id, issuer = %p.issuer, "SSO provider discovered");
        }
        Ok(())
    }

    /// The organization's connection that owns this email's domain, if any (invitations
    /// for such addresses go through SSO).
    pub async fn org_connection_for_email(
        &self,
        org_id: &str,
        email: &str,
    ) -> crate::store::Result<Option<SsoConnection>> {
        let domain = email.rsplit('@').next().unwrap_or_default();
        Ok(self
            .store
            .sso_connection_for_domain(domain)
            .await?
            .filter(|c| c.org_id == org_id))
    }

    /// The redirect URI to register at every provider.
    pub fn sso_redirect_uri(&self) -> String {
        format!("{}/sso/callback", self.config.base_url)
    }
}

/// Where an SSO sign-in goes: an organization's connection or an operator-wide provider.
#[derive(Clone, Debug)]
pub enum Source {
    Connection(SsoConnection),
    Provider(OperatorProvider),
}

impl Source {
    /// The stable reference kept in sessions and on identities.
    pub fn key(&self) -> String {
        match self {
            Source::Connection(c) => format!("connection:{}", c.id),
            Source::Provider(p) => format!("provider:{}", p.id),
        }
    }
    pub fn name(&self) -> &str {
        match self {
            Source::Connection(c) => &c.name,
            Source::Provider(p) => &p.name,
        }
    }
    pub fn issuer(&self) -> &str {
        match self {
            Source::Connection(c) => &c.issuer,
            Source::Provider(p) => &p.issuer,
        }
    }
    pub fn connection(&self) -> Option<&SsoConnection> {
        match self {
            Source::Connection(c) => Some(c),
            Source::Provider(_) => None,
        }
    }

    pub fn params(&self, secrets: &SecretBox) -> Result<ClientParams, SsoFailure> {
        let (client_id, client_secret) = match self {
            Source::Connection(c) => (
                c.client_id.clone(),
                secrets
                    .open(&c.client_secret, &c.id)
                    .map_err(|e| SsoFailure::Internal(e.to_string()))?,
            ),
            Source::Provider(p) => (
                p.client_id.clone(),
                p.client_secret
                    .clone()
                    .ok_or_else(|| SsoFailure::Internal("provider without secret".into()))?,
            ),
        };
        Ok(ClientParams {
            issuer: self.issuer().to_string(),
            trusted: matches!(self, Source::Provider(_)),
            client_id,
            client_secret,
        })
    }
}

/// Why an SSO attempt ended without signing anyone in. Each has an audit reason, an HTTP
/// status and a message for the person in front of the browser.
#[derive(Debug, thiserror::Error)]
pub enum SsoFailure {
    #[error("the sign-in response does not belong to a sign-in started in this browser")]
    UnknownState,
    #[error("the sign-in took too long")]
    Expired,
    #[error("the identity provider returned {0}")]
    ProviderError(String),
    #[error("discovery failed: {0}")]
    Discovery(String),
    #[error("issuer mismatch: {0}")]
    IssuerMismatch(String),
    #[error("token exchange failed: {0}")]
    TokenExchange(String),
    #[error("ID token rejected: {0}")]
    IdToken(String),
    #[error("UserInfo rejected: {0}")]
    UserInfo(String),
    #[error("the provider did not assert a verified email address")]
    UnverifiedEmail,
    #[error("{0} is not a domain of this connection")]
    DomainNotAllowed(String),
    #[error("an account for {0} exists and is not linked to this identity")]
    ExistingAccount(String),
    #[error("the provider's email is not the account's ({0})")]
    EmailMismatch(String),
    #[error("the identity is linked to another account")]
    IdentityTaken,
    #[error("the account already has an identity from this provider")]
    IssuerAlreadyLinked,
    #[error("sign-up is closed")]
    SignupClosed,
    #[error("the account is disabled")]
    AccountDisabled,
    #[error("the SSO connection no longer exists or changed")]
    SourceGone,
    #[error("internal error: {0}")]
    Internal(String),
}

impl SsoFailure {
    /// A short code for the audit log and logs.
    pub fn reason(&self) -> &'static str {
        use SsoFailure::*;
        match self {
            UnknownState => "invalid_state",
            Expired => "expired",
            ProviderError(_) => "provider_error",
            Discovery(_) => "discovery_failed",
            IssuerMismatch(_) => "issuer_mismatch",
            TokenExchange(_) => "token_exchange_failed",
            IdToken(_) => "invalid_id_token",
            UserInfo(_) => "invalid_userinfo",
            UnverifiedEmail => "email_not_verified",
            DomainNotAllowed(_) => "domain_not_allowed",
            ExistingAccount(_) => "existing_account",
            IdentityTaken => "identity_taken",
            EmailMismatch(_) => "email_mismatch",
            IssuerAlreadyLinked => "issuer_already_linked",
            SignupClosed => "signup_closed",
            AccountDisabled => "account_disabled",
            SourceGone => "connection_gone",
            Internal(_) => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        use SsoFailure::*;
        match self {
            UnknownState | Expired | IssuerMismatch(_) | TokenExchange(_) | IdToken(_)
            | UserInfo(_) => StatusCode::BAD_REQUEST,
            ProviderError(_) | UnverifiedEmail | DomainNotAllowed(_) | ExistingAccount(_)
            | EmailMismatch(_) | IdentityTaken | IssuerAlreadyLinked | SignupClosed
            | AccountDisabled => StatusCode::FORBIDDEN,
            SourceGone => StatusCode::NOT_FOUND,
            Discovery(_) => StatusCode::BAD_GATEWAY,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the page says: what happened and what to do, never token contents.
    pub fn message(&self) -> String {
        use SsoFailure::*;
        match self {
            UnknownState => "This sign-in response does not match a sign-in started in this browser, or it was already used. Start again from the sign-in page.".into(),
            Expired => "The sign-in took too long. Start again from the sign-in page.".into(),
            ProviderError(code) if code == "access_denied" => "Sign-in was cancelled or refused at your identity provider. You are not signed in.".into(),
            ProviderError(code) => format!("Your identity provider reported an error ({code}). You are not signed in."),
            Discovery(_) => format!("{} could not reach your identity provider. Try again later or ask your administrator to test the SSO connection.", crate::branding::current().product_name),
            IssuerMismatch(_) | TokenExchange(_) | IdToken(_) | UserInfo(_) => "The response from your identity provider could not be verified, so you were not signed in. Start again; if it keeps happening, ask your administrator to test the SSO connection.".into(),
            UnverifiedEmail => format!("Your identity provider did not confirm your email address (email_verified), so {} cannot use it to sign you in or link your account.", crate::branding::current().product_name),
            DomainNotAllowed(domain) => format!("{domain} addresses cannot sign in through this connection. Ask your administrator which sign-in to use."),
            ExistingAccount(email) => format!("An account for {email} already exists and is not linked to this identity. Sign in with your password, then link single sign-on under Settings → Account."),
            IdentityTaken => format!("This identity is already linked to another {} account.", crate::branding::current().product_name),
            EmailMismatch(email) => format!("Your identity provider signed you in with a different email address than {email}. Sign in there as {email}, or ask your administrator."),
            IssuerAlreadyLinked => "Your account already has a linked identity from this provider. Unlink it first under Settings → Account.".into(),
            SignupClosed => format!("There is no {} account for this identity, and accounts are created by invitation. Ask an administrator to invite you.", crate::branding::current().product_name),
            AccountDisabled => "This account is disabled.".into(),
            SourceGone => "This single sign-on connection no longer exists or was changed. Start again from the sign-in page.".into(),
            Internal(_) => "Something went wrong on our side. Please try again.".into(),
        }
    }
}

/// Lowercased domain list from free text (commas, spaces or new lines; a leading `@` is
/// dropped). Every entry must look like a domain name.
pub fn parse_domains(input: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for raw in input.split(|c: char| c == ',' || c.is_whitespace()) {
        let d = raw
            .trim()
            .trim_start_matches('@')
            .trim_end_matches('.')
            .to_lowercase();
        if d.is_empty() {
            continue;
        }
        let valid = d.len() <= 253
            && d.contains('.')
            && d.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !valid {
            return Err(format!("{raw:?} is not a domain name (e.g. example.com)."));
        }
        if !out.contains(&d) {
            out.push(d);
        }
    }
    if out.len() > 50 {
        return Err("At most 50 domains per connection.".into());
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn domains() {
        assert_eq!(
            super::parse_domains(" Example.com, @corp.example.org\nexample.com ").unwrap(),
            vec!["corp.example.org", "example.com"]
        );
        assert!(super::parse_domains("localhost").is_err());
        assert!(super::parse_domains("bad_domain.com").is_err());
        assert!(super::parse_domains("-x.com").is_err());
        assert!(super::parse_domains("").unwrap().is_empty());
    }
}
