//! The JSON management API (`/api/v1`) and its OpenAPI document.
//!
//! Callers authenticate with a dashboard session (writes then need the session's CSRF token
//! in `X-CSRF-Token`) or with an API key holding the catalog's management scopes
//! (`keys:read`, `keys:write`). A key acts with its creator's current role in the key's
//! organization, never grants scopes it does not hold, and may create or roll keys only when
//! the organization allows it (Settings → Key defaults). Success is `{"data": …}`, failure
//! `{"error": {"code", "message"}}`. The keys routes are the keys feature's API door
//! (`crate::keys::api`); its rules live in the keys service, shared with the dashboard.

mod audit;
pub mod keys_import;
pub mod openapi;
pub mod operator;
pub mod orgs;

use axum::{
    Json,
    extract::{ConnectInfo, FromRequestParts},
    http::{Method, StatusCode, request::Parts},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use crate::{
    audit::ClientMeta,
    auth::{
        CurrentUser,
        actor::{ActingKey, Actor, Door},
        extract::AuthRejection,
        session,
    },
    orgs::{Action, Role},
    state::AppState,
    verify::{VerifyCode, VerifyRequest, http as verify_http},
};

/// The scope that lets a key read keys and the audit log.
pub const SCOPE_READ: &str = "keys:read";
/// The scope that lets a key change keys (and read them).
pub const SCOPE_WRITE: &str = "keys:write";

pub use openapi::router;

/// `{"error": {"code", "message"}}`, optionally with per-field messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `unauthorized`, `invalid_api_key`,
    /// `insufficient_permissions`, `two_step_required`, `not_found`, `conflict`, `validation_failed`,
    /// `rate_limit_exceeded`, `bad_request`, …
    pub code: String,
    pub message: String,
    /// For `validation_failed`: the message of each field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<serde_json::Map<String, serde_json::Value>>,
}

/// An API failure: status and body (or a ready response from the verifier's doors).
#[derive(Debug)]
pub enum ApiError {
    Status(StatusCode, &'static str, String),
    Invalid(serde_json::Map<String, serde_json::Value>),
    Ready(Box<Response>),
}

impl ApiError {
    pub fn not_found() -> Self {
        Self::Status(
            StatusCode::NOT_FOUND,
            "not_found",
            "No such key in this organization.".into(),
        )
    }
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::Status(
            StatusCode::FORBIDDEN,
            "insufficient_permissions",
            msg.into(),
        )
    }
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::Status(StatusCode::BAD_REQUEST, "bad_request", msg.into())
    }
    pub fn conflict(msg: impl Into<String>) -> Self {
        Self::Status(StatusCode::CONFLICT, "conflict", msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Ready(r) => *r,
            ApiError::Status(status, code, message) => (
                status,
                Json(ErrorBody {
                    error: ErrorDetail {
                        code: code.into(),
                        message,
                        fields: None,
                    },
                }),
            )
                .into_response(),
            ApiError::Invalid(fields) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(ErrorBody {
                    error: ErrorDetail {
                        code: "validation_failed".into(),
                        message: "Some fields are not valid; see `fields`.".into(),
                        fields: Some(fields),
                    },
                }),
            )
                .into_response(),
        }
    }
}

impl From<crate::error::AppError> for ApiError {
    fn from(e: crate::error::AppError) -> Self {
        // The JSON error middleware renders it (`{"error": {"code", "message"}}`).
        ApiError::Ready(Box::new(e.into_response()))
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        crate::error::AppError::from(e).into()
    }
}

pub type ApiResult<T> = std::result::Result<T, ApiError>;

/// A JSON body, or the API's error for a malformed one (400, 413, 415).
pub(crate) fn json_body<T>(
    body: std::result::Result<Json<T>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<T> {
    body.map(|Json(b)| b).map_err(|e| {
        let status = e.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            _ => "bad_request",
        };
        let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
            StatusCode::BAD_REQUEST
        } else {
            status
        };
        ApiError::Status(
            status,
            code,
            format!("Malformed JSON body: {}", e.body_text()),
        )
    })
}

/// An RFC 3339 time as Unix seconds (the API's one time format).
pub(crate) fn parse_rfc3339(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// `{"data": …}`
#[derive(Debug, Serialize, ToSchema)]
pub struct Data<T> {
    pub data: T,
}

pub fn data<T: Serialize>(status: StatusCode, value: T) -> Response {
    (status, Json(Data { data: value })).into_response()
}

/// Who is calling: the [`Actor`] of the management API (a session or an API key).
pub struct Caller(pub Actor);

impl std::ops::Deref for Caller {
    type Target = Actor;
    fn deref(&self) -> &Actor {
        &self.0
    }
}

impl Caller {
    /// The role must allow `action`.
    pub fn require(&self, action: Action) -> ApiResult<()> {
        if self.role.can(action) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "The role {} does not allow this.",
                self.role
            )))
        }
    }

    /// A key must hold `scope` (`keys:write` includes `keys:read`).
    pub fn require_scope(&self, scope: &str) -> ApiResult<()> {
        match &self.key {
            None => Ok(()),
            Some(k)
                if k.scopes.iter().any(|s| s == scope)
                    || (scope == SCOPE_READ && k.scopes.iter().any(|s| s == SCOPE_WRITE)) =>
            {
                Ok(())
            }
            Some(_) => Err(ApiError::forbidden(format!(
                "This API key lacks the scope {scope}."
            ))),
        }
    }
}

