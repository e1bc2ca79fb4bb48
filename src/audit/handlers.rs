//! Settings → Audit log: filterable, paginated, exportable as CSV and JSON.

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    extract::{Query, State},
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use time::{Date, macros::format_description};

use super::action_label;
use crate::{
    auth::{Chrome, CurrentUser},
    error::{AppError, Result},
    orgs::Action,
    state::AppState,
    store::{AuditEvent, AuditFilter},
    templates::{Pager, TimeView, query_string},
};

const PER_PAGE: i64 = 50;
/// Most rows one export returns.
const EXPORT_LIMIT: i64 = 100_000;

#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    action: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    key: String,
    /// `YYYY-MM-DD`, inclusive (UTC).
    #[serde(default)]
    from: String,
    /// `YYYY-MM-DD`, inclusive (UTC).
    #[serde(default)]
    to: String,
    #[serde(default)]
    page: Option<i64>,
    #[serde(default)]
    format: String,
}

fn parse_day(s: &str, field: &str) -> Result<Option<i64>> {
    if s.is_empty() {
        return Ok(None);
    }
    let fmt = format_description!("[year]-[month]-[day]");
    Date::parse(s, &fmt)
        .map(|d| Some(d.midnight().assume_utc().unix_timestamp()))
        .map_err(|_| AppError::bad_request(format!("The {field} date must look like 2026-01-31.")))
}

impl AuditQuery {
    fn filter(&self) -> Result<AuditFilter> {
        Ok(AuditFilter {
            action: self.action.trim().to_string(),
            actor_email: self.actor.trim().to_lowercase(),
            target_id: self.key.trim().to_string(),
            from: parse_day(&self.from, "“from”")?,
            to: parse_day(&self.to, "“to”")?.map(|t| t + 86_400),
            before_id: None,
        })
    }

    fn query_string(&self) -> String {
        query_string(&[
            ("action", &self.action),
            ("actor", &self.actor),
            ("key", &self.key),
            ("from", &self.from),
            ("to", &self.to),
        ])
    }
}

pub struct EventRow {
    pub at: TimeView,
    pub actor: String,
    pub action: String,
    pub action_label: String,
    pub target: String,
    pub target_link: Option<String>,
    pub ip: String,
    pub user_agent: String,
    pub details: String,
}

impl EventRow {
    pub fn new(e: &AuditEvent, now: i64) -> Self {
        let target = if e.target_name.is_empty() {
            e.target_id.clone()
        } else {
            e.target_name.clone()
        };
        Self {
            at: TimeView::new(e.occurred_at, now),
            actor: if e.actor_email.is_empty() {
                "—".into()
            } else {
                e.actor_email.clone()
            },
            action: e.action.clone(),
            action_label: action_label(&e.action).to_string(),
            target,
            target_link: (e.target_type == "api_key")
                .then(|| format!("/settings/api-keys/{}", e.target_id)),
            ip: e.ip.clone(),
            user_agent: e.user_agent.clone(),
            details: if e.details == "{}" {
                String::new()
            } else {
                e.details.clone()
            },
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "settings/audit/index.html")]
struct AuditPage {
    chrome: Chrome,
    events: Vec<EventRow>,
    actions: Vec<(String, String)>,
    q: AuditQuery,
    pager: Pager,
    can_export: bool,
    export_query: String,
}

pub async fn page(
    State(state): State<AppState>,
    cu: CurrentUser,
    Query(q): Query<AuditQuery>,
) -> Result<Response> {
    cu.require(Action::ViewAudit)?;
    let filter = q.filter()?;
    let page = q.page.unwrap_or(1).clamp(1, Pager::MAX_PAGE);
    let (events, total) = state
        .store
        .list_audit(
            cu.org_id(),
            &filter,
            PER_PAGE,
            Pager::offset(page, PER_PAGE),
        )
        .await?;
    let now = state.clock.unix();
    let actions = state
        .store
        .audit_actions(cu.org_id())
        .await?
        .into_iter()
        .map(|a| {
            let label = action_label(&a).to_string();
            (a, label)
        })
        .collect();
    let base = q.query_string();
    if let Some(last) = Pager::beyond_end(page, PER_PAGE, total, "/settings/audit-log", &base) {
        return Ok(axum::response::Redirect::to(&last).into_response());
    }
    Ok(AuditPage {
        chrome: cu.chrome("audit").await?,
        events: events.iter().map(|e| EventRow::new(e, now)).collect(),
        actions,
        pager: Pager::new(page, PER_PAGE, total, base.clone()),
        can_export: cu.role.can(Action::ExportAudit),
        export_query: base,
        q,
    }
    .into_response())
}

#[derive(Serialize)]
struct ExportRow<'a> {
    id: i64,
    occurred_at: String,
    actor_email: &'a str,
    actor_id: &'a str,
    action: &'a str,
    target_type: &'a str,
    target_id: &'a str,
    target_name: &'a str,
    ip: &'a str,
    user_agent: &'a str,
    details: serde_json::Value,
    /// The row's position and hash in its chain (see `keyward audit verify`); account
    /// events belong to the chain of events without an organization.
    chain_seq: Option<i64>,
    chain_hash: &'a str,
}

