//! Passkeys (WebAuthn through `webauthn-rs`, user verification required): register
//! several per account, use one as the second step after the password, sign in with one
//! alone (discoverable credential), or confirm a sensitive change with one.
//!
//! The browser side is `static/passkeys.js`: it asks for options here, calls
//! `navigator.credentials.create/get`, and posts the result back as JSON with the CSRF
//! token in `X-CSRF-Token`. Every ceremony's state stays in the server-side session.

use crate::audit::AuditAction;
use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::Deserialize;
use tower_sessions::Session;
use webauthn_rs::prelude::{
    DiscoverableAuthentication, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, Uuid, Webauthn,
};

use super::{SECURITY_PATH, account_audit, recovery};
use crate::{
    audit::ClientMeta,
    auth::{
        CurrentUser, session,
        stepup::{self, SteppedUp},
    },
    error::{AppError, Result},
    state::AppState,
    store::{FactorRemoval, NewAudit, PasskeyRow, User},
};

const REGISTRATION: &str = "passkey_registration";
const SECOND_STEP: &str = "passkey_second_step";
const DISCOVERABLE: &str = "passkey_sign_in";
const CONFIRMATION: &str = "passkey_confirmation";

/// The relying party for this deployment: its id is the host of `KEYWARD_BASE_URL`, its
/// origin the base URL. `None` when the host is an IP address (browsers accept passkeys
/// only for domain names, `localhost` included) or the URL is unusable.
pub fn relying_party(base_url: &str) -> Option<Webauthn> {
    let origin = webauthn_rs::prelude::Url::parse(base_url).ok()?;
    let host = origin.host_str()?.to_string();
    if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
        return None;
    }
    webauthn_rs::WebauthnBuilder::new(&host, &origin)
        .ok()?
        .rp_name("Keyward")
        .build()
        .ok()
}

/// A JSON answer for the script: `{"error": {"code", "message"}}`.
fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

fn unavailable() -> Response {
    // (Not 404: the dashboard renders every 404 as its HTML page.)
    json_error(
        StatusCode::CONFLICT,
        "passkeys_unavailable",
        "Passkeys are not available on this Keyward: it must be reached at a domain name (KEYWARD_BASE_URL).",
    )
}

/// Where the script goes next.
fn go(to: &str) -> Response {
    Json(serde_json::json!({ "redirect": to })).into_response()
}

fn stored(row: &PasskeyRow) -> Result<Passkey> {
    serde_json::from_str(&row.passkey).map_err(AppError::internal)
}

fn credential_key(id: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(id)
}

/// The account's passkeys as webauthn-rs values.
async fn user_passkeys(state: &AppState, user_id: &str) -> Result<Vec<(PasskeyRow, Passkey)>> {
    let mut out = Vec::new();
    for row in state.store.passkeys(user_id).await? {
        let pk = stored(&row)?;
        out.push((row, pk));
    }
    Ok(out)
}

/// Records a successful assertion: the signature counter and when it was used.
async fn mark_used(
    state: &AppState,
    row: &PasskeyRow,
    mut pk: Passkey,
    result: &webauthn_rs::prelude::AuthenticationResult,
) -> Result<()> {
    pk.update_credential(result);
    let json = serde_json::to_string(&pk).map_err(AppError::internal)?;
    state
        .store
        .passkey_used(&row.id, &json, state.clock.unix())
        .await?;
    Ok(())
}

// ------------------------------------------------------------------ registration

pub async fn register_options(
    State(state): State<AppState>,
    SteppedUp(cu): SteppedUp,
) -> Result<Response> {
    // See `totp_page`: only a proved address arms an account.
    cu.require_verified_email()?;
    let Some(rp) = state.webauthn.as_ref() else {
        return Ok(unavailable());
    };
    let handle = state.store.webauthn_handle(&cu.user.id).await?;
    let handle = Uuid::parse_str(&handle).map_err(AppError::internal)?;
    let exclude = user_passkeys(&state, &cu.user.id)
        .await?
        .iter()
        .map(|(_, pk)| pk.cred_id().clone())
        .collect::<Vec<_>>();
    let display = if cu.user.name.is_empty() {
        &cu.user.email
    } else {
        &cu.user.name
    };
    let (ccr, reg) = rp
        .start_passkey_registration(handle, &cu.user.email, display, Some(exclude))
        .map_err(AppError::internal)?;
    cu.session.insert(REGISTRATION, &reg).await?;
    // A discoverable credential, so that it can also sign in without a password.
    let mut options = serde_json::to_value(&ccr).map_err(AppError::internal)?;
    if let Some(sel) = options
        .pointer_mut("/publicKey/authenticatorSelection")
        .and_then(|v| v.as_object_mut())
    {
        sel.insert("residentKey".into(), "required".into());
        sel.insert("requireResidentKey".into(), true.into());
    }
    Ok(Json(options).into_response())
}

