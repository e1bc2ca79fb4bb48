//! Settings → Members: the people of an organization, their roles, invitations, and what
//! happens when someone leaves (their keys stay with the organization; see the
//! "Former members" filter on the API keys page).

mod handlers;

pub use handlers::lookup_invitation;

use axum::{
    Router,
    routing::{get, post},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/settings/members", get(handlers::page))
        .route("/settings/members/{user_id}/role", post(handlers::set_role))
        .route("/settings/members/{user_id}/remove", post(handlers::remove))
        .route("/settings/members/transfer", post(handlers::transfer))
        .route("/settings/members/leave", post(handlers::leave))
        .route("/settings/invitations", post(handlers::invite))
        .route(
            "/settings/invitations/{id}/revoke",
            post(handlers::revoke_invitation),
        )
        .route(
            "/settings/invitations/{id}/resend",
            post(handlers::resend_invitation),
        )
        .route("/invitations/{token}", get(handlers::invitation_page))
        .route("/invitations/{token}/accept", post(handlers::accept))
}

/// Invitations are valid this long.
pub const INVITATION_TTL_SECS: i64 = 7 * 86_400;

/// A one-time link token (256 random bits) and the hash stored in its place.
pub fn new_link_token() -> anyhow::Result<(String, Vec<u8>)> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("OS random generator: {e}"))?;
    let token = URL_SAFE_NO_PAD.encode(b);
    let hash = link_token_hash(&token);
    Ok((token, hash))
}

/// Link tokens are stored as SHA-256 (they are random, so no salt or slow hash is needed).
pub fn link_token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}
