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
    keys::{
        model::{RateWindow, optional_count},
        policy::{
            DEFAULT_EXPIRIES, LifetimePolicy, MAX_DAYS, PolicyForm, days_label, parse_policy,
        },
    },
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
    if let Err(message) = super::check_name(&name) {
        return Ok((
            StatusCode::BAD_REQUEST,
            NewOrgPage {
                chrome: cu.chrome("orgs").await?,
                error: Some(message),
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
    policy: KeyPolicyView,
    rate_limit: String,
    windows: Vec<(&'static str, &'static str, bool)>,
    daily_quota: String,
    error: Option<String>,
}

/// The key policy card, as saved or as just submitted.
struct KeyPolicyView {
    require_description: bool,
    /// (value, label, selected) of the default expiries.
    expiries: Vec<(&'static str, &'static str, bool)>,
    /// Days, or empty for no maximum.
    max_lifetime_days: String,
    /// Existing keys beyond the maximum keep working until `until` (else: stopped now).
    keep_until: bool,
    /// YYYY-MM-DD.
    until: String,
    /// What the saved policy does to keys beyond it now (empty: nothing).
    status: String,
    error: Option<String>,
}

impl KeyPolicyView {
    fn new(default_expiry: &str) -> Self {
        Self {
            require_description: false,
            expiries: DEFAULT_EXPIRIES
                .iter()
                .map(|(v, l, _)| (*v, *l, *v == default_expiry))
                .collect(),
            max_lifetime_days: String::new(),
            keep_until: true,
            until: String::new(),
            status: String::new(),
            error: None,
        }
    }
}

/// The settings page as saved for `org`; callers replace what was just submitted.
async fn settings_page(state: &AppState, cu: &CurrentUser) -> Result<SettingsPage> {
    let org = cu.organization(&state.store).await?;
    let now = state.clock.unix();
    let mut policy = KeyPolicyView::new(&org.key_default_expiry);
    policy.require_description = org.key_require_description;
    let life = org.lifetime;
    if let Some(days) = life.max_lifetime_days {
        policy.max_lifetime_days = days.to_string();
        let beyond = state
            .store
            .hygiene_counts(cu.org_id(), now, 0, life.latest_expiry(now).unwrap_or(0))
            .await?
            .beyond_lifetime;
        let enforced = life.lifetime_enforced_at.unwrap_or(now);
        policy.keep_until = enforced > now;
        if policy.keep_until {
            // The form shows the last day keys keep working (enforcement is at its end).
            policy.until = date_of(enforced - 1);
        }
        policy.status = match (beyond, policy.keep_until) {
            (0, _) => format!("Every open key expires within {}.", days_label(days)),
            (n, true) => format!(
                "{n} open key(s) expire later than that: they keep working until the end of {} (UTC), then are refused with EXCEEDS_MAX_LIFETIME.",
                policy.until
            ),
            (n, false) => format!(
                "{n} open key(s) expire later than that and are refused with EXCEEDS_MAX_LIFETIME."
            ),
        };
    }
    Ok(SettingsPage {
        chrome: cu.chrome("org-settings").await?,
        can_edit: cu.role.can(Action::ManageMembers),
        api_keys_can_create_keys: org.api_keys_can_create_keys,
        policy,
        rate_limit: org
            .default_rate_limit
            .map(|n| n.to_string())
            .unwrap_or_default(),
        windows: windows(
            RateWindow::from_secs(org.default_rate_window_secs)
                .unwrap_or_default()
                .name(),
        ),
        daily_quota: org
            .default_daily_quota
            .map(|n| n.to_string())
            .unwrap_or_default(),
        error: None,
    })
}

fn windows(chosen: &str) -> Vec<(&'static str, &'static str, bool)> {
    RateWindow::ALL
        .iter()
        .map(|w| (w.name(), w.label(), w.name() == chosen))
        .collect()
}

fn date_of(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .map(|d| d.date().to_string())
        .unwrap_or_default()
}

pub async fn settings(State(state): State<AppState>, cu: CurrentUser) -> Result<Response> {
    Ok(settings_page(&state, &cu).await?.into_response())
}

#[derive(Deserialize)]
pub struct KeyPolicyForm {
    #[serde(default)]
    org: String,
    require_description: Option<String>,
    #[serde(default)]
    default_expiry: String,
    #[serde(default)]
    max_lifetime_days: String,
    #[serde(default)]
    existing: String,
    #[serde(default)]
    until: String,
}

/// Settings → Key policy (admins and owners).
pub async fn save_key_policy(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Form(f): Form<KeyPolicyForm>,
) -> Result<Response> {
    cu.require(Action::ManageMembers)?;
    cu.same_org(&f.org)?;
    let now = state.clock.unix();
    let form = PolicyForm {
        require_description: f.require_description.is_some(),
        default_expiry: &f.default_expiry,
        max_lifetime_days: &f.max_lifetime_days,
        existing: &f.existing,
        until: &f.until,
    };
    // Whether any open key lives longer than the typed maximum (then the form must say
    // what happens to such keys).
    let affected = match f.max_lifetime_days.trim().parse::<i64>() {
        Ok(days) if days > 0 => {
            let typed = LifetimePolicy {
                max_lifetime_days: Some(days.min(MAX_DAYS)),
                lifetime_enforced_at: None,
            };
            let latest = typed.latest_expiry(now).unwrap_or(0);
            state
                .store
                .hygiene_counts(cu.org_id(), now, 0, latest)
                .await?
                .beyond_lifetime
                > 0
        }
        _ => false,
    };
    let policy = match parse_policy(&form, now, affected) {
        Ok(p) => p,
        Err(msg) => {
            let mut page = settings_page(&state, &cu).await?;
            let mut view = KeyPolicyView::new(&f.default_expiry);
            view.require_description = form.require_description;
            view.max_lifetime_days = f.max_lifetime_days.trim().to_string();
            view.keep_until = f.existing != "block";
            view.until = f.until.trim().to_string();
            view.status = page.policy.status;
            view.error = Some(msg);
            page.policy = view;
            return Ok((StatusCode::BAD_REQUEST, page).into_response());
        }
    };
    let life = policy.lifetime;
    let audit = cu
        .audit(AuditAction::OrgKeyPolicyChanged, &meta, now)
        .target("organization", cu.org_id(), &cu.org.org_name)
        .details(serde_json::json!({
            "require_description": policy.require_description,
            "default_expiry": policy.default_expiry,
            "max_lifetime_days": life.max_lifetime_days,
            "lifetime_enforced_at": life.lifetime_enforced_at,
        }));
    state
        .store
        .set_key_policy(cu.org_id(), &policy, &audit)
        .await?;
    let beyond = match life.latest_expiry(now) {
        Some(latest) => {
            state
                .store
                .hygiene_counts(cu.org_id(), now, 0, latest)
                .await?
                .beyond_lifetime
        }
        None => 0,
    };
    let message = match (beyond, life.lifetime_enforced_at) {
        (0, _) | (_, None) => {
            "Saved the key policy. It applies to keys created, edited or rolled from now on, in the dashboard and through the API.".to_string()
        }
        (n, Some(t)) if t <= now => format!(
            "Saved the key policy. {n} existing key(s) expire later than it allows and are now refused (EXCEEDS_MAX_LIFETIME): see API keys → Key hygiene."
        ),
        (n, Some(t)) => format!(
            "Saved the key policy. {n} existing key(s) expire later than it allows: they keep working until the end of {} (UTC). See API keys → Key hygiene.",
            date_of(t - 1)
        ),
    };
    cu.flash("success", message).await?;
    Ok(Redirect::to("/settings/organization#key-policy").into_response())
}

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
            let mut page = settings_page(&state, &cu).await?;
            page.rate_limit = f.rate_limit.clone();
            page.windows = windows(&f.rate_window);
            page.daily_quota = f.daily_quota.clone();
            page.error = Some(msg);
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
