//! Starting an SSO sign-in (or a link), the callback, and what a verified identity
//! becomes. Every way this can fail ends on a failure page: no session, and an audit row
//! whenever the browser had a sign-in in flight.

use crate::audit::AuditAction;
use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Form,
    extract::{Query, State},
    response::{IntoResponse, Redirect, Response},
};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tower_sessions::Session;

use super::{OperatorProvider, Source, SsoFailure, VerifiedIdentity, oidc::Pending};
use crate::{
    audit::ClientMeta,
    auth::{
        CurrentUser, normalize_email,
        session::{self, AUTHENTICATED_AT, safe_next},
        valid_email,
    },
    config::SignupMode,
    error::{AppError, Result},
    state::AppState,
    store::{NewAudit, SsoConnection, SsoIdentity, SsoJoin, StoreError, User},
};

/// Session key of the sign-ins in flight.
const PENDING: &str = "sso_pending";
/// A browser may have this many sign-ins in flight (several tabs); older ones are dropped.
const MAX_PENDING: usize = 5;
/// A sign-in must come back within this many seconds.
const PENDING_TTL: i64 = 15 * 60;
/// Linking an identity needs a sign-in at most this old (re-authentication).
const REAUTH_WINDOW: i64 = 15 * 60;

/// What the sign-in is for.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
enum Intent {
    SignIn,
    /// Link the identity to this (signed-in) account.
    Link {
        user_id: String,
    },
    /// The password of this account was just checked and its organization requires SSO:
    /// link the identity (same verified email) and sign in.
    LinkAndSignIn {
        user_id: String,
    },
}

#[derive(Clone, Serialize, Deserialize)]
struct InFlight {
    oidc: Pending,
    source: String,
    intent: Intent,
    next: String,
    created_at: i64,
}

#[derive(Template, WebTemplate)]
#[template(path = "sso/failed.html")]
struct FailedPage {
    message: String,
    back: &'static str,
    back_label: &'static str,
}

/// The hop to the provider. A page rather than a redirect: browsers apply the sign-in
/// page's CSP `form-action 'self'` to redirects that follow a form post, which would stop
/// a 303 to the provider.
#[derive(Template, WebTemplate)]
#[template(path = "sso/redirect.html")]
struct RedirectPage {
    url: String,
    provider: String,
}

pub async fn resolve_source(state: &AppState, key: &str) -> Result<Option<Source>> {
    if let Some(id) = key.strip_prefix("connection:") {
        return Ok(state
            .store
            .sso_connection_by_id(id)
            .await?
            .map(Source::Connection));
    }
    if let Some(id) = key.strip_prefix("provider:") {
        return Ok(provider(state, id).map(Source::Provider));
    }
    Ok(None)
}

fn provider(state: &AppState, id: &str) -> Option<OperatorProvider> {
    state
        .config
        .sso_providers
        .iter()
        .find(|p| p.id == id)
        .cloned()
}

/// Remembers the attempt in the browser's session and sends the browser to the provider.
async fn go_to_provider(
    state: &AppState,
    session: &Session,
    source: &Source,
    intent: Intent,
    next: String,
    login_hint: Option<&str>,
) -> std::result::Result<Response, SsoFailure> {
    let params = source.params(&state.sso.secrets)?;
    let (url, oidc) = state
        .sso
        .oidc
        .begin(
            &params,
            &state.sso_redirect_uri(),
            login_hint,
            // Linking changes how the account can be entered: ask the provider to
            // authenticate the person again rather than reuse its session.
            intent != Intent::SignIn,
        )
        .await?;
    let mut pending: Vec<InFlight> = session
        .get(PENDING)
        .await
        .map_err(|e| SsoFailure::Internal(e.to_string()))?
        .unwrap_or_default();
    pending.push(InFlight {
        oidc,
        source: source.key(),
        intent,
        next,
        created_at: state.clock.unix(),
    });
    if pending.len() > MAX_PENDING {
        pending.drain(..pending.len() - MAX_PENDING);
    }
    session
        .insert(PENDING, pending)
        .await
        .map_err(|e| SsoFailure::Internal(e.to_string()))?;
    Ok(RedirectPage {
        url,
        provider: source.name().to_string(),
    }
    .into_response())
}

