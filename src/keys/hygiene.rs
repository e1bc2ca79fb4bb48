//! Settings → API Keys → Key hygiene (admins and owners): the organization's open keys
//! that deserve a look — beyond the maximum lifetime, never expiring, unused for N days,
//! never used, created by former members — each group with bulk actions (set an expiry,
//! revoke) carried out by the [`Keys`](super::service::Keys) service, key by key, with the
//! same rules and audit events as one-key edits.

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    extract::{Query, State},
    response::{IntoResponse, Redirect, Response},
};
use axum_extra::extract::Form;
use serde::Deserialize;

use super::{
    ExpiryChoice,
    model::{Revocation, RevocationReason},
    policy::{DAY, days_label},
    service::KeyError,
    views::KeyView,
};
use crate::{
    audit::ClientMeta,
    auth::{Chrome, CurrentUser, actor::Actor},
    error::Result,
    orgs::Action,
    state::AppState,
    store::{Hygiene, HygieneCounts},
};

/// The "unused for" choices, in days.
const UNUSED_DAYS: [i64; 4] = [30, 60, 90, 180];
const DEFAULT_UNUSED_DAYS: i64 = 90;
/// Keys listed per group (oldest first); bulk actions apply to what is selected.
const LIMIT: i64 = 200;

#[derive(Debug, Default, Deserialize)]
pub struct HygieneQuery {
    #[serde(default)]
    show: String,
    #[serde(default)]
    days: String,
}

impl HygieneQuery {
    fn days(&self) -> i64 {
        self.days
            .parse()
            .ok()
            .filter(|d| UNUSED_DAYS.contains(d))
            .unwrap_or(DEFAULT_UNUSED_DAYS)
    }
}

/// One group as the page's navigation shows it.
pub struct GroupView {
    pub value: &'static str,
    pub label: String,
    pub count: i64,
    pub current: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "settings/api_keys/hygiene.html")]
pub struct HygienePage {
    pub chrome: Chrome,
    pub groups: Vec<GroupView>,
    pub show: &'static str,
    /// What the shown group means and what to do about it.
    pub explanation: String,
    pub days: i64,
    pub unused_days: Vec<i64>,
    pub keys: Vec<KeyView>,
    /// More keys are in the group than listed.
    pub truncated: bool,
    /// (value, label) of the expiries the bulk action offers (within the policy).
    pub expiries: Vec<(&'static str, &'static str)>,
    pub reasons: Vec<(&'static str, &'static str)>,
}

fn label(group: Hygiene, days: i64, max: Option<i64>) -> String {
    match group {
        Hygiene::BeyondLifetime => format!(
            "Beyond the maximum lifetime ({})",
            days_label(max.unwrap_or_default())
        ),
        Hygiene::NeverExpires => "Never expire".into(),
        Hygiene::Unused => format!("Unused for {days} days"),
        Hygiene::NeverUsed => "Never used".into(),
        Hygiene::FormerMembers => "Created by former members".into(),
    }
}

fn explanation(group: Hygiene, days: i64) -> String {
    match group {
        Hygiene::BeyondLifetime => "These keys expire later than the organization's key policy allows (Settings → Organization → Key policy). Give them an expiry within the maximum, or revoke them.".into(),
        Hygiene::NeverExpires => "A key that never expires works until someone remembers to revoke it. Give these an expiry, so a forgotten key ends by itself.".into(),
        Hygiene::Unused => format!("These keys were neither used nor created in the last {days} days. Keys nobody uses are only a risk: revoke them, or give them an expiry if you are unsure."),
        Hygiene::NeverUsed => "These keys have never been used to make a request. If they were created by mistake or for a plan that changed, revoke them.".into(),
        Hygiene::FormerMembers => "The people who created these keys have left the organization; the keys keep working. Revoke them, or reassign them from API keys → Creator: former members.".into(),
    }
}

