//! Roles and the one table of who may do what. Every handler asks [`Role::can`]; nothing
//! else decides authorization.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Developer,
    Admin,
    Owner,
}

/// Something a member may try to do in an organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    ViewKeys,
    CreateKey,
    /// Edit, roll or revoke a key the member created.
    ManageOwnKey,
    /// Edit, roll or revoke any key of the organization.
    ManageAnyKey,
    ViewAudit,
    ExportAudit,
    ManageMembers,
    ManageSso,
    ManageWebhooks,
    /// Require two-step verification of members who sign in with a password.
    SetTwoStepPolicy,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Owner, Role::Admin, Role::Developer, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Developer => "developer",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn at_least(self, other: Role) -> bool {
        self >= other
    }

    /// The permission table.
    pub fn can(self, action: Action) -> bool {
        use Action::*;
        use Role::*;
        match action {
            ViewKeys | ViewAudit => true,
            CreateKey | ManageOwnKey => self >= Developer,
            ManageAnyKey | ExportAudit | ManageMembers | ManageSso | ManageWebhooks => {
                self >= Admin
            }
            SetTwoStepPolicy => self >= Owner,
        }
    }

    /// Whether this member may change the given key.
    pub fn can_manage_key(self, member_id: &str, key_creator: Option<&str>) -> bool {
        self.can(Action::ManageAnyKey)
            || (self.can(Action::ManageOwnKey) && key_creator == Some(member_id))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_table() {
        use Action::*;
        let table = [
            (ViewKeys, [true, true, true, true]),
            (CreateKey, [true, true, true, false]),
            (ManageOwnKey, [true, true, true, false]),
            (ManageAnyKey, [true, true, false, false]),
            (ViewAudit, [true, true, true, true]),
            (ExportAudit, [true, true, false, false]),
            (ManageMembers, [true, true, false, false]),
            (ManageSso, [true, true, false, false]),
            (ManageWebhooks, [true, true, false, false]),
            (SetTwoStepPolicy, [true, false, false, false]),
        ];
        for (action, expected) in table {
            for (role, want) in Role::ALL.into_iter().zip(expected) {
                assert_eq!(role.can(action), want, "{role} {action:?}");
            }
        }
    }

    #[test]
    fn developers_manage_only_their_own_keys() {
        assert!(Role::Developer.can_manage_key("u1", Some("u1")));
        assert!(!Role::Developer.can_manage_key("u1", Some("u2")));
        assert!(!Role::Developer.can_manage_key("u1", None));
        assert!(Role::Admin.can_manage_key("u1", Some("u2")));
        assert!(!Role::Viewer.can_manage_key("u1", Some("u1")));
        assert_eq!(Role::parse("admin"), Some(Role::Admin));
        assert_eq!(Role::parse("root"), None);
    }
}
