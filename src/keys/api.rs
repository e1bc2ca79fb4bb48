//! The management API's door to keys (`/api/v1/keys`): JSON becomes [`KeyInput`] or
//! [`KeyPatch`], the [`Keys`](super::service::Keys) service decides, and the outcome becomes
//! `{"data": …}` or `{"error": …}`. No rule about keys is decided here.

use axum::{
    Json,
    extract::{Path, Query, State, rejection::JsonRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    ExpiryChoice, GraceChoice,
    credits::{CreditsSpec, field_error},
    model::{
        Field, FieldErrors, IpAllowlist, KeyDraft, KeyInput, KeyPatch, Metadata, Rate, RateWindow,
        Revocation, count,
    },
    service::KeyError,
};
use crate::{
    api::{ApiError, ApiResult, Caller, Data, ErrorBody, SCOPE_READ, SCOPE_WRITE, data, json_body},
    audit::ClientMeta,
    orgs::Action,
    state::AppState,
    store::{ApiKey, CreditOp, KeyCredits, KeyFilter, KeyStatus},
    templates::rfc3339,
};

/// The refusals every management operation on keys may answer.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum Refusals {
    /// Malformed JSON, a bad query parameter, or a control character in a path id or search
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No credentials, or an unknown, expired, revoked or paused API key
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// `insufficient_permissions`: the role, the API key's scopes (a key never acts on keys
    /// broader than itself and never loosens its own restrictions), the organization's
    /// key-minting setting, or a role that can no longer grant the key's scopes
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// The API key's rate limit or quota is spent
    #[response(status = 429)]
    TooManyRequests(ErrorBody),
}

/// The refusals of an operation on one key.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum KeyRefusals {
    /// No such key in this organization
    #[response(status = 404)]
    NotFound(ErrorBody),
}

/// The refusals of an operation with a JSON body.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum BodyRefusals {
    /// The body is not JSON
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
    /// `validation_failed`: `fields` names each invalid field
    #[response(status = 422)]
    Invalid(ErrorBody),
}

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
    /// The key's last four characters (empty for an imported key whose are unknown).
    pub last4: String,
    /// Issued before Keyward and imported (`POST /api/v1/keys/import`).
    pub imported: bool,
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
    /// The key's credits; absent or `null`: unlimited.
    pub credits: Option<CreditsView>,
}

/// A key's credits as the API shows them.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreditsView {
    /// The balance as of this response (verifications spend it concurrently).
    pub remaining: i64,
    pub refill: Option<RefillView>,
    /// `key.credits_low` fires when the balance falls to this or below: the threshold set,
    /// else 10 % of the refill amount (`null`: never).
    pub low_threshold: Option<i64>,
    /// When the balance is next refilled (RFC 3339).
    pub next_refill_at: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefillView {
    /// `daily` (00:00 UTC) or `monthly` (00:00 UTC on `day`).
    #[schema(pattern = "^(daily|monthly)$")]
    pub interval: String,
    /// The balance after a refill (a refill sets the balance, it does not add to it).
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub amount: i64,
    /// For `monthly`: the day of the month, 1–31 (the last day of shorter months).
    #[schema(minimum = 1, maximum = 31)]
    pub day: Option<i64>,
}

/// Credits of a key on create and edit: a balance, a refill, or both.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditsBody {
    /// The balance. On create, absent starts at the refill amount; on edit, absent keeps
    /// the current balance.
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub remaining: Option<i64>,
    pub refill: Option<RefillView>,
    /// `key.credits_low` fires when the balance falls to this or below (default: 10 % of
    /// the refill amount).
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub low_threshold: Option<i64>,
}

impl CreditsBody {
    fn parse(&self, has_balance: bool) -> Result<KeyCredits, FieldErrors> {
        CreditsSpec {
            remaining: self.remaining,
            refill_interval: self.refill.as_ref().map(|r| r.interval.as_str()),
            refill_amount: self.refill.as_ref().map(|r| r.amount),
            refill_day: self.refill.as_ref().and_then(|r| r.day),
            low_threshold: self.low_threshold,
        }
        .parse(has_balance)
        .map_err(field_error)
    }
}

