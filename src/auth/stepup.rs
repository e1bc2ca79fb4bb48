//! Step-up: sensitive account changes (adding or removing a sign-in factor, new recovery
//! codes, a new password) need a recent proof that the person at the keyboard is the
//! account's owner — a sign-in within the last [`WINDOW_SECS`], or a fresh check of the
//! password or a second factor on the confirm page (`/settings/account/confirm`).
//!
//! Use it as an extractor in place of [`CurrentUser`]:
//!
//! ```ignore
//! async fn change_password(State(state): State<AppState>, SteppedUp(cu): SteppedUp, …)
//! ```
//!
//! Without a recent proof, a page request is redirected to the confirm page (which comes
//! back to the page afterwards; for a form post, to the page the form was on), and a JSON
//! request (`Accept: application/json`) gets `403 {"error": {"code":
//! "reauthentication_required", "message", "confirm"}}` with the confirm page's URL.

use axum::{
    Json,
    extract::FromRequestParts,
    http::{StatusCode, header, request::Parts},
    response::{IntoResponse, Redirect, Response},
};
use tower_sessions::Session;

use super::{
    CurrentUser,
    session::{AUTHENTICATED_AT, REAUTHENTICATED_AT},
};
use crate::{error::Result, state::AppState};

/// How recent a sign-in or confirmation must be.
pub const WINDOW_SECS: i64 = 15 * 60;

/// The confirm page.
pub const CONFIRM_PATH: &str = "/settings/account/confirm";

/// Whether this session proved its owner within the window (sign-in or confirmation).
pub async fn is_fresh(session: &Session, now: i64) -> Result<bool> {
    let signed_in: i64 = session.get(AUTHENTICATED_AT).await?.unwrap_or(0);
    let confirmed: i64 = session.get(REAUTHENTICATED_AT).await?.unwrap_or(0);
    Ok(now.saturating_sub(signed_in.max(confirmed)) <= WINDOW_SECS)
}

/// Records a successful confirmation (password or second factor) on this session. Not
/// the sign-in time: the session's absolute timeout still counts from the sign-in.
pub async fn confirmed(session: &Session, now: i64) -> Result<()> {
    session.insert(REAUTHENTICATED_AT, now).await?;
    Ok(())
}

/// The confirm page's URL, returning to `next` afterwards.
pub fn confirm_url(next: &str) -> String {
    format!("{CONFIRM_PATH}?next={}", urlencoding::encode(next))
}

/// A signed-in user whose session proved its owner recently.
pub struct SteppedUp(pub CurrentUser);

impl FromRequestParts<AppState> for SteppedUp {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> std::result::Result<Self, Self::Rejection> {
        let cu = CurrentUser::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let now = state.clock.unix();
        if is_fresh(&cu.session, now)
            .await
            .map_err(IntoResponse::into_response)?
        {
            return Ok(SteppedUp(cu));
        }
        // Come back here (a page), or to the page the form or script was on.
        let next = if parts.method == axum::http::Method::GET {
            parts
                .uri
                .path_and_query()
                .map_or("/settings/account/security", |p| p.as_str())
                .to_string()
        } else {
            super::extract::referring_page(&parts.headers)
                .unwrap_or_else(|| "/settings/account/security".into())
        };
        let url = confirm_url(&super::session::safe_next(Some(&next)));
        let wants_json = parts
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("application/json"));
        if wants_json {
            return Err((
                StatusCode::FORBIDDEN,
                Json(serde_json::json!({ "error": {
                    "code": "reauthentication_required",
                    "message": "Confirm it's you first: this change needs a sign-in within the last 15 minutes.",
                    "confirm": url,
                }})),
            )
                .into_response());
        }
        Err(Redirect::to(&url).into_response())
    }
}