pub async fn page(
    State(state): State<AppState>,
    cu: CurrentUser,
    Query(q): Query<HygieneQuery>,
) -> Result<Response> {
    cu.require(Action::ManageAnyKey)?;
    let org = cu.organization(&state.store).await?;
    let now = state.clock.unix();
    let days = q.days();
    let max = org.lifetime.max_lifetime_days;
    let latest = org.lifetime.latest_expiry(now).unwrap_or(0);
    let unused_before = now - days * DAY;
    let counts: HygieneCounts = state
        .store
        .hygiene_counts(cu.org_id(), now, unused_before, latest)
        .await?;
    let offered: Vec<Hygiene> = Hygiene::ALL
        .into_iter()
        .filter(|g| *g != Hygiene::BeyondLifetime || max.is_some())
        .collect();
    // The group asked for, else the first that has keys.
    let show = Hygiene::parse(&q.show)
        .filter(|g| offered.contains(g))
        .or_else(|| offered.iter().copied().find(|g| counts.get(*g) > 0))
        .unwrap_or(Hygiene::NeverExpires);
    let keys = state
        .store
        .hygiene_keys(cu.org_id(), show, now, unused_before, latest, LIMIT)
        .await?;
    let expiries = ExpiryChoice::CREATE_OPTIONS
        .into_iter()
        .filter(|(v, _)| match ExpiryChoice::parse(v) {
            Some(ExpiryChoice::Days(d)) => max.is_none_or(|m| d <= m),
            Some(ExpiryChoice::Custom) => true,
            _ => false,
        })
        .collect();
    Ok(HygienePage {
        groups: offered
            .iter()
            .map(|g| GroupView {
                value: g.as_str(),
                label: label(*g, days, max),
                count: counts.get(*g),
                current: *g == show,
            })
            .collect(),
        show: show.as_str(),
        explanation: explanation(show, days),
        days,
        unused_days: UNUSED_DAYS.to_vec(),
        truncated: counts.get(show) > keys.len() as i64,
        keys: keys.iter().map(|k| KeyView::new(k, now, &cu)).collect(),
        expiries,
        reasons: RevocationReason::ALL
            .iter()
            .map(|r| (r.as_str(), r.label()))
            .collect(),
        chrome: cu.chrome("api-keys").await?,
    }
    .into_response())
}

#[derive(Debug, Default, Deserialize)]
pub struct HygieneForm {
    #[serde(default)]
    org: String,
    #[serde(default)]
    show: String,
    #[serde(default)]
    days: String,
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    action: String,
    #[serde(default)]
    expiry: String,
    #[serde(default)]
    custom_date: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    note: String,
}

/// Sets an expiry on, or revokes, the selected keys.
pub async fn apply(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Form(f): Form<HygieneForm>,
) -> Result<Response> {
    let actor = Actor::member(&cu, meta);
    let keys = state.keys();
    keys.require(&actor, Action::ManageAnyKey)?;
    cu.same_org(&f.org)?;
    let show = Hygiene::parse(&f.show).map_or("", Hygiene::as_str);
    let days = HygieneQuery {
        days: f.days.clone(),
        ..HygieneQuery::default()
    }
    .days();
    let back = format!("/settings/api-keys/hygiene?show={show}&days={days}");
    let outcome: std::result::Result<String, String> = if f.keys.is_empty() {
        Err("Select at least one key.".into())
    } else {
        match f.action.as_str() {
            "expire" => match ExpiryChoice::parse(&f.expiry) {
                Some(choice @ (ExpiryChoice::Days(_) | ExpiryChoice::Custom)) => {
                    match keys
                        .bulk_expire(&actor, &f.keys, choice, &f.custom_date)
                        .await
                    {
                        Ok((changed, 0)) => Ok(format!("Set the expiry of {changed} key(s).")),
                        Ok((changed, left)) => Ok(format!(
                            "Set the expiry of {changed} key(s); {left} already expire by then (or are closed) and were left as they are."
                        )),
                        Err(KeyError::Invalid(errors)) => Err(errors
                            .iter()
                            .next()
                            .map_or("Choose an expiry.".to_string(), |(_, m)| m.to_string())),
                        Err(e) => return Err(e.into()),
                    }
                }
                _ => Err("Choose when the selected keys expire.".into()),
            },
            "revoke" => match Revocation::parse(&f.reason, &f.note) {
                Ok(why) if why.reason.is_some() => {
                    let n = keys.bulk_revoke(&actor, &f.keys, &why).await?;
                    Ok(format!("Revoked {n} key(s)."))
                }
                Ok(_) => Err("Choose why the selected keys are revoked.".into()),
                Err(msg) => Err(msg),
            },
            _ => Err("Choose to set an expiry or to revoke the selected keys.".into()),
        }
    };
    match outcome {
        Ok(msg) => cu.flash("success", msg).await?,
        Err(msg) => cu.flash("error", msg).await?,
    }
    Ok(Redirect::to(&back).into_response())
}