#[derive(Deserialize)]
pub struct StartForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    provider: String,
    next: Option<String>,
}

/// "Continue with SSO" (a work email routed to the connection that claims its domain) or
/// an operator-wide provider's button. A POST with the CSRF token: nothing starts a
/// sign-in on its own (no silent sign-in from an `<img>` or iframe).
pub async fn start(
    State(state): State<AppState>,
    session: Session,
    meta: ClientMeta,
    Form(form): Form<StartForm>,
) -> Result<Response> {
    let next = safe_next(form.next.as_deref());
    let email = normalize_email(&form.email);
    let source = if !form.provider.is_empty() {
        match provider(&state, &form.provider) {
            Some(p) => Source::Provider(p),
            None => return Err(AppError::bad_request("Unknown sign-in provider.")),
        }
    } else {
        if !valid_email(&email) {
            return crate::auth::login_page_with_error(
                &state,
                &session,
                &email,
                &next,
                "Enter your work email address to continue with SSO.",
            )
            .await;
        }
        let domain = email.rsplit('@').next().unwrap_or_default();
        match state.store.sso_connection_for_domain(domain).await? {
            Some(c) => Source::Connection(c),
            None => {
                return crate::auth::login_page_with_error(
                    &state,
                    &session,
                    &email,
                    &next,
                    &format!("Single sign-on is not set up for {domain}. Sign in with your password, or ask your administrator."),
                )
                .await;
            }
        }
    };
    let hint = (!email.is_empty()).then_some(email.as_str());
    match go_to_provider(&state, &session, &source, Intent::SignIn, next, hint).await {
        Ok(r) => Ok(r),
        Err(f) => fail(&state, &meta, None, Some(&source), None, f).await,
    }
}

/// Password sign-in of a member whose organization requires SSO and who has not linked an
/// identity from its provider yet: the password proved the account, now the provider
/// proves the identity, and the callback links the two.
pub async fn link_after_password(
    state: &AppState,
    session: &Session,
    meta: &ClientMeta,
    user: &User,
    conn: SsoConnection,
    next: String,
) -> Result<Response> {
    // Linking an identity needs an address the account has proved.
    if !user.email_verified() {
        return crate::auth::login_page_with_error(
            state,
            session,
            &user.email,
            &next,
            &format!(
                "Your organization requires single sign-on ({}), and linking it needs a confirmed email address. Open the link we emailed to {} (or reset your password, which confirms it too), then sign in again.",
                conn.name, user.email
            ),
        )
        .await;
    }
    let source = Source::Connection(conn);
    let intent = Intent::LinkAndSignIn {
        user_id: user.id.clone(),
    };
    match go_to_provider(state, session, &source, intent, next, Some(&user.email)).await {
        Ok(r) => Ok(r),
        Err(f) => fail(state, meta, None, Some(&source), None, f).await,
    }
}

#[derive(Deserialize)]
pub struct LinkForm {
    source: String,
}

/// Settings → Account → "Link SSO identity": only while signed in, recently (otherwise
/// sign in again first), and only with one of the user's organizations' connections or an
/// operator-wide provider.
pub async fn link(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Form(form): Form<LinkForm>,
) -> Result<Response> {
    cu.require_verified_email()?;
    let source = resolve_source(&state, &form.source)
        .await?
        .filter(|s| match s.connection() {
            Some(c) => cu.orgs.iter().any(|m| m.org_id == c.org_id),
            None => true,
        })
        .ok_or(AppError::NotFound)?;
    let auth_at: i64 = cu.session.get(AUTHENTICATED_AT).await?.unwrap_or(0);
    if state.clock.unix() - auth_at > REAUTH_WINDOW {
        return Ok(Redirect::to("/login?reason=reauth&next=%2Fsettings%2Faccount").into_response());
    }
    let intent = Intent::Link {
        user_id: cu.user.id.clone(),
    };
    match go_to_provider(
        &state,
        &cu.session,
        &source,
        intent,
        "/settings/account".into(),
        Some(&cu.user.email),
    )
    .await
    {
        Ok(r) => Ok(r),
        Err(f) => fail(&state, &meta, Some(&cu.user), Some(&source), None, f).await,
    }
}

