//! Settings → API Keys: list, create (shown once), detail, edit, roll, revoke.

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use axum_extra::extract::Form;
use serde::Deserialize;
use serde_json::json;

use super::{
    ExpiryChoice, GraceChoice,
    scopes::{self, ScopeError},
    token::{Environment, PlainKey},
};
use crate::{
    app::AppState,
    audit::{ClientMeta, EventRow},
    auth::{Chrome, CurrentUser, session},
    error::{AppError, Result},
    orgs::Action,
    store::{ApiKey, AuditFilter, KeyChanges, KeyFilter, KeyLimits, KeyStatus, NewKey},
    templates::{Pager, TimeView, query_string},
};

const PER_PAGE: i64 = 25;
const MAX_NAME: usize = 100;
const MAX_DESCRIPTION: usize = 500;

/// One key as lists and detail pages show it: display fields only, never the key.
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub description: String,
    pub display: String,
    pub environment: String,
    pub scopes: Vec<String>,
    pub created: TimeView,
    pub creator: String,
    pub last_used: Option<TimeView>,
    pub expires: Option<TimeView>,
    pub ends: Option<TimeView>,
    pub revoked: Option<TimeView>,
    pub status: KeyStatus,
    pub rolled_from: Option<String>,
    pub can_manage: bool,
    pub enabled: bool,
    /// "100 per minute (burst 150)".
    pub rate_limit: Option<String>,
    pub daily_quota: Option<i64>,
    pub ip_allowlist: String,
    /// Empty for `{}`.
    pub metadata: String,
}

impl KeyView {
    fn new(k: &ApiKey, now: i64, cu: &CurrentUser) -> Self {
        Self {
            id: k.id.clone(),
            name: k.name.clone(),
            description: k.description.clone(),
            display: format!("{}…{}", k.display_prefix, k.last4),
            environment: k.environment.clone(),
            scopes: k.scope_list(),
            created: TimeView::new(k.created_at, now),
            creator: match (&k.creator_email, k.creator_removed) {
                (Some(email), false) => email.clone(),
                (Some(email), true) => format!("{email} (creator removed)"),
                (None, _) => "creator removed".into(),
            },
            last_used: TimeView::opt(k.last_used_at, now),
            expires: TimeView::opt(k.expires_at, now),
            ends: TimeView::opt(k.ends_at(), now),
            revoked: TimeView::opt(k.revoked_at, now),
            status: k.status(now),
            rolled_from: k.rolled_from.clone(),
            can_manage: cu.role.can_manage_key(&cu.user.id, k.created_by.as_deref()),
            enabled: k.enabled,
            rate_limit: k.rate_limit.map(|n| {
                let window = WINDOWS
                    .iter()
                    .find(|(_, _, s)| *s == k.rate_window_secs)
                    .map_or("per minute", |(_, l, _)| l);
                match k.rate_burst {
                    Some(b) if b != n => format!("{n} {window} (burst {b})"),
                    _ => format!("{n} {window}"),
                }
            }),
            daily_quota: k.daily_quota,
            ip_allowlist: k.ip_allowlist.clone(),
            metadata: if k.metadata == "{}" {
                String::new()
            } else {
                k.metadata.clone()
            },
        }
    }
    pub fn is_live(&self) -> bool {
        self.environment == "live"
    }
    /// Whether the key can still be edited, rolled or revoked.
    pub fn is_open(&self) -> bool {
        !matches!(self.status, KeyStatus::Revoked | KeyStatus::Expired)
    }
}

// ---------------------------------------------------------------------------- list

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    env: String,
    #[serde(default)]
    q: String,
    /// `removed`: keys whose creator left the organization.
    #[serde(default)]
    creator: String,
    page: Option<i64>,
}

#[derive(Template, WebTemplate)]
#[template(path = "settings/api_keys/index.html")]
struct ListPage {
    chrome: Chrome,
    keys: Vec<KeyView>,
    q: ListQuery,
    pager: Pager,
    filtered: bool,
    can_create: bool,
    /// Bulk reassign/revoke of former members' keys (admins, `creator=removed`).
    bulk: bool,
    /// Members keys can be reassigned to: (user id, email).
    members: Vec<(String, String)>,
}

pub async fn list(
    State(state): State<AppState>,
    cu: CurrentUser,
    Query(mut q): Query<ListQuery>,
) -> Result<Response> {
    cu.require(Action::ViewKeys)?;
    if !matches!(
        q.status.as_str(),
        "" | "active" | "expiring" | "expired" | "revoked"
    ) {
        q.status.clear();
    }
    if Environment::parse(&q.env).is_none() {
        q.env.clear();
    }
    q.q = q.q.trim().chars().take(MAX_NAME).collect();
    if q.creator != "removed" {
        q.creator.clear();
    }
    let now = state.clock.unix();
    let page = q.page.unwrap_or(1).clamp(1, Pager::MAX_PAGE);
    let filter = KeyFilter {
        status: q.status.clone(),
        environment: q.env.clone(),
        name_contains: q.q.clone(),
        creator_removed: q.creator == "removed",
    };
    let (keys, total) = state
        .store
        .list_keys(
            cu.org_id(),
            &filter,
            now,
            PER_PAGE,
            Pager::offset(page, PER_PAGE),
        )
        .await?;
    let base = query_string(&[
        ("status", &q.status),
        ("env", &q.env),
        ("q", &q.q),
        ("creator", &q.creator),
    ]);
    let bulk = q.creator == "removed" && cu.role.can(Action::ManageAnyKey) && !keys.is_empty();
    let members = if bulk {
        state
            .store
            .members(cu.org_id())
            .await?
            .into_iter()
            .filter(|m| m.role != "viewer")
            .map(|m| (m.user_id, m.email))
            .collect()
    } else {
        vec![]
    };
    if let Some(last) = Pager::beyond_end(page, PER_PAGE, total, "/settings/api-keys", &base) {
        return Ok(Redirect::to(&last).into_response());
    }
    Ok(ListPage {
        chrome: cu.chrome("api-keys").await?,
        keys: keys.iter().map(|k| KeyView::new(k, now, &cu)).collect(),
        pager: Pager::new(page, PER_PAGE, total, base),
        filtered: !(q.status.is_empty()
            && q.env.is_empty()
            && q.q.is_empty()
            && q.creator.is_empty()),
        can_create: cu.role.can(Action::CreateKey),
        bulk,
        members,
        q,
    }
    .into_response())
}

