//! One error type for every surface.
//!
//! A handler returns [`AppError`]; its `IntoResponse` produces a bare response carrying an
//! [`ErrorInfo`] extension. The surface's middleware then renders it: [`html_errors`] as
//! an error page for the dashboard, [`json_errors`] as
//! `{"error":{"code":…,"message":…}}` for the JSON APIs. Internal details are logged,
//! never sent.

use askama::Template;
use axum::{
    Json,
    extract::Request,
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{Html, IntoResponse, Response},
};
use serde_json::json;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the form was stale or came from another site")]
    Csrf,
    /// An extractor refused the request (bad body, too large, wrong content type).
    #[error("{1}")]
    Rejected(StatusCode, String),
    #[error("service unavailable: {0}")]
    Unavailable(#[source] anyhow::Error),
    /// Password hashing is at capacity (admission control): try again shortly.
    #[error("busy")]
    Busy,
    /// The request ran past `KEYWARD_REQUEST_TIMEOUT_SECONDS` ([`crate::deadline`]);
    /// `slow_client` when Keyward was waiting for the rest of the client's body by then.
    #[error("request timed out")]
    TimedOut { slow_client: bool },
    /// A client's budget of attempts is spent (per source address); retry after N seconds.
    #[error("too many attempts")]
    TooManyAttempts { retry_after: u64 },
    #[error("internal error: {0}")]
    Internal(#[source] anyhow::Error),
}

pub type Result<T, E = AppError> = std::result::Result<T, E>;

impl AppError {
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::Forbidden(msg.into())
    }
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::BadRequest(msg.into())
    }
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        Self::Internal(e.into())
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => AppError::Conflict("that already exists".into()),
            StoreError::Db(ref inner) if crate::store::is_unavailable(inner) => {
                AppError::Unavailable(anyhow::anyhow!(inner.to_string()))
            }
            StoreError::Db(inner) => AppError::Internal(inner.into()),
            StoreError::Unavailable(why) => AppError::Unavailable(anyhow::anyhow!(why)),
        }
    }
}

impl From<crate::auth::password::PasswordWorkError> for AppError {
    fn from(e: crate::auth::password::PasswordWorkError) -> Self {
        match e {
            crate::auth::password::PasswordWorkError::Busy => AppError::Busy,
            crate::auth::password::PasswordWorkError::Failed(e) => AppError::Internal(e),
        }
    }
}

impl From<tower_sessions::session::Error> for AppError {
    fn from(e: tower_sessions::session::Error) -> Self {
        AppError::Unavailable(anyhow::anyhow!("session store: {e}"))
    }
}

impl From<askama::Error> for AppError {
    fn from(e: askama::Error) -> Self {
        AppError::Internal(e.into())
    }
}

/// What the surface middleware needs to render an error.
#[derive(Debug, Clone)]
pub struct ErrorInfo {
    pub status: StatusCode,
    /// A stable machine-readable code (`not_found`, `forbidden`, …).
    pub code: &'static str,
    /// A message safe to show to the user.
    pub message: String,
}

