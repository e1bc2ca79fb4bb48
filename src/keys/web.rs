//! The dashboard door of Settings → API Keys: forms become [`KeyInput`]/[`KeyPatch`], the
//! [`Keys`](super::service::Keys) service decides, and the outcome becomes a page, a flash
//! message or a redirect. No rule about keys is decided here.

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use axum_extra::extract::Form;
use serde::Deserialize;

use super::{
    ExpiryChoice, GraceChoice,
    model::{
        Field, FieldErrors, IpAllowlist, KeyDraft, KeyInput, KeyPatch, MAX_NAME, Metadata, Rate,
        RateWindow, Revocation, RevocationReason, optional_count,
    },
    service::{KeyError, Rolled},
    token::Environment,
    views::{
        DetailPage, FormView, KeyView, ListPage, ListQuery, NewPage, created_page, detail_page,
        form_from_key,
    },
};
use crate::{
    audit::ClientMeta,
    auth::{CurrentUser, actor::Actor, session},
    error::{AppError, Result},
    orgs::Action,
    state::AppState,
    store::{ApiKey, KeyFilter},
    templates::{Pager, query_string},
};

const PER_PAGE: i64 = 25;

/// The actor and the key a form about one key acts on, if the actor may manage it; a form
/// rendered for another organization is refused.
async fn form_target(
    state: &AppState,
    cu: &CurrentUser,
    meta: ClientMeta,
    id: &str,
    form_org: &str,
) -> Result<(Actor, ApiKey)> {
    let actor = Actor::member(cu, meta);
    let keys = state.keys();
    let key = keys.load(&actor, id).await?;
    keys.may_manage(&actor, &key)?;
    cu.same_org(form_org)?;
    Ok((actor, key))
}

/// The dashboard's rendering of a refusal that is not a form error.
impl From<KeyError> for AppError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::NotFound | KeyError::Unauthenticated => AppError::NotFound,
            KeyError::Forbidden(m) => AppError::forbidden(m),
            KeyError::Closed => AppError::Conflict(KeyError::CLOSED.into()),
            KeyError::AlreadyRevoked => AppError::bad_request(KeyError::ALREADY_REVOKED),
            KeyError::Refused(m) => AppError::bad_request(m),
            KeyError::Conflict(m) => AppError::Conflict(m),
            KeyError::Policy(m) => AppError::Conflict(m),
            KeyError::Invalid(errors) => AppError::bad_request(
                errors
                    .iter()
                    .next()
                    .map_or("The request is not valid.", |(_, m)| m)
                    .to_string(),
            ),
            KeyError::Internal(e) => e,
        }
    }
}

// ---------------------------------------------------------------------------- list

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
    q.q =
        q.q.trim()
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_NAME)
            .collect();
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
        can_review: cu.role.can(Action::ManageAnyKey),
        bulk,
        members,
        q,
    }
    .into_response())
}

// -------------------------------------------------------------------------- the form

/// What the create and edit forms submit. Unknown fields (such as an injected `org_id`)
/// are ignored: the organization always comes from the session.
#[derive(Debug, Default, Deserialize)]
pub struct KeyForm {
    /// The organization the form was rendered for (see [`CurrentUser::same_org`]).
    #[serde(default)]
    pub org: String,
    #[serde(default)]
    pub form_token: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub environment: String,
    #[serde(default)]
    pub preset: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub expiry: String,
    #[serde(default)]
    pub custom_date: String,
    #[serde(default)]
    pub rate_limit: String,
    #[serde(default)]
    pub rate_window: String,
    #[serde(default)]
    pub rate_burst: String,
    #[serde(default)]
    pub daily_quota: String,
    #[serde(default)]
    pub ip_allowlist: String,
    #[serde(default)]
    pub metadata: String,
}

impl KeyForm {
    /// Rate limit, burst, quota and window (as the form sends them).
    fn rate(&self, errors: &mut FieldErrors) -> Option<Rate> {
        let window = if self.rate_window.is_empty() {
            "minute"
        } else {
            self.rate_window.as_str()
        };
        let parsed = optional_count(&self.rate_limit, "The rate limit").and_then(|limit| {
            let burst = optional_count(&self.rate_burst, "The burst")?;
            let daily_quota = optional_count(&self.daily_quota, "The daily quota")?;
            let window =
                RateWindow::from_name(window).ok_or_else(|| RateWindow::CHOOSE.to_string())?;
            Rate {
                limit,
                window,
                burst,
                daily_quota,
            }
            .check()
        });
        errors.take(Field::Limits, parsed)
    }

