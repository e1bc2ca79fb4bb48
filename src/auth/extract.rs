//! The `CurrentUser` extractor: who is signed in, in which organization, with which role.
//! Pages take it as an argument; without a valid session it redirects to the sign-in page.
//! It also enforces the idle and absolute session timeouts with the injected clock.

use axum::{
    extract::FromRequestParts,
    http::request::Parts,
    response::{IntoResponse, Redirect, Response},
};
use tower_sessions::Session;

use super::session::{self, AUTHENTICATED_AT, EPOCH, Flash, ORG_ID, SEEN_AT, USER_ID};
use crate::{
    error::AppError,
    orgs::{Action, Role},
    state::AppState,
    store::{Membership, User},
};

#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub user: User,
    /// The active organization.
    pub org: Membership,
    pub role: Role,
    /// Every organization the user belongs to (for the switcher).
    pub orgs: Vec<Membership>,
    pub session: Session,
    pub csrf: String,
}

impl CurrentUser {
    pub fn org_id(&self) -> &str {
        &self.org.org_id
    }

    /// The active organization's record (its settings and policies).
    pub async fn organization(
        &self,
        store: &crate::store::Store,
    ) -> Result<crate::store::Org, AppError> {
        store.org(self.org_id()).await?.ok_or(AppError::NotFound)
    }

    /// Fails with 403 unless the role allows `action`.
    pub fn require(&self, action: Action) -> Result<(), AppError> {
        if self.role.can(action) {
            Ok(())
        } else {
            tracing::warn!(
                event = "authz_denied",
                user_id = %self.user.id,
                org_id = %self.org.org_id,
                role = %self.role,
                action = ?action,
                "permission denied"
            );
            Err(AppError::forbidden(format!(
                "Your role ({}) in {} does not allow this.",
                self.role, self.org.org_name
            )))
        }
    }

    /// Refuses a form rendered for another organization: after switching organizations in
    /// another tab, an old tab's form must not act in the newly active one.
    pub fn same_org(&self, form_org: &str) -> Result<(), AppError> {
        if form_org == self.org.org_id {
            return Ok(());
        }
        Err(AppError::Conflict(format!(
            "This page belonged to another organization than the active one ({}); you may have switched organizations in another tab. Reload the page and try again.",
            self.org.org_name
        )))
    }

    /// The page chrome every dashboard template renders: navigation, org switcher, CSRF
    /// token, and the pending flash message (consumed here).
    pub async fn chrome(&self, section: &'static str) -> Result<Chrome, AppError> {
        Ok(Chrome {
            section,
            user_email: self.user.email.clone(),
            org_id: self.org.org_id.clone(),
            org_name: self.org.org_name.clone(),
            role: self.role,
            orgs: self
                .orgs
                .iter()
                .map(|m| (m.org_id.clone(), m.org_name.clone()))
                .collect(),
            csrf: self.csrf.clone(),
            flash: session::take_flash(&self.session).await?,
            back_to: self.user.portal_return_url.clone(),
            handed_in: self.user.external_issuer.is_some(),
        })
    }

    pub async fn flash(&self, kind: &str, message: impl Into<String>) -> Result<(), AppError> {
        session::set_flash(&self.session, kind, message).await
    }

    /// Fails with 403 until the account's email address is verified (creating team
    /// organizations, inviting, linking SSO identities). The way forward is on the account
    /// page.
    pub fn require_verified_email(&self) -> Result<(), AppError> {
        if self.user.email_verified() {
            return Ok(());
        }
        tracing::info!(event = "authz_denied", user_id = %self.user.id, reason = "email_unverified", "email not verified");
        Err(AppError::forbidden(format!(
            "Confirm your email address first: open the link we emailed to {}. To get a new link, go to Settings → Account and choose “Resend verification email”.",
            self.user.email
        )))
    }
}

/// A signed-in user whose email address may still be unverified: the few pages such an
/// account reaches when `KEYWARD_REQUIRE_EMAIL_VERIFICATION` keeps it out of the rest (the
/// "verify your email" page and its resend button). Same checks as [`CurrentUser`]
/// otherwise.
pub struct SignedInUser(pub CurrentUser);

