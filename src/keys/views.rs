//! The dashboard door's view models and templates for Settings → API Keys: what a page
//! shows of a key (display fields only, never the key), the create/edit form, the usage
//! chart.

use askama::Template;
use askama_web::WebTemplate;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::web::KeyForm;
use super::{
    ExpiryChoice, GraceChoice,
    model::{Field, FieldErrors, RateWindow, Revocation, RevocationReason},
    policy::LifetimePolicy,
    token::PlainKey,
};
use crate::{
    audit::{AuditAction, EventRow},
    auth::{Chrome, CurrentUser, session},
    error::Result,
    state::AppState,
    store::{ApiKey, AuditFilter, KeyStatus},
    templates::{Pager, TimeView},
};

/// One key as lists and detail pages show it: display fields only, never the key.
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub description: String,
    pub display: String,
    /// Issued before Keyward and imported (`keyward keys import`).
    pub imported: bool,
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
    pub fn new(k: &ApiKey, now: i64, cu: &CurrentUser) -> Self {
        Self {
            id: k.id.clone(),
            name: k.name.clone(),
            description: k.description.clone(),
            // An imported key given only as its hash may have no known last characters:
            // say so rather than invent them.
            display: format!(
                "{}…{}",
                k.display_prefix,
                if k.last4.is_empty() {
                    "····"
                } else {
                    &k.last4
                }
            ),
            imported: k.is_imported(),
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
                let window = RateWindow::from_secs(k.rate_window_secs)
                    .unwrap_or_default()
                    .label();
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

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub env: String,
    #[serde(default)]
    pub q: String,
    /// `removed`: keys whose creator left the organization.
    #[serde(default)]
    pub creator: String,
    pub page: Option<i64>,
}

#[derive(Template, WebTemplate)]
#[template(path = "settings/api_keys/index.html")]
pub struct ListPage {
    pub chrome: Chrome,
    pub keys: Vec<KeyView>,
    pub q: ListQuery,
    pub pager: Pager,
    pub filtered: bool,
    pub can_create: bool,
    /// May open Key hygiene (admins and owners).
    pub can_review: bool,
    /// Bulk reassign/revoke of former members' keys (admins, `creator=removed`).
    pub bulk: bool,
    /// Members keys can be reassigned to: (user id, email).
    pub members: Vec<(String, String)>,
}

/// The form's error messages, one slot per group of fields.
#[derive(Debug, Default)]
pub struct ErrorsView {
    pub name: Option<String>,
    pub description: Option<String>,
    pub environment: Option<String>,
    pub scopes: Option<String>,
    pub expiry: Option<String>,
    pub limits: Option<String>,
    pub ip_allowlist: Option<String>,
    pub metadata: Option<String>,
}

impl From<&FieldErrors> for ErrorsView {
    fn from(e: &FieldErrors) -> Self {
        let get = |f| e.get(f).map(str::to_string);
        Self {
            name: get(Field::Name),
            description: get(Field::Description),
            environment: get(Field::Environment),
            scopes: get(Field::Scopes),
            expiry: get(Field::Expiry),
            limits: get(Field::Limits).or_else(|| get(Field::RateWindow)),
            ip_allowlist: get(Field::IpAllowlist),
            metadata: get(Field::Metadata),
        }
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
    pub errors: ErrorsView,
    /// Editing an existing key (no environment or preset choice) rather than creating one.
    pub editing: bool,
    /// The organization's maximum key lifetime ("90 days"; empty: none).
    pub max_lifetime: String,
}

impl FormView {
    pub fn build(
        state: &AppState,
        cu: &CurrentUser,
        f: &KeyForm,
        errors: &FieldErrors,
        form_token: String,
        editing: bool,
        lifetime: LifetimePolicy,
    ) -> Self {
        let catalog = &state.config.scopes;
        let grantable: Vec<&str> = catalog
            .grantable_by(cu.role)
            .map(|s| s.name.as_str())
            .collect();
        let offered: Vec<_> = catalog
            .presets
            .iter()
            .filter(|p| p.scopes.iter().all(|s| grantable.contains(&s.as_str())))
            .collect();
        // A blank create form starts on the least-privileged preset (fewest scopes), so a
        // newcomer who only names the key gets a working, narrow key.
        let chosen = match f.preset.as_str() {
            "" if !editing => offered
                .iter()
                .min_by_key(|p| p.scopes.len())
                .map_or("custom", |p| p.name.as_str()),
            "" => "custom",
            other => other,
        };
        let mut presets: Vec<Choice> = offered
            .iter()
            .map(|p| Choice {
                value: p.name.clone(),
                label: p.name.clone(),
                hint: p.scopes.join(", "),
                checked: chosen == p.name,
            })
            .collect();
        if !editing {
            presets.push(Choice {
                value: "custom".into(),
                label: "Custom".into(),
                hint: "Choose scopes below".into(),
                checked: chosen == "custom",
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
        // Only the expiries the lifetime policy allows are offered (a custom date is checked
        // when submitted).
        options.extend(ExpiryChoice::CREATE_OPTIONS.into_iter().filter(|(v, _)| {
            match (lifetime.max_lifetime_days, ExpiryChoice::parse(v)) {
                (None, _) => true,
                (Some(_), Some(ExpiryChoice::Never)) => false,
                (Some(max), Some(ExpiryChoice::Days(d))) => d <= max,
                _ => true,
            }
        }));
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
            max_lifetime: lifetime
                .max_lifetime_days
                .map(super::policy::days_label)
                .unwrap_or_default(),
            custom_date: f.custom_date.clone(),
            rate_limit: f.rate_limit.clone(),
            rate_windows: RateWindow::ALL
                .iter()
                .map(|w| Choice {
                    value: w.name().to_string(),
                    label: w.label().to_string(),
                    hint: String::new(),
                    checked: w.name() == f.rate_window
                        || (f.rate_window.is_empty() && *w == RateWindow::Minute),
                })
                .collect(),
            rate_burst: f.rate_burst.clone(),
            daily_quota: f.daily_quota.clone(),
            ip_allowlist: f.ip_allowlist.clone(),
            metadata: f.metadata.clone(),
            errors: errors.into(),
            editing,
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "settings/api_keys/new.html")]
pub struct NewPage {
    pub chrome: Chrome,
    pub form: FormView,
}

#[derive(Template, WebTemplate)]
#[template(path = "settings/api_keys/created.html")]
pub struct CreatedPage {
    pub chrome: Chrome,
    pub key_id: String,
    pub name: String,
    pub key: String,
    pub expires: Option<TimeView>,
    /// For a roll: when the previous key stops working.
    pub old_key_until: Option<TimeView>,
    pub api_base_url: String,
    /// The header the snippets send the key in, and the value's prefix (`Bearer `).
    pub header_name: String,
    pub header_prefix: &'static str,
}

pub async fn created_page(
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
pub struct DetailPage {
    pub chrome: Chrome,
    pub key: KeyView,
    pub usage: UsageChart,
    pub events: Vec<EventRow>,
    pub form: FormView,
    pub grace_options: Vec<(&'static str, &'static str)>,
    pub roll_token: String,
    /// A scope of the key the viewer's role can no longer grant (empty: none). Such a key
    /// can be tightened or revoked by them, not rolled, extended or resumed.
    pub above_role: String,
    /// Why the key was revoked, from its `key.revoked` event (empty: not said).
    pub revocation: String,
    /// (value, label) of the revocation reasons the revoke form offers.
    pub reasons: Vec<(&'static str, &'static str)>,
    /// The key lives longer than the organization's maximum lifetime: what that means for
    /// it (empty: it complies). Such a key cannot be rolled until its expiry is shortened.
    pub beyond_lifetime: String,
    pub credits: CreditsPanel,
}

/// The key page's credits: what they are now, and the form's current values.
pub struct CreditsPanel {
    /// `None`: unlimited.
    pub remaining: Option<i64>,
    /// "1000 every day at 00:00 UTC" (empty: no refill).
    pub refill: String,
    pub next_refill: Option<TimeView>,
    /// The low-balance threshold in force.
    pub low_threshold: Option<i64>,
    /// The form's values: remaining (empty), interval (`""`, `daily`, `monthly`), amount,
    /// day, threshold as set.
    pub form_interval: String,
    pub form_amount: String,
    pub form_day: String,
    pub form_threshold: String,
}

impl CreditsPanel {
    pub fn new(k: &ApiKey, now: i64) -> Self {
        let c = k.credits();
        let refill = c.and_then(|c| c.refill);
        let text = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_default();
        Self {
            remaining: k.credits_remaining,
            refill: refill.map_or_else(String::new, |r| match r.day() {
                None => format!("to {} every day at 00:00 UTC", r.amount),
                Some(d) => format!(
                    "to {} every month on day {d} at 00:00 UTC (the last day of shorter months)",
                    r.amount
                ),
            }),
            next_refill: refill.map(|r| TimeView::new(r.next_boundary(now), now)),
            low_threshold: c.and_then(|c| c.effective_threshold()),
            form_interval: refill
                .map(|r| r.interval_name().to_string())
                .unwrap_or_default(),
            form_amount: text(refill.map(|r| r.amount)),
            form_day: text(refill.and_then(|r| r.day())),
            form_threshold: text(k.credits_low_threshold),
        }
    }
}

pub async fn detail_page(
    state: &AppState,
    cu: &CurrentUser,
    key: &ApiKey,
    form: &KeyForm,
    errors: &FieldErrors,
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
    let above_role = state
        .keys()
        .scope_above_role(cu.role, &key.scope_list())
        .cloned()
        .unwrap_or_default();
    let beyond_lifetime = if view.is_open() && !key.lifetime.allows(key.expires_at, now) {
        let max = super::policy::days_label(key.lifetime.max_lifetime_days.unwrap_or_default());
        let when = match key.lifetime.lifetime_enforced_at {
            Some(t) if t <= now => {
                "It no longer verifies: requests with it are refused with EXCEEDS_MAX_LIFETIME."
                    .to_string()
            }
            Some(t) => format!(
                "It keeps working until {}, then requests with it are refused with EXCEEDS_MAX_LIFETIME.",
                TimeView::new(t, now).exact
            ),
            None => String::new(),
        };
        format!(
            "This key's expiry is beyond the organization's maximum key lifetime of {max}. {when} Shorten its expiry to within {max} (or create a new key); it cannot be rolled until then."
        )
    } else {
        String::new()
    };
    let roll_token =
        if view.can_manage && view.is_open() && above_role.is_empty() && beyond_lifetime.is_empty()
        {
            session::issue_form_token(&cu.session).await?
        } else {
            String::new()
        };
    let revocation = events
        .iter()
        .find(|e| e.action == AuditAction::KeyRevoked.as_str())
        .and_then(|e| serde_json::from_str(&e.details).ok())
        .and_then(|d| Revocation::describe(&d))
        .unwrap_or_default();
    Ok(DetailPage {
        revocation,
        reasons: RevocationReason::ALL
            .iter()
            .map(|r| (r.as_str(), r.label()))
            .collect(),
        usage: UsageChart::new(&series, today),
        form: FormView::build(state, cu, form, errors, String::new(), true, key.lifetime),
        key: view,
        events: events.iter().map(|e| EventRow::new(e, now)).collect(),
        grace_options: GraceChoice::OPTIONS.to_vec(),
        roll_token,
        above_role,
        credits: CreditsPanel::new(key, now),
        beyond_lifetime,
        chrome: cu.chrome("api-keys").await?,
    })
}

pub fn form_from_key(k: &ApiKey) -> KeyForm {
    KeyForm {
        name: k.name.clone(),
        description: k.description.clone(),
        environment: k.environment.clone(),
        scopes: k.scope_list(),
        expiry: "keep".into(),
        rate_limit: k.rate_limit.map(|n| n.to_string()).unwrap_or_default(),
        rate_window: RateWindow::from_secs(k.rate_window_secs)
            .unwrap_or_default()
            .name()
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
