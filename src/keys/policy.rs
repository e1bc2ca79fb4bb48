//! The organization's maximum key lifetime (Settings → Key policy), as a pure rule.
//!
//! A key complies when it has an expiry no further than the maximum from now: the life it
//! has *left* is what the policy bounds, so a key made compliant stays compliant as time
//! passes, and extending one is checked against the moment of the extension. Keys that do
//! not comply when the policy is set keep working until `enforced_at` (the owner's choice:
//! at once, or after a grace date), after which verification answers
//! `EXCEEDS_MAX_LIFETIME`. No key can be created, extended or rolled out of compliance.

use serde::Serialize;

use crate::store::KeyPolicy;

pub const DAY: i64 = 86_400;
/// The longest maximum an organization may set (the create form's custom-date bound).
pub const MAX_DAYS: i64 = super::expiry::MAX_CUSTOM_DAYS;

/// An organization's lifetime policy, as stored on the organization and joined onto every
/// key it owns (so the verifier needs no second lookup).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct LifetimePolicy {
    /// `None`: no maximum.
    #[sqlx(rename = "key_max_lifetime_days")]
    pub max_lifetime_days: Option<i64>,
    /// When keys beyond the maximum stop verifying.
    #[sqlx(rename = "key_lifetime_enforced_at")]
    pub lifetime_enforced_at: Option<i64>,
}

impl LifetimePolicy {
    /// The latest expiry a key may be given at `now` (`None`: no maximum).
    pub fn latest_expiry(&self, now: i64) -> Option<i64> {
        self.max_lifetime_days.map(|d| now + d * DAY)
    }

    /// Whether a key expiring at `expires_at` (`None`: never) complies at `now`.
    pub fn allows(&self, expires_at: Option<i64>, now: i64) -> bool {
        match self.latest_expiry(now) {
            None => true,
            Some(latest) => expires_at.is_some_and(|e| e <= latest),
        }
    }

    /// Whether verification refuses a key expiring at `expires_at`, at `now`.
    pub fn blocks(&self, expires_at: Option<i64>, now: i64) -> bool {
        !self.allows(expires_at, now) && self.lifetime_enforced_at.is_some_and(|t| t <= now)
    }

    /// The refusal a form or the API shows for an expiry beyond the maximum.
    pub fn message(&self) -> String {
        let days = self.max_lifetime_days.unwrap_or_default();
        format!(
            "This organization's key policy allows keys to live at most {} (Settings → Key policy): choose an expiry within that.",
            days_label(days)
        )
    }
}

pub fn days_label(days: i64) -> String {
    if days == 1 {
        "1 day".into()
    } else {
        format!("{days} days")
    }
}

/// The expiries a policy may preselect for new keys: the create form's, without "custom
/// date" — `(value, label, days)`, `None` days for "no expiration".
pub const DEFAULT_EXPIRIES: [(&str, &str, Option<i64>); 5] = [
    ("7d", "7 days", Some(7)),
    ("30d", "30 days", Some(30)),
    ("90d", "90 days", Some(90)),
    ("1y", "1 year", Some(365)),
    ("never", "No expiration", None),
];

/// What Settings → Key policy submits, as typed.
#[derive(Debug, Clone, Default)]
pub struct PolicyForm<'a> {
    pub require_description: bool,
    pub default_expiry: &'a str,
    /// Days, or empty for no maximum.
    pub max_lifetime_days: &'a str,
    /// What happens to keys already beyond the maximum: `block` (stop verifying now) or
    /// `until` (keep working through `until`, a YYYY-MM-DD date).
    pub existing: &'a str,
    pub until: &'a str,
}

/// How long keys beyond a new maximum may be allowed to keep working.
pub const MAX_GRACE_DAYS: i64 = 365;

