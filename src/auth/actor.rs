//! The one `Actor`: who performs an action in an organization. Either a member signed in
//! to the dashboard, or an API key acting for its creator (with the creator's current role,
//! and never beyond the key's own scopes). Services authorize an `Actor`, so a rule is
//! written once whichever door the request came through.

use serde_json::{Value, json};

use super::CurrentUser;
use crate::{
    audit::{AuditAction, ClientMeta},
    orgs::{Action, Role},
    store::{NewAudit, User},
};

/// An API key acting through the management API.
#[derive(Debug, Clone)]
pub struct ActingKey {
    pub id: String,
    /// The key's own scopes: it never grants, keeps or touches more.
    pub scopes: Vec<String>,
    /// Whether the organization lets API keys create and roll keys.
    pub may_mint: bool,
}

/// Which door the request came through: the API notes it in audit details (`via`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    Dashboard,
    Api,
}

#[derive(Debug, Clone)]
pub struct Actor {
    /// The member, or the acting key's creator.
    pub user: User,
    pub org_id: String,
    pub role: Role,
    pub key: Option<ActingKey>,
    pub meta: ClientMeta,
    pub door: Door,
}

impl Actor {
    /// A member signed in to the dashboard.
    pub fn member(cu: &CurrentUser, meta: ClientMeta) -> Self {
        Self {
            user: cu.user.clone(),
            org_id: cu.org_id().to_string(),
            role: cu.role,
            key: None,
            meta,
            door: Door::Dashboard,
        }
    }

    /// Whether the role allows `action`.
    pub fn can(&self, action: Action) -> bool {
        self.role.can(action)
    }

    /// Whether this actor's role may manage a key created by `creator`.
    pub fn can_manage_key(&self, creator: Option<&str>) -> bool {
        self.role.can_manage_key(&self.user.id, creator)
    }

    /// The first of `scopes` an acting key does not hold itself (`None` for a member).
    pub fn scope_beyond_own<'a>(&self, scopes: &'a [String]) -> Option<&'a String> {
        let key = self.key.as_ref()?;
        scopes.iter().find(|s| !key.scopes.contains(s))
    }

    /// An audit event by this actor in its organization.
    pub fn audit(&self, action: AuditAction, now: i64) -> NewAudit {
        let mut ev = self
            .meta
            .stamp(NewAudit::new(action, now))
            .org(&self.org_id)
            .actor(Some(&self.user.id), &self.user.email);
        if let Some(k) = &self.key {
            ev.user_agent = format!("API key {} · {}", k.id, ev.user_agent);
        }
        ev
    }

    /// How the API was called (`{"api_key": id}` or `"session"`); `None` on the dashboard.
    pub fn via(&self) -> Option<Value> {
        match (self.door, &self.key) {
            (Door::Dashboard, _) => None,
            (Door::Api, Some(k)) => Some(json!({ "api_key": k.id })),
            (Door::Api, None) => Some(json!("session")),
        }
    }

    /// Audit details with `via` added for API calls.
    pub fn details(&self, mut details: Value) -> Value {
        if let (Some(via), Value::Object(m)) = (self.via(), &mut details) {
            m.insert("via".into(), via);
        }
        details
    }
}
