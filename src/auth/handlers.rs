//! Sign-up, sign-in and sign-out pages.

use crate::audit::AuditAction;
use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Form,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use secrecy::SecretString;
use serde::Deserialize;
use tower_sessions::Session;

use super::{
    normalize_email,
    password::{self, MAX_LEN},
    session::{self, USER_ID, safe_next},
    throttle, valid_email,
};
use crate::{
    audit::ClientMeta,
    config::SignupMode,
    error::{AppError, Result},
    state::AppState,
    store::{NewAudit, NewUser, PasswordReset, SignInGate, StoreError},
};

/// The one message for every failed sign-in, whatever the reason (no account, wrong
/// password, disabled account, paused after repeated failures), so that it reveals
/// nothing: it says the same about every email, known or not.
const SIGN_IN_FAILED: &str = "Incorrect email or password. After repeated failures, sign-in to an account pauses for a while: try again later, or reset your password.";

#[derive(Template, WebTemplate)]
#[template(path = "auth/login.html")]
struct LoginPage {
    csrf: String,
    email: String,
    next: String,
    error: Option<String>,
    notice: Option<&'static str>,
    signup_open: bool,
    /// "Sign in with a passkey" is offered.
    passkeys: bool,
    /// Operator-wide SSO providers: (id, name).
    providers: Vec<(String, String)>,
}

impl LoginPage {
    async fn new(
        state: &AppState,
        session: &Session,
        email: String,
        next: &str,
        error: Option<String>,
        notice: Option<&'static str>,
    ) -> Result<Self> {
        Ok(Self {
            csrf: session::csrf_token(session).await?,
            email,
            next: safe_next(Some(next)),
            error,
            notice,
            signup_open: state.config.signup == SignupMode::Open,
            passkeys: state.passkeys_available(),
            providers: state
                .config
                .sso_providers
                .iter()
                .map(|p| (p.id.clone(), p.name.clone()))
                .collect(),
        })
    }
}

/// The sign-in page with a message (the SSO start uses it for an unknown domain).
pub async fn login_page_with_error(
    state: &AppState,
    session: &Session,
    email: &str,
    next: &str,
    error: &str,
) -> Result<Response> {
    let page = LoginPage::new(
        state,
        session,
        email.to_string(),
        next,
        Some(error.into()),
        None,
    )
    .await?;
    Ok((StatusCode::BAD_REQUEST, page).into_response())
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
    reason: Option<String>,
}

pub async fn login_page(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<LoginQuery>,
) -> Result<Response> {
    if session.get::<String>(USER_ID).await?.is_some() && q.reason.is_none() {
        return Ok(Redirect::to(&safe_next(q.next.as_deref())).into_response());
    }
    let notice = match q.reason.as_deref() {
        Some("expired") => Some("Your session has ended. Please sign in again."),
        Some("signed_out") => Some("You have been signed out."),
        Some("reauth") => Some("Confirm it's you: sign in again to link a sign-in method."),
        Some("verified") => Some("Your email address is confirmed. Sign in to continue."),
        Some("two_step_expired") => Some(
            "Your sign-in was not finished in time or had too many wrong codes. Sign in again.",
        ),
        Some("password_reset") => Some(
            "Your password was changed and every session was signed out. Sign in with the new password.",
        ),
        _ => None,
    };
    Ok(LoginPage::new(
        &state,
        &session,
        String::new(),
        &safe_next(q.next.as_deref()),
        None,
        notice,
    )
    .await?
    .into_response())
}

#[derive(Deserialize)]
pub struct LoginForm {
    email: String,
    password: SecretString,
    next: Option<String>,
}