impl CreditsView {
    fn new(k: &ApiKey, now: i64) -> Option<Self> {
        let c = k.credits()?;
        Some(Self {
            remaining: c.remaining.unwrap_or(0),
            refill: c.refill.map(|r| RefillView {
                interval: r.interval_name().into(),
                amount: r.amount,
                day: r.day(),
            }),
            low_threshold: c.effective_threshold(),
            next_refill_at: c.refill.map(|r| rfc3339(r.next_boundary(now))),
        })
    }
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
            imported: k.is_imported(),
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
            credits: CreditsView::new(k, now),
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
        Refusals,
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
    let search = p.search.unwrap_or_default();
    if search.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "search cannot contain control characters.",
        ));
    }
    let filter = KeyFilter {
        status,
        environment,
        name_contains: search.chars().take(100).collect(),
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

/// One key.
#[utoipa::path(get, path = "/api/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "Key id")),
    responses(
        (status = 200, body = Data<KeyView>),
        Refusals, KeyRefusals,
    ),
    security(("api_key" = []), ("session" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    caller.require_scope(SCOPE_READ)?;
    caller.require(Action::ViewKeys)?;
    let key = state.keys().load(&caller, &id).await?;
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
    /// Credits each verification spends; absent or `null`: unlimited.
    pub credits: Option<CreditsBody>,
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
    /// New credit settings; `null` removes the limit (unlimited use); absent: unchanged.
    #[serde(default, deserialize_with = "absent_or_null")]
    #[schema(value_type = Option<CreditsBody>)]
    pub credits: Option<Option<CreditsBody>>,
}

/// The new key and its secret, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: KeyView,
    /// The full key. It is not stored and cannot be shown again.
    pub secret: String,
}

/// The management API's rendering of a refusal.
impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::NotFound => ApiError::not_found(),
            KeyError::Forbidden(m) => ApiError::forbidden(m),
            KeyError::Closed => ApiError::conflict(KeyError::CLOSED),
            KeyError::AlreadyRevoked => ApiError::conflict(KeyError::ALREADY_REVOKED),
            KeyError::Unauthenticated => ApiError::Status(
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "Present the key to revoke (Authorization: Bearer <key>); it must exist and not be revoked or expired.".into(),
            ),
            KeyError::Refused(m) => ApiError::bad_request(m),
            KeyError::Conflict(m) => ApiError::conflict(m),
            KeyError::Policy(m) => ApiError::conflict(m),
            KeyError::Invalid(errors) => invalid(&errors),
            KeyError::Internal(e) => e.into(),
        }
    }
}

fn invalid(errors: &FieldErrors) -> ApiError {
    ApiError::Invalid(
        errors
            .iter()
            .map(|(f, m)| (f.api_name().to_string(), m.into()))
            .collect(),
    )
}

fn parse_time(s: &str) -> Result<i64, String> {
    crate::api::parse_rfc3339(s)
        .ok_or_else(|| "Use an RFC 3339 time, like 2027-01-31T00:00:00Z.".to_string())
}

fn window(secs: i64) -> Result<RateWindow, String> {
    RateWindow::from_secs(secs).ok_or_else(|| "Use 1, 60 or 3600.".to_string())
}

/// A count of the API (`None`: no limit).
fn limit(n: Option<i64>, what: &str) -> Result<Option<i64>, String> {
    n.map(|n| count(n, what)).transpose()
}

impl CreateKey {
    fn into_input(self, state: &AppState) -> Result<KeyInput, FieldErrors> {
        let mut errors = FieldErrors::default();
        let mut draft = KeyDraft::common(
            &self.name,
            &self.description,
            &self.environment,
            &self.scopes,
            &state.config.scopes,
            &mut errors,
        );
        draft.expiry = errors
            .take(
                Field::Expiry,
                self.expires_at.as_deref().map(parse_time).transpose(),
            )
            .map(ExpiryChoice::Exact);
        let window = errors.take(
            Field::RateWindow,
            window(self.rate_window_seconds.unwrap_or(60)),
        );
        let rate = (|| {
            Rate {
                limit: limit(self.rate_limit, "The rate limit")?,
                window: window.unwrap_or_default(),
                burst: limit(self.rate_burst, "The burst")?,
                daily_quota: limit(self.daily_quota, "The daily quota")?,
            }
            .check()
        })();
        draft.rate = errors.take(Field::Limits, rate);
        draft.ip_allowlist = errors.take(
            Field::IpAllowlist,
            IpAllowlist::parse_text(&self.ip_allowlist.join(" ")),
        );
        draft.metadata = errors.take(
            Field::Metadata,
            Metadata::parse(&self.metadata.map(|m| m.to_string()).unwrap_or_default()),
        );
        draft.finish(errors)
    }
}

