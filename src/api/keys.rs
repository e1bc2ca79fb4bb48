//! `/api/v1/keys`: list, get, create, update, roll, revoke.

use axum::{
    Json,
    extract::{Path, Query, State, rejection::JsonRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiResult, Caller, Data, ErrorBody, SCOPE_READ, SCOPE_WRITE, data};
use crate::{
    app::AppState,
    keys::{
        GraceChoice,
        handlers::{self as form, FieldErrors, KeyForm},
    },
    orgs::Action,
    store::{ApiKey, KeyFilter, KeyStatus},
    templates::rfc3339,
};

const MAX_PAGE: i64 = 100;

/// A key as the API shows it. Never the secret (only `create` and `roll` return it, once).
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub description: String,
    /// `live` or `test`.
    pub environment: String,
    /// The start of the key, safe to show (`kw_live_AbCd`).
    pub prefix: String,
    /// The key's last four characters.
    pub last4: String,
    pub scopes: Vec<String>,
    /// `active`, `expiring_soon`, `expired`, `revoked` or `disabled`.
    pub status: String,
    /// Paused keys (`false`) fail verification until resumed.
    pub enabled: bool,
    /// RFC 3339.
    pub created_at: String,
    pub expires_at: Option<String>,
    /// When revocation took (or, after a roll, takes) effect.
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
    pub created_by: Option<String>,
    pub rate_limit: Option<i64>,
    pub rate_window_seconds: i64,
    pub rate_burst: Option<i64>,
    pub daily_quota: Option<i64>,
    pub ip_allowlist: Vec<String>,
    pub metadata: serde_json::Value,
    pub rolled_from: Option<String>,
}

impl KeyView {
    pub fn new(k: &ApiKey, now: i64) -> Self {
        let status = match k.status(now) {
            KeyStatus::Active => "active",
            KeyStatus::ExpiringSoon => "expiring_soon",
            KeyStatus::Expired => "expired",
            KeyStatus::Revoked => "revoked",
            KeyStatus::Disabled => "disabled",
        };
        Self {
            id: k.id.clone(),
            name: k.name.clone(),
            description: k.description.clone(),
            environment: k.environment.clone(),
            prefix: k.display_prefix.clone(),
            last4: k.last4.clone(),
            scopes: k.scope_list(),
            status: status.into(),
            enabled: k.enabled,
            created_at: rfc3339(k.created_at),
            expires_at: k.expires_at.map(rfc3339),
            revoked_at: k.revoked_at.map(rfc3339),
            last_used_at: k.last_used_at.map(rfc3339),
            created_by: k.creator_email.clone(),
            rate_limit: k.rate_limit,
            rate_window_seconds: k.rate_window_secs,
            rate_burst: k.rate_burst,
            daily_quota: k.daily_quota,
            ip_allowlist: k
                .ip_allowlist
                .split_whitespace()
                .map(String::from)
                .collect(),
            metadata: serde_json::from_str(&k.metadata).unwrap_or_else(|_| serde_json::json!({})),
            rolled_from: k.rolled_from.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyPage {
    pub data: Vec<KeyView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// `active`, `expiring`, `expired` or `revoked`.
    #[serde(default)]
    status: Option<String>,
    /// `live` or `test`.
    #[serde(default)]
    environment: Option<String>,
    /// Part of the name (case-insensitive).
    #[serde(default)]
    search: Option<String>,
    /// 1–100 (default 25).
    #[serde(default)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    cursor: Option<String>,
}

/// List the organization's keys, newest first.
#[utoipa::path(get, path = "/api/v1/keys", tag = "keys", params(ListParams),
    responses(
        (status = 200, body = KeyPage),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
    ),
    security(("api_key" = []), ("session" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    caller.require_scope(SCOPE_READ)?;
    caller.require(Action::ViewKeys)?;
    let Query(p) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let status = p.status.unwrap_or_default();
    if !["", "active", "expiring", "expired", "revoked"].contains(&status.as_str()) {
        return Err(ApiError::bad_request(
            "status must be active, expiring, expired or revoked.",
        ));
    }
    let environment = p.environment.unwrap_or_default();
    if !["", "live", "test"].contains(&environment.as_str()) {
        return Err(ApiError::bad_request("environment must be live or test."));
    }
    let limit = p.limit.unwrap_or(25);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_PAGE}."
        )));
    }
    let cursor = p.cursor.unwrap_or_default();
    if cursor.len() > 64 || cursor.chars().any(|c| !(c.is_ascii_hexdigit() || c == '-')) {
        return Err(ApiError::bad_request(
            "cursor is not one this API returned.",
        ));
    }
    let filter = KeyFilter {
        status,
        environment,
        name_contains: p.search.unwrap_or_default().chars().take(100).collect(),
        creator_removed: false,
    };
    let now = state.clock.unix();
    let rows = state
        .store
        .list_keys_after(&caller.org_id, &filter, now, &cursor, limit + 1)
        .await?;
    let more = rows.len() as i64 > limit;
    let page: Vec<KeyView> = rows
        .iter()
        .take(limit as usize)
        .map(|k| KeyView::new(k, now))
        .collect();
    let next_cursor = more.then(|| page.last().map(|k| k.id.clone())).flatten();
    Ok(Json(KeyPage {
        data: page,
        next_cursor,
    })
    .into_response())
}

