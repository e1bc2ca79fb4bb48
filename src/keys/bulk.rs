//! The keys service's bulk actions (Settings → API Keys → Key hygiene, and former
//! members' keys): each key goes through the same rules and audit events as a one-key
//! change.

use serde_json::json;

use super::{
    ExpiryChoice,
    model::{Field, FieldErrors, KeyPatch, Revocation},
    rules::{require_open, resolve_expiry, within_own_scopes},
    service::{KeyError, KeyResult, Keys},
};
use crate::{audit::AuditAction, auth::actor::Actor, orgs::Action, store::ApiKey};

impl Keys<'_> {
    /// Revokes the given keys (admins), each audited with the reason given; returns how
    /// many were revoked now (keys already revoked are skipped).
    pub async fn bulk_revoke(
        &self,
        actor: &Actor,
        ids: &[String],
        why: &Revocation,
    ) -> KeyResult<usize> {
        self.require(actor, Action::ManageAnyKey)?;
        let mut n = 0;
        for key in self.load_all(actor, ids).await? {
            within_own_scopes(actor, &key.scope_list())?;
            match self.write_revoke(actor, &key, why).await {
                Ok(()) => n += 1,
                Err(KeyError::AlreadyRevoked) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Gives the given keys an expiry (admins) — only ever an earlier one: keys that
    /// already expire by then, and closed keys, are left as they are. The expiry must fit
    /// the organization's maximum lifetime. Returns (changed, left as they were).
    pub async fn bulk_expire(
        &self,
        actor: &Actor,
        ids: &[String],
        choice: ExpiryChoice,
        custom_date: &str,
    ) -> KeyResult<(usize, usize)> {
        self.require(actor, Action::ManageAnyKey)?;
        let now = self.now();
        let mut errors = FieldErrors::default();
        let at = match resolve_expiry(choice, custom_date, None, now) {
            Ok(Some(at)) => Some(at),
            Ok(None) => {
                errors.add(
                    Field::Expiry,
                    "Choose a date: keys cannot be set to never expire in bulk.",
                );
                None
            }
            Err(e) => {
                errors.add(Field::Expiry, e);
                None
            }
        };
        let org = self.org(actor).await?;
        if let Some(at) = at
            && !org.lifetime.allows(Some(at), now)
        {
            errors.add(Field::Expiry, org.lifetime.message());
        }
        let Some(at) = at.filter(|_| errors.is_empty()) else {
            return Err(KeyError::Invalid(errors));
        };
        let (mut changed, mut left) = (0, 0);
        for key in self.load_all(actor, ids).await? {
            if require_open(&key, now).is_err() || key.expires_at.is_some_and(|e| e <= at) {
                left += 1;
                continue;
            }
            let patch = KeyPatch {
                expiry: Some(ExpiryChoice::Exact(Some(at))),
                ..KeyPatch::default()
            };
            match self.update(actor, &key.id, patch).await {
                Ok(u) if u.changed => changed += 1,
                Ok(_) | Err(KeyError::Closed) => left += 1,
                Err(e) => return Err(e),
            }
        }
        Ok((changed, left))
    }

    /// Hands the given keys to another member (not a viewer); returns the count and the
    /// new owner's email.
    pub async fn bulk_reassign(
        &self,
        actor: &Actor,
        ids: &[String],
        to: &str,
    ) -> KeyResult<(u64, String)> {
        self.require(actor, Action::ManageAnyKey)?;
        let keys = self.load_all(actor, ids).await?;
        if to.chars().any(char::is_control) {
            return Err(KeyError::Refused("That is not a member.".into()));
        }
        self.store
            .membership(to, &actor.org_id)
            .await?
            .filter(|m| m.role != "viewer")
            .ok_or_else(|| {
                KeyError::Refused("Choose a member (not a viewer) to take over the keys.".into())
            })?;
        let new_owner = self.store.user(to).await?.ok_or(KeyError::NotFound)?;
        let now = self.now();
        let audits: Vec<_> = keys
            .iter()
            .map(|k| {
                actor
                    .audit(AuditAction::KeyReassigned, now)
                    .target("api_key", &k.id, &k.name)
                    .details(json!({ "from": k.created_by, "to": new_owner.id, "to_email": new_owner.email }))
            })
            .collect();
        let ids: Vec<String> = keys.iter().map(|k| k.id.clone()).collect();
        let n = self
            .store
            .reassign_keys(&actor.org_id, &ids, &new_owner.id, &audits)
            .await?;
        Ok((n, new_owner.email))
    }

    pub(super) async fn load_all(&self, actor: &Actor, ids: &[String]) -> KeyResult<Vec<ApiKey>> {
        let mut keys = Vec::with_capacity(ids.len());
        for id in ids {
            keys.push(self.load(actor, id).await?);
        }
        Ok(keys)
    }
}