impl FromRequestParts<AppState> for SignedInUser {
    type Rejection = AuthRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        signed_in(parts, state).await.map(SignedInUser)
    }
}

impl axum::extract::OptionalFromRequestParts<AppState> for SignedInUser {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, Self::Rejection> {
        match signed_in(parts, state).await {
            Ok(cu) => Ok(Some(SignedInUser(cu))),
            Err(
                AuthRejection::SignIn { .. }
                | AuthRejection::VerifyEmail
                | AuthRejection::TwoStepRequired { .. },
            ) => Ok(None),
            Err(AuthRejection::Error(e)) => Err(e),
        }
    }
}

/// The path of a same-host `Referer`, if any.
pub(crate) fn referring_page(headers: &axum::http::HeaderMap) -> Option<String> {
    let referer = headers.get(axum::http::header::REFERER)?.to_str().ok()?;
    let host = headers.get(axum::http::header::HOST)?.to_str().ok()?;
    let rest = referer.split_once("://")?.1;
    let (authority, path) = rest.split_at(rest.find('/')?);
    (authority.eq_ignore_ascii_case(host)).then(|| path.to_string())
}

/// Shared page context for the base layout.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub section: &'static str,
    pub user_email: String,
    pub org_id: String,
    pub org_name: String,
    pub role: Role,
    pub orgs: Vec<(String, String)>,
    pub csrf: String,
    pub flash: Option<Flash>,
    /// For an account handed in by the team's app: where "Back to …" leads.
    pub back_to: Option<String>,
    /// The account was handed in by the team's app (it signs in through that app).
    pub handed_in: bool,
}

impl Chrome {
    /// Whether the navigation shows Settings → Single sign-on.
    pub fn can_manage_sso(&self) -> bool {
        self.role.can(crate::orgs::Action::ManageSso)
    }

    /// Whether the navigation shows Settings → Webhooks.
    pub fn can_manage_webhooks(&self) -> bool {
        self.role.can(crate::orgs::Action::ManageWebhooks)
    }
}

/// Why a page request has no user: go and sign in, or something failed.
pub enum AuthRejection {
    SignIn {
        next: String,
        reason: Option<&'static str>,
    },
    /// Signed in, but the operator requires a verified email address first.
    VerifyEmail,
    /// The active organization requires two-step verification and this password
    /// sign-in has no second factor: enrol first.
    TwoStepRequired {
        org_name: String,
    },
    Error(AppError),
}

impl From<AppError> for AuthRejection {
    fn from(e: AppError) -> Self {
        AuthRejection::Error(e)
    }
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        match self {
            AuthRejection::SignIn { next, reason } => {
                let mut url = format!("/login?next={}", urlencoding::encode(&next));
                if let Some(r) = reason {
                    url.push_str("&reason=");
                    url.push_str(r);
                }
                Redirect::to(&url).into_response()
            }
            AuthRejection::VerifyEmail => Redirect::to("/verify-email").into_response(),
            AuthRejection::TwoStepRequired { .. } => {
                Redirect::to(crate::two_step::SECURITY_PATH).into_response()
            }
            AuthRejection::Error(e) => e.into_response(),
        }
    }
}

/// `Option<CurrentUser>`: `None` for visitors who are not signed in.
impl axum::extract::OptionalFromRequestParts<AppState> for CurrentUser {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, Self::Rejection> {
        // Pages that take an optional user (an invitation, an SSO link) belong to no
        // organization: the organization's two-step policy does not apply to them.
        match signed_in(parts, state).await {
            Ok(user) if state.config.require_email_verification && !user.user.email_verified() => {
                Ok(None)
            }
            Ok(user) => Ok(Some(user)),
            Err(
                AuthRejection::SignIn { .. }
                | AuthRejection::VerifyEmail
                | AuthRejection::TwoStepRequired { .. },
            ) => Ok(None),
            Err(AuthRejection::Error(e)) => Err(e),
        }
    }
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = AuthRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let cu = signed_in(parts, state).await?;
        if state.config.require_email_verification && !cu.user.email_verified() {
            return Err(AuthRejection::VerifyEmail);
        }
        if !crate::two_step::policy_exempt(parts.uri.path())
            && let Some(org_name) = crate::two_step::policy_blocks(state, &cu).await?
        {
            if !parts.uri.path().starts_with("/api/") {
                session::set_flash(
                    &cu.session,
                    "info",
                    format!(
                        "{org_name} requires two-step verification. Set up an authenticator app or a passkey to continue to its pages."
                    ),
                )
                .await?;
            }
            return Err(AuthRejection::TwoStepRequired { org_name });
        }
        Ok(cu)
    }
}

