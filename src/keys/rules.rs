//! The pure rules of the keys service: what an actor may do to a key, what an edit changes
//! and what it loosens. No I/O here, so each rule is unit-tested as a table.

use serde_json::{Map, Value, json};

use super::{
    ExpiryChoice,
    model::IpAllowlist,
    service::{KeyError, KeyResult},
};
use crate::{
    auth::actor::Actor,
    store::{ApiKey, KeyChanges, KeyStatus},
};

/// Minting (create, roll) by an acting key needs the organization's permission.
pub(super) fn may_mint(actor: &Actor) -> KeyResult<()> {
    match &actor.key {
        Some(k) if !k.may_mint => Err(KeyError::Forbidden(
            "API keys may not create or roll keys in this organization. An admin can allow it under Settings → Key defaults.".into(),
        )),
        _ => Ok(()),
    }
}

/// An acting key never grants, keeps or touches scopes it does not hold itself.
pub(super) fn within_own_scopes(actor: &Actor, scopes: &[String]) -> KeyResult<()> {
    match actor.scope_beyond_own(scopes) {
        None => Ok(()),
        Some(s) => Err(KeyError::Forbidden(format!(
            "An API key cannot grant the scope {s}, which it does not hold."
        ))),
    }
}

/// Revoked and expired keys are final.
pub(super) fn require_open(key: &ApiKey, now: i64) -> KeyResult<()> {
    match key.status(now) {
        KeyStatus::Active | KeyStatus::ExpiringSoon | KeyStatus::Disabled => Ok(()),
        KeyStatus::Revoked | KeyStatus::Expired => Err(KeyError::Closed),
    }
}

/// The new expiry (`Ok(None)` never). `current` is `Some` on edit (where "keep" is allowed).
pub(super) fn resolve_expiry(
    choice: ExpiryChoice,
    custom_date: &str,
    current: Option<Option<i64>>,
    now: i64,
) -> Result<Option<i64>, String> {
    match (choice, current) {
        (ExpiryChoice::Keep, None) => Err("Choose when the key expires.".into()),
        (ExpiryChoice::Exact(Some(t)), _) if t <= now => Err("The expiry is in the past.".into()),
        (ExpiryChoice::Exact(Some(t)), _) if t > now + super::expiry::MAX_CUSTOM_DAYS * 86_400 => {
            Err(format!(
                "The expiry can be at most {} days ahead.",
                super::expiry::MAX_CUSTOM_DAYS
            ))
        }
        (c, current) => c.resolve(custom_date, current.flatten(), now),
    }
}

/// What an edit changes, field by field (`{"field": {"from", "to"}}`), for the audit log.
pub(super) fn diff(key: &ApiKey, c: &KeyChanges) -> Map<String, Value> {
    let mut changes = Map::new();
    let mut note = |field: &str, from: Value, to: Value| {
        if from != to {
            changes.insert(field.into(), json!({ "from": from, "to": to }));
        }
    };
    let old = key.limits();
    let new = &c.limits;
    note("name", json!(key.name), json!(c.name));
    note("description", json!(key.description), json!(c.description));
    note(
        "scopes",
        json!(key.scope_list()),
        json!(super::scopes::split(&c.scopes)),
    );
    note("expires_at", json!(key.expires_at), json!(c.expires_at));
    note("rate_limit", json!(old.rate_limit), json!(new.rate_limit));
    note(
        "rate_window_secs",
        json!(old.rate_window_secs),
        json!(new.rate_window_secs),
    );
    note("rate_burst", json!(old.rate_burst), json!(new.rate_burst));
    note(
        "daily_quota",
        json!(old.daily_quota),
        json!(new.daily_quota),
    );
    note(
        "ip_allowlist",
        json!(old.ip_allowlist),
        json!(new.ip_allowlist),
    );
    note("metadata", json!(old.metadata), json!(new.metadata));
    changes
}

pub(super) fn above_role(actor: &Actor, scope: &str) -> String {
    format!(
        "This key holds the scope {scope}, which your role ({}) can no longer grant: you can tighten or revoke the key, but not roll it, extend it or lift its limits.",
        actor.role
    )
}

