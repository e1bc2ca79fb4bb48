//! Two-step verification: authenticator apps (TOTP), passkeys, recovery codes, the second
//! step of a password sign-in, and organizations' "require two-step verification" policy.
//!
//! A password sign-in of an account with a second factor does not sign the session in:
//! [`challenge`] leaves a short-lived *pending* state in the session (user, epoch, where to
//! go next, wrong attempts), and `/login/two-step` finishes it with a code, a passkey or a
//! recovery code ([`complete`]), or drops it after [`MAX_ATTEMPTS`] wrong ones.

use crate::audit::AuditAction;
mod handlers;
pub(crate) mod passkeys;
mod policy;
pub use passkeys::relying_party;
pub mod recovery;
pub mod totp;

use axum::{
    Router,
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

use crate::{
    audit::ClientMeta,
    auth::{CurrentUser, session, throttle},
    error::{AppError, Result},
    state::AppState,
    store::{NewAudit, SignInGate, User},
};

/// Settings → Account → Security.
pub const SECURITY_PATH: &str = "/settings/account/security";
/// The second step of a sign-in.
pub const TWO_STEP_PATH: &str = "/login/two-step";
/// A pending sign-in lasts this long.
pub const PENDING_TTL_SECS: i64 = 5 * 60;
/// Wrong codes allowed per pending sign-in (and per step-up confirmation).
pub const MAX_ATTEMPTS: u32 = 5;

const PENDING: &str = "two_step_pending";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(SECURITY_PATH, get(handlers::security_page))
        .route(
            "/settings/account/security/totp",
            get(handlers::totp_page).post(handlers::totp_enable),
        )
        .route(
            "/settings/account/security/totp/remove",
            post(handlers::totp_remove),
        )
        .route(
            "/settings/account/security/recovery-codes",
            get(handlers::recovery_codes_page).post(handlers::recovery_codes_regenerate),
        )
        .route(
            crate::auth::stepup::CONFIRM_PATH,
            get(handlers::confirm_page).post(handlers::confirm),
        )
        .route(
            "/settings/account/security/passkeys/options",
            post(passkeys::register_options),
        )
        .route(
            "/settings/account/security/passkeys",
            post(passkeys::register),
        )
        .route(
            "/settings/account/security/passkeys/{id}/remove",
            post(passkeys::remove),
        )
        .route(
            "/settings/account/confirm/passkey/options",
            post(passkeys::confirm_options),
        )
        .route("/settings/account/confirm/passkey", post(passkeys::confirm))
        .route(
            "/login/two-step/passkey/options",
            post(passkeys::second_step_options),
        )
        .route("/login/two-step/passkey", post(passkeys::second_step))
        .route("/login/passkey/options", post(passkeys::sign_in_options))
        .route("/login/passkey", post(passkeys::sign_in))
        .route("/settings/members/two-step", post(policy::set_policy))
        .route(
            TWO_STEP_PATH,
            get(handlers::two_step_page).post(handlers::two_step_submit),
        )
}

// ------------------------------------------------------------------ pending sign-in

/// A password sign-in waiting for its second step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Pending {
    pub user_id: String,
    /// The account's session epoch when the password was checked (a reset ends it).
    pub epoch: i64,
    pub started_at: i64,
    pub next: String,
    pub failures: u32,
    /// The browser's device token (hashed): trusted for the account once the sign-in
    /// completes (see `auth::throttle`).
    pub device: Vec<u8>,
    /// Whose failure count a failed second step goes to (the account, or this trusted
    /// browser), as the password step decided.
    pub gate: SignInGate,
    /// The organization the sign-in lands in (a hand-off names one); `None`: the first.
    #[serde(default)]
    pub org_id: Option<String>,
}

/// Makes the pending sign-in of this session land in `org_id` once the second step is
/// answered (a hand-off from the team's app names the organization).
pub(crate) async fn land_in(session: &Session, org_id: &str) -> Result<()> {
    if let Some(mut p) = session.get::<Pending>(PENDING).await? {
        p.org_id = Some(org_id.to_string());
        session.insert(PENDING, &p).await?;
    }
    Ok(())
}

/// Called by the password sign-in once the password is verified (and only then): for an
/// account with a second factor, starts the second step and answers with the redirect
/// to it; `None` for an account without one (sign in as usual).
pub async fn challenge(
    state: &AppState,
    session: &Session,
    user: &User,
    next: &str,
    now: i64,
    device: &[u8],
    gate: &SignInGate,
) -> Result<Option<Response>> {
    if !state.store.has_second_factor(&user.id).await? {
        return Ok(None);
    }
    // A new session id: whatever the browser held before the password is not the
    // session that finishes the sign-in.
    session.cycle_id().await?;
    session.clear().await;
    let pending = Pending {
        user_id: user.id.clone(),
        epoch: user.session_epoch,
        started_at: now,
        next: session::safe_next(Some(next)),
        failures: 0,
        device: device.to_vec(),
        gate: gate.clone(),
        org_id: None,
    };
    session.insert(PENDING, &pending).await?;
    tracing::info!(event = "auth.two_step_started", user_id = %user.id, "password accepted; second step asked");
    Ok(Some(Redirect::to(TWO_STEP_PATH).into_response()))
}