impl UpdateKey {
    fn into_patch(self, state: &AppState) -> Result<KeyPatch, FieldErrors> {
        let mut errors = FieldErrors::default();
        let mut patch = KeyPatch {
            enabled: self.enabled,
            ..KeyPatch::default()
        };
        if let Some(v) = &self.name {
            patch.name = errors.take(Field::Name, super::model::KeyName::parse(v));
        }
        if let Some(v) = &self.description {
            patch.description =
                errors.take(Field::Description, super::model::Description::parse(v));
        }
        if let Some(v) = &self.scopes {
            patch.scopes = errors.take(
                Field::Scopes,
                super::model::Scopes::parse(v, &state.config.scopes),
            );
        }
        if let Some(e) = &self.expires_at {
            let t = e.as_deref().map(parse_time).transpose();
            patch.expiry = errors.take(Field::Expiry, t).map(ExpiryChoice::Exact);
        }
        if let Some(v) = self.rate_limit {
            patch.rate_limit = errors.take(Field::Limits, limit(v, "The rate limit"));
        }
        if let Some(v) = self.rate_window_seconds {
            patch.rate_window = errors.take(Field::RateWindow, window(v));
        }
        if let Some(v) = self.rate_burst {
            patch.rate_burst = errors.take(Field::Limits, limit(v, "The burst"));
        }
        if let Some(v) = self.daily_quota {
            patch.daily_quota = errors.take(Field::Limits, limit(v, "The daily quota"));
        }
        if let Some(v) = &self.ip_allowlist {
            patch.ip_allowlist =
                errors.take(Field::IpAllowlist, IpAllowlist::parse_text(&v.join(" ")));
        }
        if let Some(v) = &self.metadata {
            patch.metadata = errors.take(Field::Metadata, Metadata::parse(&v.to_string()));
        }
        if errors.is_empty() {
            Ok(patch)
        } else {
            Err(errors)
        }
    }
}