/// Parses and checks the policy form at `now`.
pub fn parse_policy(f: &PolicyForm<'_>, now: i64) -> Result<KeyPolicy, String> {
    let Some(&(_, _, default_days)) = DEFAULT_EXPIRIES.iter().find(|e| e.0 == f.default_expiry)
    else {
        return Err(
            "Choose a default expiry: 7 days, 30 days, 90 days, 1 year or no expiration.".into(),
        );
    };
    let max = match f.max_lifetime_days.trim() {
        "" => None,
        t => match t.parse::<i64>() {
            Ok(d) if (1..=MAX_DAYS).contains(&d) => Some(d),
            _ => {
                return Err(format!(
                    "Enter the maximum lifetime as a number of days from 1 to {MAX_DAYS}, or leave it empty for no maximum."
                ));
            }
        },
    };
    let enforced_at = match max {
        None => None,
        Some(max) => {
            if default_days.is_none_or(|d| d > max) {
                return Err(format!(
                    "The default expiry of new keys must fit within the maximum lifetime of {}: choose a shorter default.",
                    days_label(max)
                ));
            }
            Some(match f.existing {
                "block" => now,
                "until" => {
                    let fmt = time::macros::format_description!("[year]-[month]-[day]");
                    let date = time::Date::parse(f.until.trim(), &fmt).map_err(|_| {
                        "Enter the date until which existing keys keep working as YYYY-MM-DD."
                            .to_string()
                    })?;
                    let end = date.midnight().assume_utc().unix_timestamp() + DAY;
                    if end <= now {
                        return Err("The date until which existing keys keep working is in the past: choose today or later, or stop them now.".into());
                    }
                    if end > now + MAX_GRACE_DAYS * DAY {
                        return Err("Existing keys may keep working for at most a year: choose an earlier date.".into());
                    }
                    end
                }
                _ => {
                    return Err("Choose what happens to existing keys beyond the maximum: keep them working until a date, or stop them now.".into());
                }
            })
        }
    };
    Ok(KeyPolicy {
        require_description: f.require_description,
        default_expiry: f.default_expiry.to_string(),
        lifetime: LifetimePolicy {
            max_lifetime_days: max,
            lifetime_enforced_at: enforced_at,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_form() {
        let now = 1_000_000_000; // 2001-09-09
        let ok = PolicyForm {
            default_expiry: "30d",
            max_lifetime_days: "90",
            existing: "block",
            ..Default::default()
        };
        let p = parse_policy(&ok, now).unwrap();
        assert_eq!(p.lifetime.max_lifetime_days, Some(90));
        assert_eq!(p.lifetime.lifetime_enforced_at, Some(now));
        let until = parse_policy(
            &PolicyForm {
                existing: "until",
                until: "2001-10-01",
                ..ok.clone()
            },
            now,
        )
        .unwrap();
        assert_eq!(until.lifetime.lifetime_enforced_at, Some(1_001_980_800));
        let none = parse_policy(
            &PolicyForm {
                max_lifetime_days: " ",
                default_expiry: "never",
                ..ok.clone()
            },
            now,
        )
        .unwrap();
        assert_eq!(none.lifetime, LifetimePolicy::default());
        for (bad, why) in [
            (
                PolicyForm {
                    max_lifetime_days: "0",
                    ..ok.clone()
                },
                "zero days",
            ),
            (
                PolicyForm {
                    max_lifetime_days: "9999",
                    ..ok.clone()
                },
                "too long",
            ),
            (
                PolicyForm {
                    max_lifetime_days: "ninety",
                    ..ok.clone()
                },
                "not a number",
            ),
            (
                PolicyForm {
                    default_expiry: "1y",
                    ..ok.clone()
                },
                "default beyond the maximum",
            ),
            (
                PolicyForm {
                    default_expiry: "never",
                    ..ok.clone()
                },
                "no default expiry under a maximum",
            ),
            (
                PolicyForm {
                    existing: "until",
                    until: "2001-09-01",
                    ..ok.clone()
                },
                "grace date in the past",
            ),
            (
                PolicyForm {
                    existing: "until",
                    until: "2003-01-01",
                    ..ok.clone()
                },
                "grace beyond a year",
            ),
            (
                PolicyForm {
                    existing: "",
                    ..ok.clone()
                },
                "no choice for existing keys",
            ),
        ] {
            assert!(parse_policy(&bad, now).is_err(), "{why}");
        }
    }

    #[test]
    fn what_complies_and_what_is_blocked() {
        let none = LifetimePolicy::default();
        assert!(none.allows(None, 0));
        assert!(!none.blocks(None, 0));

        let p = LifetimePolicy {
            max_lifetime_days: Some(90),
            lifetime_enforced_at: Some(1_000),
        };
        let now = 0;
        assert!(p.allows(Some(90 * DAY), now), "exactly the maximum");
        assert!(!p.allows(Some(90 * DAY + 1), now), "a second beyond");
        assert!(!p.allows(None, now), "never expiring");
        // The life left is what counts: a year-long key complies once 90 days remain.
        assert!(p.allows(Some(365 * DAY), 275 * DAY));
        // Beyond the maximum: working until the enforcement date, refused from it.
        assert!(!p.blocks(None, 999));
        assert!(p.blocks(None, 1_000));
        assert!(
            !p.blocks(Some(DAY), 1_000),
            "a compliant key is never blocked"
        );
        let kept = LifetimePolicy {
            lifetime_enforced_at: None,
            ..p
        };
        assert!(!kept.blocks(None, i64::MAX / 2));
    }
}