/// The key's current settings as an edit that changes nothing.
pub(super) fn changes_of(key: &ApiKey) -> KeyChanges {
    KeyChanges {
        name: key.name.clone(),
        description: key.description.clone(),
        scopes: key.scopes.clone(),
        expires_at: key.expires_at,
        limits: key.limits(),
    }
}

/// Which restriction of `key`, if any, the new settings (or resuming it) loosen.
pub(super) fn loosened(key: &ApiKey, after: &KeyChanges, resume: bool) -> Option<&'static str> {
    // A bound that is raised or removed; no bound before cannot be loosened.
    let raised = |before: Option<i64>, now: Option<i64>| match (before, now) {
        (Some(b), Some(n)) => n > b,
        (Some(_), None) => true,
        (None, _) => false,
    };
    let (old, new) = (key.limits(), &after.limits);
    // Requests per second, compared without division: n/nw > o/ow.
    let faster = match (old.rate_limit, new.rate_limit) {
        (Some(o), Some(n)) => n * old.rate_window_secs > o * new.rate_window_secs,
        (Some(_), None) => true,
        (None, _) => false,
    };
    let scopes_before = key.scope_list();
    if raised(key.expires_at, after.expires_at) {
        Some("its expiry")
    } else if !IpAllowlist::from_stored(&new.ip_allowlist)
        .within(&IpAllowlist::from_stored(&old.ip_allowlist))
    {
        Some("its IP allowlist")
    } else if faster {
        Some("its rate limit")
    } else if raised(
        old.rate_burst.or(old.rate_limit),
        new.rate_burst.or(new.rate_limit),
    ) {
        Some("its burst")
    } else if raised(old.daily_quota, new.daily_quota) {
        Some("its daily quota")
    } else if super::scopes::split(&after.scopes)
        .iter()
        .any(|s| !scopes_before.contains(s))
    {
        Some("its scopes")
    } else if resume && !key.enabled {
        Some("its pause")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ApiKey {
        ApiKey::fixture()
    }

    #[test]
    fn what_an_edit_loosens() {
        let k = key();
        let same = changes_of(&k);
        assert_eq!(loosened(&k, &same, false), None);
        type Case = (&'static str, fn(&mut KeyChanges), Option<&'static str>);
        let cases: [Case; 12] = [
            ("no expiry", |c| c.expires_at = None, Some("its expiry")),
            (
                "later expiry",
                |c| c.expires_at = Some(2_000),
                Some("its expiry"),
            ),
            ("earlier expiry", |c| c.expires_at = Some(500), None),
            (
                "cleared allowlist",
                |c| c.limits.ip_allowlist.clear(),
                Some("its IP allowlist"),
            ),
            (
                "wider allowlist",
                |c| c.limits.ip_allowlist = "0.0.0.0/0".into(),
                Some("its IP allowlist"),
            ),
            (
                "narrower allowlist",
                |c| c.limits.ip_allowlist = "10.1.0.0/16".into(),
                None,
            ),
            (
                "no rate limit",
                |c| c.limits.rate_limit = None,
                Some("its rate limit"),
            ),
            (
                "same count per second",
                |c| c.limits.rate_window_secs = 1,
                Some("its rate limit"),
            ),
            (
                "same count per hour",
                |c| c.limits.rate_window_secs = 3600,
                None,
            ),
            (
                "bigger burst",
                |c| c.limits.rate_burst = Some(500),
                Some("its burst"),
            ),
            (
                "no quota",
                |c| c.limits.daily_quota = None,
                Some("its daily quota"),
            ),
            (
                "more scopes",
                |c| c.scopes = "read write keys:write".into(),
                Some("its scopes"),
            ),
        ];
        for (what, change, expected) in cases {
            let mut c = changes_of(&k);
            change(&mut c);
            assert_eq!(loosened(&k, &c, false), expected, "{what}");
        }
        let paused = ApiKey {
            enabled: false,
            ..key()
        };
        assert_eq!(loosened(&paused, &same, true), Some("its pause"));
        assert_eq!(loosened(&k, &same, true), None, "resuming an enabled key");
    }
}
