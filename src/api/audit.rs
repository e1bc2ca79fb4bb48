//! `/api/v1/audit-events`: the organization's audit log, paged by cursor, and its export.

use axum::{
    Json,
    extract::{Query, State},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiResult, Caller, ErrorBody, SCOPE_READ};
use crate::{orgs::Action, state::AppState, store::AuditFilter, templates::rfc3339};

const MAX_PAGE: i64 = 200;
const EXPORT_LIMIT: i64 = 100_000;

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventView {
    pub id: i64,
    /// RFC 3339.
    pub occurred_at: String,
    /// `key.created`, `key.revoked`, `auth.signed_in`, …
    pub action: String,
    pub actor_id: Option<String>,
    pub actor_email: String,
    pub target_type: String,
    pub target_id: String,
    pub target_name: String,
    pub ip: String,
    pub user_agent: String,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub data: Vec<AuditEventView>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only this action (e.g. `key.revoked`).
    #[serde(default)]
    action: Option<String>,
    /// Only events about this key (or other target) id.
    #[serde(default)]
    key_id: Option<String>,
    /// Only events by this actor email.
    #[serde(default)]
    actor: Option<String>,
    /// RFC 3339, inclusive.
    #[serde(default)]
    since: Option<String>,
    /// RFC 3339, exclusive.
    #[serde(default)]
    until: Option<String>,
    /// 1–200 (default 50).
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportParams {
    /// `csv` (default) or `json`.
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    key_id: Option<String>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
}

fn time_param(v: &Option<String>, name: &str) -> ApiResult<Option<i64>> {
    match v.as_deref() {
        None | Some("") => Ok(None),
        Some(s) => super::parse_rfc3339(s)
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("{name} must be an RFC 3339 time."))),
    }
}

fn filter(
    action: &Option<String>,
    key_id: &Option<String>,
    actor: &Option<String>,
    since: &Option<String>,
    until: &Option<String>,
) -> ApiResult<AuditFilter> {
    Ok(AuditFilter {
        action: action.clone().unwrap_or_default(),
        actor_email: actor.clone().unwrap_or_default().trim().to_lowercase(),
        target_id: key_id.clone().unwrap_or_default(),
        from: time_param(since, "since")?,
        to: time_param(until, "until")?,
        before_id: None,
    })
}

/// The organization's audit events, newest first.
#[utoipa::path(get, path = "/api/v1/audit-events", tag = "audit", params(AuditParams),
    responses(
        (status = 200, body = AuditPage),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
    ),
    security(("api_key" = []), ("session" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    caller.require_scope(SCOPE_READ)?;
    caller.require(Action::ViewAudit)?;
    let Query(p) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let mut f = filter(&p.action, &p.key_id, &p.actor, &p.since, &p.until)?;
    let limit = p.limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_PAGE}."
        )));
    }
    f.before_id = match p.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(
            c.parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| ApiError::bad_request("cursor is not one this API returned."))?,
        ),
    };
    let (events, _) = state
        .store
        .list_audit(&caller.org_id, &f, limit + 1, 0)
        .await?;
    let more = events.len() as i64 > limit;
    let data: Vec<AuditEventView> = events
        .into_iter()
        .take(limit as usize)
        .map(|e| AuditEventView {
            id: e.id,
            occurred_at: rfc3339(e.occurred_at),
            action: e.action,
            actor_id: e.actor_id,
            actor_email: e.actor_email,
            target_type: e.target_type,
            target_id: e.target_id,
            target_name: e.target_name,
            ip: e.ip,
            user_agent: e.user_agent,
            details: serde_json::from_str(&e.details).unwrap_or(serde_json::Value::Null),
        })
        .collect();
    let next_cursor = more
        .then(|| data.last().map(|e| e.id.to_string()))
        .flatten();
    Ok(Json(AuditPage { data, next_cursor }).into_response())
}

/// Export the audit events as a CSV or JSON file (at most 100,000, newest first).
#[utoipa::path(get, path = "/api/v1/audit-events/export", tag = "audit", params(ExportParams),
    responses(
        (status = 200, description = "The file", content_type = "text/csv"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
    ),
    security(("api_key" = []), ("session" = [])))]
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<ExportParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    caller.require_scope(SCOPE_READ)?;
    caller.require(Action::ExportAudit)?;
    let Query(p) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let f = filter(&p.action, &p.key_id, &None, &p.since, &p.until)?;
    let format = p.format.unwrap_or_else(|| "csv".into());
    if format != "csv" && format != "json" {
        return Err(ApiError::bad_request("format must be csv or json."));
    }
    let (events, _) = state
        .store
        .list_audit(&caller.org_id, &f, EXPORT_LIMIT, 0)
        .await?;
    Ok(crate::audit::export_response(&state, &events, &format)?)
}