async fn load(state: &AppState, caller: &Caller, id: &str) -> ApiResult<ApiKey> {
    state
        .store
        .key(&caller.org_id, id)
        .await?
        .ok_or_else(ApiError::not_found)
}

/// One key.
#[utoipa::path(get, path = "/api/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "Key id")),
    responses(
        (status = 200, body = Data<KeyView>),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
    ),
    security(("api_key" = []), ("session" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    caller.require_scope(SCOPE_READ)?;
    caller.require(Action::ViewKeys)?;
    let key = load(&state, &caller, &id).await?;
    Ok(data(StatusCode::OK, KeyView::new(&key, state.clock.unix())))
}

/// For PATCH fields where absent and `null` differ: absent keeps the value (`None`),
/// `null` clears it (`Some(None)`): no expiry, no limit.
fn absent_or_null<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// 1–100 characters.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// `live` or `test`.
    pub environment: String,
    /// From the deployment's scope catalog; at least one.
    pub scopes: Vec<String>,
    /// RFC 3339; absent or `null`: never expires.
    #[serde(default)]
    pub expires_at: Option<String>,
    pub rate_limit: Option<i64>,
    /// 1, 60 or 3600 (default 60).
    pub rate_window_seconds: Option<i64>,
    pub rate_burst: Option<i64>,
    pub daily_quota: Option<i64>,
    /// IP addresses or CIDR ranges.
    #[serde(default)]
    pub ip_allowlist: Vec<String>,
    /// A JSON object returned by the verifier with the key.
    #[schema(value_type = Object)]
    pub metadata: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    pub name: Option<String>,
    pub description: Option<String>,
    pub scopes: Option<Vec<String>>,
    /// RFC 3339, or `null` for never; absent: unchanged.
    #[serde(default, deserialize_with = "absent_or_null")]
    #[schema(value_type = Option<String>)]
    pub expires_at: Option<Option<String>>,
    /// `null` removes the limit.
    #[serde(default, deserialize_with = "absent_or_null")]
    #[schema(value_type = Option<i64>)]
    pub rate_limit: Option<Option<i64>>,
    pub rate_window_seconds: Option<i64>,
    #[serde(default, deserialize_with = "absent_or_null")]
    #[schema(value_type = Option<i64>)]
    pub rate_burst: Option<Option<i64>>,
    #[serde(default, deserialize_with = "absent_or_null")]
    #[schema(value_type = Option<i64>)]
    pub daily_quota: Option<Option<i64>>,
    pub ip_allowlist: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// `false` pauses the key, `true` resumes it.
    pub enabled: Option<bool>,
}

/// The new key and its secret, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: KeyView,
    /// The full key. It is not stored and cannot be shown again.
    pub secret: String,
}

/// The dashboard's window name for a window length (its one table of windows).
fn window_name(secs: i64) -> Result<&'static str, ApiError> {
    form::WINDOWS
        .iter()
        .find(|(_, _, s)| *s == secs)
        .map(|(name, _, _)| *name)
        .ok_or_else(|| invalid("rate_window_seconds", "Use 1, 60 or 3600."))
}

fn invalid(field: &str, message: &str) -> ApiError {
    let mut m = serde_json::Map::new();
    m.insert(field.into(), message.into());
    ApiError::Invalid(m)
}

fn parse_time(s: &str) -> Result<i64, ApiError> {
    super::parse_rfc3339(s).ok_or_else(|| {
        invalid(
            "expires_at",
            "Use an RFC 3339 time, like 2027-01-31T00:00:00Z.",
        )
    })
}

fn count(n: Option<i64>) -> String {
    n.map(|n| n.to_string()).unwrap_or_default()
}

