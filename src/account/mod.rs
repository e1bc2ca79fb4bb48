//! Settings → Account, the signed-in person's own security: their sessions (list, sign
//! out one or all others) and their password (change it, optionally signing out the other
//! sessions). The account overview page itself lives with SSO (`sso::account`), which
//! lists the linked identities.

mod password;
mod sessions;
pub mod useragent;

use axum::{
    Router,
    routing::{get, post},
};

use crate::app::AppState;

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
}