#[derive(Deserialize)]
pub struct UnlinkForm {
    issuer: String,
    subject: String,
}

pub async fn unlink(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Form(form): Form<UnlinkForm>,
) -> Result<Response> {
    let identities = state.store.sso_identities(&cu.user.id).await?;
    let Some(identity) = identities
        .iter()
        .find(|i| i.issuer == form.issuer && i.subject == form.subject)
    else {
        return Err(AppError::NotFound);
    };
    if cu.user.password_hash.is_none() && identities.len() == 1 {
        cu.flash(
            "error",
            "This identity is the only way into your account. Set a password first (sign out, then “Forgot your password?”), or link another identity.",
        )
        .await?;
        return Ok(Redirect::to("/settings/account").into_response());
    }
    let audit = meta
        .stamp(NewAudit::new(
            AuditAction::AccountSsoUnlinked,
            state.clock.unix(),
        ))
        .actor(Some(&cu.user.id), &cu.user.email)
        .target("user", &cu.user.id, &cu.user.email)
        .details(serde_json::json!({
            "issuer": identity.issuer, "subject": identity.subject, "source": identity.source_name,
        }));
    state
        .store
        .unlink_sso_identity(&cu.user.id, &identity.issuer, &identity.subject, &audit)
        .await?;
    cu.flash(
        "success",
        format!("Unlinked {} ({}).", identity.source_name, identity.email),
    )
    .await?;
    Ok(Redirect::to("/settings/account").into_response())
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    iss: Option<String>,
    error: Option<String>,
}

