//! Sign-in hand-offs from the deploying team's app ("portal sessions").
//!
//! The team's backend, holding an operator credential, asks for a link for one of its
//! users (`POST /api/v1/portal/sessions`); the person's browser opens it, sees whom it
//! signs in as and where, and continues (a form post: a link alone never signs anyone in,
//! so a link someone sends you cannot silently put you in their account). Within
//! [`LINK_TTL_SECS`] and once, that signs them in to the account linked by (operator credential name,
//! the app's user id) — never by email, so a hand-off naming someone else's email makes
//! a separate account instead of taking one over — in the organization the team knows by
//! its external id, with the role the team gave. The dashboard then shows "Back to
//! <product>" leading to the hand-off's `return_url`, which must be on an origin the
//! operator allowed (`KEYWARD_PORTAL_RETURN_ORIGINS`).

pub mod api;

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
    routing::get,
};
use sha2::{Digest, Sha256};
use tower_sessions::Session;

use crate::{
    audit::{AuditAction, ClientMeta},
    auth::session,
    error::{AppError, Result},
    state::AppState,
    store::{NewAudit, PortalRefusal, SignInGate},
};

/// How long a hand-off link stays usable.
pub const LINK_TTL_SECS: i64 = 5 * 60;

/// The sign-in method of a hand-off the team's app vouched for as strongly authenticated:
/// organizations' two-step policies do not ask again (README: the trade-off).
pub const STRONG_METHOD: &str = "portal-strong";
/// The sign-in method of any other hand-off.
pub const METHOD: &str = "portal";

/// Where a hand-off lands.
pub const LANDING: &str = "/settings/api-keys";

pub fn router() -> Router<AppState> {
    Router::new().route("/portal/{token}", get(show).post(open))
}

/// A link's token as stored: its SHA-256 (the token itself has 256 random bits).
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn gone(state: &AppState) -> AppError {
    AppError::Rejected(
        StatusCode::GONE,
        format!(
            "This sign-in link has expired or was already used. Go back to {} and open its API keys page again for a new link.",
            state.config.branding.product_name
        ),
    )
}

#[derive(Template, WebTemplate)]
#[template(path = "auth/portal.html")]
struct ContinuePage {
    csrf: String,
    token: String,
    email: String,
    org_name: String,
    /// Someone else is signed in on this browser: continuing signs them out.
    signed_in_as: Option<String>,
}

/// The link's page: whom it signs in as, and where; nothing is used or changed yet.
async fn show(
    State(state): State<AppState>,
    session: Session,
    Path(token): Path<String>,
) -> Result<Response> {
    let now = state.clock.unix();
    let Some((grant, org_name)) = state
        .store
        .peek_portal_grant(&token_hash(&token), now)
        .await?
    else {
        return Err(gone(&state));
    };
    let signed_in_as = match session.get::<String>(session::USER_ID).await? {
        Some(id) => state
            .store
            .user(&id)
            .await?
            .filter(|u| {
                u.external_issuer.as_deref() != Some(grant.issuer.as_str())
                    || u.external_user_id.as_deref() != Some(grant.external_user_id.as_str())
            })
            .map(|u| u.email),
        None => None,
    };
    Ok(ContinuePage {
        csrf: session::csrf_token(&session).await?,
        token,
        email: grant.email,
        org_name,
        signed_in_as,
    }
    .into_response())
}

/// Uses a hand-off link (the continue form): once, before it expires. A new session id, the account and
/// organization made or updated, and the organization's two-step policy applied unless
/// the team's app vouched for a strong sign-in.
async fn open(
    State(state): State<AppState>,
    session: Session,
    meta: ClientMeta,
    Path(token): Path<String>,
) -> Result<Response> {
    let now = state.clock.unix();
    let arrival = match state
        .store
        .open_portal_grant(&token_hash(&token), now, &meta)
        .await?
    {
        Ok(a) => a,
        Err(PortalRefusal::Gone) => return Err(gone(&state)),
        Err(PortalRefusal::Disabled) => {
            return Err(AppError::forbidden(format!(
                "This account was disabled by {}. Contact its support.",
                state.config.branding.product_name
            )));
        }
    };
    let (user, org, grant) = (arrival.user, arrival.org, arrival.grant);
    if org.require_two_step && !grant.strong_auth {
        // The organization's policy holds as for a password: an account with a second
        // factor answers it now; one without is signed in and asked to set one up.
        if let Some(second_step) = crate::two_step::challenge(
            &state,
            &session,
            &user,
            LANDING,
            now,
            &crate::auth::throttle::device_hash(&session::random_token()?),
            &SignInGate::Account,
        )
        .await?
        {
            crate::two_step::land_in(&session, &org.id).await?;
            return Ok(second_step);
        }
    }
    let method = if grant.strong_auth {
        STRONG_METHOD
    } else {
        METHOD
    };
    session::sign_in(&state, &session, &user, Some(&org.id), &meta, now, method).await?;
    session::set_sign_in_method(&session, method).await?;
    let audit = meta
        .stamp(NewAudit::new(AuditAction::AuthSignedIn, now))
        .actor(Some(&user.id), &user.email)
        .target("user", &user.id, &user.email)
        .details(serde_json::json!({
            "method": method,
            "operator": grant.issuer,
            "organization": org.id,
        }));
    state.store.record(&audit).await?;
    tracing::info!(event = "auth.portal_sign_in", user_id = %user.id, org_id = %org.id, "signed in by a hand-off from the team's app");
    Ok(Redirect::to(LANDING).into_response())
}