/// The answer to every failed sign-in (the same page and status whatever the reason);
/// a known account's failure is counted in the background.
#[allow(clippy::too_many_arguments)]
async fn failed_sign_in(
    state: &AppState,
    session: &Session,
    meta: &ClientMeta,
    user: Option<crate::store::User>,
    gate: SignInGate,
    turns: Vec<tokio::sync::OwnedMutexGuard<()>>,
    email: String,
    form: &LoginForm,
    now: i64,
) -> Result<Response> {
    let known = user.is_some();
    // Counted in the background: the answer must not wait for a write that only known
    // accounts cause (timing would tell). The turn is held until it is done — on every
    // path alike, so that the next attempt on the same email waits as long whether or not
    // the account exists.
    let failure = user.filter(|_| gate != SignInGate::Closed).map(|u| {
        let audit = meta
            .stamp(NewAudit::new(AuditAction::AuthSignInFailed, now))
            .actor(Some(&u.id), &u.email)
            .target("user", &u.id, &u.email);
        (u, audit)
    });
    let store = state.store.clone();
    tokio::spawn(async move {
        // After the answer has left: the write must not compete with the response.
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let done = match failure {
            Some((u, audit)) => {
                store
                    .login_failed(&u.id, &gate, throttle::RULES, &audit)
                    .await
            }
            // A database round trip like the write's.
            None => store.user("").await.map(|_| ()),
        };
        if let Err(e) = done {
            tracing::error!(error = %e, "could not record a failed sign-in");
        }
        drop(turns);
    });
    state.metrics.sign_in("password", false);
    // Only the domain: people sometimes type their password into the email field.
    tracing::info!(event = %AuditAction::AuthSignInFailed, email_domain = %email.rsplit('@').next().unwrap_or(""), ip = %meta.ip, known, "sign-in failed");
    let page = LoginPage::new(
        state,
        session,
        email,
        &safe_next(form.next.as_deref()),
        Some(SIGN_IN_FAILED.into()),
        None,
    )
    .await?;
    Ok((StatusCode::UNAUTHORIZED, page).into_response())
}