// -------------------------------------------------------------------------- create

/// What the create and edit forms submit. Unknown fields (such as an injected `org_id`)
/// are ignored: the organization always comes from the session.
#[derive(Debug, Default, Deserialize)]
pub struct KeyForm {
    /// The organization the form was rendered for (see [`CurrentUser::same_org`]).
    #[serde(default)]
    pub(crate) org: String,
    #[serde(default)]
    pub(crate) form_token: String,
    #[serde(default)]
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) description: String,
    #[serde(default)]
    pub(crate) environment: String,
    #[serde(default)]
    pub(crate) preset: String,
    #[serde(default)]
    pub(crate) scopes: Vec<String>,
    #[serde(default)]
    pub(crate) expiry: String,
    #[serde(default)]
    pub(crate) custom_date: String,
    #[serde(default)]
    pub(crate) rate_limit: String,
    #[serde(default)]
    pub(crate) rate_window: String,
    #[serde(default)]
    pub(crate) rate_burst: String,
    #[serde(default)]
    pub(crate) daily_quota: String,
    #[serde(default)]
    pub(crate) ip_allowlist: String,
    #[serde(default)]
    pub(crate) metadata: String,
    /// An exact expiry (the JSON API); when set, `expiry` is not consulted.
    #[serde(skip)]
    pub(crate) expires_at_exact: Option<Option<i64>>,
}

#[derive(Debug, Default)]
pub struct FieldErrors {
    pub name: Option<String>,
    pub description: Option<String>,
    pub environment: Option<String>,
    pub scopes: Option<String>,
    pub expiry: Option<String>,
    pub limits: Option<String>,
    pub ip_allowlist: Option<String>,
    pub metadata: Option<String>,
}

impl FieldErrors {
    fn any(&self) -> bool {
        self.limits.is_some()
            || self.ip_allowlist.is_some()
            || self.metadata.is_some()
            || self.name.is_some()
            || self.description.is_some()
            || self.environment.is_some()
            || self.scopes.is_some()
            || self.expiry.is_some()
    }
}

pub struct Choice {
    pub value: String,
    pub label: String,
    pub hint: String,
    pub checked: bool,
}

/// Everything the create/edit form needs to render.
pub struct FormView {
    pub form_token: String,
    pub name: String,
    pub description: String,
    pub environment: String,
    pub presets: Vec<Choice>,
    pub scopes: Vec<Choice>,
    pub expiry_options: Vec<Choice>,
    pub custom_date: String,
    pub rate_limit: String,
    pub rate_windows: Vec<Choice>,
    pub rate_burst: String,
    pub daily_quota: String,
    pub ip_allowlist: String,
    pub metadata: String,
    pub errors: FieldErrors,
    /// Editing an existing key (no environment or preset choice) rather than creating one.
    pub editing: bool,
}