#[derive(Deserialize)]
pub struct RegisterBody {
    #[serde(default)]
    name: String,
    credential: RegisterPublicKeyCredential,
}

pub async fn register(
    State(state): State<AppState>,
    SteppedUp(cu): SteppedUp,
    meta: ClientMeta,
    Json(body): Json<RegisterBody>,
) -> Result<Response> {
    cu.require_verified_email()?;
    let Some(rp) = state.webauthn.as_ref() else {
        return Ok(unavailable());
    };
    let Some(reg) = cu
        .session
        .remove::<PasskeyRegistration>(REGISTRATION)
        .await?
    else {
        return Ok(json_error(
            StatusCode::CONFLICT,
            "no_ceremony",
            "This passkey request has ended. Try adding the passkey again.",
        ));
    };
    let name: String = body.name.trim().chars().take(60).collect();
    let name = if name.is_empty() {
        "Passkey".to_string()
    } else {
        name
    };
    let pk = match rp.finish_passkey_registration(&body.credential, &reg) {
        Ok(pk) => pk,
        Err(e) => {
            tracing::info!(event = "account.passkey_refused", user_id = %cu.user.id, error = %e, "passkey registration refused");
            return Ok(json_error(
                StatusCode::BAD_REQUEST,
                "passkey_refused",
                "Your device's answer could not be verified (the passkey must check your fingerprint, face or PIN). Try again.",
            ));
        }
    };
    let now = state.clock.unix();
    let first = !state.store.has_second_factor(&cu.user.id).await?;
    let codes = if first {
        Some(
            recovery::generate(&recovery::key(&state.config.key_pepper))
                .map_err(AppError::internal)?,
        )
    } else {
        None
    };
    let row = PasskeyRow {
        id: crate::store::new_id(),
        user_id: cu.user.id.clone(),
        credential_id: credential_key(pk.cred_id()),
        name: name.clone(),
        passkey: serde_json::to_string(&pk).map_err(AppError::internal)?,
        created_at: now,
        last_used_at: None,
    };
    let audit = account_audit(&cu, &meta, AuditAction::AccountPasskeyAdded, now)
        .details(serde_json::json!({ "passkey": name }));
    match state
        .store
        .add_passkey(&row, codes.as_ref().map(|(_, h)| h.as_slice()), &audit)
        .await
    {
        Ok(()) => {}
        Err(crate::store::StoreError::Conflict) => {
            return Ok(json_error(
                StatusCode::CONFLICT,
                "passkey_exists",
                "This passkey is already registered.",
            ));
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(event = %AuditAction::AccountPasskeyAdded, user_id = %cu.user.id, "passkey added");
    if let Some((plain, _)) = codes {
        super::handlers::show_codes_once(&state, &cu, plain).await?;
        return Ok(go("/settings/account/security/recovery-codes"));
    }
    cu.flash("success", format!("Passkey “{name}” added."))
        .await?;
    Ok(go(SECURITY_PATH))
}

pub async fn remove(
    State(state): State<AppState>,
    SteppedUp(cu): SteppedUp,
    meta: ClientMeta,
    Path(id): Path<String>,
) -> Result<Response> {
    let name = state
        .store
        .passkeys(&cu.user.id)
        .await?
        .into_iter()
        .find(|p| p.id == id)
        .map(|p| p.name)
        .ok_or(AppError::NotFound)?;
    let audit = account_audit(
        &cu,
        &meta,
        AuditAction::AccountPasskeyRemoved,
        state.clock.unix(),
    )
    .details(serde_json::json!({ "passkey": name }));
    match state.store.remove_passkey(&cu.user.id, &id, &audit).await? {
        FactorRemoval::Removed => {
            tracing::info!(event = %AuditAction::AccountPasskeyRemoved, user_id = %cu.user.id, "passkey removed");
            cu.flash("success", format!("Passkey “{name}” removed."))
                .await?;
        }
        FactorRemoval::NotFound => {}
        FactorRemoval::PasswordTooShort => {
            cu.flash("error", super::handlers::last_factor_refusal(&state))
                .await?;
        }
    }
    Ok(Redirect::to(SECURITY_PATH).into_response())
}

// ------------------------------------------------------------------ assertions

/// Starts an assertion with the account's own passkeys; `None` when it has none.
async fn start_for_user(
    state: &AppState,
    rp: &Webauthn,
    session: &Session,
    key: &str,
    user_id: &str,
) -> Result<Option<Response>> {
    let passkeys: Vec<Passkey> = user_passkeys(state, user_id)
        .await?
        .into_iter()
        .map(|(_, pk)| pk)
        .collect();
    if passkeys.is_empty() {
        return Ok(None);
    }
    let (rcr, auth) = rp
        .start_passkey_authentication(&passkeys)
        .map_err(AppError::internal)?;
    session.insert(key, &auth).await?;
    Ok(Some(Json(rcr).into_response()))
}

/// Finishes an assertion against the account's own passkeys; true when it verified.
async fn finish_for_user(
    state: &AppState,
    rp: &Webauthn,
    session: &Session,
    key: &str,
    user_id: &str,
    credential: &PublicKeyCredential,
) -> Result<bool> {
    let Some(auth) = session.remove::<PasskeyAuthentication>(key).await? else {
        return Ok(false);
    };
    let Ok(result) = rp.finish_passkey_authentication(credential, &auth) else {
        return Ok(false);
    };
    let cred = credential_key(result.cred_id());
    for (row, pk) in user_passkeys(state, user_id).await? {
        if row.credential_id == cred {
            mark_used(state, &row, pk, &result).await?;
            return Ok(true);
        }
    }
    Ok(false)
}

#[derive(Deserialize)]
pub struct AssertionBody {
    credential: PublicKeyCredential,
}

/// The second step of a password sign-in, with a passkey.
pub async fn second_step_options(
    State(state): State<AppState>,
    session: Session,
) -> Result<Response> {
    let Some(rp) = state.webauthn.as_ref() else {
        return Ok(unavailable());
    };
    let Some((_, user)) = super::pending(&state, &session).await? else {
        return Ok(pending_gone());
    };
    Ok(start_for_user(&state, rp, &session, SECOND_STEP, &user.id)
        .await?
        .unwrap_or_else(no_passkeys))
}

fn pending_gone() -> Response {
    json_error(
        StatusCode::CONFLICT,
        "sign_in_expired",
        "Your sign-in was not finished in time. Sign in again.",
    )
}

fn no_passkeys() -> Response {
    json_error(
        StatusCode::CONFLICT,
        "no_passkeys",
        "This account has no passkey.",
    )
}

pub async fn second_step(
    State(state): State<AppState>,
    session: Session,
    meta: ClientMeta,
    Json(body): Json<AssertionBody>,
) -> Result<Response> {
    let Some(rp) = state.webauthn.as_ref() else {
        return Ok(unavailable());
    };
    let Some((pending, user)) = super::pending(&state, &session).await? else {
        return Ok(pending_gone());
    };
    if finish_for_user(
        &state,
        rp,
        &session,
        SECOND_STEP,
        &user.id,
        &body.credential,
    )
    .await?
    {
        let to =
            super::complete(&state, &session, &meta, &user, &pending, "password+passkey").await?;
        return Ok(go(&to));
    }
    if super::failed_attempt(&state, &session, &meta, pending, &user).await? {
        return Ok(go("/login?reason=two_step_expired"));
    }
    Ok(json_error(
        StatusCode::UNAUTHORIZED,
        "passkey_refused",
        "That passkey could not be verified. Try again, or use another way below.",
    ))
}

/// "Sign in with a passkey": no email, no password.
pub async fn sign_in_options(State(state): State<AppState>, session: Session) -> Result<Response> {
    let Some(rp) = state.webauthn.as_ref() else {
        return Ok(unavailable());
    };
    let (mut rcr, auth) = rp
        .start_discoverable_authentication()
        .map_err(AppError::internal)?;
    // A button press, not the autofill (conditional) flow.
    rcr.mediation = None;
    session.insert(DISCOVERABLE, &auth).await?;
    Ok(Json(rcr).into_response())
}

#[derive(Deserialize)]
pub struct SignInBody {
    credential: PublicKeyCredential,
    #[serde(default)]
    next: Option<String>,
}

const PASSKEY_FAILED: &str =
    "That passkey could not sign you in. It may have been removed from your account.";

pub async fn sign_in(
    State(state): State<AppState>,
    session: Session,
    meta: ClientMeta,
    Json(body): Json<SignInBody>,
) -> Result<Response> {
    let Some(rp) = state.webauthn.as_ref() else {
        return Ok(unavailable());
    };
    let refused = || json_error(StatusCode::UNAUTHORIZED, "passkey_refused", PASSKEY_FAILED);
    let Some(auth) = session
        .remove::<DiscoverableAuthentication>(DISCOVERABLE)
        .await?
    else {
        return Ok(json_error(
            StatusCode::CONFLICT,
            "no_ceremony",
            "This passkey request has ended. Try again.",
        ));
    };
    let Ok((handle, cred_id)) = rp.identify_discoverable_authentication(&body.credential) else {
        return Ok(refused());
    };
    let cred = credential_key(cred_id);
    let Some(user_id) = state
        .store
        .user_by_webauthn_handle(&handle.to_string())
        .await?
    else {
        return Ok(refused());
    };
    let Some(row) = state
        .store
        .passkey_by_credential(&cred)
        .await?
        .filter(|r| r.user_id == user_id)
    else {
        return Ok(refused());
    };
    let pk = stored(&row)?;
    let Ok(result) = rp.finish_discoverable_authentication_v2(&body.credential, auth, &pk) else {
        return Ok(refused());
    };
    let Some(user) = state
        .store
        .user(&user_id)
        .await?
        .filter(|u| u.disabled_at.is_none())
    else {
        return Ok(refused());
    };
    mark_used(&state, &row, pk, &result).await?;
    if let Some(conn) = state.store.sso_required_for(&user.id, &user.email).await? {
        let org = state
            .store
            .org(&conn.org_id)
            .await?
            .map(|o| o.name)
            .unwrap_or_default();
        return Ok(json_error(
            StatusCode::FORBIDDEN,
            "sso_required",
            &format!("{org} requires single sign-on for your address. Use “Continue with SSO”."),
        ));
    }
    let next = session::safe_next(body.next.as_deref());
    let secure = state.config.secure_cookies();
    // Always a new device token (see `auth::handlers::login`).
    let device = session::random_token()?;
    passwordless_signed_in(&state, &session, &meta, &user, &device).await?;
    let mut res = go(&next);
    if let Some(cookie) = crate::auth::throttle::device_cookie(&device, secure) {
        res.headers_mut()
            .append(axum::http::header::SET_COOKIE, cookie);
    }
    Ok(res)
}

/// Signs in after a passkey alone: the browser is trusted for the account (device
/// cookie), the password's failure count reset as after any successful sign-in.
async fn passwordless_signed_in(
    state: &AppState,
    session: &Session,
    meta: &ClientMeta,
    user: &User,
    device: &str,
) -> Result<()> {
    let now = state.clock.unix();
    let audit = meta
        .stamp(NewAudit::new(AuditAction::AuthSignedIn, now))
        .actor(Some(&user.id), &user.email)
        .target("user", &user.id, &user.email)
        .details(serde_json::json!({ "method": "passkey" }));
    state
        .store
        .login_succeeded(
            &user.id,
            &crate::auth::throttle::device_hash(device),
            None,
            crate::auth::throttle::RULES,
            &audit,
        )
        .await?;
    tracing::info!(event = %AuditAction::AuthSignedIn, user_id = %user.id, ip = %meta.ip, method = "passkey", "signed in");
    session::sign_in(state, session, user, None, meta, now, "passkey").await?;
    session::set_sign_in_method(session, "passkey").await?;
    Ok(())
}

// ------------------------------------------------------------------ step-up with a passkey

pub async fn confirm_options(State(state): State<AppState>, cu: CurrentUser) -> Result<Response> {
    let Some(rp) = state.webauthn.as_ref() else {
        return Ok(unavailable());
    };
    Ok(
        start_for_user(&state, rp, &cu.session, CONFIRMATION, &cu.user.id)
            .await?
            .unwrap_or_else(no_passkeys),
    )
}

#[derive(Deserialize)]
pub struct ConfirmBody {
    credential: PublicKeyCredential,
    #[serde(default)]
    next: Option<String>,
}

pub async fn confirm(
    State(state): State<AppState>,
    cu: CurrentUser,
    Json(body): Json<ConfirmBody>,
) -> Result<Response> {
    let Some(rp) = state.webauthn.as_ref() else {
        return Ok(unavailable());
    };
    if finish_for_user(
        &state,
        rp,
        &cu.session,
        CONFIRMATION,
        &cu.user.id,
        &body.credential,
    )
    .await?
    {
        stepup::confirmed(&cu.session, state.clock.unix()).await?;
        return Ok(go(&session::safe_next(body.next.as_deref())));
    }
    if super::handlers::confirm_failed(&cu).await?.is_some() {
        return Ok(go("/login?reason=expired"));
    }
    Ok(json_error(
        StatusCode::UNAUTHORIZED,
        "passkey_refused",
        "That passkey could not be verified. Try again.",
    ))
}
