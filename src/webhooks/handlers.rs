//! Settings → Webhooks: endpoints, their events, recent deliveries, "Send test event".

use crate::audit::AuditAction;
use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Form,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use axum_extra::extract::Form as MultiForm;
use serde::Deserialize;

use super::TEST_EVENT;
use crate::{
    audit::ClientMeta,
    auth::{Chrome, CurrentUser, session},
    error::{AppError, Result},
    orgs::Action,
    state::AppState,
    store::{
        NewAudit,
        webhooks::{Delivery, Webhook},
    },
    templates::TimeView,
};

pub struct DeliveryRow {
    pub id: String,
    pub event_type: String,
    pub status: String,
    pub attempts: i64,
    pub code: String,
    pub error: String,
    pub created: TimeView,
    pub next: Option<TimeView>,
}

pub struct EndpointView {
    pub id: String,
    pub url: String,
    pub description: String,
    pub events: Vec<String>,
    pub created: TimeView,
    pub deliveries: Vec<DeliveryRow>,
}

#[derive(Template, WebTemplate)]
#[template(path = "settings/webhooks/index.html")]
struct Page {
    chrome: Chrome,
    endpoints: Vec<EndpointView>,
    /// (event type, description, checked)
    events: Vec<(&'static str, &'static str, bool)>,
    url: String,
    description: String,
    error: Option<String>,
    form_token: String,
    /// The signing secret of the endpoint just added: shown this once.
    new_secret: Option<(String, String)>,
}

async fn render(
    state: &AppState,
    cu: &CurrentUser,
    form: Option<&WebhookForm>,
    error: Option<String>,
    new_secret: Option<(String, String)>,
) -> Result<Page> {
    let now = state.clock.unix();
    let mut endpoints = Vec::new();
    for w in state.store.webhooks(cu.org_id()).await? {
        let deliveries = state
            .store
            .deliveries(&w.id, 10)
            .await?
            .into_iter()
            .map(|d| row(d, now))
            .collect();
        endpoints.push(EndpointView {
            events: w.event_list().iter().map(|s| s.to_string()).collect(),
            created: TimeView::new(w.created_at, now),
            id: w.id,
            url: w.url,
            description: w.description,
            deliveries,
        });
    }
    let chosen: &[String] = form.map_or(&[], |f| f.events.as_slice());
    Ok(Page {
        chrome: cu.chrome("webhooks").await?,
        endpoints,
        events: AuditAction::WEBHOOK_EVENTS
            .iter()
            .map(|(e, d)| (e.as_str(), *d, chosen.iter().any(|c| c == e.as_str())))
            .collect(),
        url: form.map(|f| f.url.clone()).unwrap_or_default(),
        description: form.map(|f| f.description.clone()).unwrap_or_default(),
        error,
        form_token: session::issue_form_token(&cu.session).await?,
        new_secret,
    })
}

fn row(d: Delivery, now: i64) -> DeliveryRow {
    DeliveryRow {
        code: d
            .last_status_code
            .map(|c| c.to_string())
            .unwrap_or_default(),
        next: (d.status == "pending" && d.attempts > 0)
            .then(|| TimeView::new(d.next_attempt_at, now)),
        created: TimeView::new(d.created_at, now),
        id: d.id,
        event_type: d.event_type,
        status: d.status,
        attempts: d.attempts,
        error: d.last_error,
    }
}

pub async fn page(State(state): State<AppState>, cu: CurrentUser) -> Result<Response> {
    cu.require(Action::ManageWebhooks)?;
    Ok(render(&state, &cu, None, None, None).await?.into_response())
}

#[derive(Deserialize)]
pub struct WebhookForm {
    org: String,
    #[serde(default)]
    form_token: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    events: Vec<String>,
}

