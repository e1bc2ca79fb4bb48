//! Sign-up, sign-in and sign-out pages.

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

use super::{
    normalize_email,
    password::{self, MAX_LEN},
    session::{self, AUTHENTICATED_AT, ORG_ID, SEEN_AT, USER_ID, safe_next},
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
        _ => None,
    };
    Ok(LoginPage {
        csrf: session::csrf_token(&session).await?,
        email: String::new(),
        next: safe_next(q.next.as_deref()),
        error: None,
        notice,
        signup_open: state.config.signup == SignupMode::Open,
    }
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
            let page = LoginPage {
                csrf: session::csrf_token(&session).await?,
                email,
                next: safe_next(form.next.as_deref()),
                error: Some(SIGN_IN_FAILED.into()),
                notice: None,
                signup_open: state.config.signup == SignupMode::Open,
            };
            return Ok((StatusCode::UNAUTHORIZED, page).into_response());
        }
    };

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
    start_session(&session, &user.id, None, now).await?;
    Ok(Redirect::to(&safe_next(form.next.as_deref())).into_response())
}

/// Signs the user in on this session: a new session id (against fixation), a new CSRF
/// token, and the timestamps the timeouts are measured from.
async fn start_session(
    session: &Session,
    user_id: &str,
    org_id: Option<&str>,
    now: i64,
) -> Result<()> {
    session.cycle_id().await?;
    session.clear().await;
    session.insert(USER_ID, user_id).await?;
    if let Some(org) = org_id {
        session.insert(ORG_ID, org).await?;
    }
    session.insert(AUTHENTICATED_AT, now).await?;
    session.insert(SEEN_AT, now).await?;
    session::csrf_token(session).await?;
    Ok(())
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
}

pub async fn signup_page(State(state): State<AppState>, session: Session) -> Result<Response> {
    Ok(SignupPage {
        csrf: session::csrf_token(&session).await?,
        mode: state.config.signup,
        email: String::new(),
        name: String::new(),
        email_error: None,
        password_error: None,
        min_len: state.config.min_password_length,
        max_len: MAX_LEN,
    }
    .into_response())
}

#[derive(Deserialize)]
pub struct SignupForm {
    email: String,
    #[serde(default)]
    name: String,
    password: SecretString,
}

pub async fn signup(
    State(state): State<AppState>,
    session: Session,
    meta: ClientMeta,
    Form(form): Form<SignupForm>,
) -> Result<Response> {
    if state.config.signup != SignupMode::Open {
        return Err(AppError::forbidden(
            "Sign-up is not open on this Keyward. Ask an administrator for an invitation.",
        ));
    }
    let email = normalize_email(&form.email);
    let name: String = form.name.trim().chars().take(100).collect();
    let mut page = SignupPage {
        csrf: session::csrf_token(&session).await?,
        mode: state.config.signup,
        email: email.clone(),
        name: name.clone(),
        email_error: None,
        password_error: None,
        min_len: state.config.min_password_length,
        max_len: MAX_LEN,
    };
    if !valid_email(&email) {
        page.email_error = Some("Enter a valid email address, like you@example.com.".into());
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
    let (user, org_id) = match state.store.create_user(&new, &org_name, now, audit).await {
        Ok(created) => created,
        Err(StoreError::Conflict) => {
            page.email_error =
                Some("An account with this email already exists. Sign in instead.".into());
            return Ok((StatusCode::CONFLICT, page).into_response());
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(event = "user.signed_up", user_id = %user.id, ip = %meta.ip, "signed up");
    start_session(&session, &user.id, Some(&org_id), now).await?;
    session::set_flash(
        &session,
        "success",
        "Welcome to Keyward! Create your first API key below.",
    )
    .await?;
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