fn field_errors(e: FieldErrors) -> ApiError {
    let mut m = serde_json::Map::new();
    for (name, msg) in [
        ("name", e.name),
        ("description", e.description),
        ("environment", e.environment),
        ("scopes", e.scopes),
        ("expires_at", e.expiry),
        ("rate_limit", e.limits),
        ("ip_allowlist", e.ip_allowlist),
        ("metadata", e.metadata),
    ] {
        if let Some(msg) = msg {
            m.insert(name.into(), msg.into());
        }
    }
    ApiError::Invalid(m)
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> ApiResult<T> {
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

/// Create a key. The response holds the secret, once.
#[utoipa::path(post, path = "/api/v1/keys", tag = "keys", request_body = CreateKey,
    responses(
        (status = 201, body = Data<CreatedKey>),
        (status = 400, body = ErrorBody), (status = 415, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody),
    ),
    security(("api_key" = []), ("session" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<CreateKey>, JsonRejection>,
) -> ApiResult<Response> {
    caller.require_scope(SCOPE_WRITE)?;
    caller.require(Action::CreateKey)?;
    let b = json_body(body)?;
    caller.may_mint(&b.scopes)?;
    let now = state.clock.unix();
    let expires_at = match &b.expires_at {
        Some(s) => Some(parse_time(s)?),
        None => None,
    };
    let f = KeyForm {
        name: b.name,
        description: b.description,
        environment: b.environment,
        preset: "custom".into(),
        scopes: b.scopes,
        rate_limit: count(b.rate_limit),
        rate_window: window_name(b.rate_window_seconds.unwrap_or(60))?.into(),
        rate_burst: count(b.rate_burst),
        daily_quota: count(b.daily_quota),
        ip_allowlist: b.ip_allowlist.join(" "),
        metadata: b.metadata.map(|m| m.to_string()).unwrap_or_default(),
        expires_at_exact: Some(expires_at),
        ..KeyForm::default()
    };
    let v = form::validate_new(&state, caller.role, &f, now).map_err(|e| field_errors(*e))?;
    let (new, key) = form::new_key_record(&state, &caller.org_id, &caller.user.id, v, now)?;
    let mut details = form::created_details(&new);
    details["via"] = caller.via();
    let audit = caller
        .audit("key.created", now)
        .target("api_key", &new.id, &new.name)
        .details(details);
    state.store.insert_key(&new, &audit).await?;
    tracing::info!(event = "key.created", key_id = %new.id, via = "api", "API key created");
    let stored = load(&state, &caller, &new.id).await?;
    Ok(data(
        StatusCode::CREATED,
        CreatedKey {
            key: KeyView::new(&stored, now),
            secret: key.expose().to_string(),
        },
    ))
}

/// Change a key: any of name, description, scopes, expiry, limits, allowlist, metadata,
/// enabled.
#[utoipa::path(patch, path = "/api/v1/keys/{id}", tag = "keys", request_body = UpdateKey,
    params(("id" = String, Path, description = "Key id")),
    responses(
        (status = 200, body = Data<KeyView>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody),
    ),
    security(("api_key" = []), ("session" = [])))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<UpdateKey>, JsonRejection>,
) -> ApiResult<Response> {
    caller.require_scope(SCOPE_WRITE)?;
    let key = load(&state, &caller, &id).await?;
    let b = json_body(body)?;
    if !caller
        .role
        .can_manage_key(&caller.user.id, key.created_by.as_deref())
    {
        return Err(ApiError::forbidden(format!(
            "The role {} can change only the keys it created.",
            caller.role
        )));
    }
    let now = state.clock.unix();
    if !matches!(
        key.status(now),
        KeyStatus::Active | KeyStatus::ExpiringSoon | KeyStatus::Disabled
    ) {
        return Err(ApiError::conflict(
            "Revoked and expired keys can no longer be changed.",
        ));
    }
    // A key may change only keys whose scopes it holds itself (else it could resume,
    // un-restrict or extend a broader key), and never grant more.
    caller.may_grant(&key.scope_list())?;
    if let Some(s) = &b.scopes {
        caller.may_grant(s)?;
    }
    let mut f = form::form_from_key(&key);
    if let Some(v) = b.name {
        f.name = v;
    }
    if let Some(v) = b.description {
        f.description = v;
    }
    if let Some(v) = b.scopes {
        f.scopes = v;
    }
    f.expiry = "keep".into();
    if let Some(e) = &b.expires_at {
        f.expires_at_exact = Some(match e {
            Some(s) => Some(parse_time(s)?),
            None => None,
        });
    }
    if let Some(v) = b.rate_limit {
        f.rate_limit = count(v);
    }
    if let Some(v) = b.rate_window_seconds {
        f.rate_window = window_name(v)?.into();
    }
    if let Some(v) = b.rate_burst {
        f.rate_burst = count(v);
    }
    if let Some(v) = b.daily_quota {
        f.daily_quota = count(v);
    }
    if let Some(v) = b.ip_allowlist {
        f.ip_allowlist = v.join(" ");
    }
    if let Some(v) = b.metadata {
        f.metadata = v.to_string();
    }
    let v =
        form::validate_changes(&state, caller.role, &key, &f, now).map_err(|e| field_errors(*e))?;
    if !v.diff.is_empty() {
        let audit = caller
            .audit("key.updated", now)
            .target("api_key", &key.id, &v.name)
            .details(serde_json::json!({ "changes": v.diff, "via": caller.via() }));
        if !state
            .store
            .update_key(&caller.org_id, &key.id, &v.changes, now, &audit)
            .await?
        {
            return Err(ApiError::conflict(
                "The key changed meanwhile (revoked or expired).",
            ));
        }
    }
    if let Some(enabled) = b.enabled
        && enabled != key.enabled
    {
        let action = if enabled {
            "key.enabled"
        } else {
            "key.disabled"
        };
        let audit = caller
            .audit(action, now)
            .target("api_key", &key.id, &key.name)
            .details(serde_json::json!({ "via": caller.via() }));
        state
            .store
            .set_key_enabled(&caller.org_id, &key.id, enabled, now, &audit)
            .await?;
    }
    let key = load(&state, &caller, &id).await?;
    Ok(data(StatusCode::OK, KeyView::new(&key, now)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollKey {
    /// How long the current key keeps working: `now`, `1h`, `24h` or `7d` (default `now`).
    #[serde(default)]
    #[schema(pattern = "^(now|1h|24h|7d)$")]
    pub grace: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RolledKey {
    /// The new key (same settings), with its secret shown once.
    pub key: CreatedKey,
    /// The old key's id.
    pub replaces: String,
    /// When the old key stops working (RFC 3339).
    pub old_key_valid_until: String,
}

/// Roll a key: a new key with the same settings; the old one works until the grace ends.
#[utoipa::path(post, path = "/api/v1/keys/{id}/roll", tag = "keys", request_body = RollKey,
    params(("id" = String, Path, description = "Key id")),
    responses(
        (status = 201, body = Data<RolledKey>),
        (status = 400, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 429, body = ErrorBody),
    ),
    security(("api_key" = []), ("session" = [])))]
pub async fn roll(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<RollKey>, JsonRejection>,
) -> ApiResult<Response> {
    caller.require_scope(SCOPE_WRITE)?;
    let old = load(&state, &caller, &id).await?;
    let b = json_body(body)?;
    if !caller
        .role
        .can_manage_key(&caller.user.id, old.created_by.as_deref())
    {
        return Err(ApiError::forbidden(format!(
            "The role {} can roll only the keys it created.",
            caller.role
        )));
    }
    caller.may_mint(&old.scope_list())?;
    let grace = GraceChoice::parse(b.grace.as_deref().unwrap_or("now"))
        .ok_or_else(|| invalid("grace", "Use now, 1h, 24h or 7d."))?;
    let now = state.clock.unix();
    let (new, key) = form::roll_record(&state, &old, &caller.user.id, now)?;
    let grace_until = now + grace.seconds();
    let rolled = caller
        .audit("key.rolled", now)
        .target("api_key", &old.id, &old.name)
        .details(serde_json::json!({ "new_key_id": new.id, "old_key_valid_until": grace_until, "via": caller.via() }));
    let created = caller
        .audit("key.created_by_roll", now)
        .target("api_key", &new.id, &new.name)
        .details(serde_json::json!({ "rolled_from": old.id, "via": caller.via() }));
    if !state
        .store
        .roll_key(
            &caller.org_id,
            &old.id,
            &new,
            grace_until,
            now,
            [&rolled, &created],
        )
        .await?
    {
        return Err(ApiError::conflict("Only active keys can be rolled."));
    }
    let stored = load(&state, &caller, &new.id).await?;
    Ok(data(
        StatusCode::CREATED,
        RolledKey {
            key: CreatedKey {
                key: KeyView::new(&stored, now),
                secret: key.expose().to_string(),
            },
            replaces: old.id,
            old_key_valid_until: rfc3339(grace_until),
        },
    ))
}

/// Revoke a key, at once and for good.
#[utoipa::path(post, path = "/api/v1/keys/{id}/revoke", tag = "keys",
    params(("id" = String, Path, description = "Key id")),
    responses(
        (status = 200, body = Data<KeyView>),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 429, body = ErrorBody),
    ),
    security(("api_key" = []), ("session" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    caller.require_scope(SCOPE_WRITE)?;
    let key = load(&state, &caller, &id).await?;
    if !caller
        .role
        .can_manage_key(&caller.user.id, key.created_by.as_deref())
    {
        return Err(ApiError::forbidden(format!(
            "The role {} can revoke only the keys it created.",
            caller.role
        )));
    }
    let now = state.clock.unix();
    let audit = caller
        .audit("key.revoked", now)
        .target("api_key", &key.id, &key.name)
        .details(serde_json::json!({ "via": caller.via() }));
    if !state
        .store
        .revoke_key(&caller.org_id, &key.id, now, &audit)
        .await?
    {
        return Err(ApiError::conflict("The key is already revoked."));
    }
    let key = load(&state, &caller, &id).await?;
    Ok(data(StatusCode::OK, KeyView::new(&key, now)))
}