/// The provider sends the browser back here (a top-level GET, so the Lax session cookie
/// comes along). The attempt is looked up by `state` in this browser's session and removed
/// before anything else: each is usable once. A signed-in user is checked like on every
/// dashboard page (timeouts, session epoch, disabled account).
pub async fn callback(
    State(state): State<AppState>,
    session: Session,
    cu: Option<CurrentUser>,
    meta: ClientMeta,
    Query(q): Query<CallbackQuery>,
) -> Result<Response> {
    let signed_in = cu.map(|c| c.user);
    let mut pending: Vec<InFlight> = session.get(PENDING).await?.unwrap_or_default();
    let given = q.state.unwrap_or_default();
    let found = pending
        .iter()
        .position(|p| bool::from(p.oidc.state.as_bytes().ct_eq(given.as_bytes())))
        .filter(|_| !given.is_empty());
    let Some(found) = found else {
        if pending.is_empty() && signed_in.is_none() {
            // Nothing was started in this browser: a stray or forged request. Logged, but
            // not audited, so anonymous requests cannot fill the audit log.
            tracing::warn!(event = %AuditAction::AuthSsoFailed, reason = "invalid_state", ip = %meta.ip, "SSO callback without a sign-in in flight");
            return Ok(page(&SsoFailure::UnknownState, false));
        }
        let f = SsoFailure::UnknownState;
        return fail(&state, &meta, signed_in.as_ref(), None, None, f).await;
    };
    let flight = pending.remove(found);
    session.insert(PENDING, &pending).await?;

    let source = resolve_source(&state, &flight.source).await?;
    let Some(source) = source.filter(|s| s.issuer() == flight.oidc.issuer) else {
        let f = SsoFailure::SourceGone;
        return fail(&state, &meta, signed_in.as_ref(), None, Some(&flight), f).await;
    };
    let outcome = async {
        if state.clock.unix() - flight.created_at > PENDING_TTL {
            return Err(SsoFailure::Expired);
        }
        if let Some(err) = q.error {
            let err: String = err
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            return Err(SsoFailure::ProviderError(err));
        }
        let code = q
            .code
            .filter(|c| !c.is_empty())
            .ok_or_else(|| SsoFailure::ProviderError("a response without code".into()))?;
        let params = source.params(&state.sso.secrets)?;
        state
            .sso
            .oidc
            .finish(
                &params,
                &state.sso_redirect_uri(),
                &flight.oidc,
                &code,
                q.iss.as_deref(),
                state.clock.now(),
            )
            .await
    }
    .await;
    let identity = match outcome {
        Ok(i) => i,
        Err(f) => {
            let user = signed_in.as_ref();
            return fail(&state, &meta, user, Some(&source), Some(&flight), f).await;
        }
    };
    let result = match &flight.intent {
        Intent::SignIn => sign_in(&state, &session, &meta, &source, &identity, &flight.next).await,
        Intent::Link { user_id } => {
            let user = signed_in.as_ref().filter(|u| &u.id == user_id);
            link_identity(&state, &session, &meta, user, &source, &identity).await
        }
        Intent::LinkAndSignIn { user_id } => {
            link_and_sign_in(
                &state,
                &session,
                &meta,
                user_id,
                &source,
                &identity,
                &flight.next,
            )
            .await
        }
    };
    match result {
        Ok(r) => Ok(r),
        Err(Outcome::Failed(f)) => {
            let extra = serde_json::json!({
                "subject": identity.subject,
                "email": identity.email,
                "email_verified": identity.email_verified,
            });
            record_failure(
                &state,
                &meta,
                signed_in.as_ref(),
                Some(&source),
                Some(&flight),
                &f,
                extra,
            )
            .await?;
            Ok(failure_page(&f, &flight))
        }
        Err(Outcome::Error(e)) => Err(e),
    }
}

/// A failure the person sees as such, or an error of ours.
enum Outcome {
    Failed(SsoFailure),
    Error(AppError),
}

impl From<AppError> for Outcome {
    fn from(e: AppError) -> Self {
        Outcome::Error(e)
    }
}
impl From<StoreError> for Outcome {
    fn from(e: StoreError) -> Self {
        Outcome::Error(e.into())
    }
}
impl From<SsoFailure> for Outcome {
    fn from(f: SsoFailure) -> Self {
        Outcome::Failed(f)
    }
}

fn identity_row(source: &Source, id: &VerifiedIdentity, user_id: &str, now: i64) -> SsoIdentity {
    SsoIdentity {
        issuer: id.issuer.clone(),
        subject: id.subject.clone(),
        user_id: user_id.to_string(),
        source: source.key(),
        source_name: source.name().to_string(),
        email: id.email.clone().unwrap_or_default(),
        created_at: now,
        last_used_at: Some(now),
    }
}

fn identity_details(source: &Source, id: &VerifiedIdentity) -> serde_json::Value {
    serde_json::json!({
        "method": "sso",
        "issuer": id.issuer,
        "subject": id.subject,
        "source": source.name(),
        "email": id.email,
    })
}

/// The provider's email, when it is verified and well-formed.
fn verified_email(id: &VerifiedIdentity) -> std::result::Result<String, SsoFailure> {
    id.email
        .as_deref()
        .map(normalize_email)
        .filter(|e| id.email_verified && valid_email(e))
        .ok_or(SsoFailure::UnverifiedEmail)
}

