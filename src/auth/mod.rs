//! Accounts: sign-up, sign-in, sign-out; passwords, sessions and CSRF.

pub mod actor;
pub mod csrf;
pub mod extract;
mod handlers;
pub mod password;
pub mod session;
pub mod stepup;
pub mod throttle;

use axum::{
    Router,
    routing::{get, post},
};

use crate::state::AppState;

pub use extract::{Chrome, CurrentUser};
pub(crate) use handlers::login_page_with_error;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/login", get(handlers::login_page).post(handlers::login))
        .route("/signup", get(handlers::signup_page).post(handlers::signup))
        .route("/logout", post(handlers::logout))
        .route(
            "/forgot-password",
            get(handlers::forgot_page).post(handlers::forgot),
        )
        .route(
            "/reset-password/{token}",
            get(handlers::reset_page).post(handlers::reset),
        )
}

/// Emails are compared trimmed and lowercased.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// A plausible email address (the real check is a later invitation or SSO round trip).
pub fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    email.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
}

#[cfg(test)]
mod tests {
    #[test]
    fn email_shapes() {
        assert!(super::valid_email("a@b.co"));
        assert!(!super::valid_email("a@b"));
        assert!(!super::valid_email("@b.co"));
        assert!(!super::valid_email("a b@c.co"));
        assert_eq!(
            super::normalize_email("  Alice@Example.COM "),
            "alice@example.com"
        );
    }
}