pub async fn login(
    State(state): State<AppState>,
    session: Session,
    meta: ClientMeta,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response> {
    let email = normalize_email(&form.email);
    // The source's budget and the hashing capacity were checked before the request reached
    // this handler (`throttle::guard`).
    let now = state.clock.unix();
    let secure = state.config.secure_cookies();
    let device = throttle::device_token(&headers, secure);
    let device_hash = device.as_deref().map(throttle::device_hash);
    // One attempt per account at a time on this node, held until its failure is counted.
    // A browser presenting a device token waits in its own lane, so that a flood of
    // attempts from elsewhere cannot keep the account's owner waiting.
    let lane = |hash: Option<&[u8]>| throttle::lane(&email, hash);
    let mut turns = vec![state.throttle.turn(&lane(device_hash.as_deref())).await?];
    let user = if valid_email(&email) {
        state
            .store
            .user_by_email(&email)
            .await?
            .filter(|u| u.disabled_at.is_none())
    } else {
        None
    };
    let mut gate = match &user {
        Some(u) => {
            state
                .store
                .sign_in_gate(u, device_hash.as_deref(), throttle::RULES, now)
                .await?
        }
        None => SignInGate::Closed,
    };
    if let (Some(u), Some(_), SignInGate::Account) = (&user, &device_hash, &gate) {
        // The token is not trusted for this account: this attempt counts against the
        // account, so it queues with every other such attempt (and reads the count again).
        turns.push(state.throttle.turn(&lane(None)).await?);
        let fresh = state.store.user(&u.id).await?;
        gate = match fresh.as_ref() {
            Some(f) => {
                state
                    .store
                    .sign_in_gate(f, None, throttle::RULES, now)
                    .await?
            }
            None => SignInGate::Closed,
        };
    }
    // Always run argon2 (against a dummy hash when there is no account or sign-in is
    // paused), so that timing is the same whatever the reason.
    let stored = match (&user, &gate) {
        (Some(u), SignInGate::Account | SignInGate::Device(_)) => u.password_hash.as_deref(),
        _ => None,
    };
    let verified = state.passwords.verify(&form.password, stored).await?;

    let user = match user {
        Some(u) if verified.ok => u,
        other => {
            return failed_sign_in(
                &state, &session, &meta, other, gate, turns, email, &form, now,
            )
            .await;
        }
    };

    // An organization that requires SSO for this member's email domain: the right
    // password is not enough (said only after it was checked, so it reveals nothing).
    if let Some(conn) = state.store.sso_required_for(&user.id, &user.email).await? {
        // No identity from that provider yet: the password proved the account; now the
        // provider proves the identity, and the two are linked.
        let linked = state
            .store
            .sso_identities(&user.id)
            .await?
            .iter()
            .any(|i| i.issuer == conn.issuer);
        if !linked {
            return crate::sso::link_after_password(
                &state,
                &session,
                &meta,
                &user,
                conn,
                safe_next(form.next.as_deref()),
            )
            .await;
        }
        let org = state
            .store
            .org(&conn.org_id)
            .await?
            .map(|o| o.name)
            .unwrap_or_default();
        let audit = meta
            .stamp(NewAudit::new(AuditAction::AuthSignInFailed, now))
            .org(&conn.org_id)
            .actor(Some(&user.id), &user.email)
            .target("user", &user.id, &user.email)
            .details(serde_json::json!({ "reason": "sso_required", "connection": conn.name }));
        state.store.record(&audit).await?;
        let page = LoginPage::new(
            &state,
            &session,
            email,
            &safe_next(form.next.as_deref()),
            Some(format!(
                "{org} requires single sign-on for {} addresses. Use “Continue with SSO” below.",
                user.email.rsplit('@').next().unwrap_or_default()
            )),
            None,
        )
        .await?;
        return Ok((StatusCode::FORBIDDEN, page).into_response());
    }

    // A new device token for this browser, trusted for the account once the sign-in
    // completes (here or after the second step). Always new: a token planted in the
    // browser by someone else never becomes trusted.
    let device = session::random_token()?;
    let device_cookie = throttle::device_cookie(&device, secure);
    let with_device_cookie = |mut res: Response| {
        if let Some(cookie) = device_cookie.clone() {
            res.headers_mut().append(header::SET_COOKIE, cookie);
        }
        res
    };

    // With a second factor, the password was only the first step.
    if let Some(second_step) = crate::two_step::challenge(
        &state,
        &session,
        &user,
        &safe_next(form.next.as_deref()),
        now,
        &throttle::device_hash(&device),
        &gate,
    )
    .await?
    {
        return Ok(with_device_cookie(second_step));
    }

    let rehash = if verified.needs_rehash {
        Some(state.passwords.hash(&form.password).await?)
    } else {
        None
    };
    let audit = meta
        .stamp(NewAudit::new(AuditAction::AuthSignedIn, now))
        .actor(Some(&user.id), &user.email)
        .target("user", &user.id, &user.email)
        .details(serde_json::json!({ "method": "password" }));
    state
        .store
        .login_succeeded(
            &user.id,
            &throttle::device_hash(&device),
            rehash.as_deref(),
            throttle::RULES,
            &audit,
        )
        .await?;
    drop(turns);
    tracing::info!(event = %AuditAction::AuthSignedIn, user_id = %user.id, ip = %meta.ip, method = "password", "signed in");
    session::sign_in(&state, &session, &user, None, &meta, now, "password").await?;
    Ok(with_device_cookie(
        Redirect::to(&safe_next(form.next.as_deref())).into_response(),
    ))
}

#[derive(Template, WebTemplate)]
#[template(path = "auth/signup.html")]
struct SignupPage {
    csrf: String,
    mode: SignupMode,
    email: String,
    name: String,
    email_error: Option<String>,
    password_error: Option<String>,
    min_len: usize,
    max_len: usize,
    /// An open invitation's token; sign-up then works whatever the mode, for its email.
    invite: String,
    invite_org: String,
}

#[derive(Deserialize, Default)]
pub struct SignupQuery {
    #[serde(default)]
    invite: String,
}

/// The open invitation behind a token, if any.
async fn open_invitation(
    state: &AppState,
    token: &str,
) -> Result<Option<(crate::store::Invitation, String)>> {
    if token.is_empty() {
        return Ok(None);
    }
    let (inv, status, org_name) = crate::members::lookup_invitation(state, token).await?;
    Ok(inv.filter(|_| status == "open").map(|i| (i, org_name)))
}

pub async fn signup_page(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<SignupQuery>,
) -> Result<Response> {
    // Invitations open sign-up in `invite` mode, never in `closed` mode.
    let invited = if state.config.signup == SignupMode::Closed {
        None
    } else {
        open_invitation(&state, &q.invite).await?
    };
    Ok(SignupPage {
        csrf: session::csrf_token(&session).await?,
        mode: if invited.is_some() {
            SignupMode::Open
        } else {
            state.config.signup
        },
        email: invited
            .as_ref()
            .map(|(i, _)| i.email.clone())
            .unwrap_or_default(),
        name: String::new(),
        email_error: None,
        password_error: None,
        min_len: state.config.min_password_length,
        max_len: MAX_LEN,
        invite: if invited.is_some() {
            q.invite
        } else {
            String::new()
        },
        invite_org: invited.map(|(_, o)| o).unwrap_or_default(),
    }
    .into_response())
}

#[derive(Deserialize)]
pub struct SignupForm {
    email: String,
    #[serde(default)]
    name: String,
    password: SecretString,
    #[serde(default)]
    invite: String,
}

pub async fn signup(
    State(state): State<AppState>,
    session: Session,
    meta: ClientMeta,
    Form(form): Form<SignupForm>,
) -> Result<Response> {
    let email = normalize_email(&form.email);
    let invited = open_invitation(&state, &form.invite).await?;
    if state.config.signup == SignupMode::Closed {
        return Err(AppError::forbidden(format!(
            "Sign-up is closed on {}. Ask its operator for an account, then accept the invitation after signing in.",
            state.config.branding.product_name
        )));
    }
    if !form.invite.is_empty() && invited.is_none() {
        return Err(AppError::Rejected(
            StatusCode::GONE,
            "This invitation can no longer be used (it was used, revoked or has expired). Ask for a new one.".into(),
        ));
    }
    if let Some((inv, org_name)) = &invited
        && state
            .org_connection_for_email(&inv.org_id, &inv.email)
            .await?
            .is_some_and(|c| c.require_sso)
    {
        return Err(AppError::forbidden(format!(
            "{org_name} signs {} in with single sign-on. Open the invitation link and choose “Continue with SSO”.",
            inv.email
        )));
    }
    if invited.is_none() && state.config.signup != SignupMode::Open {
        return Err(AppError::forbidden(format!(
            "Sign-up is not open on {}. Ask an administrator for an invitation.",
            state.config.branding.product_name
        )));
    }
    let name: String = form.name.trim().chars().take(100).collect();
    let mut page = SignupPage {
        csrf: session::csrf_token(&session).await?,
        mode: SignupMode::Open,
        email: email.clone(),
        name: name.clone(),
        email_error: None,
        password_error: None,
        min_len: state.config.min_password_length,
        max_len: MAX_LEN,
        invite: form.invite.clone(),
        invite_org: invited.as_ref().map(|(_, o)| o.clone()).unwrap_or_default(),
    };
    if !valid_email(&email) {
        page.email_error = Some("Enter a valid email address, like you@example.com.".into());
    } else if let Some((inv, _)) = &invited
        && inv.email != email
    {
        page.email_error = Some(format!("This invitation is for {}.", inv.email));
    }
    use secrecy::ExposeSecret;
    if let Err(why) = password::check_policy(
        form.password.expose_secret(),
        &email,
        state.config.min_password_length,
        &state.config.branding.product_name,
    ) {
        page.password_error = Some(why.to_string());
    }
    if page.email_error.is_some() || page.password_error.is_some() {
        return Ok((StatusCode::BAD_REQUEST, page).into_response());
    }

    // Every path hashes, so that timing tells nothing about the address.
    let hash = state.passwords.hash(&form.password).await?;
    let Some((inv, org)) = invited else {
        // Open sign-up answers the same whether or not the address has an account: the
        // account (or, for a taken address, a notice to its owner) is made in the
        // background, and nobody is signed in. The owner of the address proves it with the
        // emailed link, then signs in with the password.
        let task_state = state.clone();
        let (task_email, task_name) = (email.clone(), name);
        tokio::spawn(async move {
            if let Err(e) = finish_open_signup(&task_state, task_email, task_name, hash, meta).await
            {
                tracing::error!(error = %e, "sign-up could not be completed");
            }
        });
        return Ok(CheckInboxPage { email }.into_response());
    };
    // An invitation proved the address: the account starts verified and signed in.
    let now = state.clock.unix();
    let local = email.split('@').next().unwrap_or("my");
    let org_name = format!(
        "{}'s organization",
        if name.is_empty() { local } else { &name }
    );
    let new = NewUser {
        email: email.clone(),
        name,
        password_hash: Some(hash),
        email_verified_at: Some(now),
    };
    let audit = meta.stamp(NewAudit::new(AuditAction::UserSignedUp, now));
    let (user, personal_org) = match state.store.create_user(&new, &org_name, now, audit).await {
        Ok(created) => created,
        Err(StoreError::Conflict) => {
            page.email_error =
                Some("An account with this email already exists. Sign in instead.".into());
            return Ok((StatusCode::CONFLICT, page).into_response());
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(event = %AuditAction::UserSignedUp, user_id = %user.id, ip = %meta.ip, "signed up");
    let mut active_org = personal_org;
    let product = &state.config.branding.product_name;
    let mut welcome = format!("Welcome to {product}! Create your first API key below.");
    {
        let audit = meta
            .stamp(NewAudit::new(AuditAction::InvitationAccepted, now))
            .org(&inv.org_id)
            .actor(Some(&user.id), &user.email)
            .target("invitation", &inv.id, &inv.email)
            .details(serde_json::json!({ "role": inv.role }));
        if state
            .store
            .accept_invitation(&inv, &user.id, now, &audit)
            .await?
        {
            active_org = inv.org_id.clone();
            welcome = format!("Welcome to {product}! You joined {org} as {}.", inv.role);
        }
    }
    session::sign_in(
        &state,
        &session,
        &user,
        Some(&active_org),
        &meta,
        now,
        "invitation",
    )
    .await?;
    session::set_flash(&session, "success", welcome).await?;
    Ok(Redirect::to("/settings/api-keys").into_response())
}

/// The one answer to an open sign-up, whatever happens next.
#[derive(Template, WebTemplate)]
#[template(path = "auth/check_inbox.html")]
struct CheckInboxPage {
    email: String,
}

/// The subject of the notice to an address that already has an account (also how the
/// notices of the last minute are found).
fn signup_taken_subject(product: &str) -> String {
    format!("Someone tried to sign up to {product} with your address")
}

/// The background half of an open sign-up: a new, unverified account and its verification
/// link; or, when the address already has an account, a notice to its owner (at most one a
/// minute, so that nobody can flood an inbox from the sign-up form).
async fn finish_open_signup(
    state: &AppState,
    email: String,
    name: String,
    hash: String,
    meta: ClientMeta,
) -> Result<()> {
    let now = state.clock.unix();
    let local = email.split('@').next().unwrap_or("my");
    let org_name = format!(
        "{}'s organization",
        if name.is_empty() { local } else { &name }
    );
    let new = NewUser {
        email: email.clone(),
        name,
        password_hash: Some(hash),
        email_verified_at: None,
    };
    let audit = meta.stamp(NewAudit::new(AuditAction::UserSignedUp, now));
    match state.store.create_user(&new, &org_name, now, audit).await {
        Ok((user, _)) => {
            tracing::info!(event = %AuditAction::UserSignedUp, user_id = %user.id, ip = %meta.ip, "signed up");
            crate::account::send_verification(state, &user).await?;
        }
        Err(StoreError::Conflict) => {
            tracing::info!(event = "user.signup_for_existing_email", ip = %meta.ip, "sign-up with an address that has an account");
            let product = &state.config.branding.product_name;
            let subject = signup_taken_subject(product);
            if state.store.recent_email(&email, &subject, now - 60).await? {
                return Ok(());
            }
            let base = &state.config.base_url;
            let body = format!(
                "Someone tried to create a {product} account with your address ({email}), which already has an account.\n\nIf it was you: sign in at {base}/login, or, if you forgot your password, choose a new one at {base}/forgot-password.\n\nIf it was not you, you can ignore this email: nothing changed on your account.\n"
            );
            state.mailer.send(&email, &subject, &body).await;
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

pub async fn logout(
    State(state): State<AppState>,
    session: Session,
    meta: ClientMeta,
) -> Result<Response> {
    let user_id = session.get::<String>(USER_ID).await?;
    // Sign-out must not depend on anything else working: delete the server-side session
    // (and expire the cookie) first.
    session.flush().await?;
    let mut to = "/login?reason=signed_out".to_string();
    if let Some(user_id) = user_id
        && let Some(user) = state.store.user(&user_id).await?
    {
        // Someone the team's app handed in signs in through that app: back there.
        if let Some(back) = &user.portal_return_url
            && crate::portal::api::check_return_url(&state.config.portal_return_origins, back)
                .is_ok()
        {
            to = back.clone();
        }
        let audit = meta
            .stamp(NewAudit::new(
                AuditAction::AuthSignedOut,
                state.clock.unix(),
            ))
            .actor(Some(&user.id), &user.email)
            .target("user", &user.id, &user.email);
        state.store.record(&audit).await?;
        tracing::info!(event = %AuditAction::AuthSignedOut, user_id = %user.id, "signed out");
    }
    Ok(Redirect::to(&to).into_response())
}

// ------------------------------------------------------------------ password reset

/// Reset links are valid this long.
pub const RESET_TTL_SECS: i64 = 30 * 60;

#[derive(Template, WebTemplate)]
#[template(path = "auth/forgot.html")]
struct ForgotPage {
    csrf: String,
    sent: bool,
}

pub async fn forgot_page(session: Session) -> Result<Response> {
    Ok(ForgotPage {
        csrf: session::csrf_token(&session).await?,
        sent: false,
    }
    .into_response())
}

#[derive(Deserialize)]
pub struct ForgotForm {
    #[serde(default)]
    email: String,
}

/// Always the same answer, whether or not the account exists; the email is sent in the
/// background so that timing does not tell either.
pub async fn forgot(
    State(state): State<AppState>,
    session: Session,
    meta: ClientMeta,
    Form(f): Form<ForgotForm>,
) -> Result<Response> {
    let email = normalize_email(&f.email);
    // Everything for a real account happens in the background, so that the response (and
    // its timing) is the same whether or not the account exists.
    let task_state = state.clone();
    tokio::spawn(async move {
        if let Err(e) = send_reset(&task_state, &email, meta).await {
            tracing::error!(error = %e, "password reset request failed");
        }
    });
    Ok(ForgotPage {
        csrf: session::csrf_token(&session).await?,
        sent: true,
    }
    .into_response())
}

async fn send_reset(state: &AppState, email: &str, meta: ClientMeta) -> Result<()> {
    if !valid_email(email) {
        return Ok(());
    }
    let Some(user) = state
        .store
        .user_by_email(email)
        .await?
        .filter(|u| u.disabled_at.is_none() && u.password_hash.is_some())
    else {
        return Ok(());
    };
    let now = state.clock.unix();
    // At most one reset email a minute per account: no flooding an inbox, no voiding the
    // latest link over and over.
    if state
        .store
        .recent_password_reset(&user.id, now - 60)
        .await?
    {
        return Ok(());
    }
    let (token, hash) = crate::members::new_link_token().map_err(AppError::internal)?;
    state
        .store
        .create_password_reset(&user.id, &hash, now, now + RESET_TTL_SECS)
        .await?;
    let audit = meta
        .stamp(NewAudit::new(AuditAction::AuthPasswordResetRequested, now))
        .actor(Some(&user.id), &user.email)
        .target("user", &user.id, &user.email);
    state.store.record(&audit).await?;
    let link = format!("{}/reset-password/{token}", state.config.base_url);
    let product = &state.config.branding.product_name;
    let body = format!(
        "Someone asked to reset the password of your {product} account ({}).\n\nChoose a new password (the link works once, for 30 minutes):\n{link}\n\nIf it was not you, ignore this email; your password stays as it is.\n",
        user.email
    );
    state
        .mailer
        .send(
            &user.email,
            &format!("Reset your {product} password"),
            &body,
        )
        .await;
    Ok(())
}

#[derive(Template, WebTemplate)]
#[template(path = "auth/reset.html")]
struct ResetPage {
    csrf: String,
    token: String,
    valid: bool,
    error: Option<String>,
    min_len: usize,
}

pub async fn reset_page(
    State(state): State<AppState>,
    session: Session,
    Path(token): Path<String>,
) -> Result<Response> {
    let hash = crate::members::link_token_hash(&token);
    let user_id = state
        .store
        .password_reset_user(&hash, state.clock.unix())
        .await?;
    let valid = user_id.is_some();
    let two_step = match &user_id {
        Some(id) => state.store.has_second_factor(id).await?,
        None => false,
    };
    let page = ResetPage {
        csrf: session::csrf_token(&session).await?,
        token,
        valid,
        error: None,
        min_len: state.config.password_min_for(two_step),
    };
    Ok((
        (if valid {
            StatusCode::OK
        } else {
            StatusCode::GONE
        }),
        page,
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct ResetForm {
    password: SecretString,
}

pub async fn reset(
    State(state): State<AppState>,
    session: Session,
    meta: ClientMeta,
    Path(token): Path<String>,
    Form(f): Form<ResetForm>,
) -> Result<Response> {
    let hash = crate::members::link_token_hash(&token);
    let now = state.clock.unix();
    let mut page = ResetPage {
        csrf: session::csrf_token(&session).await?,
        token: token.clone(),
        valid: false,
        error: None,
        min_len: state.config.min_password_length,
    };
    let Some(user_id) = state.store.password_reset_user(&hash, now).await? else {
        return Ok((StatusCode::GONE, page).into_response());
    };
    let user = state
        .store
        .user(&user_id)
        .await?
        .ok_or(AppError::NotFound)?;
    page.valid = true;
    use secrecy::ExposeSecret;
    let new_password = f.password.expose_secret();
    page.min_len = state
        .config
        .password_min_for(state.store.has_second_factor(&user.id).await?);
    if let Err(why) = password::check_policy(
        new_password,
        &user.email,
        page.min_len,
        &state.config.branding.product_name,
    ) {
        page.error = Some(why.to_string());
        return Ok((StatusCode::BAD_REQUEST, page).into_response());
    }
    let needs_two_step = new_password.chars().count() < state.config.min_password_length;
    let new_hash = state.passwords.hash(&f.password).await?;
    let audit = meta
        .stamp(NewAudit::new(AuditAction::AuthPasswordReset, now))
        .actor(Some(&user.id), &user.email)
        .target("user", &user.id, &user.email);
    match state
        .store
        .complete_password_reset(&hash, &user.id, &new_hash, needs_two_step, now, &audit)
        .await?
    {
        PasswordReset::Done => {}
        PasswordReset::LinkUnusable => {
            page.valid = false;
            return Ok((StatusCode::GONE, page).into_response());
        }
        PasswordReset::NeedsTwoStep => {
            // The last second factor went while this page was open.
            page.min_len = state.config.min_password_length;
            page.error = Some(
                password::PasswordRejection::TooShort {
                    min: page.min_len,
                    got: new_password.chars().count(),
                }
                .to_string(),
            );
            return Ok((StatusCode::BAD_REQUEST, page).into_response());
        }
    }
    tracing::info!(event = %AuditAction::AuthPasswordReset, user_id = %user.id, "password reset; other sessions signed out");
    // Every other session ended with the new epoch; this browser starts signed out too.
    session.flush().await?;
    Ok(Redirect::to("/login?reason=password_reset").into_response())
}