impl FormView {
    fn build(
        state: &AppState,
        cu: &CurrentUser,
        f: &KeyForm,
        errors: FieldErrors,
        form_token: String,
        editing: bool,
    ) -> Self {
        let catalog = &state.config.scopes;
        let grantable: Vec<&str> = catalog
            .grantable_by(cu.role)
            .map(|s| s.name.as_str())
            .collect();
        let mut presets: Vec<Choice> = catalog
            .presets
            .iter()
            .filter(|p| p.scopes.iter().all(|s| grantable.contains(&s.as_str())))
            .map(|p| Choice {
                value: p.name.clone(),
                label: p.name.clone(),
                hint: p.scopes.join(", "),
                checked: f.preset == p.name,
            })
            .collect();
        if !editing {
            presets.push(Choice {
                value: "custom".into(),
                label: "Custom".into(),
                hint: "Choose scopes below".into(),
                checked: f.preset == "custom" || f.preset.is_empty(),
            });
        }
        let scopes = catalog
            .scopes
            .iter()
            .filter(|s| grantable.contains(&s.name.as_str()) || f.scopes.contains(&s.name))
            .map(|s| Choice {
                value: s.name.clone(),
                label: s.name.clone(),
                hint: s.description.clone(),
                checked: f.scopes.contains(&s.name),
            })
            .collect();
        let mut options: Vec<(&str, &str)> = Vec::new();
        if editing {
            options.push(("keep", "Keep the current expiry"));
        }
        options.extend(ExpiryChoice::CREATE_OPTIONS);
        let default_expiry = if editing { "keep" } else { "90d" };
        let chosen = if f.expiry.is_empty() {
            default_expiry
        } else {
            f.expiry.as_str()
        };
        let expiry_options = options
            .iter()
            .map(|(v, l)| Choice {
                value: v.to_string(),
                label: l.to_string(),
                hint: String::new(),
                checked: *v == chosen,
            })
            .collect();
        Self {
            form_token,
            name: f.name.clone(),
            description: f.description.clone(),
            environment: if f.environment.is_empty() {
                "live".into()
            } else {
                f.environment.clone()
            },
            presets,
            scopes,
            expiry_options,
            custom_date: f.custom_date.clone(),
            rate_limit: f.rate_limit.clone(),
            rate_windows: WINDOWS
                .iter()
                .map(|(v, l, _)| Choice {
                    value: v.to_string(),
                    label: l.to_string(),
                    hint: String::new(),
                    checked: *v == f.rate_window || (f.rate_window.is_empty() && *v == "minute"),
                })
                .collect(),
            rate_burst: f.rate_burst.clone(),
            daily_quota: f.daily_quota.clone(),
            ip_allowlist: f.ip_allowlist.clone(),
            metadata: f.metadata.clone(),
            errors,
            editing,
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "settings/api_keys/new.html")]
struct NewPage {
    chrome: Chrome,
    form: FormView,
}

pub async fn new_page(State(state): State<AppState>, cu: CurrentUser) -> Result<Response> {
    cu.require(Action::CreateKey)?;
    let token = session::issue_form_token(&cu.session).await?;
    // New keys start with the organization's default limits.
    let org = state
        .store
        .org(cu.org_id())
        .await?
        .ok_or(AppError::NotFound)?;
    let blank = KeyForm {
        rate_limit: org
            .default_rate_limit
            .map(|n| n.to_string())
            .unwrap_or_default(),
        rate_window: window_name(org.default_rate_window_secs).to_string(),
        daily_quota: org
            .default_daily_quota
            .map(|n| n.to_string())
            .unwrap_or_default(),
        ..KeyForm::default()
    };
    Ok(NewPage {
        form: FormView::build(&state, &cu, &blank, FieldErrors::default(), token, false),
        chrome: cu.chrome("api-keys").await?,
    }
    .into_response())
}

/// Checks name and description; returns them trimmed.
fn check_text(f: &KeyForm, errors: &mut FieldErrors) -> (String, String) {
    let name = f.name.trim().to_string();
    let n = name.chars().count();
    if n == 0 {
        errors.name = Some("Give the key a name, so you can tell it apart later.".into());
    } else if n > MAX_NAME {
        errors.name = Some(format!(
            "Use at most {MAX_NAME} characters (this name has {n})."
        ));
    } else if name.chars().any(char::is_control) {
        errors.name = Some("The name cannot contain control characters.".into());
    }
    let description = f.description.trim().to_string();
    let d = description.chars().count();
    if d > MAX_DESCRIPTION {
        errors.description = Some(format!(
            "Use at most {MAX_DESCRIPTION} characters (this has {d})."
        ));
    }
    (name, description)
}

/// Rate-limit windows offered by the form: (value, label, seconds).
pub(crate) const WINDOWS: [(&str, &str, i64); 3] = [
    ("second", "per second", 1),
    ("minute", "per minute", 60),
    ("hour", "per hour", 3600),
];
const MAX_LIMIT: i64 = 1_000_000_000;
const MAX_METADATA: usize = 4096;
const MAX_ALLOWLIST: usize = 100;

/// The form value of a window length (`minute` for anything unknown).
pub(crate) fn window_name(secs: i64) -> &'static str {
    WINDOWS
        .iter()
        .find(|(_, _, s)| *s == secs)
        .map_or("minute", |(v, _, _)| v)
}

pub(crate) fn optional_count(s: &str, what: &str) -> Result<Option<i64>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    match s.parse::<i64>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(Some(n)),
        _ => Err(format!(
            "{what} must be a whole number from 1 to {MAX_LIMIT}, or empty for none."
        )),
    }
}

/// Checks the limits, allowlist and metadata fields.
fn check_limits(f: &KeyForm, errors: &mut FieldErrors) -> KeyLimits {
    let mut limits = KeyLimits::default();
    let window = if f.rate_window.is_empty() {
        "minute"
    } else {
        f.rate_window.as_str()
    };
    match (
        optional_count(&f.rate_limit, "The rate limit"),
        optional_count(&f.rate_burst, "The burst"),
        optional_count(&f.daily_quota, "The daily quota"),
        WINDOWS.iter().find(|(v, _, _)| *v == window),
    ) {
        (Ok(rate), Ok(burst), Ok(quota), Some((_, _, secs))) => {
            if burst.is_some() && rate.is_none() {
                errors.limits = Some("Set a rate limit to use a burst size.".into());
            }
            limits.rate_limit = rate;
            limits.rate_burst = burst;
            limits.rate_window_secs = *secs;
            limits.daily_quota = quota;
        }
        (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) => errors.limits = Some(e),
        (.., None) => errors.limits = Some("Choose per second, per minute or per hour.".into()),
    }
    let entries: Vec<&str> = f
        .ip_allowlist
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|e| !e.is_empty())
        .collect();
    if entries.len() > MAX_ALLOWLIST {
        errors.ip_allowlist = Some(format!("List at most {MAX_ALLOWLIST} addresses or ranges."));
    } else if let Some(bad) = entries
        .iter()
        .find(|e| crate::verify::parse_network(e).is_none())
    {
        errors.ip_allowlist = Some(format!(
            "“{bad}” is not an IP address or CIDR range (like 203.0.113.0/24 or 2001:db8::/32)."
        ));
    } else {
        limits.ip_allowlist = entries
            .iter()
            .filter_map(|e| crate::verify::parse_network(e))
            .map(|n| n.trunc().to_string())
            .collect::<Vec<_>>()
            .join(" ");
    }
    let meta = f.metadata.trim();
    if meta.is_empty() {
        limits.metadata = "{}".into();
    } else if meta.len() > MAX_METADATA {
        errors.metadata = Some(format!("Metadata is limited to {MAX_METADATA} bytes."));
    } else {
        match serde_json::from_str::<serde_json::Value>(meta) {
            Ok(v @ serde_json::Value::Object(_)) => limits.metadata = v.to_string(),
            _ => {
                errors.metadata =
                    Some("Metadata must be a JSON object, like {\"plan\": \"pro\"}.".into())
            }
        }
    }
    limits
}