/// A verified identity signs in: as the account it is linked to or — the first time, with
/// a verified email in the connection's domains and no account for it yet — as a new
/// account that joins the connection's organization. An existing account is never taken
/// over by email: its owner links the identity after proving the password.
async fn sign_in(
    state: &AppState,
    session: &Session,
    meta: &ClientMeta,
    source: &Source,
    id: &VerifiedIdentity,
    next: &str,
) -> std::result::Result<Response, Outcome> {
    let now = state.clock.unix();
    let conn = source.connection();
    let (user, identity, how) = match state.store.sso_identity(&id.issuer, &id.subject).await? {
        Some(identity) => {
            let user = state
                .store
                .user(&identity.user_id)
                .await?
                .ok_or(SsoFailure::AccountDisabled)?;
            (user, identity, "linked")
        }
        None => {
            let email = verified_email(id)?;
            let domain = email.rsplit('@').next().unwrap_or_default().to_string();
            if let Some(c) = conn
                && !c.domains.contains(&domain)
            {
                return Err(SsoFailure::DomainNotAllowed(domain).into());
            }
            if state.store.user_by_email(&email).await?.is_some() {
                return Err(SsoFailure::ExistingAccount(email).into());
            }
            let closed = match state.config.signup {
                SignupMode::Closed => true,
                SignupMode::Invite => conn.is_none(),
                SignupMode::Open => false,
            };
            if closed {
                return Err(SsoFailure::SignupClosed.into());
            }
            let user = create_account(state, meta, source, id, &email, now).await?;
            let identity = identity_row(source, id, &user.id, now);
            (user, identity, "created")
        }
    };
    finish_sign_in(state, session, meta, source, id, user, identity, how, next).await
}

/// A first SSO sign-in's new account, joining the connection's organization with the
/// role of an open invitation for the address (consumed in the same transaction), else the
/// connection's default role.
async fn create_account(
    state: &AppState,
    meta: &ClientMeta,
    source: &Source,
    id: &VerifiedIdentity,
    email: &str,
    now: i64,
) -> std::result::Result<User, Outcome> {
    let conn = source.connection();
    let invitation = match conn {
        Some(c) => state
            .store
            .open_invitations(&c.org_id)
            .await?
            .into_iter()
            .find(|i| i.email == email && i.expires_at > now),
        None => None,
    };
    let join = conn.map(|c| SsoJoin {
        org_id: c.org_id.clone(),
        default_role: c.default_role.clone(),
        invitation: invitation.map(|inv| {
            let audit = meta
                .stamp(NewAudit::new(AuditAction::InvitationAccepted, now))
                .org(&inv.org_id)
                .target("invitation", &inv.id, &inv.email)
                .details(serde_json::json!({ "role": inv.role, "via": "sso" }));
            (inv, audit)
        }),
        audit: meta
            .stamp(NewAudit::new(AuditAction::MemberJoined, now))
            .actor(None, email)
            .target("user", "", email)
            .details(serde_json::json!({ "via": "sso", "connection": c.name })),
    });
    let name = id.name.clone().unwrap_or_default();
    let name = name.trim();
    let personal = format!(
        "{}'s organization",
        if name.is_empty() { email } else { name }
    );
    let signup = meta
        .stamp(NewAudit::new(AuditAction::UserSignedUp, now))
        .details(identity_details(source, id));
    let identity = identity_row(source, id, "", now);
    Ok(state
        .store
        .create_sso_user(email, name, &personal, &identity, join.as_ref(), signup)
        .await?)
}

/// Links the identity to the account whose password was just checked, then signs in.
async fn link_and_sign_in(
    state: &AppState,
    session: &Session,
    meta: &ClientMeta,
    user_id: &str,
    source: &Source,
    id: &VerifiedIdentity,
    next: &str,
) -> std::result::Result<Response, Outcome> {
    let now = state.clock.unix();
    let user = state
        .store
        .user(user_id)
        .await?
        .filter(|u| u.disabled_at.is_none())
        .ok_or(SsoFailure::AccountDisabled)?;
    if let Some(existing) = state.store.sso_identity(&id.issuer, &id.subject).await? {
        if existing.user_id != user.id {
            return Err(SsoFailure::IdentityTaken.into());
        }
        return finish_sign_in(
            state, session, meta, source, id, user, existing, "linked", next,
        )
        .await;
    }
    // The provider must vouch for the same address the password protected.
    if verified_email(id)? != user.email {
        return Err(SsoFailure::EmailMismatch(user.email).into());
    }
    let identity = link_to(state, meta, &user, source, id, now).await?;
    finish_sign_in(
        state,
        session,
        meta,
        source,
        id,
        user,
        identity,
        "linked_now",
        next,
    )
    .await
}