/// Checks an endpoint URL: http(s), no credentials, and (unless the operator allows it) a
/// public address.
pub async fn check_url(url: &str, allow_private: bool) -> std::result::Result<String, String> {
    let url = url.trim();
    let parsed = reqwest::Url::parse(url).map_err(|_| {
        "Enter the endpoint's full URL, like https://example.com/webhooks/keyward.".to_string()
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("Only http:// and https:// endpoints are supported.".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("Put no credentials in the URL; verify the signature header instead.".into());
    }
    if url.len() > 2000 {
        return Err("The URL is longer than 2,000 characters.".into());
    }
    crate::net::check_outbound(url, allow_private).await?;
    Ok(parsed.to_string())
}

/// What the audit log shows of an endpoint: scheme and host only (paths and queries of
/// webhook URLs often hold tokens, and every member can read the audit log).
fn endpoint_label(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(|h| format!("{}://{h}", u.scheme())))
        .unwrap_or_default()
}

pub async fn create(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    MultiForm(f): MultiForm<WebhookForm>,
) -> Result<Response> {
    cu.require(Action::ManageWebhooks)?;
    cu.same_org(&f.org)?;
    if !session::consume_form_token(&cu.session, &state.store, &f.form_token, state.clock.unix())
        .await?
    {
        cu.flash(
            "info",
            "That form was already submitted; the endpoint's secret was shown once then.",
        )
        .await?;
        return Ok(Redirect::to("/settings/webhooks").into_response());
    }
    let refuse = |msg: String| async {
        let page = render(&state, &cu, Some(&f), Some(msg), None).await?;
        Ok::<_, AppError>((StatusCode::BAD_REQUEST, page).into_response())
    };
    let description: String = f.description.trim().chars().take(200).collect();
    let mut events: Vec<&str> = Vec::new();
    for e in &f.events {
        match AuditAction::WEBHOOK_EVENTS
            .iter()
            .map(|(a, _)| a.as_str())
            .find(|t| t == e)
        {
            Some(t) if !events.contains(&t) => events.push(t),
            Some(_) => {}
            None => return refuse(format!("Unknown event type “{e}”.")).await,
        }
    }
    if events.is_empty() {
        return refuse("Choose at least one event to send.".into()).await;
    }
    let url = match check_url(&f.url, state.config.allow_private_networks).await {
        Ok(u) => u,
        Err(msg) => return refuse(msg).await,
    };
    let now = state.clock.unix();
    let id = crate::store::new_id();
    let secret = format!("whsec_{}", session::random_token()?);
    let w = Webhook {
        id: id.clone(),
        org_id: cu.org_id().to_string(),
        url: url.clone(),
        description,
        events: events.join(" "),
        secret: state
            .webhook_secrets
            .seal(&secret, &id)
            .map_err(AppError::internal)?,
        created_by: Some(cu.user.id.clone()),
        created_at: now,
    };
    let audit = meta
        .stamp(NewAudit::new(AuditAction::WebhookCreated, now))
        .org(cu.org_id())
        .actor(Some(&cu.user.id), &cu.user.email)
        .target("webhook", &id, &endpoint_label(&url))
        .details(serde_json::json!({ "events": events }));
    state.store.insert_webhook(&w, &audit).await?;
    let page = render(&state, &cu, None, None, Some((url, secret))).await?;
    Ok(page.into_response())
}

#[derive(Deserialize)]
pub struct OrgForm {
    org: String,
}

async fn endpoint(state: &AppState, cu: &CurrentUser, id: &str) -> Result<Webhook> {
    state
        .store
        .webhook(cu.org_id(), id)
        .await?
        .ok_or(AppError::NotFound)
}

pub async fn delete(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Path(id): Path<String>,
    Form(f): Form<OrgForm>,
) -> Result<Response> {
    cu.require(Action::ManageWebhooks)?;
    cu.same_org(&f.org)?;
    let w = endpoint(&state, &cu, &id).await?;
    let audit = meta
        .stamp(NewAudit::new(
            AuditAction::WebhookDeleted,
            state.clock.unix(),
        ))
        .org(cu.org_id())
        .actor(Some(&cu.user.id), &cu.user.email)
        .target("webhook", &w.id, &endpoint_label(&w.url));
    if !state
        .store
        .delete_webhook(cu.org_id(), &w.id, &audit)
        .await?
    {
        return Err(AppError::NotFound);
    }
    cu.flash(
        "success",
        format!(
            "Deleted the endpoint {}. Nothing more will be sent to it.",
            w.url
        ),
    )
    .await?;
    Ok(Redirect::to("/settings/webhooks").into_response())
}

/// Queues a `webhook.test` event for this endpoint only.
pub async fn test(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Path(id): Path<String>,
    Form(f): Form<OrgForm>,
) -> Result<Response> {
    cu.require(Action::ManageWebhooks)?;
    cu.same_org(&f.org)?;
    let w = endpoint(&state, &cu, &id).await?;
    let now = state.clock.unix();
    let event_id = format!("evt_{}", uuid::Uuid::now_v7().simple());
    let ev = meta
        .stamp(NewAudit::new(AuditAction::WebhookTest, now))
        .org(cu.org_id())
        .actor(Some(&cu.user.id), &cu.user.email)
        .target("webhook", &w.id, &endpoint_label(&w.url))
        .details(serde_json::json!({ "message": "A test event sent from Settings → Webhooks." }));
    let delivery = Delivery {
        id: format!("{event_id}.{}", w.id),
        webhook_id: w.id.clone(),
        org_id: w.org_id.clone(),
        event_type: TEST_EVENT.into(),
        payload: super::payload(&event_id, TEST_EVENT, &ev),
        status: "pending".into(),
        attempts: 0,
        next_attempt_at: now,
        locked_until: None,
        last_attempt_at: None,
        last_status_code: None,
        last_error: String::new(),
        created_at: now,
        delivered_at: None,
    };
    state.store.enqueue_delivery(&delivery).await?;
    cu.flash(
        "success",
        format!(
            "A test event is on its way to {}. Its delivery appears below.",
            w.url
        ),
    )
    .await?;
    Ok(Redirect::to("/settings/webhooks").into_response())
}