fn scope_message(e: &ScopeError) -> String {
    match e {
        ScopeError::Empty => "Choose at least one scope.".into(),
        other => {
            format!(
                "{}{}",
                other.to_string()[..1].to_uppercase(),
                &other.to_string()[1..]
            ) + "."
        }
    }
}

/// Resolves the requested scopes: a preset's, or the checked boxes for "Custom".
fn requested_scopes(state: &AppState, f: &KeyForm) -> Result<Vec<String>, String> {
    if f.preset.is_empty() || f.preset == "custom" {
        return Ok(f.scopes.clone());
    }
    state
        .config
        .scopes
        .presets
        .iter()
        .find(|p| p.name == f.preset)
        .map(|p| p.scopes.clone())
        .ok_or_else(|| format!("Unknown preset \"{}\".", f.preset))
}

fn generate(state: &AppState, env: Environment) -> Result<PlainKey> {
    PlainKey::generate(&state.config.key_prefix, env)
        .map_err(|e| AppError::internal(anyhow::anyhow!("OS random generator: {e}")))
}

/// A new key's settings, checked.
pub(crate) struct ValidNewKey {
    pub name: String,
    pub description: String,
    pub env: Environment,
    pub scopes: Vec<String>,
    pub expires_at: Option<i64>,
    pub limits: KeyLimits,
}

/// Checks a new key's settings for a member with `role` (the form and the JSON API).
pub(crate) fn validate_new(
    state: &AppState,
    role: crate::orgs::Role,
    f: &KeyForm,
    now: i64,
) -> Result<ValidNewKey, Box<FieldErrors>> {
    let mut errors = FieldErrors::default();
    let (name, description) = check_text(f, &mut errors);
    let env = Environment::parse(&f.environment);
    if env.is_none() {
        errors.environment = Some("Choose live or test.".into());
    }
    let scopes = match requested_scopes(state, f).and_then(|r| {
        state
            .config
            .scopes
            .check(&r, role)
            .map_err(|e| scope_message(&e))
    }) {
        Ok(s) => s,
        Err(msg) => {
            errors.scopes = Some(msg);
            vec![]
        }
    };
    let expires_at = match f.expires_at_exact {
        Some(exact) => check_exact_expiry(exact, now).unwrap_or_else(|msg| {
            errors.expiry = Some(msg);
            None
        }),
        None => match ExpiryChoice::parse(&f.expiry).filter(|c| *c != ExpiryChoice::Keep) {
            None => {
                errors.expiry = Some("Choose when the key expires.".into());
                None
            }
            Some(choice) => choice
                .resolve(&f.custom_date, None, now)
                .unwrap_or_else(|msg| {
                    errors.expiry = Some(msg);
                    None
                }),
        },
    };
    let limits = check_limits(f, &mut errors);
    match (env, errors.any()) {
        (Some(env), false) => Ok(ValidNewKey {
            name,
            description,
            env,
            scopes,
            expires_at,
            limits,
        }),
        _ => Err(Box::new(errors)),
    }
}

/// An exact expiry must be in the future and within the longest allowed.
fn check_exact_expiry(exact: Option<i64>, now: i64) -> Result<Option<i64>, String> {
    match exact {
        None => Ok(None),
        Some(t) if t <= now => Err("The expiry is in the past.".into()),
        Some(t) if t > now + super::expiry::MAX_CUSTOM_DAYS * 86_400 => Err(format!(
            "The expiry can be at most {} days ahead.",
            super::expiry::MAX_CUSTOM_DAYS
        )),
        Some(t) => Ok(Some(t)),
    }
}

/// Generates a key for checked settings: the record to store and the plaintext to show once.
pub(crate) fn new_key_record(
    state: &AppState,
    org_id: &str,
    created_by: &str,
    v: ValidNewKey,
    now: i64,
) -> Result<(NewKey, PlainKey)> {
    let key = generate(state, v.env)?;
    let new = NewKey {
        id: crate::store::new_id(),
        org_id: org_id.to_string(),
        created_by: Some(created_by.to_string()),
        name: v.name,
        description: v.description,
        environment: v.env.as_str().into(),
        key_hash: key.hash(&state.config.key_pepper).0.to_vec(),
        display_prefix: key.display_prefix().into(),
        last4: key.last4().into(),
        scopes: scopes::join(&v.scopes),
        limits: v.limits,
        created_at: now,
        expires_at: v.expires_at,
        rolled_from: None,
    };
    Ok((new, key))
}

