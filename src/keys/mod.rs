//! API keys: the token format, the scope catalog, the typed settings ([`model`]), the rules
//! ([`service`]) and the two doors onto them: Settings → API Keys ([`web`]) and the
//! management API ([`api`]).

pub mod api;
mod bulk;
pub mod credits;
mod expiry;
mod hygiene;
pub mod import;
pub mod model;
pub mod notices;
pub mod policy;
mod rules;
pub mod scopes;
pub mod service;
pub mod token;
mod views;
mod web;

use axum::{
    Router,
    routing::{get, post},
};

use crate::state::AppState;

pub use expiry::{ExpiryChoice, GraceChoice};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/settings/api-keys", get(web::list).post(web::create))
        .route("/settings/api-keys/new", get(web::new_page))
        .route("/settings/api-keys/bulk", post(web::bulk))
        .route(
            "/settings/api-keys/hygiene",
            get(hygiene::page).post(hygiene::apply),
        )
        .route(
            "/settings/api-keys/{id}",
            get(web::detail).post(web::update),
        )
        .route("/settings/api-keys/{id}/revoke", post(web::revoke))
        .route("/settings/api-keys/{id}/roll", post(web::roll))
        .route("/settings/api-keys/{id}/enabled", post(web::set_enabled))
        .route("/settings/api-keys/{id}/credits", post(web::set_credits))
}
