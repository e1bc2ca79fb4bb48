//! The audit log: who did what, when, from where. Recording happens in the store, inside
//! the transaction of the change it describes; this module provides the request metadata
//! every event carries, and the Settings → Audit log page with its exports.

mod handlers;

pub use handlers::EventRow;
pub(crate) use handlers::export_response;

use std::net::SocketAddr;

use axum::{
    Router,
    extract::{ConnectInfo, FromRequestParts},
    http::{header, request::Parts},
    routing::get,
};

use crate::{app::AppState, auth::CurrentUser, store::NewAudit};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/settings/audit-log", get(handlers::page))
        .route("/settings/audit-log/export", get(handlers::export))
}

/// Where a request came from, for audit records, security logs and attempt budgets.
#[derive(Debug, Clone, Default)]
pub struct ClientMeta {
    /// The client's address: from the trusted-proxy header when one is configured
    /// (`KEYWARD_CLIENT_IP_HEADER`), else the peer.
    pub ip: String,
    /// The attempt-budget key: the IPv4 address or the IPv6 /64.
    pub source: String,
    pub user_agent: String,
}

impl ClientMeta {
    /// Fills in the event's source fields.
    pub fn stamp(&self, mut ev: NewAudit) -> NewAudit {
        ev.ip = self.ip.clone();
        ev.user_agent = self.user_agent.clone();
        ev
    }
}

impl FromRequestParts<AppState> for ClientMeta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let addr =
            crate::net::client_ip(state.config.client_ip_header.as_ref(), &parts.headers, peer);
        let ip = addr.map(|a| a.to_string()).unwrap_or_default();
        let source = crate::auth::throttle::source_of(addr);
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(256).collect())
            .unwrap_or_default();
        Ok(Self {
            ip,
            source,
            user_agent,
        })
    }
}

impl CurrentUser {
    /// An event by this user in the active organization.
    pub fn audit(&self, action: &str, meta: &ClientMeta, now: i64) -> NewAudit {
        meta.stamp(NewAudit::new(action, now))
            .org(self.org_id())
            .actor(Some(&self.user.id), &self.user.email)
    }
}

/// Human names of the actions, for the page and its filter menu.
pub fn action_label(action: &str) -> &str {
    match action {
        "key.created" => "Key created",
        "key.updated" => "Key updated",
        "key.rolled" => "Key rolled",
        "key.created_by_roll" => "Key created by roll",
        "key.revoked" => "Key revoked",
        "key.reassigned" => "Key reassigned",
        "key.disabled" => "Key paused",
        "key.enabled" => "Key resumed",
        "key.first_used" => "Key used for the first time",
        "auth.signed_in" => "Signed in",
        "auth.sign_in_failed" => "Sign-in failed",
        "auth.password_disabled" => "Password disabled after repeated failures",
        "auth.signed_out" => "Signed out",
        "user.signed_up" => "Signed up",
        "org.created" => "Organization created",
        "org.defaults_updated" => "Default key limits changed",
        "member.added" => "Member added",
        "member.role_changed" => "Member's role changed",
        "member.removed" => "Member removed",
        "member.left" => "Member left",
        "member.joined" => "Member joined through SSO",
        "key.expiring" => "Key expiring soon",
        "key.expired" => "Key expired",
        "key.leaked" => "Key reported as leaked",
        "webhook.created" => "Webhook endpoint added",
        "webhook.deleted" => "Webhook endpoint deleted",
        "org.api_key_management_changed" => "API key management setting changed",
        "auth.sso_failed" => "SSO sign-in failed",
        "account.sso_linked" => "SSO identity linked",
        "account.sso_unlinked" => "SSO identity unlinked",
        "sso.connection_created" => "SSO connection added",
        "sso.connection_updated" => "SSO connection changed",
        "sso.connection_deleted" => "SSO connection deleted",
        "org.ownership_transferred" => "Ownership transferred",
        "invitation.created" => "Invitation sent",
        "invitation.resent" => "Invitation resent",
        "invitation.revoked" => "Invitation revoked",
        "invitation.accepted" => "Invitation accepted",
        "auth.password_reset" => "Password reset",
        "auth.password_reset_requested" => "Password reset requested",
        "account.password_changed" => "Password changed",
        "account.session_revoked" => "Session signed out",
        "account.sessions_revoked" => "Other sessions signed out",
        "account.email_verified" => "Email address confirmed",
        "account.totp_enabled" => "Authenticator app set up",
        "account.totp_removed" => "Authenticator app removed",
        "account.passkey_added" => "Passkey added",
        "account.passkey_removed" => "Passkey removed",
        "account.recovery_codes_regenerated" => "Recovery codes regenerated",
        "account.recovery_code_used" => "Recovery code used",
        "org.two_step_policy_changed" => "Two-step verification policy changed",
        other => other,
    }
}