impl AppError {
    fn info(&self) -> ErrorInfo {
        let (status, code, message) = match self {
            AppError::NotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                "We couldn't find that page, or you don't have access to it.".to_string(),
            ),
            AppError::Forbidden(m) => (StatusCode::FORBIDDEN, "insufficient_permissions", m.clone()),
            AppError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m.clone()),
            AppError::Conflict(m) => (StatusCode::CONFLICT, "conflict", m.clone()),
            AppError::Rejected(status, m) => (
                *status,
                if *status == StatusCode::PAYLOAD_TOO_LARGE { "payload_too_large" } else { "bad_request" },
                m.clone(),
            ),
            AppError::Csrf => (
                StatusCode::FORBIDDEN,
                "csrf_failed",
                "This form has expired or was sent from another site. Go back, reload the page and try again.".into(),
            ),
            AppError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("{} can't reach its database right now. Please try again in a moment.", crate::branding::current().product_name),
            ),
            AppError::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!("{} is handling a lot of sign-ins right now. Please try again in a few seconds.", crate::branding::current().product_name),
            ),
            AppError::TimedOut { slow_client: true } => (
                StatusCode::REQUEST_TIMEOUT,
                "timed_out",
                "Your request did not arrive in time: the connection was too slow. Please try again.".into(),
            ),
            AppError::TimedOut { slow_client: false } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "timed_out",
                format!("{} took too long to answer this request. Please try again in a moment.", crate::branding::current().product_name),
            ),
            AppError::TooManyAttempts { retry_after } => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                format!(
                    "Too many attempts from your network. Please wait {} and try again.",
                    crate::auth::throttle::describe_wait(*retry_after)
                ),
            ),
            AppError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "Something went wrong on our side. It has been logged.".into(),
            ),
        };
        ErrorInfo {
            status,
            code,
            message,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match &self {
            AppError::Internal(e) => tracing::error!(error = ?e, "internal error"),
            AppError::Unavailable(e) => tracing::warn!(error = %e, "store unavailable"),
            AppError::Csrf => tracing::warn!(event = "csrf_failed", "CSRF check failed"),
            _ => {}
        }
        let info = self.info();
        let mut res = (info.status, info.message.clone()).into_response();
        if let AppError::TooManyAttempts { retry_after } = &self {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        } else if matches!(self, AppError::Busy) {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        } else if info.status == StatusCode::REQUEST_TIMEOUT {
            // The connection is in an unknown state (part of a body unread): end it.
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        } else if info.status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        res.extensions_mut().insert(info);
        res
    }
}

#[derive(Template)]
#[template(path = "errors/error.html")]
struct ErrorPage<'a> {
    status: u16,
    title: &'a str,
    message: &'a str,
}

/// Renders [`ErrorInfo`] responses of the dashboard as HTML pages, and gives unmatched
/// routes (404/405) and extractor rejections (plain-text 4xx) a friendly page too.
pub async fn html_errors(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let plain_client_error = res.status().is_client_error()
        && res
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/plain"));
    let info = match res.extensions().get::<ErrorInfo>() {
        Some(info) => info.clone(),
        None if plain_client_error => {
            let status = res.status();
            let (parts, body) = res.into_parts();
            let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
            let res = Response::from_parts(parts, axum::body::Body::empty());
            let info = ErrorInfo {
                status,
                code: "bad_request",
                message: format!(
                    "The request could not be processed: {}",
                    String::from_utf8_lossy(&text)
                ),
            };
            return render_page(res, info);
        }
        None if res.status() == StatusCode::NOT_FOUND => AppError::NotFound.info(),
        None if res.status() == StatusCode::METHOD_NOT_ALLOWED => ErrorInfo {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: "method_not_allowed",
            message: "That action isn't available this way.".into(),
        },
        None => return res,
    };
    render_page(res, info)
}

fn render_page(res: Response, info: ErrorInfo) -> Response {
    let title = info.status.canonical_reason().unwrap_or("Error");
    let page = ErrorPage {
        status: info.status.as_u16(),
        title,
        message: &info.message,
    };
    let body = page.render().unwrap_or_else(|_| info.message.clone());
    let (mut parts, _) = res.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    (parts, Html(body)).into_response()
}

/// Renders [`ErrorInfo`] responses of the JSON APIs as `{"error":{"code","message"}}`.
pub async fn json_errors(req: Request, next: Next) -> Response {
    render_json_error(next.run(req).await)
}

/// The JSON rendering of an [`ErrorInfo`] response (others pass unchanged).
pub fn render_json_error(res: Response) -> Response {
    let Some(info) = res.extensions().get::<ErrorInfo>().cloned() else {
        return res;
    };
    let (mut parts, _) = res.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    let body = Json(json!({ "error": { "code": info.code, "message": info.message } }));
    (parts, body).into_response()
}
