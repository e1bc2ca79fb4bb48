//! Settings → Account, the signed-in person's own security: their sessions (list, sign
//! out one or all others), their password (change it, optionally signing out the other
//! sessions) and the ownership of their email address (verification links). The account
//! overview page itself lives with SSO (`sso::account`), which lists the linked identities.

mod password;
mod sessions;
pub mod useragent;
mod verify_email;

pub use verify_email::{send_verification, unverified_notice};

use axum::{
    Router,
    routing::{get, post},
};

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/settings/account/sessions", get(sessions::page))
        .route(
            "/settings/account/sessions/revoke-others",
            post(sessions::revoke_others),
        )
        .route(
            "/settings/account/sessions/{handle}/revoke",
            post(sessions::revoke),
        )
        .route(
            "/settings/account/password",
            get(password::page).post(password::change),
        )
        .route("/settings/account/verify-email", post(verify_email::resend))
        .route("/verify-email", get(verify_email::required_page))
        .route(
            "/verify-email/{token}",
            get(verify_email::link_page).post(verify_email::confirm),
        )
}
