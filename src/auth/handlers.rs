//! Sign-up, sign-in and sign-out pages.

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Form,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use secrecy::SecretString;
use serde::Deserialize;
use tower_sessions::Session;

use super::{
    normalize_email,
    password::{self, MAX_LEN},
    session::{self, USER_ID, safe_next},
    valid_email,
};
use crate::{
    app::AppState,
    audit::ClientMeta,
    config::SignupMode,
    error::{AppError, Result},
    store::{NewAudit, NewUser, StoreError},
};

/// The one message for every failed sign-in, whatever the reason (no account, wrong
/// password, disabled account), so that it reveals nothing.
const SIGN_IN_FAILED: &str = "Incorrect email or password.";

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

pub async fn login(
    State(state): State<AppState>,
    session: Session,
    meta: ClientMeta,
    Form(form): Form<LoginForm>,
) -> Result<Response> {
    let email = normalize_email(&form.email);
    let now = state.clock.unix();
    let user = if valid_email(&email) {
        state.store.user_by_email(&email).await?
    } else {
        None
    };
    // Always run argon2, against a dummy hash when there is no account, so timing is the
    // same either way.
    let verified = state
        .passwords
        .verify(
            &form.password,
            user.as_ref().and_then(|u| u.password_hash.as_deref()),
        )
        .await
        .map_err(AppError::internal)?;

    let user = match user {
        Some(u) if verified.ok && u.disabled_at.is_none() => u,
        other => {
            let audit = meta
                .stamp(NewAudit::new("auth.sign_in_failed", now))
                .actor(other.as_ref().map(|u| u.id.as_str()), &email);
            match &other {
                Some(u) => state.store.login_failed(&u.id, &audit).await?,
                None => {
                    // Only the domain: people sometimes type their password into the email field.
                    tracing::info!(event = "auth.sign_in_failed", email_domain = %email.rsplit('@').next().unwrap_or(""), ip = %meta.ip, "sign-in failed: no such account")
                }
            }
            tracing::info!(event = "auth.sign_in_failed", ip = %meta.ip, "sign-in failed");
            let page = LoginPage::new(
                &state,
                &session,
                email,
                &safe_next(form.next.as_deref()),
                Some(SIGN_IN_FAILED.into()),
                None,
            )
            .await?;
            return Ok((StatusCode::UNAUTHORIZED, page).into_response());
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
            .stamp(NewAudit::new("auth.sign_in_failed", now))
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

    // With a second factor, the password was only the first step.
    if let Some(second_step) = crate::two_step::challenge(
        &state,
        &session,
        &user,
        &safe_next(form.next.as_deref()),
        now,
    )
    .await?
    {
        return Ok(second_step);
    }

    let rehash = if verified.needs_rehash {
        Some(
            state
                .passwords
                .hash(&form.password)
                .await
                .map_err(AppError::internal)?,
        )
    } else {
        None
    };
    let audit = meta
        .stamp(NewAudit::new("auth.signed_in", now))
        .actor(Some(&user.id), &user.email)
        .target("user", &user.id, &user.email)
        .details(serde_json::json!({ "method": "password" }));
    state
        .store
        .login_succeeded(&user.id, rehash.as_deref(), &audit)
        .await?;
    tracing::info!(event = "auth.signed_in", user_id = %user.id, ip = %meta.ip, method = "password", "signed in");
    session::sign_in(&session, &user, None, now).await?;
    Ok(Redirect::to(&safe_next(form.next.as_deref())).into_response())
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
        return Err(AppError::forbidden(
            "Sign-up is closed on this Keyward. Ask its operator for an account, then accept the invitation after signing in.",
        ));
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
        return Err(AppError::forbidden(
            "Sign-up is not open on this Keyward. Ask an administrator for an invitation.",
        ));
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
    ) {
        page.password_error = Some(why.to_string());
    }
    if page.email_error.is_some() || page.password_error.is_some() {
        return Ok((StatusCode::BAD_REQUEST, page).into_response());
    }

    let hash = state
        .passwords
        .hash(&form.password)
        .await
        .map_err(AppError::internal)?;
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
    };
    let audit = meta.stamp(NewAudit::new("user.signed_up", now));
    let (user, personal_org) = match state.store.create_user(&new, &org_name, now, audit).await {
        Ok(created) => created,
        Err(StoreError::Conflict) => {
            page.email_error =
                Some("An account with this email already exists. Sign in instead.".into());
            return Ok((StatusCode::CONFLICT, page).into_response());
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(event = "user.signed_up", user_id = %user.id, ip = %meta.ip, "signed up");
    let mut active_org = personal_org;
    let mut welcome = "Welcome to Keyward! Create your first API key below.".to_string();
    if let Some((inv, org)) = invited {
        let audit = meta
            .stamp(NewAudit::new("invitation.accepted", now))
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
            welcome = format!("Welcome to Keyward! You joined {org} as {}.", inv.role);
        }
    }
    session::sign_in(&session, &user, Some(&active_org), now).await?;
    session::set_flash(&session, "success", welcome).await?;
    Ok(Redirect::to("/settings/api-keys").into_response())
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
    if let Some(user_id) = user_id
        && let Some(user) = state.store.user(&user_id).await?
    {
        let audit = meta
            .stamp(NewAudit::new("auth.signed_out", state.clock.unix()))
            .actor(Some(&user.id), &user.email)
            .target("user", &user.id, &user.email);
        state.store.record(&audit).await?;
        tracing::info!(event = "auth.signed_out", user_id = %user.id, "signed out");
    }
    Ok(Redirect::to("/login?reason=signed_out").into_response())
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
        .stamp(NewAudit::new("auth.password_reset_requested", now))
        .actor(Some(&user.id), &user.email)
        .target("user", &user.id, &user.email);
    state.store.record(&audit).await?;
    let link = format!("{}/reset-password/{token}", state.config.base_url);
    let body = format!(
        "Someone asked to reset the password of your Keyward account ({}).\n\nChoose a new password (the link works once, for 30 minutes):\n{link}\n\nIf it was not you, ignore this email; your password stays as it is.\n",
        user.email
    );
    state
        .mailer
        .send(&user.email, "Reset your Keyward password", &body)
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
    let valid = state
        .store
        .password_reset_user(&hash, state.clock.unix())
        .await?
        .is_some();
    let page = ResetPage {
        csrf: session::csrf_token(&session).await?,
        token,
        valid,
        error: None,
        min_len: state.config.min_password_length,
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
    if let Err(why) = password::check_policy(
        f.password.expose_secret(),
        &user.email,
        state.config.min_password_length,
    ) {
        page.error = Some(why.to_string());
        return Ok((StatusCode::BAD_REQUEST, page).into_response());
    }
    let new_hash = state
        .passwords
        .hash(&f.password)
        .await
        .map_err(AppError::internal)?;
    let audit = meta
        .stamp(NewAudit::new("auth.password_reset", now))
        .actor(Some(&user.id), &user.email)
        .target("user", &user.id, &user.email);
    if !state
        .store
        .complete_password_reset(&hash, &user.id, &new_hash, now, &audit)
        .await?
    {
        page.valid = false;
        return Ok((StatusCode::GONE, page).into_response());
    }
    tracing::info!(event = "auth.password_reset", user_id = %user.id, "password reset; other sessions signed out");
    // Every other session ended with the new epoch; this browser starts signed out too.
    session.flush().await?;
    Ok(Redirect::to("/login?reason=password_reset").into_response())
}
