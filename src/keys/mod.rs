//! API keys: the token format, the scope catalog, and Settings → API Keys.

mod expiry;
pub(crate) mod handlers;
pub mod notices;
pub mod scopes;
pub mod token;

use axum::{
    Router,
    routing::{get, post},
};

use crate::app::AppState;

pub use expiry::{ExpiryChoice, GraceChoice};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/settings/api-keys",
            get(handlers::list).post(handlers::create),
        )
        .route("/settings/api-keys/new", get(handlers::new_page))
        .route("/settings/api-keys/bulk", post(handlers::bulk))
        .route(
            "/settings/api-keys/{id}",
            get(handlers::detail).post(handlers::update),
        )
        .route("/settings/api-keys/{id}/revoke", post(handlers::revoke))
        .route("/settings/api-keys/{id}/roll", post(handlers::roll))
        .route(
            "/settings/api-keys/{id}/enabled",
            post(handlers::set_enabled),
        )
}