    /// The scopes asked for: a preset's, or the checked boxes for "Custom".
    fn requested_scopes(&self, state: &AppState) -> std::result::Result<Vec<String>, String> {
        if self.preset.is_empty() || self.preset == "custom" {
            return Ok(self.scopes.clone());
        }
        state
            .config
            .scopes
            .presets
            .iter()
            .find(|p| p.name == self.preset)
            .map(|p| p.scopes.clone())
            .ok_or_else(|| format!("Unknown preset \"{}\".", self.preset))
    }

    /// A new key's settings.
    fn to_input(&self, state: &AppState) -> std::result::Result<KeyInput, FieldErrors> {
        let mut errors = FieldErrors::default();
        let requested = errors
            .take(Field::Scopes, self.requested_scopes(state))
            .unwrap_or_default();
        let mut draft = KeyDraft::common(
            &self.name,
            &self.description,
            &self.environment,
            &requested,
            &state.config.scopes,
            &mut errors,
        );
        draft.expiry = errors.take(
            Field::Expiry,
            ExpiryChoice::parse(&self.expiry)
                .filter(|c| *c != ExpiryChoice::Keep)
                .ok_or_else(|| "Choose when the key expires.".to_string()),
        );
        draft.custom_date = self.custom_date.clone();
        draft.rate = self.rate(&mut errors);
        draft.ip_allowlist = errors.take(
            Field::IpAllowlist,
            IpAllowlist::parse_text(&self.ip_allowlist),
        );
        draft.metadata = errors.take(Field::Metadata, Metadata::parse(&self.metadata));
        draft.finish(errors)
    }

    /// An edit: the form always sends every field.
    fn to_patch(&self, state: &AppState) -> std::result::Result<KeyPatch, FieldErrors> {
        let mut errors = FieldErrors::default();
        let KeyDraft {
            name,
            description,
            scopes,
            ..
        } = KeyDraft::common(
            &self.name,
            &self.description,
            "live",
            &self.scopes,
            &state.config.scopes,
            &mut errors,
        );
        let expiry = if self.expiry.is_empty() {
            Some(ExpiryChoice::Keep)
        } else {
            errors.take(
                Field::Expiry,
                ExpiryChoice::parse(&self.expiry)
                    .ok_or_else(|| "Choose when the key expires.".to_string()),
            )
        };
        let rate = self.rate(&mut errors);
        let ip_allowlist = errors.take(
            Field::IpAllowlist,
            IpAllowlist::parse_text(&self.ip_allowlist),
        );
        let metadata = errors.take(Field::Metadata, Metadata::parse(&self.metadata));
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(KeyPatch {
            name,
            description,
            scopes,
            expiry,
            custom_date: self.custom_date.clone(),
            rate_limit: rate.map(|r| r.limit),
            rate_window: rate.map(|r| r.window),
            rate_burst: rate.map(|r| r.burst),
            daily_quota: rate.map(|r| r.daily_quota),
            ip_allowlist,
            metadata,
            enabled: None,
        })
    }
}

// -------------------------------------------------------------------------- create

pub async fn new_page(State(state): State<AppState>, cu: CurrentUser) -> Result<Response> {
    cu.require(Action::CreateKey)?;
    let token = session::issue_form_token(&cu.session).await?;
    // New keys start with the organization's default limits.
    let org = cu.organization(&state.store).await?;
    let blank = KeyForm {
        rate_limit: org
            .default_rate_limit
            .map(|n| n.to_string())
            .unwrap_or_default(),
        rate_window: RateWindow::from_secs(org.default_rate_window_secs)
            .unwrap_or_default()
            .name()
            .to_string(),
        daily_quota: org
            .default_daily_quota
            .map(|n| n.to_string())
            .unwrap_or_default(),
        expiry: org.key_default_expiry,
        ..KeyForm::default()
    };
    Ok(NewPage {
        form: FormView::build(
            &state,
            &cu,
            &blank,
            &FieldErrors::default(),
            token,
            false,
            org.lifetime,
        ),
        chrome: cu.chrome("api-keys").await?,
    }
    .into_response())
}