/// The pending sign-in of this session, if it is still valid (in time, same epoch, the
/// account still enabled); an invalid one is dropped.
pub(crate) async fn pending(
    state: &AppState,
    session: &Session,
) -> Result<Option<(Pending, User)>> {
    let Some(p) = session.get::<Pending>(PENDING).await? else {
        return Ok(None);
    };
    let now = state.clock.unix();
    let user = state.store.user(&p.user_id).await?;
    match user {
        Some(u)
            if now.saturating_sub(p.started_at) <= PENDING_TTL_SECS
                && u.disabled_at.is_none()
                && u.session_epoch == p.epoch =>
        {
            Ok(Some((p, u)))
        }
        _ => {
            session.remove::<Pending>(PENDING).await?;
            Ok(None)
        }
    }
}

/// Finishes a sign-in whose second step succeeded: the failure counter is reset, the
/// browser trusted for the account, the sign-in audited with its method, and the session
/// signed in under a new id. Returns where to go next.
pub(crate) async fn complete(
    state: &AppState,
    session: &Session,
    meta: &ClientMeta,
    user: &User,
    pending: &Pending,
    method: &str,
) -> Result<String> {
    let next = &pending.next;
    let now = state.clock.unix();
    let audit = meta
        .stamp(NewAudit::new(AuditAction::AuthSignedIn, now))
        .actor(Some(&user.id), &user.email)
        .target("user", &user.id, &user.email)
        .details(serde_json::json!({ "method": method }));
    state
        .store
        .login_succeeded(&user.id, &pending.device, None, throttle::RULES, &audit)
        .await?;
    tracing::info!(event = %AuditAction::AuthSignedIn, user_id = %user.id, ip = %meta.ip, method, "signed in");
    session::sign_in(
        state,
        session,
        user,
        pending.org_id.as_deref(),
        meta,
        now,
        method,
    )
    .await?;
    session::set_sign_in_method(session, method).await?;
    Ok(session::safe_next(Some(next)))
}

/// Whether the account (or the trusted browser the sign-in came from) may answer a
/// challenge now: a pause or a disabled password after repeated failures closes the
/// second step and step-up confirmations too, so they are no faster way to guess.
pub(crate) async fn may_answer(state: &AppState, user: &User, gate: &SignInGate) -> Result<bool> {
    let now = state.clock.unix();
    let fresh = state.store.user(&user.id).await?;
    let Some(fresh) = fresh else {
        return Ok(false);
    };
    Ok(state
        .store
        .sign_in_gate(&fresh, throttle::gate_device(gate), throttle::RULES, now)
        .await?
        != SignInGate::Closed)
}

/// Counts a wrong answer to a challenge at once, in the database, like a wrong password
/// (against the account, or the trusted browser): the pause that follows applies to
/// passwords and codes alike, across sessions and nodes.
pub(crate) async fn count_wrong_answer(
    state: &AppState,
    meta: &ClientMeta,
    user: &User,
    gate: &SignInGate,
    reason: &str,
) -> Result<()> {
    let audit = meta
        .stamp(NewAudit::new(
            AuditAction::AuthSignInFailed,
            state.clock.unix(),
        ))
        .actor(Some(&user.id), &user.email)
        .target("user", &user.id, &user.email)
        .details(serde_json::json!({ "reason": reason }));
    let gate = match gate {
        // A closed gate was refused before; count against the account to be safe.
        SignInGate::Closed => &SignInGate::Account,
        other => other,
    };
    state
        .store
        .login_failed(&user.id, gate, throttle::RULES, &audit)
        .await?;
    Ok(())
}

/// Counts a wrong second step (in the database, see [`count_wrong_answer`]). After
/// [`MAX_ATTEMPTS`] the pending sign-in is dropped; returns whether that happened.
pub(crate) async fn failed_attempt(
    state: &AppState,
    session: &Session,
    meta: &ClientMeta,
    mut pending: Pending,
    user: &User,
) -> Result<bool> {
    count_wrong_answer(state, meta, user, &pending.gate, "two_step").await?;
    state.metrics.sign_in("two_step", false);
    pending.failures += 1;
    if pending.failures < MAX_ATTEMPTS {
        session.insert(PENDING, &pending).await?;
        return Ok(false);
    }
    session.remove::<Pending>(PENDING).await?;
    tracing::warn!(event = %AuditAction::AuthSignInFailed, user_id = %user.id, ip = %meta.ip, reason = "two_step", "too many wrong second-step codes");
    Ok(true)
}