/// The key as stored now, as the API shows it.
async fn reload(state: &AppState, caller: &Caller, id: &str) -> ApiResult<KeyView> {
    let key = state
        .store
        .key(&caller.org_id, id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(KeyView::new(&key, state.clock.unix()))
}

/// Create a key. The response holds the secret, once.
#[utoipa::path(post, path = "/api/v1/keys", tag = "keys", request_body = CreateKey,
    responses(
        (status = 201, body = Data<CreatedKey>),
        Refusals, BodyRefusals,
    ),
    security(("api_key" = []), ("session" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<CreateKey>, JsonRejection>,
) -> ApiResult<Response> {
    caller.require_scope(SCOPE_WRITE)?;
    let keys = state.keys();
    keys.may_create(&caller)?;
    let mut body = json_body(body)?;
    let credits = body.credits.take().map(|c| c.parse(false)).transpose();
    let input = body.into_input(&state);
    let (input, credits) = match (input, credits) {
        (Ok(i), Ok(c)) => (i, c),
        (Err(mut e), Err(c)) => {
            if let Some(m) = c.get(Field::Credits) {
                e.add(Field::Credits, m);
            }
            return Err(invalid(&e));
        }
        (Err(e), _) | (_, Err(e)) => return Err(invalid(&e)),
    };
    let minted = keys.create_with_credits(&caller, input, credits).await?;
    Ok(data(
        StatusCode::CREATED,
        CreatedKey {
            key: reload(&state, &caller, &minted.record.id).await?,
            secret: minted.secret.expose().to_string(),
        },
    ))
}

/// Change a key: any of name, description, scopes, expiry, limits, allowlist, metadata,
/// enabled.
#[utoipa::path(patch, path = "/api/v1/keys/{id}", tag = "keys", request_body = UpdateKey,
    params(("id" = String, Path, description = "Key id")),
    responses(
        (status = 200, body = Data<KeyView>),
        (status = 409, description = "`conflict`: the key is revoked or expired and can no longer be changed", body = ErrorBody),
        Refusals, KeyRefusals, BodyRefusals,
    ),
    security(("api_key" = []), ("session" = [])))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<UpdateKey>, JsonRejection>,
) -> ApiResult<Response> {
    caller.require_scope(SCOPE_WRITE)?;
    let keys = state.keys();
    let key = keys.load(&caller, &id).await?;
    let mut b = json_body(body)?;
    keys.may_update(&caller, &key)?;
    let credits = b
        .credits
        .take()
        .map(|c| {
            c.as_ref()
                .map(|c| c.parse(key.credits_remaining.is_some()))
                .transpose()
        })
        .transpose();
    let patch = b.into_patch(&state);
    let (patch, credits) = match (patch, credits) {
        (Ok(p), Ok(c)) => (p, c),
        (Err(e), _) | (_, Err(e)) => return Err(invalid(&e)),
    };
    // Every refusal before any write: the credits' rules, then the edit (which checks its
    // own), then the credits.
    if let Some(credits) = &credits {
        keys.may_set_credit_settings(&caller, &key, credits.as_ref())?;
    }
    keys.update(&caller, &key.id, patch).await?;
    if let Some(credits) = credits {
        let key = keys.load(&caller, &key.id).await?;
        keys.set_credit_settings(&caller, &key, credits).await?;
    }
    Ok(data(
        StatusCode::OK,
        reload(&state, &caller, &key.id).await?,
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeCredits {
    /// `set` the balance, `increment` it or `decrement` it (never below 0: refused with 409).
    #[schema(pattern = "^(set|increment|decrement)$")]
    pub op: String,
    /// A whole number from 0 to 1,000,000,000.
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub value: i64,
}

/// Change a key's credit balance. `set` also gives an unlimited key a balance (and counts
/// as a refill: the next one comes at the next boundary); `increment` and `decrement`
/// apply a refill that has fallen due first. Audited as `key.credits_changed`. An API key
/// may lower its own balance but not raise it.
#[utoipa::path(post, path = "/api/v1/keys/{id}/credits", tag = "keys", request_body = ChangeCredits,
    params(("id" = String, Path, description = "Key id")),
    responses(
        (status = 200, body = Data<KeyView>),
        (status = 409, description = "`conflict`: the key is revoked or expired, has no credit limit (increment, decrement), or has fewer credits than the decrement", body = ErrorBody),
        Refusals, KeyRefusals, BodyRefusals,
    ),
    security(("api_key" = []), ("session" = [])))]
pub async fn change_credits(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<ChangeCredits>, JsonRejection>,
) -> ApiResult<Response> {
    caller.require_scope(SCOPE_WRITE)?;
    let b = json_body(body)?;
    let value = b.value;
    if !(0..=super::model::MAX_LIMIT).contains(&value) {
        return Err(invalid(&field_error(format!(
            "value must be a whole number from 0 to {}.",
            super::model::MAX_LIMIT
        ))));
    }
    let op = match b.op.as_str() {
        "set" => CreditOp::Set(value),
        "increment" => CreditOp::Increment(value),
        "decrement" => CreditOp::Decrement(value),
        _ => {
            return Err(invalid(&field_error(
                "op must be set, increment or decrement.".into(),
            )));
        }
    };
    let (key, _) = state.keys().change_credits(&caller, &id, op).await?;
    Ok(data(
        StatusCode::OK,
        reload(&state, &caller, &key.id).await?,
    ))
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
        (status = 409, description = "`conflict`: only active keys can be rolled, and only while their expiry fits the organization's maximum key lifetime", body = ErrorBody),
        Refusals, KeyRefusals, BodyRefusals,
    ),
    security(("api_key" = []), ("session" = [])))]
