//! The keys service: every rule about changing keys, written once for both doors.
//!
//! Each operation loads the key (only in the actor's organization), authorizes the
//! [`Actor`], checks the key is still open, calls the store (which writes the change and its
//! audit events in one transaction) and returns what the door needs to answer. The doors
//! (`super::web`, `super::api`) only turn requests into [`KeyInput`]/[`KeyPatch`] and
//! results into pages or JSON.

use serde_json::json;

use super::rules::{
    above_role, changes_of, diff, loosened, may_mint, require_open, resolve_expiry,
    within_own_scopes,
};
use super::{
    ExpiryChoice, GraceChoice,
    model::{
        Field, FieldErrors, KeyInput, KeyPatch, Metadata, Rate, RateWindow, Revocation,
        scope_message,
    },
    token::{Environment, PlainKey},
};
use crate::{
    audit::{AuditAction, ClientMeta},
    auth::actor::Actor,
    clock::Clock,
    config::Config,
    error::AppError,
    orgs::{Action, Role},
    store::{ApiKey, KeyChanges, NewKey, Org, Store, StoreError},
};

/// Why a key operation was refused. Each door renders it (a page, or a JSON error).
#[derive(Debug)]
pub enum KeyError {
    /// No such key in the actor's organization (whether it exists elsewhere or not).
    NotFound,
    /// The actor may not do this.
    Forbidden(String),
    /// Revoked and expired keys can no longer be changed or rolled.
    Closed,
    AlreadyRevoked,
    /// No key was presented, or it is unknown, expired or already revoked.
    Unauthenticated,
    /// A request that cannot be carried out as asked (the message says why).
    Refused(String),
    /// Settings that are not acceptable, by field.
    Invalid(FieldErrors),
    /// The request conflicts with the key's current state (the message says how).
    Conflict(String),
    /// The organization's key policy forbids this (the message says which rule).
    Policy(String),
    Internal(AppError),
}

impl KeyError {
    pub const CLOSED: &'static str = "Revoked and expired keys can no longer be changed.";
    pub const NOT_ROLLABLE: &'static str = "Only active keys can be rolled.";
    pub const ALREADY_REVOKED: &'static str = "The key is already revoked.";
}

impl From<StoreError> for KeyError {
    fn from(e: StoreError) -> Self {
        KeyError::Internal(e.into())
    }
}

impl From<AppError> for KeyError {
    fn from(e: AppError) -> Self {
        KeyError::Internal(e)
    }
}

pub type KeyResult<T> = Result<T, KeyError>;

/// A key just made (created or rolled): its record and its secret, shown once.
pub struct Minted {
    pub record: NewKey,
    pub secret: PlainKey,
}

pub struct Rolled {
    pub old: ApiKey,
    pub new: Minted,
    /// When the old key stops working.
    pub grace_until: i64,
}

pub struct Updated {
    /// The key as it was before the change.
    pub before: ApiKey,
    /// The (possibly new) name.
    pub name: String,
    pub changed: bool,
}

/// The keys service: store, clock and configuration.
pub struct Keys<'a> {
    pub(super) store: &'a Store,
    pub(super) clock: &'a dyn Clock,
    pub(super) config: &'a Config,
}

impl crate::state::Inner {
    pub fn keys(&self) -> Keys<'_> {
        Keys {
            store: &self.store,
            clock: self.clock.as_ref(),
            config: &self.config,
        }
    }
}

