use crate::audit::AuditAction;
use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Form,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;

use crate::{
    audit::ClientMeta,
    auth::{Chrome, CurrentUser, session::ORG_ID},
    error::{AppError, Result},
    keys::model::{RateWindow, optional_count},
    orgs::Action,
    state::AppState,
};

#[derive(Template, WebTemplate)]
#[template(path = "orgs/new.html")]
struct NewOrgPage {
    chrome: Chrome,
    name: String,
    error: Option<String>,
    /// The address to verify before team organizations can be created.
    unverified: Option<String>,
}

pub async fn new_page(cu: CurrentUser) -> Result<Response> {
    Ok(NewOrgPage {
        chrome: cu.chrome("orgs").await?,
        name: String::new(),
        error: None,
        unverified: crate::account::unverified_notice(&cu),
    }
    .into_response())
}

#[derive(Deserialize)]
pub struct NewOrgForm {
    name: String,
}

pub async fn create(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Form(form): Form<NewOrgForm>,
) -> Result<Response> {
    cu.require_verified_email()?;
    let name = form.name.trim().to_string();
    let len = name.chars().count();
    if len == 0 || len > 100 || name.chars().any(char::is_control) {
        return Ok((
            StatusCode::BAD_REQUEST,
            NewOrgPage {
                chrome: cu.chrome("orgs").await?,
                error: Some("Give the organization a name of 1 to 100 characters.".into()),
                name,
                unverified: None,
            },
        )
            .into_response());
    }
    let now = state.clock.unix();
    let org = state
        .store
        .create_org(
            &cu.user.id,
            &name,
            now,
            cu.audit(AuditAction::OrgCreated, &meta, now),
        )
        .await?;
    cu.session.insert(ORG_ID, &org.id).await?;
    cu.flash(
        "success",
        format!("Created {}. You are its owner.", org.name),
    )
    .await?;
    Ok(Redirect::to("/settings/api-keys").into_response())
}

#[derive(Deserialize)]
pub struct SwitchForm {
    org_id: String,
}

pub async fn switch(
    State(state): State<AppState>,
    cu: CurrentUser,
    Form(form): Form<SwitchForm>,
) -> Result<Response> {
    // Only organizations the user belongs to; anything else is "not found".
    let m = state
        .store
        .membership(&cu.user.id, &form.org_id)
        .await?
        .ok_or(AppError::NotFound)?;
    cu.session.insert(ORG_ID, &m.org_id).await?;
    cu.flash("info", format!("Switched to {}.", m.org_name))
        .await?;
    Ok(Redirect::to("/settings/api-keys").into_response())
}

// ------------------------------------------------------------ organization settings

#[derive(Template, WebTemplate)]
#[template(path = "orgs/settings.html")]
struct SettingsPage {
    chrome: Chrome,
    can_edit: bool,
    /// "API keys may create and roll keys".
    api_keys_can_create_keys: bool,
    key_require_description: bool,
    /// (value, label, selected) of the default expiries.
    key_expiries: Vec<(&'static str, &'static str, bool)>,
    rate_limit: String,
    windows: Vec<(&'static str, &'static str, bool)>,
    daily_quota: String,
    error: Option<String>,
}

fn settings_page(
    chrome: Chrome,
    can_edit: bool,
    rate_limit: String,
    window: &str,
    daily_quota: String,
    error: Option<String>,
) -> SettingsPage {
    SettingsPage {
        chrome,
        can_edit,
        api_keys_can_create_keys: false,
        key_require_description: false,
        key_expiries: DEFAULT_EXPIRIES
            .iter()
            .map(|(v, l)| (*v, *l, *v == "90d"))
            .collect(),
        rate_limit,
        windows: RateWindow::ALL
            .iter()
            .map(|w| (w.name(), w.label(), w.name() == window))
            .collect(),
        daily_quota,
        error,
    }
}

pub async fn settings(State(state): State<AppState>, cu: CurrentUser) -> Result<Response> {
    let org = state
        .store
        .org(cu.org_id())
        .await?
        .ok_or(AppError::NotFound)?;
    let mut page = settings_page(
        cu.chrome("org-settings").await?,
        cu.role.can(Action::ManageMembers),
        org.default_rate_limit
            .map(|n| n.to_string())
            .unwrap_or_default(),
        RateWindow::from_secs(org.default_rate_window_secs)
            .unwrap_or_default()
            .name(),
        org.default_daily_quota
            .map(|n| n.to_string())
            .unwrap_or_default(),
        None,
    );
    page.api_keys_can_create_keys = org.api_keys_can_create_keys;
    page.key_require_description = org.key_require_description;
    for e in &mut page.key_expiries {
        e.2 = e.0 == org.key_default_expiry;
    }
    Ok(page.into_response())
}