pub async fn roll(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<RollKey>, JsonRejection>,
) -> ApiResult<Response> {
    caller.require_scope(SCOPE_WRITE)?;
    let b = json_body(body)?;
    let grace = GraceChoice::parse(b.grace.as_deref().unwrap_or("now"))
        .ok_or_else(|| invalid(&FieldErrors::one(Field::Grace, "Use now, 1h, 24h or 7d.")))?;
    let rolled = match state.keys().roll(&caller, &id, grace).await {
        Err(KeyError::Closed) => return Err(ApiError::conflict(KeyError::NOT_ROLLABLE)),
        other => other?,
    };
    Ok(data(
        StatusCode::CREATED,
        RolledKey {
            key: CreatedKey {
                key: reload(&state, &caller, &rolled.new.record.id).await?,
                secret: rolled.new.secret.expose().to_string(),
            },
            replaces: rolled.old.id,
            old_key_valid_until: rfc3339(rolled.grace_until),
        },
    ))
}

/// Revoke a key, at once and for good, optionally saying why (shown in the audit log, on
/// the key's page and in the `key.revoked` webhook). An API key may revoke only keys whose
/// scopes it holds (itself included).
#[utoipa::path(post, path = "/api/v1/keys/{id}/revoke", tag = "keys",
    request_body(content = Option<RevokeKey>, description = "Optional: the reason and a note"),
    params(("id" = String, Path, description = "Key id")),
    responses(
        (status = 200, body = Data<KeyView>),
        (status = 409, description = "`conflict`: the key is already revoked", body = ErrorBody),
        (status = 422, description = "`validation_failed`: an unknown reason, or \"other\" without a note", body = ErrorBody),
        Refusals, KeyRefusals,
    ),
    security(("api_key" = []), ("session" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    caller.require_scope(SCOPE_WRITE)?;
    // The body is optional: no body (or `{}`) revokes without a reason.
    let b: RevokeKey = if body.iter().all(u8::is_ascii_whitespace) {
        RevokeKey::default()
    } else {
        // An object only: serde would also take the fields as an array (`[null, null]`).
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(v @ serde_json::Value::Object(_)) => serde_json::from_value(v)
                .map_err(|e| ApiError::bad_request(format!("Malformed JSON body: {e}")))?,
            Ok(_) => {
                return Err(ApiError::bad_request(
                    "The body must be a JSON object, such as {\"reason\": \"rotated\"}.",
                ));
            }
            Err(e) => return Err(ApiError::bad_request(format!("Malformed JSON body: {e}"))),
        }
    };
    // In JSON a reason is given or left out; an empty one is neither (the form's "no
    // reason" is its empty choice, which JSON spells by leaving the field out).
    if b.reason.as_deref().is_some_and(|r| r.trim().is_empty()) {
        return Err(invalid(&FieldErrors::one(
            Field::Reason,
            "Give one of compromised, no_longer_needed, rotated, member_left or other, or leave \"reason\" out.",
        )));
    }
    let revocation = Revocation::parse(
        b.reason.as_deref().unwrap_or(""),
        b.note.as_deref().unwrap_or(""),
    )
    .map_err(|m| invalid(&FieldErrors::one(Field::Reason, m)))?;
    let key = state.keys().revoke(&caller, &id, &revocation).await?;
    Ok(data(
        StatusCode::OK,
        reload(&state, &caller, &key.id).await?,
    ))
}

/// Why a key is revoked (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeKey {
    /// `compromised`, `no_longer_needed`, `rotated`, `member_left` or `other` (needs a `note`).
    #[schema(pattern = "^(compromised|no_longer_needed|rotated|member_left|other)$")]
    pub reason: Option<String>,
    /// Up to 200 characters, shown with the reason in the audit log and on the key's page.
    pub note: Option<String>,
}

/// Revoke the key that authenticates this request, at once and for good: whoever holds a
/// key can end it, for instance on finding it leaked. Needs no scope (crates.io's
/// `DELETE /api/v1/tokens/current`). The audit event and the `key.revoked` webhook name
/// the key itself as the actor.
#[utoipa::path(delete, path = "/api/v1/keys/current", tag = "keys",
    responses(
        (status = 204, description = "The presented key is revoked"),
        (status = 401, description = "`invalid_api_key`: no key, or an unknown, expired or already revoked key", body = ErrorBody),
    ),
    security(("api_key" = [])))]
pub async fn revoke_current(
    State(state): State<AppState>,
    meta: ClientMeta,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let presented =
        crate::verify::http::presented_key(&state, &headers).ok_or(KeyError::Unauthenticated)?;
    state.keys().revoke_by_possession(presented, &meta).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