impl Keys<'_> {
    pub fn now(&self) -> i64 {
        self.clock.unix()
    }

    // ------------------------------------------------------------- authorization

    /// The key if it belongs to the actor's organization; otherwise not found.
    pub async fn load(&self, actor: &Actor, id: &str) -> KeyResult<ApiKey> {
        if id.chars().any(char::is_control) {
            return Err(KeyError::Refused("That is not a key id.".into()));
        }
        match self.store.key(&actor.org_id, id).await? {
            Some(k) => Ok(k),
            None => {
                tracing::warn!(event = "authz_denied", user_id = %actor.user.id, org_id = %actor.org_id, key_id = %id, "key not found in the active organization");
                Err(KeyError::NotFound)
            }
        }
    }

    pub fn require(&self, actor: &Actor, action: Action) -> KeyResult<()> {
        if actor.can(action) {
            return Ok(());
        }
        tracing::warn!(event = "authz_denied", user_id = %actor.user.id, org_id = %actor.org_id, role = %actor.role, action = ?action, "permission denied");
        Err(KeyError::Forbidden(format!(
            "Your role ({}) does not allow this.",
            actor.role
        )))
    }

    /// Creating keys: the role must allow it and, for an acting key, the organization.
    pub fn may_create(&self, actor: &Actor) -> KeyResult<()> {
        self.require(actor, Action::CreateKey)?;
        may_mint(actor)
    }

    /// The actor's role may change `key` (developers: only keys they created).
    pub fn may_manage(&self, actor: &Actor, key: &ApiKey) -> KeyResult<()> {
        if actor.can_manage_key(key.created_by.as_deref()) {
            return Ok(());
        }
        tracing::warn!(event = "authz_denied", user_id = %actor.user.id, key_id = %key.id, role = %actor.role, "may not manage this key");
        Err(KeyError::Forbidden(format!(
            "Your role ({}) does not allow changing this key{}.",
            actor.role,
            if actor.can(Action::ManageOwnKey) {
                ": developers can change only keys they created"
            } else {
                ""
            }
        )))
    }

    /// The first of the key's scopes the actor's role may not grant now (a member demoted
    /// since the key was made).
    pub fn scope_above_role<'k>(&self, role: Role, scopes: &'k [String]) -> Option<&'k String> {
        scopes.iter().find(|s| {
            self.config
                .scopes
                .get(s)
                .is_some_and(|def| !role.at_least(def.min_role))
        })
    }

    /// Loosening a key's restrictions (later or no expiry, a wider allowlist, higher or no
    /// limits, more scopes, resuming it) is refused to an API key acting on itself, and to
    /// a member whose role can no longer grant the key's scopes: such a key can be
    /// tightened or revoked, not renewed.
    fn may_loosen(
        &self,
        actor: &Actor,
        key: &ApiKey,
        after: &KeyChanges,
        resume: bool,
    ) -> KeyResult<()> {
        match loosened(key, after, resume) {
            None => Ok(()),
            Some(what) => self.refuse_loosening(actor, key, what),
        }
    }

    /// Refuses loosening `what` of `key` to the key itself and to a member whose role can
    /// no longer grant the key's scopes (see [`Self::may_loosen`]).
    pub(super) fn refuse_loosening(
        &self,
        actor: &Actor,
        key: &ApiKey,
        what: &'static str,
    ) -> KeyResult<()> {
        if actor.key.as_ref().is_some_and(|k| k.id == key.id) {
            tracing::warn!(event = "authz_denied", key_id = %key.id, loosened = what, "a key tried to loosen itself");
            return Err(KeyError::Forbidden(format!(
                "An API key cannot loosen its own restrictions ({what})."
            )));
        }
        if let Some(s) = self.scope_above_role(actor.role, &key.scope_list()) {
            tracing::warn!(event = "authz_denied", key_id = %key.id, user_id = %actor.user.id, scope = %s, loosened = what, "may not renew a key above the role");
            return Err(KeyError::Forbidden(above_role(actor, s)));
        }
        Ok(())
    }

    /// The actor's organization, for its key policy.
    pub(super) async fn org(&self, actor: &Actor) -> KeyResult<Org> {
        self.store
            .org(&actor.org_id)
            .await?
            .ok_or(KeyError::NotFound)
    }

    // --------------------------------------------------------------------- create

    pub async fn create(&self, actor: &Actor, input: KeyInput) -> KeyResult<Minted> {
        self.create_with_credits(actor, input, None).await
    }

    /// Creates a key with credits (`None`: unlimited), in the same transaction.
    pub async fn create_with_credits(
        &self,
        actor: &Actor,
        input: KeyInput,
        credits: Option<crate::store::KeyCredits>,
    ) -> KeyResult<Minted> {
        self.may_create(actor)?;
        within_own_scopes(actor, input.scopes.as_slice())?;
        let now = self.now();
        let mut errors = FieldErrors::default();
        if let Err(e) = self
            .config
            .scopes
            .check(input.scopes.as_slice(), actor.role)
        {
            errors.add(Field::Scopes, scope_message(&e));
        }
        let org = self.org(actor).await?;
        let expires_at = errors.take(
            Field::Expiry,
            resolve_expiry(input.expiry, &input.custom_date, None, now),
        );
        if let Some(e) = expires_at
            && !org.lifetime.allows(e, now)
        {
            errors.add(Field::Expiry, org.lifetime.message(now));
        }
        if input.description.as_str().is_empty() && org.key_require_description {
            errors.add(Field::Description, REQUIRE_DESCRIPTION);
        }
        if !errors.is_empty() {
            return Err(KeyError::Invalid(errors));
        }
        let secret = self.generate(input.environment)?;
        let record = NewKey {
            id: crate::store::new_id(),
            org_id: actor.org_id.clone(),
            created_by: Some(actor.user.id.clone()),
            name: input.name.as_str().to_string(),
            description: input.description.as_str().to_string(),
            environment: input.environment.as_str().into(),
            key_hash: secret.hash(&self.config.key_pepper).0.to_vec(),
            display_prefix: secret.display_prefix().into(),
            last4: secret.last4().into(),
            scopes: input.scopes.to_stored(),
            limits: super::model::limits(input.rate, &input.ip_allowlist, &input.metadata),
            created_at: now,
            expires_at: expires_at.flatten(),
            rolled_from: None,
            credits,
        };
        let mut details = json!({
            "environment": record.environment,
            "scopes": input.scopes.as_slice(),
            "expires_at": record.expires_at,
        });
        if let Some(c) = &credits {
            details["credits"] = super::credits::describe(c);
        }
        let audit = actor
            .audit(AuditAction::KeyCreated, now)
            .target("api_key", &record.id, &record.name)
            .details(actor.details(details));
        self.store.insert_key(&record, &audit).await?;
        tracing::info!(event = %AuditAction::KeyCreated, key_id = %record.id, prefix = %record.display_prefix, org_id = %record.org_id, "API key created");
        Ok(Minted { record, secret })
    }

    // --------------------------------------------------------------------- update

    /// Whether the actor may edit `key` at all: its role, the key still open, and (for an
    /// acting key) the key's scopes all held by the actor.
    pub fn may_update(&self, actor: &Actor, key: &ApiKey) -> KeyResult<()> {
        self.may_manage(actor, key)?;
        require_open(key, self.now())?;
        // A key may change only keys whose scopes it holds itself (else it could resume,
        // un-restrict or extend a broader key), and never grant more.
        within_own_scopes(actor, &key.scope_list())
    }

    pub async fn update(&self, actor: &Actor, id: &str, patch: KeyPatch) -> KeyResult<Updated> {
        let key = self.load(actor, id).await?;
        self.may_update(actor, &key)?;
        let now = self.now();
        if let Some(s) = &patch.scopes {
            within_own_scopes(actor, s.as_slice())?;
        }
        let mut errors = FieldErrors::default();
        let org = self.org(actor).await?;
        let current = key.scope_list();
        let scopes = match &patch.scopes {
            None => current.clone(),
            Some(s) => self
                .config
                .scopes
                .check_edit(s.as_slice(), &current, actor.role)
                .unwrap_or_else(|e| {
                    errors.add(Field::Scopes, scope_message(&e));
                    current.clone()
                }),
        };
        let expires_at = errors
            .take(
                Field::Expiry,
                resolve_expiry(
                    patch.expiry.unwrap_or(ExpiryChoice::Keep),
                    &patch.custom_date,
                    Some(key.expires_at),
                    now,
                ),
            )
            .unwrap_or(key.expires_at);
        // No key is extended (or given a new expiry) beyond the maximum lifetime.
        if expires_at != key.expires_at && !org.lifetime.allows(expires_at, now) {
            errors.add(Field::Expiry, org.lifetime.message(now));
        }
        let rate = Rate {
            limit: patch.rate_limit.unwrap_or(key.rate_limit),
            window: patch
                .rate_window
                .or_else(|| RateWindow::from_secs(key.rate_window_secs))
                .unwrap_or_default(),
            burst: patch.rate_burst.unwrap_or(key.rate_burst),
            daily_quota: patch.daily_quota.unwrap_or(key.daily_quota),
        };
        let rate = errors.take(Field::Limits, rate.check());
        if patch
            .description
            .as_ref()
            .is_some_and(|d| d.as_str().is_empty())
            && org.key_require_description
        {
            errors.add(Field::Description, REQUIRE_DESCRIPTION);
        }
        if !errors.is_empty() {
            return Err(KeyError::Invalid(errors));
        }
        let rate = rate.unwrap_or_default();
        let ip_allowlist = patch
            .ip_allowlist
            .unwrap_or_else(|| super::model::IpAllowlist::from_stored(&key.ip_allowlist));
        let metadata = patch
            .metadata
            .unwrap_or_else(|| Metadata::from_stored(&key.metadata));
        let changes = KeyChanges {
            name: patch
                .name
                .map_or_else(|| key.name.clone(), |n| n.as_str().to_string()),
            description: patch
                .description
                .map_or_else(|| key.description.clone(), |d| d.as_str().to_string()),
            scopes: super::scopes::join(&scopes),
            expires_at,
            limits: super::model::limits(rate, &ip_allowlist, &metadata),
        };
        self.may_loosen(actor, &key, &changes, patch.enabled == Some(true))?;
        let diff = diff(&key, &changes);
        let name = changes.name.clone();
        if !diff.is_empty() {
            let audit = actor
                .audit(AuditAction::KeyUpdated, now)
                .target("api_key", &key.id, &name)
                .details(actor.details(json!({ "changes": diff })));
            if !self
                .store
                .update_key(&actor.org_id, &key.id, &changes, now, &audit)
                .await?
            {
                return Err(KeyError::Closed);
            }
        }
        let mut changed = !diff.is_empty();
        if let Some(enabled) = patch.enabled
            && enabled != key.enabled
        {
            changed |= self.write_enabled(actor, &key, enabled, now).await?;
        }
        Ok(Updated {
            before: key,
            name,
            changed,
        })
    }

    /// Pauses or resumes a key. Returns the key and whether its state changed.
    pub async fn set_enabled(
        &self,
        actor: &Actor,
        id: &str,
        enabled: bool,
    ) -> KeyResult<(ApiKey, bool)> {
        let key = self.load(actor, id).await?;
        self.may_manage(actor, &key)?;
        within_own_scopes(actor, &key.scope_list())?;
        if enabled && !key.enabled {
            let same = changes_of(&key);
            self.may_loosen(actor, &key, &same, true)?;
        }
        let changed = self.write_enabled(actor, &key, enabled, self.now()).await?;
        Ok((key, changed))
    }

    async fn write_enabled(
        &self,
        actor: &Actor,
        key: &ApiKey,
        enabled: bool,
        now: i64,
    ) -> KeyResult<bool> {
        let action = if enabled {
            AuditAction::KeyEnabled
        } else {
            AuditAction::KeyDisabled
        };
        let audit = actor
            .audit(action, now)
            .target("api_key", &key.id, &key.name)
            .details(actor.details(json!({})));
        Ok(self
            .store
            .set_key_enabled(&actor.org_id, &key.id, enabled, now, &audit)
            .await?)
    }

    // ----------------------------------------------------------------------- roll

    /// A new key with the same settings; the old one works until the grace ends.
    pub async fn roll(&self, actor: &Actor, id: &str, grace: GraceChoice) -> KeyResult<Rolled> {
        let old = self.load(actor, id).await?;
        self.may_manage(actor, &old)?;
        may_mint(actor)?;
        within_own_scopes(actor, &old.scope_list())?;
        if let Some(s) = self.scope_above_role(actor.role, &old.scope_list()) {
            tracing::warn!(event = "authz_denied", key_id = %old.id, user_id = %actor.user.id, scope = %s, "may not roll a key above the role");
            return Err(KeyError::Forbidden(above_role(actor, s)));
        }
        let now = self.now();
        if !old.lifetime.allows(old.expires_at, now) {
            return Err(KeyError::Policy(format!(
                "{} Edit the key to expire within the maximum, then roll it.",
                beyond_lifetime(&old.lifetime)
            )));
        }
        let env = Environment::parse(&old.environment)
            .ok_or_else(|| AppError::internal(anyhow::anyhow!("bad stored environment")))?;
        let secret = self.generate(env)?;
        let record = NewKey {
            id: crate::store::new_id(),
            org_id: old.org_id.clone(),
            created_by: Some(actor.user.id.clone()),
            name: old.name.clone(),
            description: old.description.clone(),
            environment: old.environment.clone(),
            key_hash: secret.hash(&self.config.key_pepper).0.to_vec(),
            display_prefix: secret.display_prefix().into(),
            last4: secret.last4().into(),
            scopes: old.scopes.clone(),
            limits: old.limits(),
            created_at: now,
            expires_at: old.expires_at,
            rolled_from: Some(old.id.clone()),
            // The same settings, and the balance as it stands now (the old key keeps its
            // own balance during the grace period).
            credits: old.credits(),
        };
        let grace_until = now + grace.seconds();
        let rolled =
            actor
                .audit(AuditAction::KeyRolled, now)
                .target("api_key", &old.id, &old.name)
                .details(actor.details(
                    json!({ "new_key_id": record.id, "old_key_valid_until": grace_until }),
                ));
        let created = actor
            .audit(AuditAction::KeyCreatedByRoll, now)
            .target("api_key", &record.id, &record.name)
            .details(actor.details(json!({ "rolled_from": old.id })));
        if !self
            .store
            .roll_key(
                &actor.org_id,
                &old.id,
                &record,
                grace_until,
                now,
                [&rolled, &created],
            )
            .await?
        {
            return Err(KeyError::Closed);
        }
        tracing::info!(event = %AuditAction::KeyRolled, old_key_id = %old.id, new_key_id = %record.id, "API key rolled");
        Ok(Rolled {
            old,
            new: Minted { record, secret },
            grace_until,
        })
    }

    // --------------------------------------------------------------------- revoke

    pub async fn revoke(
        &self,
        actor: &Actor,
        id: &str,
        revocation: &Revocation,
    ) -> KeyResult<ApiKey> {
        let key = self.load(actor, id).await?;
        self.may_manage(actor, &key)?;
        // Like edit and roll: a key acts only on keys whose scopes it holds.
        within_own_scopes(actor, &key.scope_list())?;
        self.write_revoke(actor, &key, revocation).await?;
        Ok(key)
    }

    pub(super) async fn write_revoke(
        &self,
        actor: &Actor,
        key: &ApiKey,
        revocation: &Revocation,
    ) -> KeyResult<()> {
        let now = self.now();
        let audit = actor
            .audit(AuditAction::KeyRevoked, now)
            .target("api_key", &key.id, &key.name)
            .details(actor.details(revocation.details()));
        if !self
            .store
            .revoke_key(&actor.org_id, &key.id, now, &audit)
            .await?
        {
            return Err(KeyError::AlreadyRevoked);
        }
        tracing::info!(event = %AuditAction::KeyRevoked, key_id = %key.id, prefix = %key.display_prefix, "API key revoked");
        Ok(())
    }

    /// Revokes the presented key itself (`DELETE /api/v1/keys/current`): whoever holds a
    /// key may end it, e.g. on finding it leaked. No scope or role is needed; the event is
    /// the key's own.
    pub async fn revoke_by_possession(
        &self,
        presented: &str,
        meta: &ClientMeta,
    ) -> KeyResult<ApiKey> {
        let now = self.now();
        let Ok((plain, _)) = PlainKey::parse(&self.config.key_prefix, presented) else {
            return Err(KeyError::Unauthenticated);
        };
        let hash = plain.hash(&self.config.key_pepper);
        let key = self
            .store
            .key_by_hash_cached(&hash.0, now)
            .await?
            .filter(|k| require_open(k, now).is_ok())
            .ok_or(KeyError::Unauthenticated)?;
        let display = format!("API key {}…{}", key.display_prefix, key.last4);
        let audit = meta
            .stamp(crate::store::NewAudit::new(AuditAction::KeyRevoked, now))
            .org(&key.org_id)
            .actor(None, &display)
            .target("api_key", &key.id, &key.name)
            .details(json!({ "via": { "api_key": key.id }, "by_possession": true }));
        if !self
            .store
            .revoke_key(&key.org_id, &key.id, now, &audit)
            .await?
        {
            return Err(KeyError::Unauthenticated);
        }
        tracing::info!(event = %AuditAction::KeyRevoked, key_id = %key.id, prefix = %key.display_prefix, "API key revoked by its holder");
        Ok(key.as_ref().clone())
    }

    fn generate(&self, env: Environment) -> KeyResult<PlainKey> {
        PlainKey::generate(&self.config.key_prefix, env).map_err(|e| {
            KeyError::Internal(AppError::internal(anyhow::anyhow!(
                "OS random generator: {e}"
            )))
        })
    }
}

/// Why a key beyond the maximum lifetime cannot be rolled as it is.
pub fn beyond_lifetime(policy: &super::policy::LifetimePolicy) -> String {
    format!(
        "This key's expiry is beyond the organization's maximum key lifetime of {}.",
        super::policy::days_label(policy.max_lifetime_days.unwrap_or_default())
    )
}

const REQUIRE_DESCRIPTION: &str = "This organization requires a description: say what the key is for (Settings → Key defaults → Key policy).";