/// The session's user, with the timeouts, epoch and account checks, before any
/// organization policy or email-verification requirement.
async fn signed_in(parts: &mut Parts, state: &AppState) -> Result<CurrentUser, AuthRejection> {
    {
        let session = parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or_else(|| AppError::internal(anyhow::anyhow!("session layer missing")))?;
        // After signing in, come back here; for a form post (which cannot be repeated by a
        // redirect), back to the page the form was on.
        let next = if parts.method == axum::http::Method::GET {
            parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string()
        } else {
            referring_page(&parts.headers).unwrap_or_else(|| "/settings/api-keys".into())
        };
        let sign_in = |reason| AuthRejection::SignIn {
            next: next.clone(),
            reason,
        };

        let Some(user_id) = session
            .get::<String>(USER_ID)
            .await
            .map_err(AppError::from)?
        else {
            return Err(sign_in(None));
        };
        let now = state.clock.unix();
        let auth_at: i64 = session
            .get(AUTHENTICATED_AT)
            .await
            .map_err(AppError::from)?
            .unwrap_or(0);
        let seen_at: i64 = session
            .get(SEEN_AT)
            .await
            .map_err(AppError::from)?
            .unwrap_or(0);
        let absolute = i64::try_from(state.config.session_absolute.as_secs()).unwrap_or(i64::MAX);
        let idle = i64::try_from(state.config.session_idle.as_secs()).unwrap_or(i64::MAX);
        if now.saturating_sub(auth_at) > absolute || now.saturating_sub(seen_at) > idle {
            session.flush().await.map_err(AppError::from)?;
            return Err(sign_in(Some("expired")));
        }

        let user = state.store.user(&user_id).await.map_err(AppError::from)?;
        let epoch: i64 = session
            .get(EPOCH)
            .await
            .map_err(AppError::from)?
            .unwrap_or(0);
        let Some(user) = user.filter(|u| u.disabled_at.is_none() && u.session_epoch == epoch)
        else {
            session.flush().await.map_err(AppError::from)?;
            return Err(sign_in(None));
        };
        let orgs = state
            .store
            .memberships(&user.id)
            .await
            .map_err(AppError::from)?;
        let active: Option<String> = session.get(ORG_ID).await.map_err(AppError::from)?;
        let org = active
            .and_then(|id| orgs.iter().find(|m| m.org_id == id))
            .or_else(|| orgs.first())
            .cloned()
            .ok_or_else(|| {
                AppError::forbidden("Your account does not belong to any organization.")
            })?;
        let role = Role::parse(&org.role)
            .ok_or_else(|| AppError::internal(anyhow::anyhow!("unknown role {:?}", org.role)))?;
        session.insert(SEEN_AT, now).await.map_err(AppError::from)?;
        let csrf = session::csrf_token(&session).await?;
        Ok(CurrentUser {
            user,
            org,
            role,
            orgs,
            session,
            csrf,
        })
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, header};

    use super::referring_page;

    #[test]
    fn only_same_host_referers_are_used() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("keys.example.com"));
        assert_eq!(referring_page(&h), None);
        h.insert(
            header::REFERER,
            HeaderValue::from_static("https://keys.example.com/invitations/abc"),
        );
        assert_eq!(referring_page(&h).as_deref(), Some("/invitations/abc"));
        h.insert(
            header::REFERER,
            HeaderValue::from_static("https://evil.example/x"),
        );
        assert_eq!(referring_page(&h), None);
    }
}