pub async fn create(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Form(f): Form<KeyForm>,
) -> Result<Response> {
    let actor = Actor::member(&cu, meta);
    let keys = state.keys();
    keys.may_create(&actor)?;
    cu.same_org(&f.org)?;
    if !session::consume_form_token(&cu.session, &state.store, &f.form_token, state.clock.unix())
        .await?
    {
        cu.flash(
            "info",
            "That form was already submitted. For your security a new key is shown only once; if you lost it, roll the key to get a new one.",
        )
        .await?;
        return Ok(Redirect::to("/settings/api-keys").into_response());
    }
    let created = match f.to_input(&state) {
        Ok(input) => keys.create(&actor, input).await,
        Err(errors) => Err(KeyError::Invalid(errors)),
    };
    match created {
        Ok(m) => {
            let r = &m.record;
            created_page(&state, &cu, &r.id, &r.name, m.secret, r.expires_at, None).await
        }
        Err(KeyError::Invalid(errors)) => {
            let token = session::issue_form_token(&cu.session).await?;
            let lifetime = cu.organization(&state.store).await?.lifetime;
            let page = NewPage {
                form: FormView::build(&state, &cu, &f, &errors, token, false, lifetime),
                chrome: cu.chrome("api-keys").await?,
            };
            Ok((StatusCode::BAD_REQUEST, page).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

// -------------------------------------------------------------------------- detail

pub async fn detail(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Path(id): Path<String>,
) -> Result<Response> {
    cu.require(Action::ViewKeys)?;
    let key = state.keys().load(&Actor::member(&cu, meta), &id).await?;
    let page: DetailPage = detail_page(
        &state,
        &cu,
        &key,
        &form_from_key(&key),
        &FieldErrors::default(),
    )
    .await?;
    Ok(page.into_response())
}

// -------------------------------------------------------------------------- update

pub async fn update(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Path(id): Path<String>,
    Form(f): Form<KeyForm>,
) -> Result<Response> {
    let (actor, key) = form_target(&state, &cu, meta, &id, &f.org).await?;
    let keys = state.keys();
    let updated = match f.to_patch(&state) {
        Ok(patch) => keys.update(&actor, &key.id, patch).await,
        // Authorization and state come before the form's errors.
        Err(errors) => keys
            .may_update(&actor, &key)
            .and(Err(KeyError::Invalid(errors))),
    };
    let back = format!("/settings/api-keys/{}", key.id);
    match updated {
        Ok(u) if !u.changed => {
            cu.flash("info", "Nothing changed.").await?;
            Ok(Redirect::to(&back).into_response())
        }
        Ok(u) => {
            cu.flash("success", format!("Saved changes to “{}”.", u.name))
                .await?;
            Ok(Redirect::to(&back).into_response())
        }
        Err(KeyError::Invalid(errors)) => {
            let mut shown = f;
            shown.environment = key.environment.clone();
            let page = detail_page(&state, &cu, &key, &shown, &errors).await?;
            Ok((StatusCode::BAD_REQUEST, page).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

// -------------------------------------------------------------------------- revoke

#[derive(Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    org: String,
    /// `compromised`, `no_longer_needed`, `rotated`, `member_left` or `other` (optional).
    #[serde(default)]
    reason: String,
    #[serde(default)]
    note: String,
}

pub async fn revoke(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Path(id): Path<String>,
    Form(f): Form<RevokeForm>,
) -> Result<Response> {
    let (actor, key) = form_target(&state, &cu, meta, &id, &f.org).await?;
    let keys = state.keys();
    let revocation = Revocation::parse(&f.reason, &f.note).map_err(AppError::bad_request)?;
    match keys.revoke(&actor, &key.id, &revocation).await {
        Ok(key) => {
            cu.flash(
                "success",
                format!("Revoked “{}”. It stopped working immediately.", key.name),
            )
            .await?
        }
        Err(KeyError::AlreadyRevoked) => {
            cu.flash("info", format!("“{}” was already revoked.", key.name))
                .await?
        }
        Err(e) => return Err(e.into()),
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
    let actor = Actor::member(&cu, meta);
    let keys = state.keys();
    keys.require(&actor, Action::ManageAnyKey)?;
    cu.same_org(&f.org)?;
    let back = "/settings/api-keys?creator=removed";
    if f.keys.is_empty() {
        cu.flash("error", "Select at least one key.").await?;
        return Ok(Redirect::to(back).into_response());
    }
    let message = match f.action.as_str() {
        "reassign" => {
            let (n, email) = keys.bulk_reassign(&actor, &f.keys, &f.to).await?;
            format!("Reassigned {n} key(s) to {email}.")
        }
        "revoke" => {
            let why = Revocation::because(RevocationReason::MemberLeft);
            let n = keys.bulk_revoke(&actor, &f.keys, &why).await?;
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
    let (actor, key) = form_target(&state, &cu, meta, &id, &f.org).await?;
    let keys = state.keys();
    let enabled = match f.enabled.as_str() {
        "true" => true,
        "false" => false,
        _ => return Err(AppError::bad_request("Choose to pause or resume the key.")),
    };
    let (key, changed) = keys.set_enabled(&actor, &key.id, enabled).await?;
    let msg = match (changed, enabled) {
        (false, _) => {
            cu.flash("info", format!("“{}” was not changed.", key.name))
                .await?;
            None
        }
        (true, true) => Some(format!("Resumed “{}”. It works again.", key.name)),
        (true, false) => Some(format!(
            "Paused “{}”. Requests with it are refused until you resume it.",
            key.name
        )),
    };
    if let Some(msg) = msg {
        cu.flash("success", msg).await?;
    }
    Ok(Redirect::to(&format!("/settings/api-keys/{}", key.id)).into_response())
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

pub async fn roll(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Path(id): Path<String>,
    Form(f): Form<RollForm>,
) -> Result<Response> {
    let (actor, old) = form_target(&state, &cu, meta, &id, &f.org).await?;
    let keys = state.keys();
    let back = format!("/settings/api-keys/{}", old.id);
    if !session::consume_form_token(&cu.session, &state.store, &f.form_token, state.clock.unix())
        .await?
    {
        cu.flash(
            "info",
            "That roll was already submitted. The new key was shown only once; roll again if you did not copy it.",
        )
        .await?;
        return Ok(Redirect::to(&back).into_response());
    }
    let grace = GraceChoice::parse(&f.grace)
        .ok_or_else(|| AppError::bad_request("Choose when the current key stops working."))?;
    match keys.roll(&actor, &old.id, grace).await {
        Ok(Rolled {
            new, grace_until, ..
        }) => {
            let r = &new.record;
            created_page(
                &state,
                &cu,
                &r.id,
                &r.name,
                new.secret,
                r.expires_at,
                Some(grace_until),
            )
            .await
        }
        Err(KeyError::Closed) => {
            cu.flash("error", KeyError::NOT_ROLLABLE).await?;
            Ok(Redirect::to(&back).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

// ------------------------------------------------------------------------- credits

#[derive(Deserialize)]
pub struct CreditsForm {
    #[serde(default)]
    org: String,
    #[serde(default)]
    remaining: String,
    /// `""` (no refill), `daily` or `monthly`.
    #[serde(default)]
    refill_interval: String,
    #[serde(default)]
    refill_amount: String,
    #[serde(default)]
    refill_day: String,
    #[serde(default)]
    low_threshold: String,
    /// Checked: remove the limit (unlimited use).
    #[serde(default)]
    unlimited: String,
}

/// A whole number typed in a form field (empty: none).
fn whole(s: &str, what: &str) -> std::result::Result<Option<i64>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    s.parse::<i64>()
        .map(Some)
        .map_err(|_| format!("{what} must be a whole number."))
}

impl CreditsForm {
    /// The settings (`None`: unlimited use, when asked for).
    fn parse(
        &self,
        has_balance: bool,
    ) -> std::result::Result<Option<crate::store::KeyCredits>, String> {
        if !self.unlimited.is_empty() {
            return Ok(None);
        }
        // "No refill" ignores the refill's other fields (still filled in from before); a
        // daily refill ignores the day.
        let interval = self.refill_interval.trim();
        let spec = super::credits::CreditsSpec {
            remaining: whole(&self.remaining, "The credits remaining")?,
            refill_interval: Some(interval),
            refill_amount: match interval {
                "" => None,
                _ => whole(&self.refill_amount, "The refill amount")?,
            },
            refill_day: match interval {
                "monthly" => whole(&self.refill_day, "The refill day")?,
                _ => None,
            },
            low_threshold: whole(&self.low_threshold, "The low-balance threshold")?,
        };
        spec.parse(has_balance).map(Some)
    }
}

/// Sets a key's credits from its page: a balance, a refill, a low-balance threshold, or
/// nothing for unlimited use.
pub async fn set_credits(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Path(id): Path<String>,
    Form(f): Form<CreditsForm>,
) -> Result<Response> {
    let (actor, key) = form_target(&state, &cu, meta, &id, &f.org).await?;
    let back = format!("/settings/api-keys/{}", key.id);
    let credits = match f.parse(key.credits_remaining.is_some()) {
        Ok(c) => c,
        Err(m) => {
            cu.flash("error", m).await?;
            return Ok(Redirect::to(&back).into_response());
        }
    };
    let changed = state
        .keys()
        .set_credit_settings(&actor, &key, credits)
        .await?;
    let msg = match (changed, credits) {
        (false, _) => format!("The credits of “{}” were not changed.", key.name),
        (true, None) => format!("“{}” now has unlimited use (no credits).", key.name),
        (true, Some(_)) => format!("Saved the credits of “{}”.", key.name),
    };
    cu.flash(if changed { "success" } else { "info" }, msg)
        .await?;
    Ok(Redirect::to(&back).into_response())
}
