//! The operator door: the deploying team's own backend, authenticated with an operator
//! credential (`KEYWARD_OPERATOR_TOKENS`, a separate credential from the verifiers'). It
//! acts for the deployment, not for a member of an organization: portal sign-in
//! hand-offs, organizations' external ids and key import.

use axum::{
    extract::FromRequestParts,
    http::{StatusCode, request::Parts},
};

use super::{ApiError, ApiResult};
use crate::{audit::ClientMeta, state::AppState, verify::http::bearer};

/// A caller holding an operator credential.
#[derive(Debug, Clone)]
pub struct Operator {
    /// The credential's name: the namespace of the team's user ids.
    pub name: String,
    pub meta: ClientMeta,
}

impl Operator {
    /// How the audit log names this operator as the actor.
    pub fn actor_label(&self) -> String {
        format!("operator:{}", self.name)
    }

    /// An audit row acted by this operator.
    pub fn audit(&self, action: crate::audit::AuditAction, now: i64) -> crate::store::NewAudit {
        self.meta
            .stamp(crate::store::NewAudit::new(action, now).actor(None, &self.actor_label()))
    }
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let name = bearer(&parts.headers).and_then(|t| state.config.operator_tokens.accepts(t));
        let Some(name) = name else {
            return Err(ApiError::Status(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "This endpoint needs an operator credential (Authorization: Bearer <token>; \
                 KEYWARD_OPERATOR_TOKENS, or operator_token in the secrets file)."
                    .into(),
            ));
        };
        let name = name.to_string();
        let meta = ClientMeta::from_request_parts(parts, state)
            .await
            .unwrap_or_default();
        Ok(Operator { name, meta })
    }
}
