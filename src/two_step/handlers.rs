//! Settings → Account → Security (authenticator app, recovery codes), the step-up confirm
//! page, and the second step of a password sign-in.

use crate::audit::AuditAction;
use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Form,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use secrecy::SecretString;
use serde::Deserialize;
use tower_sessions::Session;

use super::{CodeCheck, MAX_ATTEMPTS, SECURITY_PATH, account_audit, recovery, totp};
use crate::{
    audit::ClientMeta,
    auth::{
        Chrome, CurrentUser, session,
        stepup::{self, SteppedUp},
    },
    error::{AppError, Result},
    state::AppState,
    store::FactorRemoval,
    templates::TimeView,
};

/// The TOTP secret being enrolled (sealed), until its first code confirms it.
const ENROLLING: &str = "totp_enrolling";
/// Recovery codes just issued, shown once on the next page and then forgotten.
const FRESH_CODES: &str = "fresh_recovery_codes";
/// Wrong confirmations on the step-up page.
const CONFIRM_FAILURES: &str = "confirm_failures";

// ------------------------------------------------------------------ security page

pub struct PasskeyView {
    pub id: String,
    pub name: String,
    pub added: TimeView,
    pub last_used: Option<TimeView>,
}

#[derive(Template, WebTemplate)]
#[template(path = "settings/security.html")]
struct SecurityPage {
    chrome: Chrome,
    totp_since: Option<TimeView>,
    totp_last_used: Option<TimeView>,
    passkeys: Vec<PasskeyView>,
    passkeys_available: bool,
    has_factor: bool,
    /// Factors are set up only once the email address is confirmed.
    email_verified: bool,
    codes_left: i64,
    /// Organizations of the user that require two-step verification.
    required_by: Vec<String>,
}

pub async fn security_page(State(state): State<AppState>, cu: CurrentUser) -> Result<Response> {
    let now = state.clock.unix();
    let factor = state.store.totp_factor(&cu.user.id).await?;
    let passkeys: Vec<PasskeyView> = state
        .store
        .passkeys(&cu.user.id)
        .await?
        .into_iter()
        .map(|p| PasskeyView {
            added: TimeView::new(p.created_at, now),
            last_used: TimeView::opt(p.last_used_at, now),
            id: p.id,
            name: p.name,
        })
        .collect();
    let has_factor = factor.is_some() || !passkeys.is_empty();
    let codes_left = state.store.recovery_codes_left(&cu.user.id).await?;
    Ok(SecurityPage {
        chrome: cu.chrome("account").await?,
        totp_since: factor.as_ref().map(|f| TimeView::new(f.created_at, now)),
        totp_last_used: factor.and_then(|f| TimeView::opt(f.last_used_at, now)),
        passkeys,
        passkeys_available: state.passkeys_available(),
        has_factor,
        email_verified: cu.user.email_verified(),
        codes_left,
        required_by: cu
            .orgs
            .iter()
            .filter(|m| m.require_two_step)
            .map(|m| m.org_name.clone())
            .collect(),
    }
    .into_response())
}

// ------------------------------------------------------------------ authenticator app

#[derive(Template, WebTemplate)]
#[template(path = "settings/totp.html")]
struct TotpPage {
    chrome: Chrome,
    secret: String,
    qr_svg: String,
    error: Option<&'static str>,
}

/// The secret being enrolled in this session (a new one if none is).
async fn enrolling_secret(state: &AppState, cu: &CurrentUser) -> Result<Vec<u8>> {
    let aad = format!("enrol:{}", cu.user.id);
    if let Some(sealed) = cu.session.get::<String>(ENROLLING).await?
        && let Ok(secret) = super::open_secret(state, &sealed, &aad)
    {
        return Ok(secret);
    }
    let secret = totp::new_secret().map_err(AppError::internal)?;
    cu.session
        .insert(ENROLLING, super::seal_secret(state, &secret, &aad)?)
        .await?;
    Ok(secret)
}

