//! The one list of audit actions: the string each is stored as, its label on the audit page,
//! and the webhook event it announces. Nothing else spells an action (`key.revoked`) out:
//! handlers name a variant, so a typo is a compile error and a new action cannot miss its
//! label.

use std::fmt;

macro_rules! actions {
    ($($variant:ident => ($name:literal, $label:literal),)*) => {
        /// Something the audit log records.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum AuditAction {
            $(#[doc = $label] $variant,)*
        }

        impl AuditAction {
            /// Every action, in the order of this list.
            pub const ALL: &'static [AuditAction] = &[$(AuditAction::$variant,)*];

            /// The stored form (`key.revoked`). Never change an existing one: stored events,
            /// exports and webhook subscriptions use it.
            pub const fn as_str(self) -> &'static str {
                match self { $(AuditAction::$variant => $name,)* }
            }

            /// The human name on the audit page and in its filter menu.
            pub const fn label(self) -> &'static str {
                match self { $(AuditAction::$variant => $label,)* }
            }
        }
    };
}

actions! {
    KeyCreated => ("key.created", "Key created"),
    KeyUpdated => ("key.updated", "Key updated"),
    KeyRolled => ("key.rolled", "Key rolled"),
    KeyCreatedByRoll => ("key.created_by_roll", "Key created by roll"),
    KeyRevoked => ("key.revoked", "Key revoked"),
    KeyReassigned => ("key.reassigned", "Key reassigned"),
    KeyDisabled => ("key.disabled", "Key paused"),
    KeyEnabled => ("key.enabled", "Key resumed"),
    KeyFirstUsed => ("key.first_used", "Key used for the first time"),
    KeyExpiring => ("key.expiring", "Key expiring soon"),
    KeyExpired => ("key.expired", "Key expired"),
    KeyLeaked => ("key.leaked", "Key reported as leaked"),
    KeyCreditsChanged => ("key.credits_changed", "Key credits changed"),
    KeyImported => ("key.imported", "Key imported"),
    KeyCreditsLow => ("key.credits_low", "Key credits running low"),
    KeyCreditsExhausted => ("key.credits_exhausted", "Key credits used up"),
    AuthSignedIn => ("auth.signed_in", "Signed in"),
    AuthSignInFailed => ("auth.sign_in_failed", "Sign-in failed"),
    AuthPasswordDisabled => ("auth.password_disabled", "Password disabled after repeated failures"),
    AuthSignedOut => ("auth.signed_out", "Signed out"),
    AuthSsoFailed => ("auth.sso_failed", "SSO sign-in failed"),
    AuthPasswordReset => ("auth.password_reset", "Password reset"),
    AuthPasswordResetRequested => ("auth.password_reset_requested", "Password reset requested"),
    UserSignedUp => ("user.signed_up", "Signed up"),
    UserCreatedByOperator => ("user.created_by_operator", "User created by an operator"),
    OrgCreated => ("org.created", "Organization created"),
    OrgDefaultsUpdated => ("org.defaults_updated", "Default key limits changed"),
    OrgApiKeyManagementChanged => ("org.api_key_management_changed", "API key management setting changed"),
    OrgOwnershipTransferred => ("org.ownership_transferred", "Ownership transferred"),
    OrgTwoStepPolicyChanged => ("org.two_step_policy_changed", "Two-step verification policy changed"),
    OrgKeyPolicyChanged => ("org.key_policy_changed", "Key policy changed"),
    OrgExternalIdChanged => ("org.external_id_changed", "External id changed"),
    OrgCreatedByOperator => ("org.created_by_operator", "Organization created by the team's app"),
    PortalLinkIssued => ("portal.link_issued", "Sign-in link issued by the team's app"),
    UserCreatedByPortal => ("user.created_by_portal", "Account created by the team's app"),
    UserUpdatedByPortal => ("user.updated_by_portal", "Account updated by the team's app"),
    UserDisabledByPortal => ("user.disabled_by_portal", "Account disabled by the team's app"),
    UserEnabledByPortal => ("user.enabled_by_portal", "Account enabled again by the team's app"),
    MemberAdded => ("member.added", "Member added"),
    MemberRoleChanged => ("member.role_changed", "Member's role changed"),
    MemberRemoved => ("member.removed", "Member removed"),
    MemberLeft => ("member.left", "Member left"),
    MemberJoined => ("member.joined", "Member joined through SSO"),
    InvitationCreated => ("invitation.created", "Invitation sent"),
    InvitationResent => ("invitation.resent", "Invitation resent"),
    InvitationRevoked => ("invitation.revoked", "Invitation revoked"),
    InvitationAccepted => ("invitation.accepted", "Invitation accepted"),
    WebhookCreated => ("webhook.created", "Webhook endpoint added"),
    WebhookDeleted => ("webhook.deleted", "Webhook endpoint deleted"),
    SsoConnectionCreated => ("sso.connection_created", "SSO connection added"),
    SsoConnectionUpdated => ("sso.connection_updated", "SSO connection changed"),
    SsoConnectionDeleted => ("sso.connection_deleted", "SSO connection deleted"),
    AccountSsoLinked => ("account.sso_linked", "SSO identity linked"),
    AccountSsoUnlinked => ("account.sso_unlinked", "SSO identity unlinked"),
    AccountPasswordChanged => ("account.password_changed", "Password changed"),
    AccountSessionRevoked => ("account.session_revoked", "Session signed out"),
    AccountSessionsRevoked => ("account.sessions_revoked", "Other sessions signed out"),
    AccountEmailVerified => ("account.email_verified", "Email address confirmed"),
    AccountTotpEnabled => ("account.totp_enabled", "Authenticator app set up"),
    AccountTotpRemoved => ("account.totp_removed", "Authenticator app removed"),
    AccountPasskeyAdded => ("account.passkey_added", "Passkey added"),
    AccountPasskeyRemoved => ("account.passkey_removed", "Passkey removed"),
    AccountRecoveryCodesRegenerated => ("account.recovery_codes_regenerated", "Recovery codes regenerated"),
    AccountRecoveryCodeUsed => ("account.recovery_code_used", "Recovery code used"),
    WebhookTest => ("webhook.test", "Webhook test event (not recorded)"),
}

