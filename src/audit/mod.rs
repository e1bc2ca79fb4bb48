//! The audit log: who did what, when, from where. Recording happens in the store, inside
//! the transaction of the change it describes; this module provides the request metadata
//! every event carries, and the Settings → Audit log page with its exports.

pub mod action;
pub mod chain;
mod handlers;
pub mod integrity;

pub use action::{AuditAction, action_label};

pub use handlers::EventRow;
pub(crate) use handlers::export_response;

use std::net::SocketAddr;

use axum::{
    Router,
    extract::{ConnectInfo, FromRequestParts},
    http::{header, request::Parts},
    routing::get,
};

use crate::{auth::CurrentUser, state::AppState, store::NewAudit};

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
    pub fn audit(&self, action: AuditAction, meta: &ClientMeta, now: i64) -> NewAudit {
        meta.stamp(NewAudit::new(action, now))
            .org(self.org_id())
            .actor(Some(&self.user.id), &self.user.email)
    }
}
