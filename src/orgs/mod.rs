//! Organizations: creating them, switching between them, and the role model.

pub mod external;
mod handlers;
mod roles;

use axum::{
    Router,
    routing::{get, post},
};

use crate::state::AppState;

pub use roles::{Action, Role};

/// An organization's name (already trimmed): 1 to 100 characters, no control characters.
pub fn check_name(name: &str) -> Result<(), String> {
    let len = name.chars().count();
    if len == 0 || len > 100 || name.chars().any(char::is_control) {
        return Err("Give the organization a name of 1 to 100 characters.".into());
    }
    Ok(())
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/orgs/new", get(handlers::new_page))
        .route("/orgs", post(handlers::create))
        .route("/orgs/switch", post(handlers::switch))
        .route(
            "/settings/organization",
            get(handlers::settings).post(handlers::save_settings),
        )
        .route(
            "/settings/organization/api-access",
            post(handlers::save_api_access),
        )
        .route(
            "/settings/organization/key-policy",
            post(handlers::save_key_policy),
        )
}
