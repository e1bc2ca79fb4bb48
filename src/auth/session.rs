//! What the dashboard keeps in a session, in one place: the signed-in user, the active
//! organization, timestamps for the idle and absolute timeouts, the CSRF token, a flash
//! message and one-time form tokens.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

use crate::error::Result;

pub const USER_ID: &str = "uid";
pub const ORG_ID: &str = "org";
pub const AUTHENTICATED_AT: &str = "auth_at";
pub const SEEN_AT: &str = "seen_at";
/// Where the sign-in came from (shown on Settings → Account → Sessions).
pub const IP: &str = "ip";
pub const USER_AGENT: &str = "ua";
/// When the owner last confirmed it's them (password or second factor) for a step-up.
pub const REAUTHENTICATED_AT: &str = "reauth_at";
/// How this session signed in (`password`, `password+totp`, `passkey`, `sso`, …); absent
/// means a password alone.
pub const SIGN_IN_METHOD: &str = "method";
/// The user's session epoch at sign-in; a later epoch (password reset) ends the session.
pub const EPOCH: &str = "epoch";
const CSRF: &str = "csrf";
const FLASH: &str = "flash";
const FORM_TOKENS: &str = "forms";
/// How many unsubmitted one-time forms a session remembers.
const MAX_FORM_TOKENS: usize = 200;

/// A message shown once on the next page.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Flash {
    /// `success`, `error` or `info`.
    pub kind: String,
    pub message: String,
}

/// 128 random bits, URL-safe.
pub fn random_token() -> Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)
        .map_err(|e| crate::error::AppError::internal(anyhow::anyhow!("{e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

/// The session's CSRF token, created on first use.
pub async fn csrf_token(session: &Session) -> Result<String> {
    if let Some(t) = session.get::<String>(CSRF).await? {
        return Ok(t);
    }
    let t = random_token()?;
    session.insert(CSRF, &t).await?;
    Ok(t)
}

pub async fn stored_csrf(session: &Session) -> Result<Option<String>> {
    Ok(session.get::<String>(CSRF).await?)
}

pub async fn set_flash(session: &Session, kind: &str, message: impl Into<String>) -> Result<()> {
    let flash = Flash {
        kind: kind.into(),
        message: message.into(),
    };
    session.insert(FLASH, flash).await?;
    Ok(())
}

pub async fn take_flash(session: &Session) -> Result<Option<Flash>> {
    Ok(session.remove::<Flash>(FLASH).await?)
}

/// Issues a one-time token for a form whose submission must not be repeated (creating or
/// rolling a key shows the new key in the response; a reload must not mint another).
pub async fn issue_form_token(session: &Session) -> Result<String> {
    let mut tokens: Vec<String> = session.get(FORM_TOKENS).await?.unwrap_or_default();
    let t = random_token()?;
    tokens.push(t.clone());
    if tokens.len() > MAX_FORM_TOKENS {
        tokens.drain(..tokens.len() - MAX_FORM_TOKENS);
    }
    session.insert(FORM_TOKENS, tokens).await?;
    Ok(t)
}

/// Consumes a one-time form token; false if it was never issued or already used. The
/// session only says whether it issued the token: several identical submits arriving at
/// once each load the session with the token still in it, so the store's claim decides
/// which one of them uses it.
pub async fn consume_form_token(
    session: &Session,
    store: &crate::store::Store,
    token: &str,
    now: i64,
) -> Result<bool> {
    let mut tokens: Vec<String> = session.get(FORM_TOKENS).await?.unwrap_or_default();
    let before = tokens.len();
    tokens.retain(|t| t != token);
    if tokens.len() == before {
        return Ok(false);
    }
    session.insert(FORM_TOKENS, tokens).await?;
    Ok(store.claim_once(token, now).await?)
}

/// Signs the user in on this session: a new session id (against fixation), a new CSRF
/// token, the timestamps the timeouts are measured from, and where the sign-in came from.
/// Every way in (password, second step, passkey, SSO, sign-up by invitation) comes through
/// here, so here is where the account's "last sign-in" is recorded.
/// `method` names the way in for the sign-in metrics (see
/// [`Metrics::sign_in`](crate::metrics::Metrics::sign_in)).
#[allow(clippy::too_many_arguments)]
pub async fn sign_in(
    state: &crate::state::AppState,
    session: &Session,
    user: &crate::store::User,
    org_id: Option<&str>,
    meta: &crate::audit::ClientMeta,
    now: i64,
    method: &str,
) -> Result<()> {
    session.cycle_id().await?;
    session.clear().await;
    session.insert(USER_ID, &user.id).await?;
    session.insert(EPOCH, user.session_epoch).await?;
    if let Some(org) = org_id {
        session.insert(ORG_ID, org).await?;
    }
    session.insert(AUTHENTICATED_AT, now).await?;
    session.insert(SEEN_AT, now).await?;
    session.insert(IP, &meta.ip).await?;
    session.insert(USER_AGENT, &meta.user_agent).await?;
    csrf_token(session).await?;
    state.store.record_sign_in(&user.id, now).await?;
    state.metrics.sign_in(method, true);
    Ok(())
}

/// Records how this session signed in (call right after [`sign_in`]).
pub async fn set_sign_in_method(session: &Session, method: &str) -> Result<()> {
    session.insert(SIGN_IN_METHOD, method).await?;
    Ok(())
}

/// The sign-in method of a session that signed in through `org_id`'s own SSO connection
/// (an operator-wide provider is `sso-provider`: no organization vouches for it).
pub fn org_sso_method(org_id: &str) -> String {
    format!("sso:{org_id}")
}

/// How this session signed in; `password` when not recorded.
pub async fn sign_in_method(session: &Session) -> Result<String> {
    Ok(session
        .get::<String>(SIGN_IN_METHOD)
        .await?
        .unwrap_or_else(|| "password".into()))
}

/// Validates a post-login redirect target: only local absolute paths, so `next` can never
/// send the user to another site (`//evil`, `/\evil`, `https:evil`, encoded variants…).
pub fn safe_next(next: Option<&str>) -> String {
    const DEFAULT: &str = "/settings/api-keys";
    let Some(n) = next else {
        return DEFAULT.into();
    };
    let decoded = urlencoding::decode(n)
        .map(|c| c.into_owned())
        .unwrap_or_default();
    let ok = |s: &str| {
        s.starts_with('/')
            && !s.starts_with("//")
            && !s.starts_with("/\\")
            && !s.chars().any(|c| c.is_control() || c == '\\')
    };
    if ok(n) && ok(&decoded) && n.len() <= 2048 {
        n.to_string()
    } else {
        DEFAULT.into()
    }
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn open_redirects_are_refused() {
        for bad in [
            "https://evil",
            "//evil",
            "/\\evil",
            "%2F%2Fevil",
            "/%5Cevil",
            "javascript:alert(1)",
            "\t//evil",
            "https:evil",
            "/%2F/evil",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/settings/api-keys", "{bad:?}");
        }
        assert_eq!(
            safe_next(Some("/settings/audit-log?action=x")),
            "/settings/audit-log?action=x"
        );
        assert_eq!(safe_next(None), "/settings/api-keys");
    }
}