/// The details of a `key.created` audit event.
pub(crate) fn created_details(new: &NewKey) -> serde_json::Value {
    json!({
        "environment": new.environment,
        "scopes": scopes::split(&new.scopes),
        "expires_at": new.expires_at,
    })
}

pub async fn create(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Form(f): Form<KeyForm>,
) -> Result<Response> {
    cu.require(Action::CreateKey)?;
    cu.same_org(&f.org)?;
    if !session::consume_form_token(&cu.session, &f.form_token).await? {
        cu.flash(
            "info",
            "That form was already submitted. For your security a new key is shown only once; if you lost it, roll the key to get a new one.",
        )
        .await?;
        return Ok(Redirect::to("/settings/api-keys").into_response());
    }
    let now = state.clock.unix();
    let v = match validate_new(&state, cu.role, &f, now) {
        Ok(v) => v,
        Err(errors) => {
            let token = session::issue_form_token(&cu.session).await?;
            let page = NewPage {
                form: FormView::build(&state, &cu, &f, *errors, token, false),
                chrome: cu.chrome("api-keys").await?,
            };
            return Ok((StatusCode::BAD_REQUEST, page).into_response());
        }
    };
    let (new, key) = new_key_record(&state, cu.org_id(), &cu.user.id, v, now)?;
    let audit = cu
        .audit("key.created", &meta, now)
        .target("api_key", &new.id, &new.name)
        .details(created_details(&new));
    state.store.insert_key(&new, &audit).await?;
    tracing::info!(event = "key.created", key_id = %new.id, prefix = %new.display_prefix, org_id = %new.org_id, "API key created");
    created_page(&state, &cu, &new.id, &new.name, key, new.expires_at, None).await
}

#[derive(Template, WebTemplate)]
#[template(path = "settings/api_keys/created.html")]
struct CreatedPage {
    chrome: Chrome,
    key_id: String,
    name: String,
    key: String,
    expires: Option<TimeView>,
    /// For a roll: when the previous key stops working.
    old_key_until: Option<TimeView>,
    api_base_url: String,
    /// The header the snippets send the key in, and the value's prefix (`Bearer `).
    header_name: String,
    header_prefix: &'static str,
}

async fn created_page(
    state: &AppState,
    cu: &CurrentUser,
    key_id: &str,
    name: &str,
    key: PlainKey,
    expires_at: Option<i64>,
    old_key_until: Option<i64>,
) -> Result<Response> {
    let now = state.clock.unix();
    // Cache-Control: no-store is set on every dashboard response.
    Ok(CreatedPage {
        chrome: cu.chrome("api-keys").await?,
        key_id: key_id.into(),
        name: name.into(),
        key: key.expose().to_string(),
        expires: TimeView::opt(expires_at, now),
        old_key_until: TimeView::opt(old_key_until, now),
        api_base_url: state.config.api_base_url.clone(),
        header_name: state
            .config
            .key_header
            .as_ref()
            .map_or_else(|| "Authorization".to_string(), |h| h.to_string()),
        header_prefix: if state.config.key_header.is_some() {
            ""
        } else {
            "Bearer "
        },
    }
    .into_response())
}

// -------------------------------------------------------------------------- detail

/// One bar of the usage chart.
pub struct Bar {
    pub x: i64,
    pub y: i64,
    pub height: i64,
    pub label: String,
    pub count: i64,
}

/// Verifications per day over the last 30 days, drawn server-side as SVG bars.
pub struct UsageChart {
    pub bars: Vec<Bar>,
    pub total: i64,
    pub max: i64,
}

const CHART_DAYS: i64 = 30;
const CHART_HEIGHT: i64 = 80;
const BAR_WIDTH: i64 = 10;