// ------------------------------------------------------------------ shared checks

/// The result of checking an authenticator code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CodeCheck {
    Accepted,
    Wrong,
    /// Right code, but its step (or a later one) was already used.
    Replayed,
}

/// Checks an authenticator-app code of the account (±1 step, each step once).
pub(crate) async fn check_totp(state: &AppState, user_id: &str, code: &str) -> Result<CodeCheck> {
    let Some(factor) = state.store.totp_factor(user_id).await? else {
        return Ok(CodeCheck::Wrong);
    };
    let secret = open_secret(state, &factor.secret, user_id)?;
    let now = state.clock.unix();
    let Some(step) = totp::matching_step(&secret, code, now) else {
        return Ok(CodeCheck::Wrong);
    };
    Ok(if state.store.accept_totp_step(user_id, step, now).await? {
        CodeCheck::Accepted
    } else {
        CodeCheck::Replayed
    })
}

/// The TOTP secret sealed for the account `aad` is bound to.
pub(crate) fn seal_secret(state: &AppState, secret: &[u8], aad: &str) -> Result<String> {
    state
        .totp_secrets
        .seal(&totp::secret_text(secret), aad)
        .map_err(AppError::internal)
}

pub(crate) fn open_secret(state: &AppState, sealed: &str, aad: &str) -> Result<Vec<u8>> {
    use secrecy::ExposeSecret;
    let text = state
        .totp_secrets
        .open(sealed, aad)
        .map_err(AppError::internal)?;
    totp::secret_from_text(text.expose_secret())
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("stored TOTP secret is not base32")))
}

/// The message after a wrong or replayed code.
pub(crate) fn code_error(check: CodeCheck) -> &'static str {
    match check {
        CodeCheck::Replayed => {
            "That code was already used. Wait for your app to show the next one, then enter it."
        }
        _ => {
            "That code is not right. Check that your device's clock is correct and enter the code your app shows now."
        }
    }
}

// ------------------------------------------------------------------ organization policy

/// Paths a member held back by the two-step policy may still reach: their own account's
/// pages (to enrol), sign-out, switching to or creating another organization, and
/// invitations to other organizations. Everything else is the organization's.
pub fn policy_exempt(path: &str) -> bool {
    matches!(
        path,
        "/settings/account" | "/logout" | "/orgs" | "/orgs/new" | "/orgs/switch"
    ) || path.starts_with("/settings/account/")
        || path.starts_with("/invitations/")
}

/// Whether the active organization's policy holds this user back: it requires two-step
/// verification, the session did not sign in through the organization's own SSO
/// connection (that is its provider's business; an operator-wide provider is not) nor
/// through a hand-off the team's app vouched for, and the account has no second factor. Returns the organization's name.
pub async fn policy_blocks(state: &AppState, cu: &CurrentUser) -> Result<Option<String>> {
    if !cu.org.require_two_step {
        return Ok(None);
    }
    // The organization's own SSO vouches for its members; a hand-off the team's app
    // marked as strongly authenticated vouches for the person (README: the trade-off).
    let method = session::sign_in_method(&cu.session).await?;
    if method == session::org_sso_method(cu.org_id()) || method == crate::portal::STRONG_METHOD {
        return Ok(None);
    }
    if state.store.has_second_factor(&cu.user.id).await? {
        return Ok(None);
    }
    Ok(Some(cu.org.org_name.clone()))
}

/// The account's audit event (no organization: it shows in each of the user's
/// organizations' logs).
pub(crate) fn account_audit(
    cu: &CurrentUser,
    meta: &ClientMeta,
    action: AuditAction,
    now: i64,
) -> NewAudit {
    meta.stamp(NewAudit::new(action, now))
        .actor(Some(&cu.user.id), &cu.user.email)
        .target("user", &cu.user.id, &cu.user.email)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_policy_holds_back_organization_pages_only() {
        for open in [
            "/settings/account",
            "/settings/account/security",
            "/settings/account/security/totp",
            "/settings/account/confirm",
            "/logout",
            "/orgs/switch",
            "/invitations/abc/accept",
        ] {
            assert!(super::policy_exempt(open), "{open}");
        }
        for held in [
            "/settings/api-keys",
            "/settings/members",
            "/settings/members/two-step",
            "/settings/audit-log",
            "/settings/accounting",
            "/api/v1/keys",
        ] {
            assert!(!super::policy_exempt(held), "{held}");
        }
    }
}