#[derive(Deserialize)]
pub struct KeyPolicyForm {
    #[serde(default)]
    org: String,
    require_description: Option<String>,
    #[serde(default)]
    default_expiry: String,
}

/// Settings → Key defaults → Key policy (admins and owners).
pub async fn save_key_policy(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Form(f): Form<KeyPolicyForm>,
) -> Result<Response> {
    cu.require(Action::ManageMembers)?;
    cu.same_org(&f.org)?;
    if !DEFAULT_EXPIRIES.iter().any(|(v, _)| *v == f.default_expiry) {
        return Err(AppError::bad_request(
            "Choose a default expiry: 7 days, 30 days, 90 days, 1 year or no expiration.",
        ));
    }
    let require = f.require_description.is_some();
    let now = state.clock.unix();
    let audit = cu
        .audit(AuditAction::OrgKeyPolicyChanged, &meta, now)
        .target("organization", cu.org_id(), &cu.org.org_name)
        .details(serde_json::json!({
            "require_description": require,
            "default_expiry": f.default_expiry,
        }));
    state
        .store
        .set_key_policy(cu.org_id(), require, &f.default_expiry, &audit)
        .await?;
    cu.flash(
        "success",
        "Saved the key policy. It applies to keys created or edited from now on.",
    )
    .await?;
    Ok(Redirect::to("/settings/organization").into_response())
}

/// The expiries a policy may preselect: the create form's, without "custom date".
const DEFAULT_EXPIRIES: [(&str, &str); 5] = [
    ("7d", "7 days"),
    ("30d", "30 days"),
    ("90d", "90 days"),
    ("1y", "1 year"),
    ("never", "No expiration"),
];

#[derive(Deserialize)]
pub struct ApiAccessForm {
    org: String,
    api_keys_can_create_keys: Option<String>,
}

/// "API keys may create and roll keys" (off by default: a leaked key must not mint keys).
pub async fn save_api_access(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Form(f): Form<ApiAccessForm>,
) -> Result<Response> {
    cu.require(Action::ManageMembers)?;
    cu.same_org(&f.org)?;
    let on = f.api_keys_can_create_keys.is_some();
    let now = state.clock.unix();
    let audit = cu
        .audit(AuditAction::OrgApiKeyManagementChanged, &meta, now)
        .target("organization", cu.org_id(), &cu.org.org_name)
        .details(serde_json::json!({ "api_keys_can_create_keys": on }));
    state
        .store
        .set_api_keys_can_create_keys(cu.org_id(), on, &audit)
        .await?;
    cu.flash(
        "success",
        if on {
            "API keys with keys:write may now create and roll keys (never with scopes they lack)."
        } else {
            "API keys can no longer create or roll keys."
        },
    )
    .await?;
    Ok(Redirect::to("/settings/organization").into_response())
}

#[derive(Deserialize)]
pub struct DefaultsForm {
    #[serde(default)]
    rate_limit: String,
    #[serde(default)]
    rate_window: String,
    #[serde(default)]
    daily_quota: String,
}

pub async fn save_settings(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Form(f): Form<DefaultsForm>,
) -> Result<Response> {
    cu.require(Action::ManageMembers)?;
    let window = RateWindow::from_name(&f.rate_window);
    let parsed = optional_count(&f.rate_limit, "The default rate limit")
        .and_then(|r| optional_count(&f.daily_quota, "The default daily quota").map(|q| (r, q)))
        .and_then(|rq| {
            window
                .map(|w| (rq, w.secs()))
                .ok_or_else(|| RateWindow::CHOOSE.to_string())
        });
    let ((rate, quota), secs) = match parsed {
        Ok(v) => v,
        Err(msg) => {
            let page = settings_page(
                cu.chrome("org-settings").await?,
                true,
                f.rate_limit.clone(),
                &f.rate_window,
                f.daily_quota.clone(),
                Some(msg),
            );
            return Ok((StatusCode::BAD_REQUEST, page).into_response());
        }
    };
    let now = state.clock.unix();
    let audit = cu
        .audit(AuditAction::OrgDefaultsUpdated, &meta, now)
        .target("organization", cu.org_id(), &cu.org.org_name)
        .details(serde_json::json!({ "rate_limit": rate, "rate_window_secs": secs, "daily_quota": quota }));
    state
        .store
        .set_org_defaults(cu.org_id(), rate, secs, quota, &audit)
        .await?;
    cu.flash(
        "success",
        "Saved. New keys start with these limits; existing keys keep theirs.",
    )
    .await?;
    Ok(Redirect::to("/settings/organization").into_response())
}