impl AuditAction {
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|a| a.as_str() == s)
    }

    /// The events a webhook endpoint can subscribe to, with what they mean.
    pub const WEBHOOK_EVENTS: [(AuditAction, &'static str); 15] = [
        (AuditAction::KeyCreated, "A key was created"),
        (
            AuditAction::KeyUpdated,
            "A key's settings changed, or it was paused or resumed",
        ),
        (
            AuditAction::KeyRolled,
            "A key was rolled (replaced by a new one)",
        ),
        (AuditAction::KeyRevoked, "A key was revoked"),
        (
            AuditAction::KeyExpiring,
            "A key expires within 7 days, and again within 1 day",
        ),
        (AuditAction::KeyExpired, "A key expired"),
        (
            AuditAction::KeyLeaked,
            "A key was reported as leaked (e.g. by GitHub secret scanning)",
        ),
        (
            AuditAction::KeyCreditsChanged,
            "A key's credits were set, topped up, reduced or removed",
        ),
        (
            AuditAction::KeyCreditsLow,
            "A key's credits fell to its low-balance threshold (once until refilled or topped up)",
        ),
        (
            AuditAction::KeyCreditsExhausted,
            "A key's credits ran out (once until refilled or topped up)",
        ),
        (
            AuditAction::MemberAdded,
            "Someone was added to the organization",
        ),
        (
            AuditAction::MemberJoined,
            "Someone joined through single sign-on",
        ),
        (AuditAction::MemberRoleChanged, "A member's role changed"),
        (AuditAction::MemberRemoved, "A member was removed"),
        (AuditAction::MemberLeft, "A member left"),
    ];

    /// The webhook event this action announces, if any: pausing, resuming and reassigning
    /// a key are `key.updated`; an accepted invitation is `member.added`.
    pub fn webhook_event(self) -> Option<AuditAction> {
        let event = match self {
            AuditAction::KeyDisabled | AuditAction::KeyEnabled | AuditAction::KeyReassigned => {
                AuditAction::KeyUpdated
            }
            AuditAction::InvitationAccepted => AuditAction::MemberAdded,
            other => other,
        };
        Self::WEBHOOK_EVENTS
            .iter()
            .any(|(e, _)| *e == event)
            .then_some(event)
    }
}

impl AsRef<str> for AuditAction {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The label of a stored action; an action this version does not know shows as stored.
pub fn action_label(stored: &str) -> &str {
    match AuditAction::parse(stored) {
        Some(a) => a.label(),
        None => stored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_parses_back_from_its_stored_form() {
        for a in AuditAction::ALL {
            assert_eq!(AuditAction::parse(a.as_str()), Some(*a));
        }
        assert_eq!(AuditAction::parse("key.nonsense"), None);
    }

    #[test]
    fn stored_forms_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for a in AuditAction::ALL {
            assert!(seen.insert(a.as_str()), "{a} twice");
        }
    }

    #[test]
    fn unknown_actions_are_labelled_as_stored() {
        assert_eq!(action_label("key.revoked"), "Key revoked");
        assert_eq!(action_label("future.thing"), "future.thing");
    }
}