/// Links an identity to an account, audited; refuses one linked elsewhere, or a second
/// identity from the same issuer.
async fn link_to(
    state: &AppState,
    meta: &ClientMeta,
    user: &User,
    source: &Source,
    id: &VerifiedIdentity,
    now: i64,
) -> std::result::Result<SsoIdentity, Outcome> {
    if state
        .store
        .sso_identities(&user.id)
        .await?
        .iter()
        .any(|i| i.issuer == id.issuer)
    {
        return Err(SsoFailure::IssuerAlreadyLinked.into());
    }
    let mut audit = meta
        .stamp(NewAudit::new(AuditAction::AccountSsoLinked, now))
        .actor(Some(&user.id), &user.email)
        .target("user", &user.id, &user.email)
        .details(serde_json::json!({
            "issuer": id.issuer, "subject": id.subject, "source": source.name(), "email": id.email,
        }));
    if let Some(c) = source.connection() {
        audit = audit.org(&c.org_id);
    }
    let identity = identity_row(source, id, &user.id, now);
    match state.store.link_sso_identity(&identity, &audit).await {
        Ok(()) => Ok(identity),
        Err(StoreError::Conflict) => Err(SsoFailure::IdentityTaken.into()),
        Err(e) => Err(e.into()),
    }
}

/// The end of every successful SSO sign-in: audit, a new session id, the landing page.
#[allow(clippy::too_many_arguments)]
async fn finish_sign_in(
    state: &AppState,
    session: &Session,
    meta: &ClientMeta,
    source: &Source,
    id: &VerifiedIdentity,
    user: User,
    identity: SsoIdentity,
    how: &str,
    next: &str,
) -> std::result::Result<Response, Outcome> {
    if user.disabled_at.is_some() {
        return Err(SsoFailure::AccountDisabled.into());
    }
    let now = state.clock.unix();
    let conn = source.connection();
    let mut details = identity_details(source, id);
    details["account"] = serde_json::Value::from(how);
    let mut audit = meta
        .stamp(NewAudit::new(AuditAction::AuthSignedIn, now))
        .actor(Some(&user.id), &user.email)
        .target("user", &user.id, &user.email)
        .details(details);
    let landing_org = match conn {
        Some(c) if state.store.membership(&user.id, &c.org_id).await?.is_some() => {
            audit = audit.org(&c.org_id);
            Some(c.org_id.clone())
        }
        _ => None,
    };
    state.store.sso_signed_in(&identity, &audit).await?;
    tracing::info!(event = %AuditAction::AuthSignedIn, user_id = %user.id, ip = %meta.ip, method = "sso", issuer = %id.issuer, "signed in");
    session::sign_in(
        state,
        session,
        &user,
        landing_org.as_deref(),
        meta,
        now,
        "sso",
    )
    .await?;
    // An organization's two-step policy leaves sign-ins through its own connection to its
    // provider; any other SSO sign-in (an operator-wide provider, another organization's
    // connection) counts like a password there.
    let method = match conn {
        Some(c) => session::org_sso_method(&c.org_id),
        None => "sso-provider".to_string(),
    };
    session::set_sign_in_method(session, &method).await?;
    if how == "created" && conn.is_some() {
        session::set_flash(
            session,
            "success",
            format!("Welcome! You joined through {}.", source.name()),
        )
        .await?;
        // Joined already: an invitation link they came from has been used.
        return Ok(Redirect::to("/settings/api-keys").into_response());
    }
    Ok(Redirect::to(next).into_response())
}