async fn render_totp(
    state: &AppState,
    cu: &CurrentUser,
    error: Option<&'static str>,
) -> Result<Response> {
    let secret = enrolling_secret(state, cu).await?;
    let url = totp::otpauth_url(&secret, &state.config.branding.product_name, &cu.user.email)
        .map_err(AppError::internal)?;
    let page = TotpPage {
        chrome: cu.chrome("account").await?,
        secret: totp::secret_text(&secret),
        qr_svg: totp::qr_svg(&url).map_err(AppError::internal)?,
        error,
    };
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok((status, page).into_response())
}

pub async fn totp_page(
    State(state): State<AppState>,
    SteppedUp(cu): SteppedUp,
) -> Result<Response> {
    // A factor belongs to whoever proved the address: an account someone else opened for
    // it cannot arm itself before its owner turns up (account pre-hijacking).
    cu.require_verified_email()?;
    if state.store.totp_factor(&cu.user.id).await?.is_some() {
        cu.flash(
            "info",
            "An authenticator app is already set up. Remove it first to set up another.",
        )
        .await?;
        return Ok(Redirect::to(SECURITY_PATH).into_response());
    }
    render_totp(&state, &cu, None).await
}

#[derive(Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    code: String,
}

pub async fn totp_enable(
    State(state): State<AppState>,
    SteppedUp(cu): SteppedUp,
    meta: ClientMeta,
    Form(f): Form<CodeForm>,
) -> Result<Response> {
    cu.require_verified_email()?;
    let now = state.clock.unix();
    let secret = enrolling_secret(&state, &cu).await?;
    let Some(step) = totp::matching_step(&secret, &f.code, now) else {
        return render_totp(
            &state,
            &cu,
            Some("That code is not right. Enter the 6-digit code your app shows now for Keyward (check that your device's clock is correct)."),
        )
        .await;
    };
    let first = !state.store.has_second_factor(&cu.user.id).await?;
    let codes = if first {
        Some(
            recovery::generate(&recovery::key(&state.config.key_pepper))
                .map_err(AppError::internal)?,
        )
    } else {
        None
    };
    let audit = account_audit(&cu, &meta, AuditAction::AccountTotpEnabled, now);
    let sealed = super::seal_secret(&state, &secret, &cu.user.id)?;
    if !state
        .store
        .enable_totp(
            &cu.user.id,
            &sealed,
            step,
            codes.as_ref().map(|(_, h)| h.as_slice()),
            &audit,
        )
        .await?
    {
        cu.flash("info", "An authenticator app is already set up.")
            .await?;
        return Ok(Redirect::to(SECURITY_PATH).into_response());
    }
    cu.session.remove::<String>(ENROLLING).await?;
    tracing::info!(event = %AuditAction::AccountTotpEnabled, user_id = %cu.user.id, "authenticator app enrolled");
    if let Some((plain, _)) = codes {
        show_codes_once(&state, &cu, plain).await?;
        return Ok(Redirect::to("/settings/account/security/recovery-codes").into_response());
    }
    cu.flash(
        "success",
        "Authenticator app set up. Sign-ins with your password now ask for its code.",
    )
    .await?;
    Ok(Redirect::to(SECURITY_PATH).into_response())
}

/// Why the last second factor of an account with a short password stays.
pub fn last_factor_refusal(state: &AppState) -> String {
    format!(
        "This is your last second factor, and your password is shorter than the {} characters \
         a password needs on its own. Choose a longer password first, then remove it.",
        state.config.min_password_length
    )
}

pub async fn totp_remove(
    State(state): State<AppState>,
    SteppedUp(cu): SteppedUp,
    meta: ClientMeta,
) -> Result<Response> {
    let now = state.clock.unix();
    let audit = account_audit(&cu, &meta, AuditAction::AccountTotpRemoved, now);
    match state.store.remove_totp(&cu.user.id, &audit).await? {
        FactorRemoval::Removed => {
            tracing::info!(event = %AuditAction::AccountTotpRemoved, user_id = %cu.user.id, "authenticator app removed");
            cu.flash("success", "Authenticator app removed.").await?;
        }
        FactorRemoval::NotFound => {
            cu.flash("info", "No authenticator app was set up.").await?;
        }
        FactorRemoval::PasswordTooShort => {
            cu.flash("error", last_factor_refusal(&state)).await?;
        }
    }
    Ok(Redirect::to(SECURITY_PATH).into_response())
}

