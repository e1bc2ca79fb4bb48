//! The verification pipeline: one code path for every door (in-process today; the HTTP
//! verify API and forward-auth build on it).
//!
//! parse + checksum (no store access for malformed keys) → HMAC hash → store lookup by
//! hash (an index compares digests the caller cannot choose) → revoked (honouring a roll's
//! grace deadline) / expired / disabled → required scopes → record use.

use std::sync::Arc;

use serde::Serialize;

use crate::{
    clock::Clock,
    config::KeyPepper,
    keys::token::{ParseError, PlainKey},
    store::{ApiKey, Store, StoreError},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VerifyCode {
    Valid,
    Missing,
    InvalidFormat,
    NotFound,
    Revoked,
    Expired,
    Disabled,
    InsufficientScope,
}

/// The answer for one presented key.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub valid: bool,
    pub code: VerifyCode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

impl Verification {
    fn without_key(code: VerifyCode) -> Self {
        Self {
            valid: false,
            code,
            key_id: None,
            org_id: None,
            name: None,
            environment: None,
            scopes: vec![],
            expires_at: None,
        }
    }

    fn for_key(code: VerifyCode, key: &ApiKey) -> Self {
        Self {
            valid: code == VerifyCode::Valid,
            code,
            key_id: Some(key.id.clone()),
            org_id: Some(key.org_id.clone()),
            name: Some(key.name.clone()),
            environment: Some(key.environment.clone()),
            scopes: key.scope_list(),
            expires_at: key.ends_at(),
        }
    }
}

/// Verifies keys against the store. Cheap to clone.
#[derive(Clone)]
pub struct Verifier {
    store: Store,
    prefix: Arc<str>,
    pepper: Arc<KeyPepper>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(store: Store, prefix: String, pepper: KeyPepper, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            prefix: prefix.into(),
            pepper: Arc::new(pepper),
            clock,
        }
    }

    /// Verifies `presented`, requiring every scope in `required`. Store failures are
    /// errors, never a valid answer (fail closed).
    pub async fn verify(
        &self,
        presented: Option<&str>,
        required: &[String],
    ) -> Result<Verification, StoreError> {
        let Some(presented) = presented.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(Verification::without_key(VerifyCode::Missing));
        };
        let key = match PlainKey::parse(&self.prefix, presented) {
            Ok((key, _env)) => key,
            Err(ParseError::Format | ParseError::Checksum) => {
                return Ok(Verification::without_key(VerifyCode::InvalidFormat));
            }
        };
        let hash = key.hash(&self.pepper);
        let Some(found) = self.store.key_by_hash(&hash.0).await? else {
            return Ok(Verification::without_key(VerifyCode::NotFound));
        };
        let now = self.clock.unix();
        let code = if found.revoked_at.is_some_and(|r| r <= now) {
            VerifyCode::Revoked
        } else if found.expires_at.is_some_and(|e| e <= now) {
            VerifyCode::Expired
        } else if !found.enabled {
            VerifyCode::Disabled
        } else if !required.iter().all(|s| found.scope_list().contains(s)) {
            VerifyCode::InsufficientScope
        } else {
            VerifyCode::Valid
        };
        if code == VerifyCode::Valid {
            self.store.mark_key_used(&found, now).await?;
        }
        Ok(Verification::for_key(code, &found))
    }
}