impl UsageChart {
    fn new(series: &[(i64, i64)], today: i64) -> Self {
        let max = series.iter().map(|(_, c)| *c).max().unwrap_or(0);
        let bars = (0..CHART_DAYS)
            .map(|i| {
                let day = today - (CHART_DAYS - 1) + i;
                let count = series
                    .iter()
                    .find(|(d, _)| *d == day)
                    .map_or(0, |(_, c)| *c);
                let height = if max == 0 {
                    0
                } else {
                    (count * CHART_HEIGHT / max).max(i64::from(count > 0))
                };
                let date = crate::clock::from_unix(day * 86_400).date();
                Bar {
                    x: i * (BAR_WIDTH + 2),
                    y: CHART_HEIGHT - height,
                    height,
                    label: date.to_string(),
                    count,
                }
            })
            .collect();
        Self {
            bars,
            total: series.iter().map(|(_, c)| c).sum(),
            max,
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "settings/api_keys/show.html")]
struct DetailPage {
    chrome: Chrome,
    key: KeyView,
    usage: UsageChart,
    events: Vec<EventRow>,
    form: FormView,
    grace_options: Vec<(&'static str, &'static str)>,
    roll_token: String,
}

/// The key if it belongs to the active organization; otherwise 404, whether it exists
/// elsewhere or not.
async fn load(state: &AppState, cu: &CurrentUser, id: &str) -> Result<ApiKey> {
    match state.store.key(cu.org_id(), id).await? {
        Some(k) => Ok(k),
        None => {
            tracing::warn!(event = "authz_denied", user_id = %cu.user.id, org_id = %cu.org_id(), key_id = %id, "key not found in the active organization");
            Err(AppError::NotFound)
        }
    }
}

fn require_manage(cu: &CurrentUser, key: &ApiKey) -> Result<()> {
    if cu
        .role
        .can_manage_key(&cu.user.id, key.created_by.as_deref())
    {
        return Ok(());
    }
    tracing::warn!(event = "authz_denied", user_id = %cu.user.id, key_id = %key.id, role = %cu.role, "may not manage this key");
    Err(AppError::forbidden(format!(
        "Your role ({}) does not allow changing this key{}.",
        cu.role,
        if cu.role.can(Action::ManageOwnKey) {
            ": developers can change only keys they created"
        } else {
            ""
        }
    )))
}

async fn detail_page(
    state: &AppState,
    cu: &CurrentUser,
    key: &ApiKey,
    form: &KeyForm,
    errors: FieldErrors,
) -> Result<DetailPage> {
    let now = state.clock.unix();
    let filter = AuditFilter {
        target_id: key.id.clone(),
        ..AuditFilter::default()
    };
    let (events, _) = state.store.list_audit(cu.org_id(), &filter, 50, 0).await?;
    let view = KeyView::new(key, now, cu);
    let today = crate::verify::usage::day_of(now);
    let series = state
        .store
        .usage_series(&key.id, today - (CHART_DAYS - 1), today)
        .await?;
    let roll_token = if view.can_manage && view.is_open() {
        session::issue_form_token(&cu.session).await?
    } else {
        String::new()
    };
    Ok(DetailPage {
        usage: UsageChart::new(&series, today),
        form: FormView::build(state, cu, form, errors, String::new(), true),
        key: view,
        events: events.iter().map(|e| EventRow::new(e, now)).collect(),
        grace_options: GraceChoice::OPTIONS.to_vec(),
        roll_token,
        chrome: cu.chrome("api-keys").await?,
    })
}

pub(crate) fn form_from_key(k: &ApiKey) -> KeyForm {
    KeyForm {
        name: k.name.clone(),
        description: k.description.clone(),
        environment: k.environment.clone(),
        scopes: k.scope_list(),
        expiry: "keep".into(),
        rate_limit: k.rate_limit.map(|n| n.to_string()).unwrap_or_default(),
        rate_window: WINDOWS
            .iter()
            .find(|(_, _, secs)| *secs == k.rate_window_secs)
            .map_or("minute", |(v, _, _)| v)
            .to_string(),
        rate_burst: k.rate_burst.map(|n| n.to_string()).unwrap_or_default(),
        daily_quota: k.daily_quota.map(|n| n.to_string()).unwrap_or_default(),
        ip_allowlist: k.ip_allowlist.replace(' ', "\n"),
        metadata: if k.metadata == "{}" {
            String::new()
        } else {
            k.metadata.clone()
        },
        ..KeyForm::default()
    }
}

pub async fn detail(
    State(state): State<AppState>,
    cu: CurrentUser,
    Path(id): Path<String>,
) -> Result<Response> {
    cu.require(Action::ViewKeys)?;
    let key = load(&state, &cu, &id).await?;
    let page = detail_page(
        &state,
        &cu,
        &key,
        &form_from_key(&key),
        FieldErrors::default(),
    )
    .await?;
    Ok(page.into_response())
}

// -------------------------------------------------------------------------- update

/// An edit, checked: the new values, what changed (for the audit event), the new name.
pub(crate) struct ValidChanges {
    pub changes: KeyChanges,
    pub diff: serde_json::Map<String, serde_json::Value>,
    pub name: String,
}

/// Checks an edit of `key` by a member with `role` (the form and the JSON API).
pub(crate) fn validate_changes(
    state: &AppState,
    role: crate::orgs::Role,
    key: &ApiKey,
    f: &KeyForm,
    now: i64,
) -> Result<ValidChanges, Box<FieldErrors>> {
    let mut errors = FieldErrors::default();
    let (name, description) = check_text(f, &mut errors);
    let current = key.scope_list();
    let scopes = state
        .config
        .scopes
        .check_edit(&f.scopes, &current, role)
        .unwrap_or_else(|e| {
            errors.scopes = Some(scope_message(&e));
            current.clone()
        });
    let choice = if let Some(exact) = f.expires_at_exact {
        match check_exact_expiry(exact, now) {
            Ok(t) => Some(ExpiryChoice::Exact(t)),
            Err(msg) => {
                errors.expiry = Some(msg);
                Some(ExpiryChoice::Keep)
            }
        }
    } else if f.expiry.is_empty() {
        Some(ExpiryChoice::Keep)
    } else {
        ExpiryChoice::parse(&f.expiry)
    };
    let expires_at = match choice {
        None => {
            errors.expiry = Some("Choose when the key expires.".into());
            key.expires_at
        }
        Some(c) => c
            .resolve(&f.custom_date, key.expires_at, now)
            .unwrap_or_else(|msg| {
                errors.expiry = Some(msg);
                key.expires_at
            }),
    };
    let limits = check_limits(f, &mut errors);
    if errors.any() {
        return Err(Box::new(errors));
    }

    let mut changes = serde_json::Map::new();
    let mut note = |field: &str, from: serde_json::Value, to: serde_json::Value| {
        if from != to {
            changes.insert(field.into(), json!({ "from": from, "to": to }));
        }
    };
    note("name", json!(key.name), json!(name));
    note("description", json!(key.description), json!(description));
    note("scopes", json!(current), json!(scopes));
    note("expires_at", json!(key.expires_at), json!(expires_at));
    let old = key.limits();
    note(
        "rate_limit",
        json!(old.rate_limit),
        json!(limits.rate_limit),
    );
    note(
        "rate_window_secs",
        json!(old.rate_window_secs),
        json!(limits.rate_window_secs),
    );
    note(
        "rate_burst",
        json!(old.rate_burst),
        json!(limits.rate_burst),
    );
    note(
        "daily_quota",
        json!(old.daily_quota),
        json!(limits.daily_quota),
    );
    note(
        "ip_allowlist",
        json!(old.ip_allowlist),
        json!(limits.ip_allowlist),
    );
    note("metadata", json!(old.metadata), json!(limits.metadata));
    Ok(ValidChanges {
        changes: KeyChanges {
            name: name.clone(),
            description,
            scopes: scopes::join(&scopes),
            expires_at,
            limits,
        },
        diff: changes,
        name,
    })
}

pub async fn update(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Path(id): Path<String>,
    Form(f): Form<KeyForm>,
) -> Result<Response> {
    let key = load(&state, &cu, &id).await?;
    require_manage(&cu, &key)?;
    cu.same_org(&f.org)?;
    let now = state.clock.unix();
    if !matches!(
        key.status(now),
        KeyStatus::Active | KeyStatus::ExpiringSoon | KeyStatus::Disabled
    ) {
        return Err(AppError::bad_request(
            "Revoked and expired keys can no longer be changed.",
        ));
    }
    let v = match validate_changes(&state, cu.role, &key, &f, now) {
        Ok(v) => v,
        Err(errors) => {
            let mut shown = f;
            shown.environment = key.environment.clone();
            let page = detail_page(&state, &cu, &key, &shown, *errors).await?;
            return Ok((StatusCode::BAD_REQUEST, page).into_response());
        }
    };
    if v.diff.is_empty() {
        cu.flash("info", "Nothing changed.").await?;
        return Ok(Redirect::to(&format!("/settings/api-keys/{}", key.id)).into_response());
    }
    let (c, changes, name) = (v.changes, v.diff, v.name);
    let audit = cu
        .audit("key.updated", &meta, now)
        .target("api_key", &key.id, &name)
        .details(json!({ "changes": changes }));
    if !state
        .store
        .update_key(cu.org_id(), &key.id, &c, now, &audit)
        .await?
    {
        return Err(AppError::NotFound);
    }
    cu.flash("success", format!("Saved changes to “{name}”."))
        .await?;
    Ok(Redirect::to(&format!("/settings/api-keys/{}", key.id)).into_response())
}

// -------------------------------------------------------------------------- revoke

#[derive(Deserialize)]
pub struct OrgForm {
    #[serde(default)]
    org: String,
}

pub async fn revoke(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Path(id): Path<String>,
    Form(f): Form<OrgForm>,
) -> Result<Response> {
    let key = load(&state, &cu, &id).await?;
    require_manage(&cu, &key)?;
    cu.same_org(&f.org)?;
    let now = state.clock.unix();
    let audit = cu
        .audit("key.revoked", &meta, now)
        .target("api_key", &key.id, &key.name);
    if state
        .store
        .revoke_key(cu.org_id(), &key.id, now, &audit)
        .await?
    {
        tracing::info!(event = "key.revoked", key_id = %key.id, prefix = %key.display_prefix, "API key revoked");
        cu.flash(
            "success",
            format!("Revoked “{}”. It stopped working immediately.", key.name),
        )
        .await?;
    } else {
        cu.flash("info", format!("“{}” was already revoked.", key.name))
            .await?;
    }
    Ok(Redirect::to(&format!("/settings/api-keys/{}", key.id)).into_response())
}

// ------------------------------------------------------------ bulk (former members)

#[derive(Debug, Default, Deserialize)]
pub struct BulkForm {
    #[serde(default)]
    org: String,
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    action: String,
    #[serde(default)]
    to: String,
}

/// Reassigns or revokes, in bulk, keys whose creator left the organization (admins).
pub async fn bulk(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Form(f): Form<BulkForm>,
) -> Result<Response> {
    cu.require(Action::ManageAnyKey)?;
    cu.same_org(&f.org)?;
    let back = "/settings/api-keys?creator=removed";
    if f.keys.is_empty() {
        cu.flash("error", "Select at least one key.").await?;
        return Ok(Redirect::to(back).into_response());
    }
    let now = state.clock.unix();
    let mut keys = Vec::new();
    for id in &f.keys {
        keys.push(load(&state, &cu, id).await?);
    }
    let message = match f.action.as_str() {
        "reassign" => {
            state
                .store
                .membership(&f.to, cu.org_id())
                .await?
                .filter(|m| m.role != "viewer")
                .ok_or_else(|| {
                    AppError::bad_request("Choose a member (not a viewer) to take over the keys.")
                })?;
            let new_owner = state.store.user(&f.to).await?.ok_or(AppError::NotFound)?;
            let audits: Vec<_> = keys
                .iter()
                .map(|k| {
                    cu.audit("key.reassigned", &meta, now)
                        .target("api_key", &k.id, &k.name)
                        .details(json!({ "from": k.created_by, "to": new_owner.id, "to_email": new_owner.email }))
                })
                .collect();
            let ids: Vec<String> = keys.iter().map(|k| k.id.clone()).collect();
            let n = state
                .store
                .reassign_keys(cu.org_id(), &ids, &new_owner.id, &audits)
                .await?;
            format!("Reassigned {n} key(s) to {}.", new_owner.email)
        }
        "revoke" => {
            let mut n = 0;
            for k in &keys {
                let audit = cu
                    .audit("key.revoked", &meta, now)
                    .target("api_key", &k.id, &k.name);
                if state
                    .store
                    .revoke_key(cu.org_id(), &k.id, now, &audit)
                    .await?
                {
                    tracing::info!(event = "key.revoked", key_id = %k.id, prefix = %k.display_prefix, "API key revoked (bulk)");
                    n += 1;
                }
            }
            format!("Revoked {n} key(s).")
        }
        _ => {
            return Err(AppError::bad_request(
                "Choose to reassign or revoke the selected keys.",
            ));
        }
    };
    cu.flash("success", message).await?;
    Ok(Redirect::to(back).into_response())
}

// ------------------------------------------------------------------- pause/resume

#[derive(Deserialize)]
pub struct EnabledForm {
    #[serde(default)]
    org: String,
    #[serde(default)]
    enabled: String,
}

pub async fn set_enabled(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Path(id): Path<String>,
    Form(f): Form<EnabledForm>,
) -> Result<Response> {
    let key = load(&state, &cu, &id).await?;
    require_manage(&cu, &key)?;
    cu.same_org(&f.org)?;
    let enabled = match f.enabled.as_str() {
        "true" => true,
        "false" => false,
        _ => return Err(AppError::bad_request("Choose to pause or resume the key.")),
    };
    let now = state.clock.unix();
    let action = if enabled {
        "key.enabled"
    } else {
        "key.disabled"
    };
    let audit = cu
        .audit(action, &meta, now)
        .target("api_key", &key.id, &key.name);
    let back = format!("/settings/api-keys/{}", key.id);
    if state
        .store
        .set_key_enabled(cu.org_id(), &key.id, enabled, now, &audit)
        .await?
    {
        let msg = if enabled {
            format!("Resumed “{}”. It works again.", key.name)
        } else {
            format!(
                "Paused “{}”. Requests with it are refused until you resume it.",
                key.name
            )
        };
        cu.flash("success", msg).await?;
    } else {
        cu.flash("info", format!("“{}” was not changed.", key.name))
            .await?;
    }
    Ok(Redirect::to(&back).into_response())
}

// ---------------------------------------------------------------------------- roll

#[derive(Deserialize)]
pub struct RollForm {
    #[serde(default)]
    org: String,
    #[serde(default)]
    form_token: String,
    #[serde(default)]
    grace: String,
}

/// A rolled key's successor: same settings, new secret.
pub(crate) fn roll_record(
    state: &AppState,
    old: &ApiKey,
    created_by: &str,
    now: i64,
) -> Result<(NewKey, PlainKey)> {
    let env = Environment::parse(&old.environment)
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("bad stored environment")))?;
    let key = generate(state, env)?;
    let new = NewKey {
        id: crate::store::new_id(),
        org_id: old.org_id.clone(),
        created_by: Some(created_by.to_string()),
        name: old.name.clone(),
        description: old.description.clone(),
        environment: old.environment.clone(),
        key_hash: key.hash(&state.config.key_pepper).0.to_vec(),
        display_prefix: key.display_prefix().into(),
        last4: key.last4().into(),
        scopes: old.scopes.clone(),
        limits: old.limits(),
        created_at: now,
        expires_at: old.expires_at,
        rolled_from: Some(old.id.clone()),
    };
    Ok((new, key))
}