// ------------------------------------------------------------------ recovery codes

#[derive(Template, WebTemplate)]
#[template(path = "settings/recovery_codes.html")]
struct RecoveryCodesPage {
    chrome: Chrome,
    codes: Vec<String>,
}

/// Shows the codes issued just before, once (the page is `no-store`, like every
/// dashboard page).
pub async fn recovery_codes_page(
    State(state): State<AppState>,
    cu: CurrentUser,
) -> Result<Response> {
    let codes = match cu.session.remove::<String>(FRESH_CODES).await? {
        Some(sealed) => {
            use secrecy::ExposeSecret;
            let json = state
                .totp_secrets
                .open(&sealed, &format!("recovery:{}", cu.user.id))
                .map_err(AppError::internal)?;
            Some(
                serde_json::from_str::<Vec<String>>(json.expose_secret())
                    .map_err(AppError::internal)?,
            )
        }
        None => None,
    };
    let Some(codes) = codes else {
        cu.flash(
            "info",
            "Recovery codes are shown only once, when they are made. Make new ones if you have lost them.",
        )
        .await?;
        return Ok(Redirect::to(SECURITY_PATH).into_response());
    };
    Ok(RecoveryCodesPage {
        chrome: cu.chrome("account").await?,
        codes,
    }
    .into_response())
}

pub async fn recovery_codes_regenerate(
    State(state): State<AppState>,
    SteppedUp(cu): SteppedUp,
    meta: ClientMeta,
) -> Result<Response> {
    if !state.store.has_second_factor(&cu.user.id).await? {
        return Err(AppError::Conflict(
            "Recovery codes come with a second factor: set up an authenticator app or a passkey first.".into(),
        ));
    }
    let (plain, hashes) =
        recovery::generate(&recovery::key(&state.config.key_pepper)).map_err(AppError::internal)?;
    let audit = account_audit(
        &cu,
        &meta,
        AuditAction::AccountRecoveryCodesRegenerated,
        state.clock.unix(),
    );
    state
        .store
        .regenerate_recovery_codes(&cu.user.id, &hashes, &audit)
        .await?;
    tracing::info!(event = %AuditAction::AccountRecoveryCodesRegenerated, user_id = %cu.user.id, "new recovery codes");
    show_codes_once(&state, &cu, plain).await?;
    Ok(Redirect::to("/settings/account/security/recovery-codes").into_response())
}

/// Hands freshly issued recovery codes to the page that shows them once (the passkey
/// enrolment uses it too). Sealed in the session meanwhile, so that the session table
/// never holds them readable.
pub(crate) async fn show_codes_once(
    state: &AppState,
    cu: &CurrentUser,
    codes: Vec<String>,
) -> Result<()> {
    let json = serde_json::to_string(&codes).map_err(AppError::internal)?;
    let sealed = state
        .totp_secrets
        .seal(&json, &format!("recovery:{}", cu.user.id))
        .map_err(AppError::internal)?;
    cu.session.insert(FRESH_CODES, sealed).await?;
    Ok(())
}

// ------------------------------------------------------------------ step-up confirm page