fn unauthorized() -> ApiError {
    ApiError::Status(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Authenticate with an API key (Authorization: Bearer <key>) or a dashboard session.".into(),
    )
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let meta = ClientMeta::from_request_parts(parts, state)
            .await
            .unwrap_or_default();
        if let Some(key) = verify_http::presented_key(state, &parts.headers) {
            return by_key(parts, state, key.to_string(), meta).await;
        }
        let cu = match CurrentUser::from_request_parts(parts, state).await {
            Ok(cu) => cu,
            Err(AuthRejection::SignIn { .. }) => return Err(unauthorized()),
            Err(AuthRejection::VerifyEmail) => {
                return Err(ApiError::Status(
                    StatusCode::FORBIDDEN,
                    "email_unverified",
                    "Verify your account's email address first (the dashboard shows how).".into(),
                ));
            }
            Err(AuthRejection::TwoStepRequired { org_name }) => {
                return Err(ApiError::Status(
                    StatusCode::FORBIDDEN,
                    "two_step_required",
                    format!(
                        "{org_name} requires two-step verification for password sign-ins. Set up an authenticator app or a passkey in Settings → Account → Security ({}{}), then try again.",
                        state.config.base_url,
                        crate::two_step::SECURITY_PATH
                    ),
                ));
            }
            Err(AuthRejection::Error(e)) => return Err(e.into()),
        };
        if parts.method != Method::GET && parts.method != Method::HEAD {
            // A cookie came along by itself: the CSRF token must be sent on purpose.
            let sent = parts
                .headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let ok = session::stored_csrf(&cu.session)
                .await?
                .is_some_and(|t| bool::from(t.as_bytes().ct_eq(sent.as_bytes())));
            if !ok {
                return Err(ApiError::Status(
                    StatusCode::FORBIDDEN,
                    "csrf_failed",
                    "Send the session's CSRF token in the X-CSRF-Token header (it is in the dashboard's <meta name=\"csrf-token\">).".into(),
                ));
            }
        }
        Ok(Caller(Actor {
            door: Door::Api,
            ..Actor::member(&cu, meta)
        }))
    }
}

async fn by_key(
    parts: &Parts,
    state: &AppState,
    key: String,
    meta: ClientMeta,
) -> ApiResult<Caller> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    let started = std::time::Instant::now();
    let v = state
        .verifier
        .check(&VerifyRequest {
            key: Some(&key),
            scopes: &[],
            ip: verify_http::client_ip(state, &parts.headers, peer),
            // Managing keys is not a use of the deploying team's API: it costs no credits.
            cost: 0,
        })
        .await
        .map_err(|e| ApiError::Ready(Box::new(verify_http::fail_closed(e).into_response())))?;
    state
        .metrics
        .verification(crate::metrics::Door::ManagementApi, v.code, started);
    if v.code != VerifyCode::Valid {
        let mut res = verify_http::forward_auth_response(&v, false);
        verify_http::rate_limit_headers(&mut res, &v);
        return Err(ApiError::Ready(Box::new(res)));
    }
    let scopes = v.scope_list().to_vec();
    if !scopes.iter().any(|s| s == SCOPE_READ || s == SCOPE_WRITE) {
        return Err(ApiError::forbidden(format!(
            "This API key has neither {SCOPE_READ} nor {SCOPE_WRITE}, the management scopes."
        )));
    }
    let (Some(key_id), Some(org_id)) = (
        v.key_id().map(str::to_string),
        v.org_id().map(str::to_string),
    ) else {
        return Err(unauthorized());
    };
    let record = state
        .store
        .key(&org_id, &key_id)
        .await?
        .ok_or_else(unauthorized)?;
    // The key acts with its creator's current role in its organization.
    let creator = match &record.created_by {
        Some(id) => state.store.user(id).await?,
        None => None,
    };
    let membership = match &creator {
        Some(u) => state.store.membership(&u.id, &org_id).await?,
        None => None,
    };
    let creator = creator.filter(|u| u.disabled_at.is_none());
    let (Some(user), Some(m)) = (creator, membership) else {
        return Err(ApiError::forbidden(
            "This key's creator is no longer a member of the organization; management keys act with their creator's role.",
        ));
    };
    let role = Role::parse(&m.role).ok_or_else(|| ApiError::forbidden("Unknown role."))?;
    let org = state.store.org(&org_id).await?;
    Ok(Caller(Actor {
        user,
        org_id,
        role,
        key: Some(ActingKey {
            id: key_id,
            scopes,
            may_mint: org.is_some_and(|o| o.api_keys_can_create_keys),
        }),
        meta,
        door: Door::Api,
    }))
}