pub async fn roll(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Path(id): Path<String>,
    Form(f): Form<RollForm>,
) -> Result<Response> {
    let old = load(&state, &cu, &id).await?;
    require_manage(&cu, &old)?;
    cu.same_org(&f.org)?;
    let back = format!("/settings/api-keys/{}", old.id);
    if !session::consume_form_token(&cu.session, &f.form_token).await? {
        cu.flash(
            "info",
            "That roll was already submitted. The new key was shown only once; roll again if you did not copy it.",
        )
        .await?;
        return Ok(Redirect::to(&back).into_response());
    }
    let grace = GraceChoice::parse(&f.grace)
        .ok_or_else(|| AppError::bad_request("Choose when the current key stops working."))?;
    let now = state.clock.unix();
    let (new, key) = roll_record(&state, &old, &cu.user.id, now)?;
    let grace_until = now + grace.seconds();
    let rolled = cu
        .audit("key.rolled", &meta, now)
        .target("api_key", &old.id, &old.name)
        .details(json!({ "new_key_id": new.id, "old_key_valid_until": grace_until }));
    let created = cu
        .audit("key.created_by_roll", &meta, now)
        .target("api_key", &new.id, &new.name)
        .details(json!({ "rolled_from": old.id }));
    if !state
        .store
        .roll_key(
            cu.org_id(),
            &old.id,
            &new,
            grace_until,
            now,
            [&rolled, &created],
        )
        .await?
    {
        cu.flash("error", "Only active keys can be rolled.").await?;
        return Ok(Redirect::to(&back).into_response());
    }
    tracing::info!(event = "key.rolled", old_key_id = %old.id, new_key_id = %new.id, "API key rolled");
    created_page(
        &state,
        &cu,
        &new.id,
        &new.name,
        key,
        new.expires_at,
        Some(grace_until),
    )
    .await
}