/// Links a verified identity to the signed-in account that asked for it (`user` is `None`
/// when that person is no longer signed in here).
async fn link_identity(
    state: &AppState,
    session: &Session,
    meta: &ClientMeta,
    user: Option<&User>,
    source: &Source,
    id: &VerifiedIdentity,
) -> std::result::Result<Response, Outcome> {
    let user = user.ok_or(SsoFailure::UnknownState)?;
    verified_email(id)?;
    if let Some(existing) = state.store.sso_identity(&id.issuer, &id.subject).await? {
        if existing.user_id == user.id {
            session::set_flash(
                session,
                "info",
                format!("{} is already linked.", source.name()),
            )
            .await?;
            return Ok(Redirect::to("/settings/account").into_response());
        }
        return Err(SsoFailure::IdentityTaken.into());
    }
    link_to(state, meta, user, source, id, state.clock.unix()).await?;
    session::set_flash(
        session,
        "success",
        format!(
            "Linked {} ({}). You can now sign in with it.",
            source.name(),
            id.email.as_deref().unwrap_or_default()
        ),
    )
    .await?;
    Ok(Redirect::to("/settings/account").into_response())
}

/// Audits a failed attempt and shows what happened. Nobody is signed in by it (a signed-in
/// person who was linking stays signed in as before).
async fn fail(
    state: &AppState,
    meta: &ClientMeta,
    signed_in: Option<&User>,
    source: Option<&Source>,
    flight: Option<&InFlight>,
    f: SsoFailure,
) -> Result<Response> {
    record_failure(
        state,
        meta,
        signed_in,
        source,
        flight,
        &f,
        serde_json::json!({}),
    )
    .await?;
    Ok(match flight {
        Some(fl) => failure_page(&f, fl),
        None => page(&f, signed_in.is_some()),
    })
}

async fn record_failure(
    state: &AppState,
    meta: &ClientMeta,
    signed_in: Option<&User>,
    source: Option<&Source>,
    flight: Option<&InFlight>,
    f: &SsoFailure,
    mut details: serde_json::Value,
) -> Result<()> {
    details["reason"] = f.reason().into();
    details["detail"] = f.to_string().into();
    if let Some(s) = source {
        details["issuer"] = s.issuer().into();
        details["source"] = s.name().into();
    }
    if let Some(fl) = flight {
        details["intent"] = match fl.intent {
            Intent::SignIn => "sign_in",
            Intent::Link { .. } => "link",
            Intent::LinkAndSignIn { .. } => "link_and_sign_in",
        }
        .into();
    }
    let mut audit = meta
        .stamp(NewAudit::new(
            AuditAction::AuthSsoFailed,
            state.clock.unix(),
        ))
        .details(details);
    if let Some(u) = signed_in {
        audit = audit.actor(Some(&u.id), &u.email);
    }
    if let Some(c) = source.and_then(Source::connection) {
        audit = audit
            .org(&c.org_id)
            .target("sso_connection", &c.id, &c.name);
    }
    state.store.record(&audit).await?;
    tracing::warn!(event = %AuditAction::AuthSsoFailed, reason = f.reason(), detail = %f, ip = %meta.ip, "SSO sign-in failed");
    Ok(())
}

fn failure_page(f: &SsoFailure, flight: &InFlight) -> Response {
    page(f, matches!(flight.intent, Intent::Link { .. }))
}

fn page(f: &SsoFailure, linking: bool) -> Response {
    let (back, back_label) = if linking {
        ("/settings/account", "Back to your account")
    } else {
        ("/login", "Back to sign in")
    };
    (
        f.status(),
        FailedPage {
            message: f.message(),
            back,
            back_label,
        },
    )
        .into_response()
}
