//! Email ownership: the verification link (single use, 24 hours, stored hashed), sending
//! it again from the account page, and the page an unverified account sees when the
//! operator requires verification (`KEYWARD_REQUIRE_EMAIL_VERIFICATION`).
//!
//! The link verifies the address; it never signs anyone in (that would let a link skip the
//! password and any second factor). Confirming is a POST from the link's page: mail
//! scanners that fetch links do not confirm anything, and nothing changes on a GET.

use crate::audit::AuditAction;
use askama::Template;
use askama_web::WebTemplate;
use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use tower_sessions::Session;

use crate::{
    audit::ClientMeta,
    auth::{CurrentUser, extract::SignedInUser, session},
    error::{AppError, Result},
    members::{link_token_hash, new_link_token},
    state::AppState,
    store::{NewAudit, User},
};

/// Verification links are valid this long.
pub const VERIFY_TTL_SECS: i64 = 24 * 3600;
/// At most one verification email a minute per account.
const RESEND_INTERVAL_SECS: i64 = 60;

/// Creates a verification link for the user's address and emails it. Throttled: returns
/// false (and sends nothing) when one was sent less than a minute ago.
pub async fn send_verification(state: &AppState, user: &User) -> Result<bool> {
    let now = state.clock.unix();
    if state
        .store
        .recent_email_verification(&user.id, now - RESEND_INTERVAL_SECS)
        .await?
    {
        return Ok(false);
    }
    let (token, hash) = new_link_token().map_err(AppError::internal)?;
    state
        .store
        .create_email_verification(user, &hash, now, now + VERIFY_TTL_SECS)
        .await?;
    let link = format!("{}/verify-email/{token}", state.config.base_url);
    let product = &state.config.branding.product_name;
    let body = format!(
        "Confirm that {} is your email address for {product}:\n{link}\n\nThe link works once, for 24 hours. It confirms the address; then sign in with your password.\n\nIf you did not create a {product} account, ignore this email.\n",
        user.email
    );
    state
        .mailer
        .send(
            &user.email,
            &format!("Confirm your email address for {product}"),
            &body,
        )
        .await;
    Ok(true)
}

#[derive(Template, WebTemplate)]
#[template(path = "auth/verify_email.html")]
struct LinkPage {
    csrf: String,
    token: String,
    /// The address the link confirms, when the link is usable.
    email: Option<String>,
    done: bool,
}

pub async fn link_page(
    State(state): State<AppState>,
    session: Session,
    Path(token): Path<String>,
) -> Result<Response> {
    let email = state
        .store
        .email_verification(&link_token_hash(&token), state.clock.unix())
        .await?;
    let status = if email.is_some() {
        StatusCode::OK
    } else {
        StatusCode::GONE
    };
    let page = LinkPage {
        csrf: session::csrf_token(&session).await?,
        token,
        email,
        done: false,
    };
    Ok((status, page).into_response())
}

pub async fn confirm(
    State(state): State<AppState>,
    session: Session,
    cu: Option<SignedInUser>,
    meta: ClientMeta,
    Path(token): Path<String>,
) -> Result<Response> {
    let now = state.clock.unix();
    let audit = meta.stamp(NewAudit::new(AuditAction::AccountEmailVerified, now));
    let Some(user) = state
        .store
        .verify_email(&link_token_hash(&token), now, audit)
        .await?
    else {
        let page = LinkPage {
            csrf: session::csrf_token(&session).await?,
            token,
            email: None,
            done: false,
        };
        return Ok((StatusCode::GONE, page).into_response());
    };
    tracing::info!(event = %AuditAction::AccountEmailVerified, user_id = %user.id, "email verified");
    // Already signed in here as that account: back to the dashboard. Anyone else signs in
    // with their password (and second factor) as always.
    if let Some(SignedInUser(cu)) = cu
        && cu.user.id == user.id
    {
        cu.flash("success", format!("Thanks: {} is confirmed.", user.email))
            .await?;
        return Ok(Redirect::to("/settings/account").into_response());
    }
    let page = LinkPage {
        csrf: session::csrf_token(&session).await?,
        token: String::new(),
        email: Some(user.email),
        done: true,
    };
    Ok(page.into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "auth/verify_required.html")]
struct RequiredPage {
    csrf: String,
    email: String,
    flash: Option<session::Flash>,
}

/// Where an unverified account lands when the operator requires verification.
pub async fn required_page(
    State(state): State<AppState>,
    SignedInUser(cu): SignedInUser,
) -> Result<Response> {
    if cu.user.email_verified() || !state.config.require_email_verification {
        return Ok(Redirect::to("/settings/api-keys").into_response());
    }
    Ok(RequiredPage {
        csrf: cu.csrf.clone(),
        email: cu.user.email.clone(),
        flash: session::take_flash(&cu.session).await?,
    }
    .into_response())
}

/// "Resend verification email" (account page, and the page above).
pub async fn resend(
    State(state): State<AppState>,
    SignedInUser(cu): SignedInUser,
) -> Result<Response> {
    let back = if state.config.require_email_verification {
        "/verify-email"
    } else {
        "/settings/account"
    };
    if cu.user.email_verified() {
        cu.flash("info", format!("{} is already confirmed.", cu.user.email))
            .await?;
        return Ok(Redirect::to(back).into_response());
    }
    if send_verification(&state, &cu.user).await? {
        cu.flash(
            "success",
            format!(
                "We sent a new link to {}. It works once, for 24 hours; earlier links no longer work.",
                cu.user.email
            ),
        )
        .await?;
    } else {
        cu.flash(
            "info",
            "We sent a link less than a minute ago. Check your inbox (and spam folder), or try again in a minute.",
        )
        .await?;
    }
    Ok(Redirect::to(back).into_response())
}

/// Explains, on pages whose action needs a verified address, why it is not offered.
pub fn unverified_notice(cu: &CurrentUser) -> Option<String> {
    (!cu.user.email_verified()).then(|| cu.user.email.clone())
}