#[derive(Template, WebTemplate)]
#[template(path = "settings/confirm.html")]
struct ConfirmPage {
    chrome: Chrome,
    next: String,
    has_password: bool,
    has_totp: bool,
    has_passkeys: bool,
    /// The account was handed in by the team's app: signing in again there is the proof.
    handed_in: bool,
    error: Option<String>,
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

async fn render_confirm(
    state: &AppState,
    cu: &CurrentUser,
    next: &str,
    error: Option<String>,
) -> Result<Response> {
    let status = if error.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    let page = ConfirmPage {
        handed_in: cu.user.external_issuer.is_some(),
        chrome: cu.chrome("account").await?,
        next: session::safe_next(Some(next)),
        has_password: cu.user.password_hash.is_some(),
        has_totp: state.store.totp_factor(&cu.user.id).await?.is_some(),
        has_passkeys: state.passkeys_available()
            && !state.store.passkeys(&cu.user.id).await?.is_empty(),
        error,
    };
    Ok((status, page).into_response())
}

pub async fn confirm_page(
    State(state): State<AppState>,
    cu: CurrentUser,
    Query(q): Query<NextQuery>,
) -> Result<Response> {
    render_confirm(
        &state,
        &cu,
        q.next.as_deref().unwrap_or(SECURITY_PATH),
        None,
    )
    .await
}

#[derive(Deserialize)]
pub struct ConfirmForm {
    password: Option<SecretString>,
    #[serde(default)]
    code: String,
    next: Option<String>,
}

pub async fn confirm(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    headers: axum::http::HeaderMap,
    Form(f): Form<ConfirmForm>,
) -> Result<Response> {
    let next = session::safe_next(f.next.as_deref());
    let now = state.clock.unix();
    // Under the same count as sign-in: a stolen session cannot guess the password or a code
    // here faster than at the sign-in form (this browser's device token, if trusted, keeps
    // its own count, so an attack elsewhere does not lock its owner out).
    use crate::auth::throttle;
    let device = throttle::device_token(&headers, state.config.secure_cookies())
        .map(|t| throttle::device_hash(&t));
    let _turn = state
        .throttle
        .turn(&throttle::lane(&cu.user.email, device.as_deref()))
        .await?;
    let gate = state
        .store
        .sign_in_gate(&cu.user, device.as_deref(), throttle::RULES, now)
        .await?;
    if gate == crate::store::SignInGate::Closed {
        return render_confirm(
            &state,
            &cu,
            &next,
            Some("Too many wrong answers for this account: try again later.".into()),
        )
        .await;
    }
    let (ok, error) = if let Some(pw) = f.password.as_ref() {
        let verified = state
            .passwords
            .verify(pw, cu.user.password_hash.as_deref())
            .await?;
        (
            verified.ok && cu.user.password_hash.is_some(),
            "That password is not right.",
        )
    } else {
        let check = super::check_totp(&state, &cu.user.id, &f.code).await?;
        (check == CodeCheck::Accepted, super::code_error(check))
    };
    if ok {
        cu.session.remove::<u32>(CONFIRM_FAILURES).await?;
        stepup::confirmed(&cu.session, now).await?;
        return Ok(Redirect::to(&next).into_response());
    }
    super::count_wrong_answer(&state, &meta, &cu.user, &gate, "step_up").await?;
    if let Some(signed_out) = confirm_failed(&cu).await? {
        return Ok(signed_out);
    }
    render_confirm(&state, &cu, &next, Some(error.into())).await
}

/// Counts a wrong confirmation in the session; after [`MAX_ATTEMPTS`] the session is
/// signed out.
pub(crate) async fn confirm_failed(cu: &CurrentUser) -> Result<Option<Response>> {
    let failures = cu.session.get::<u32>(CONFIRM_FAILURES).await?.unwrap_or(0) + 1;
    if failures < MAX_ATTEMPTS {
        cu.session.insert(CONFIRM_FAILURES, failures).await?;
        return Ok(None);
    }
    // (Wrong passwords and codes were counted as failed sign-ins as they came.)
    cu.session.flush().await?;
    tracing::warn!(event = %AuditAction::AuthSignInFailed, user_id = %cu.user.id, reason = "step_up", "too many wrong confirmations; signed out");
    Ok(Some(Redirect::to("/login?reason=expired").into_response()))
}

// ------------------------------------------------------------------ second step of a sign-in

#[derive(Template, WebTemplate)]
#[template(path = "auth/two_step.html")]
struct TwoStepPage {
    csrf: String,
    has_totp: bool,
    has_passkeys: bool,
    error: Option<String>,
}

async fn render_two_step(
    state: &AppState,
    session: &Session,
    user_id: &str,
    error: Option<String>,
) -> Result<Response> {
    let status = if error.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    let page = TwoStepPage {
        csrf: session::csrf_token(session).await?,
        has_totp: state.store.totp_factor(user_id).await?.is_some(),
        has_passkeys: state.passkeys_available()
            && !state.store.passkeys(user_id).await?.is_empty(),
        error,
    };
    Ok((status, page).into_response())
}

/// Without a pending sign-in (never started, expired, or dropped), back to the sign-in page.
fn start_again() -> Response {
    Redirect::to("/login?reason=two_step_expired").into_response()
}

pub async fn two_step_page(State(state): State<AppState>, session: Session) -> Result<Response> {
    let Some((_, user)) = super::pending(&state, &session).await? else {
        return Ok(start_again());
    };
    render_two_step(&state, &session, &user.id, None).await
}

#[derive(Deserialize)]
pub struct TwoStepForm {
    #[serde(default)]
    code: String,
    #[serde(default)]
    recovery_code: String,
}

pub async fn two_step_submit(
    State(state): State<AppState>,
    session: Session,
    meta: ClientMeta,
    Form(f): Form<TwoStepForm>,
) -> Result<Response> {
    let Some((pending, user)) = super::pending(&state, &session).await? else {
        return Ok(start_again());
    };
    // One answer at a time per account (or trusted browser) on this node, each counted
    // before the next is looked at: parallel guesses gain nothing.
    let _turn = state
        .throttle
        .turn(&crate::auth::throttle::lane(
            &user.email,
            crate::auth::throttle::gate_device(&pending.gate),
        ))
        .await?;
    if !super::may_answer(&state, &user, &pending.gate).await? {
        session.remove::<super::Pending>(super::PENDING).await?;
        return Ok(start_again());
    }
    let now = state.clock.unix();
    if !f.recovery_code.trim().is_empty() {
        let audit = meta
            .stamp(crate::store::NewAudit::new(
                AuditAction::AccountRecoveryCodeUsed,
                now,
            ))
            .actor(Some(&user.id), &user.email)
            .target("user", &user.id, &user.email);
        if let Some(left) = state
            .store
            .use_recovery_code(
                &user.id,
                &recovery::hash(&recovery::key(&state.config.key_pepper), &f.recovery_code),
                audit,
            )
            .await?
        {
            tracing::info!(event = %AuditAction::AccountRecoveryCodeUsed, user_id = %user.id, remaining = left, "recovery code used");
            let to = super::complete(
                &state,
                &session,
                &meta,
                &user,
                &pending,
                "password+recovery_code",
            )
            .await?;
            let message = match left {
                0 => "You used your last recovery code. Make new ones now in Settings → Account → Security.".to_string(),
                1 => "Recovery code accepted. You have 1 recovery code left; make new ones in Settings → Account → Security.".to_string(),
                n => format!("Recovery code accepted. You have {n} recovery codes left."),
            };
            session::set_flash(&session, if left <= 2 { "error" } else { "info" }, message).await?;
            return Ok(Redirect::to(&to).into_response());
        }
        if super::failed_attempt(&state, &session, &meta, pending, &user).await? {
            return Ok(start_again());
        }
        return render_two_step(
            &state,
            &session,
            &user.id,
            Some("That recovery code is not right, or it was already used.".into()),
        )
        .await;
    }
    let check = super::check_totp(&state, &user.id, &f.code).await?;
    if check == CodeCheck::Accepted {
        let to = super::complete(&state, &session, &meta, &user, &pending, "password+totp").await?;
        return Ok(Redirect::to(&to).into_response());
    }
    if super::failed_attempt(&state, &session, &meta, pending, &user).await? {
        return Ok(start_again());
    }
    render_two_step(
        &state,
        &session,
        &user.id,
        Some(super::code_error(check).into()),
    )
    .await
}
