//! Settings → Account → Sessions.

use crate::audit::AuditAction;
use askama::Template;
use askama_web::WebTemplate;
use axum::{
    extract::{Path, State},
    response::{IntoResponse, Redirect, Response},
};

use crate::{
    audit::ClientMeta,
    auth::{Chrome, CurrentUser},
    error::{AppError, Result},
    state::AppState,
    store::sessions::session_id_hash,
    templates::TimeView,
};

const BACK: &str = "/settings/account/sessions";

pub struct SessionView {
    pub handle: String,
    pub current: bool,
    pub browser: String,
    pub user_agent: String,
    pub ip: String,
    pub created: TimeView,
    pub last_active: TimeView,
}

#[derive(Template, WebTemplate)]
#[template(path = "settings/account/sessions.html")]
struct SessionsPage {
    chrome: Chrome,
    sessions: Vec<SessionView>,
    others: usize,
    idle_minutes: u64,
    absolute_hours: u64,
}

/// The id hash of the session this request came with.
pub(super) fn current_hash(cu: &CurrentUser) -> Result<Vec<u8>> {
    cu.session
        .id()
        .map(|id| session_id_hash(&id))
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("a signed-in session without an id")))
}

pub async fn page(State(state): State<AppState>, cu: CurrentUser) -> Result<Response> {
    let now = state.clock.unix();
    let idle = i64::try_from(state.config.session_idle.as_secs()).unwrap_or(i64::MAX);
    let absolute = i64::try_from(state.config.session_absolute.as_secs()).unwrap_or(i64::MAX);
    let current = current_hash(&cu)?;
    // Sessions past their idle or absolute limit are over even if their row is still
    // there (it goes at their next request or with the expired-record cleanup).
    let sessions: Vec<SessionView> = state
        .store
        .user_sessions(&cu.user.id)
        .await?
        .into_iter()
        .filter(|s| {
            s.id_hash == current
                || (now.saturating_sub(s.last_active) <= idle
                    && now.saturating_sub(s.created_at) <= absolute)
        })
        .map(|s| SessionView {
            current: s.id_hash == current,
            browser: super::useragent::label(&s.user_agent),
            created: TimeView::new(s.created_at, now),
            last_active: TimeView::new(s.last_active, now),
            handle: s.handle,
            user_agent: s.user_agent,
            ip: s.ip,
        })
        .collect();
    let others = sessions.iter().filter(|s| !s.current).count();
    Ok(SessionsPage {
        chrome: cu.chrome("account").await?,
        sessions,
        others,
        idle_minutes: state.config.session_idle.as_secs() / 60,
        absolute_hours: state.config.session_absolute.as_secs() / 3600,
    }
    .into_response())
}

/// Signs out one of the user's sessions. Another user's handle, or one that already ended,
/// is "not found".
pub async fn revoke(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Path(handle): Path<String>,
) -> Result<Response> {
    let current = current_hash(&cu)?;
    let mine = state.store.user_sessions(&cu.user.id).await?;
    let Some(target) = mine.iter().find(|s| s.handle == handle) else {
        return Err(AppError::NotFound);
    };
    if target.id_hash == current {
        return Err(AppError::bad_request(
            "This is the session you are using: to end it, sign out.",
        ));
    }
    let audit = meta
        .stamp(crate::store::NewAudit::new(
            AuditAction::AccountSessionRevoked,
            state.clock.unix(),
        ))
        .actor(Some(&cu.user.id), &cu.user.email)
        .target("user", &cu.user.id, &cu.user.email)
        .details(serde_json::json!({
            "browser": super::useragent::label(&target.user_agent),
            "ip": target.ip,
        }));
    if !state
        .store
        .revoke_session(&cu.user.id, &handle, &audit)
        .await?
    {
        return Err(AppError::NotFound);
    }
    tracing::info!(event = %AuditAction::AccountSessionRevoked, user_id = %cu.user.id, "session signed out");
    cu.flash(
        "success",
        format!(
            "Signed out the session of {}.",
            super::useragent::label(&target.user_agent)
        ),
    )
    .await?;
    Ok(Redirect::to(BACK).into_response())
}

/// Signs out every other session of the user.
pub async fn revoke_others(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
) -> Result<Response> {
    let current = current_hash(&cu)?;
    let audit = meta
        .stamp(crate::store::NewAudit::new(
            AuditAction::AccountSessionsRevoked,
            state.clock.unix(),
        ))
        .actor(Some(&cu.user.id), &cu.user.email)
        .target("user", &cu.user.id, &cu.user.email);
    let n = state
        .store
        .revoke_other_sessions(&cu.user.id, &current, &audit)
        .await?;
    tracing::info!(event = %AuditAction::AccountSessionsRevoked, user_id = %cu.user.id, count = n, "other sessions signed out");
    cu.flash(
        "success",
        match n {
            0 => "There was no other session to sign out.".to_string(),
            1 => "Signed out 1 other session.".to_string(),
            n => format!("Signed out {n} other sessions."),
        },
    )
    .await?;
    Ok(Redirect::to(BACK).into_response())
}
