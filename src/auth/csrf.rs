//! CSRF protection for every state-changing dashboard request (SECURITY.md §21): a
//! synchronizer token bound to the session, sent as the `csrf` form field (or the
//! `X-CSRF-Token` header), plus a Fetch-Metadata / Origin check. Applied as middleware to
//! the whole dashboard router, so a new form cannot forget it.

use axum::{
    body::{Body, to_bytes},
    extract::{Request, State},
    http::{HeaderMap, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use subtle::ConstantTimeEq;
use tower_sessions::Session;

use crate::{error::AppError, state::AppState};

/// Largest form body the dashboard accepts.
pub const MAX_FORM_BYTES: usize = 256 * 1024;

pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    match check(&state, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn check(state: &AppState, req: Request) -> Result<Request, AppError> {
    if !same_origin(req.headers(), &state.config.base_url) {
        tracing::warn!(event = "csrf_failed", reason = "cross-site request", path = %req.uri().path());
        return Err(AppError::Csrf);
    }
    let session = req
        .extensions()
        .get::<Session>()
        .cloned()
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("session layer missing")))?;
    let expected = super::session::stored_csrf(&session).await?;

    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| AppError::bad_request("The form is too large."))?;
    let presented = parts
        .headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| form_field(&bytes, "csrf"));

    let valid = match (expected, presented) {
        (Some(e), Some(p)) => bool::from(e.as_bytes().ct_eq(p.as_bytes())),
        _ => false,
    };
    if !valid {
        tracing::warn!(event = "csrf_failed", reason = "missing or wrong token", path = %parts.uri.path());
        return Err(AppError::Csrf);
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

fn form_field(body: &[u8], name: &str) -> Option<String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// Browsers say where a request comes from: `Sec-Fetch-Site` (modern browsers) and
/// `Origin` (on POSTs). Either one naming another site fails the check; their absence
/// (non-browser clients) leaves the token as the defence.
pub(crate) fn same_origin(headers: &HeaderMap, base_url: &str) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if origin.eq_ignore_ascii_case(base_url) {
        return true;
    }
    // Also accept the origin the request was addressed to (for deployments reached under
    // several names); the Host header is not attacker-controlled in a browser.
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn origin_rules() {
        let base = "http://127.0.0.1:8080";
        let mut h = HeaderMap::new();
        assert!(same_origin(&h, base));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&h, base));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h, base));
        h.insert(header::HOST, HeaderValue::from_static("keys.example.com"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://keys.example.com"),
        );
        assert!(same_origin(&h, base));
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&h, base));
    }

    #[test]
    fn finds_the_token_field() {
        assert_eq!(
            form_field(b"a=1&csrf=t%2Bk&b=2", "csrf").as_deref(),
            Some("t+k")
        );
        assert_eq!(form_field(b"a=1", "csrf"), None);
    }
}