impl<'a> ExportRow<'a> {
    fn new(e: &'a AuditEvent) -> Self {
        Self {
            id: e.id,
            occurred_at: crate::templates::exact_utc(crate::clock::from_unix(e.occurred_at)),
            actor_email: &e.actor_email,
            actor_id: e.actor_id.as_deref().unwrap_or(""),
            action: &e.action,
            target_type: &e.target_type,
            target_id: &e.target_id,
            target_name: &e.target_name,
            ip: &e.ip,
            user_agent: &e.user_agent,
            details: serde_json::from_str(&e.details).unwrap_or(serde_json::Value::Null),
            chain_seq: e.chain_seq,
            chain_hash: e.chain_hash.as_deref().unwrap_or(""),
        }
    }
}

/// CSV field quoting (RFC 4180), plus a leading `'` on values a spreadsheet would treat as
/// a formula (CSV injection).
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

pub async fn export(
    State(state): State<AppState>,
    cu: CurrentUser,
    Query(q): Query<AuditQuery>,
) -> Result<Response> {
    cu.require(Action::ExportAudit)?;
    if q.format == "checkpoints" {
        return checkpoints_export(&state, cu.org_id()).await;
    }
    let filter = q.filter()?;
    let (events, _) = state
        .store
        .list_audit(cu.org_id(), &filter, EXPORT_LIMIT, 0)
        .await?;
    export_response(&state, &events, &q.format)
}

/// The signed checkpoints of the organization's chain, with the public key that verifies
/// them: kept outside the database, they prove the exported rows up to each checkpoint
/// were not altered later (README, "Audit integrity").
async fn checkpoints_export(state: &AppState, org_id: &str) -> Result<Response> {
    let checkpoints = state.store.audit_checkpoints(Some(org_id)).await?;
    let public = state.config.audit_signing_key.public();
    let body = serde_json::json!({
        "format": "keyward-audit-checkpoints/v1",
        "chain": org_id,
        "public_key": public.to_base64(),
        "key_id": public.id(),
        "checkpoints": checkpoints,
    });
    let stamp = state.clock.now().date();
    let mut res = serde_json::to_string_pretty(&body)
        .map_err(AppError::internal)?
        .into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"keyward-audit-checkpoints-{stamp}.json\""
    )) {
        res.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res)
}

/// The export file of some events: `csv` (default) or `json`, as an attachment.
pub(crate) fn export_response(
    state: &AppState,
    events: &[crate::store::AuditEvent],
    format: &str,
) -> Result<Response> {
    let rows: Vec<ExportRow<'_>> = events.iter().map(ExportRow::new).collect();
    let stamp = state.clock.now().date();
    let (body, content_type, ext) = match format {
        "json" => (
            serde_json::to_string_pretty(&rows).map_err(AppError::internal)?,
            "application/json",
            "json",
        ),
        "csv" | "" => {
            let mut out = String::from(
                "id,occurred_at,actor_email,actor_id,action,target_type,target_id,target_name,ip,user_agent,details,chain_seq,chain_hash\n",
            );
            for r in &rows {
                let fields = [
                    r.id.to_string(),
                    r.occurred_at.clone(),
                    r.actor_email.to_string(),
                    r.actor_id.to_string(),
                    r.action.to_string(),
                    r.target_type.to_string(),
                    r.target_id.to_string(),
                    r.target_name.to_string(),
                    r.ip.to_string(),
                    r.user_agent.to_string(),
                    r.details.to_string(),
                    r.chain_seq.map(|s| s.to_string()).unwrap_or_default(),
                    r.chain_hash.to_string(),
                ];
                let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
                out.push_str(&line.join(","));
                out.push('\n');
            }
            (out, "text/csv; charset=utf-8", "csv")
        }
        _ => return Err(AppError::bad_request("Export format must be csv or json.")),
    };
    let disposition = format!("attachment; filename=\"keyward-audit-{stamp}.{ext}\"");
    let mut res = body.into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        res.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_quoting_and_formula_guard() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=SUM(A1)"), "'=SUM(A1)");
    }
}
