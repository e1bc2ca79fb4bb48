//! Credits of a key, for both doors: the typed settings parsed once ([`CreditsSpec`] →
//! [`KeyCredits`]), the pure loosening rules, and the service operations (authorize the
//! [`Actor`], check the key, write with its audit event).
//!
//! A key acting through the API may lower its own credits but never raise them: raising
//! the balance, removing the limit or making the refill larger or more frequent is
//! loosening, like lifting a rate limit.

use serde_json::{Value, json};

use super::{
    model::{Field, FieldErrors, MAX_LIMIT},
    rules::{require_open, within_own_scopes},
    service::{KeyError, KeyResult, Keys},
};
use crate::{
    audit::AuditAction,
    auth::actor::Actor,
    store::{ApiKey, CreditOp, CreditOpOutcome, KeyCredits, Refill, RefillInterval},
};

/// Credit settings as a door received them, before parsing.
#[derive(Debug, Clone, Default)]
pub struct CreditsSpec<'a> {
    pub remaining: Option<i64>,
    /// `daily`, `monthly`, or `None`/empty for no refill.
    pub refill_interval: Option<&'a str>,
    pub refill_amount: Option<i64>,
    pub refill_day: Option<i64>,
    pub low_threshold: Option<i64>,
}

impl CreditsSpec<'_> {
    /// The settings, or what is wrong with them (one sentence). `has_balance`: the key has
    /// credits already, so the balance may be left out (kept).
    pub fn parse(&self, has_balance: bool) -> Result<KeyCredits, String> {
        let in_range = |n: i64, from: i64| (from..=MAX_LIMIT).contains(&n);
        if let Some(r) = self.remaining
            && !in_range(r, 0)
        {
            return Err(format!(
                "The credits remaining must be a whole number from 0 to {MAX_LIMIT}."
            ));
        }
        if let Some(t) = self.low_threshold
            && !in_range(t, 0)
        {
            return Err(format!(
                "The low-balance threshold must be a whole number from 0 to {MAX_LIMIT}."
            ));
        }
        let interval = match self.refill_interval.map(str::trim).unwrap_or("") {
            "" => None,
            "daily" => {
                if self.refill_day.is_some() {
                    return Err("A daily refill has no day; leave the day out.".into());
                }
                Some(RefillInterval::Daily)
            }
            "monthly" => match self.refill_day {
                Some(d @ 1..=31) => Some(RefillInterval::Monthly { day: d as u8 }),
                _ => {
                    return Err(
                        "A monthly refill needs its day of the month, from 1 to 31 (31 refills on the last day of shorter months)."
                            .into(),
                    );
                }
            },
            _ => return Err("The refill interval must be daily or monthly.".into()),
        };
        let refill = match (interval, self.refill_amount) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(
                    "Choose a refill interval (daily or monthly) for the refill amount.".into(),
                );
            }
            (Some(_), None) => return Err("Give the refill amount.".into()),
            (Some(interval), Some(amount)) if in_range(amount, 1) => {
                Some(Refill { interval, amount })
            }
            (Some(_), Some(_)) => {
                return Err(format!(
                    "The refill amount must be a whole number from 1 to {MAX_LIMIT}."
                ));
            }
        };
        if self.remaining.is_none() && refill.is_none() && !has_balance {
            return Err(
                "Give the credits remaining, a refill, or both (or no credits for unlimited use)."
                    .into(),
            );
        }
        Ok(KeyCredits {
            remaining: self.remaining,
            refill,
            low_threshold: self.low_threshold,
        })
    }
}

/// A parse failure as the field errors both doors render.
pub fn field_error(message: String) -> FieldErrors {
    FieldErrors::one(Field::Credits, message)
}

/// Credit settings for the audit log and webhooks.
pub fn describe(c: &KeyCredits) -> Value {
    json!({
        "remaining": c.remaining,
        "refill": c.refill.map(|r| json!({
            "interval": r.interval_name(),
            "amount": r.amount,
            "day": r.day(),
        })),
        "low_threshold": c.low_threshold,
    })
}

/// What new credit settings loosen, if anything: no limit where there was one, a higher
/// balance, a larger or more frequent refill. Adding credits to an unlimited key tightens.
pub(super) fn credits_loosened(
    before: Option<&KeyCredits>,
    after: Option<&KeyCredits>,
) -> Option<&'static str> {
    let before = before?;
    let Some(after) = after else {
        return Some("its credits");
    };
    if after
        .remaining
        .is_some_and(|a| before.remaining.is_none_or(|b| a > b))
    {
        return Some("its credits");
    }
    match (before.refill, after.refill) {
        (_, None) => None,
        (None, Some(_)) => Some("its credit refill"),
        (Some(b), Some(a)) if a.amount > b.amount || a.interval != b.interval => {
            Some("its credit refill")
        }
        _ => None,
    }
}

/// Whether an operation on the balance can raise it.
pub(super) fn op_raises(op: CreditOp) -> bool {
    matches!(op, CreditOp::Increment(v) if v > 0)
}

impl Keys<'_> {
    /// The actor may change the key's credits: its role, the key still open, the key's
    /// scopes held by an acting key.
    fn may_change_credits(&self, actor: &Actor, key: &ApiKey) -> KeyResult<()> {
        self.may_manage(actor, key)?;
        require_open(key, self.now())?;
        within_own_scopes(actor, &key.scope_list())
    }

    /// Whether the actor may give the key these credit settings (checked before any write
    /// of an edit that also changes other settings).
    pub fn may_set_credit_settings(
        &self,
        actor: &Actor,
        key: &ApiKey,
        credits: Option<&KeyCredits>,
    ) -> KeyResult<()> {
        self.may_change_credits(actor, key)?;
        match credits_loosened(key.credits().as_ref(), credits) {
            Some(what) => self.refuse_loosening(actor, key, what),
            None => Ok(()),
        }
    }

    /// Replaces a key's credit settings (`None`: unlimited), audited as
    /// `key.credits_changed`. Returns whether anything changed.
    pub async fn set_credit_settings(
        &self,
        actor: &Actor,
        key: &ApiKey,
        credits: Option<KeyCredits>,
    ) -> KeyResult<bool> {
        self.may_set_credit_settings(actor, key, credits.as_ref())?;
        let before = key.credits();
        let unchanged = match (&before, &credits) {
            (None, None) => true,
            (Some(b), Some(a)) => {
                a.remaining.is_none() && a.refill == b.refill && a.low_threshold == b.low_threshold
            }
            _ => false,
        };
        if unchanged {
            return Ok(false);
        }
        let now = self.now();
        let audit = actor
            .audit(AuditAction::KeyCreditsChanged, now)
            .target("api_key", &key.id, &key.name)
            .details(actor.details(json!({
                "op": "settings",
                "from": before.as_ref().map(describe),
                "to": credits.as_ref().map(describe),
            })));
        let (written, level) = self
            .store
            .set_credit_settings(key, credits.as_ref(), now, &audit)
            .await?;
        if !written {
            return Err(KeyError::Closed);
        }
        if let Some(level) = level {
            self.store.announce_credit_level(key, &level, now).await?;
        }
        Ok(true)
    }

    /// Sets, increments or decrements a key's balance, audited as `key.credits_changed`.
    /// Returns the key and its new balance.
    pub async fn change_credits(
        &self,
        actor: &Actor,
        id: &str,
        op: CreditOp,
    ) -> KeyResult<(ApiKey, i64)> {
        let key = self.load(actor, id).await?;
        self.may_change_credits(actor, &key)?;
        let own = actor.key.as_ref().is_some_and(|k| k.id == key.id);
        if op_raises(op) {
            self.refuse_loosening(actor, &key, "its credits")?;
        }
        let now = self.now();
        let audit = actor
            .audit(AuditAction::KeyCreditsChanged, now)
            .target("api_key", &key.id, &key.name)
            .details(actor.details(json!({ "op": op.name(), "value": op.value() })));
        // A set that raises the balance is loosening too; the store refuses it atomically
        // for a key acting on itself (the balance may move between a read and the write).
        let outcome = self.store.change_credits(&key, op, own, now, audit).await?;
        match outcome {
            CreditOpOutcome::Changed(level) => {
                self.store.announce_credit_level(&key, &level, now).await?;
                Ok((key, level.remaining))
            }
            CreditOpOutcome::Closed => Err(KeyError::Closed),
            CreditOpOutcome::Unlimited => Err(KeyError::Conflict(
                "This key has no credit limit (unlimited use): set a balance first.".into(),
            )),
            CreditOpOutcome::Insufficient { .. } if matches!(op, CreditOp::Set(_)) => {
                self.refuse_loosening(actor, &key, "its credits")?;
                Err(KeyError::Forbidden(
                    "An API key cannot loosen its own restrictions (its credits).".into(),
                ))
            }
            CreditOpOutcome::Insufficient { remaining } => Err(KeyError::Conflict(format!(
                "The key has {remaining} credits left; decrementing by {} would go below zero. Decrement by at most {remaining}, or set the balance.",
                op.value()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credits(remaining: Option<i64>, refill: Option<(RefillInterval, i64)>) -> KeyCredits {
        KeyCredits {
            remaining,
            refill: refill.map(|(interval, amount)| Refill { interval, amount }),
            low_threshold: None,
        }
    }

    const DAILY: RefillInterval = RefillInterval::Daily;
    const MONTHLY: RefillInterval = RefillInterval::Monthly { day: 1 };

    #[test]
    fn what_loosens_credits() {
        let base = credits(Some(100), Some((MONTHLY, 1000)));
        // (after, loosened?)
        let table: [(Option<KeyCredits>, bool); 8] = [
            (None, true),
            (Some(credits(Some(101), Some((MONTHLY, 1000)))), true),
            (Some(credits(Some(50), Some((MONTHLY, 1000)))), false),
            (Some(credits(None, Some((MONTHLY, 1000)))), false),
            (Some(credits(Some(100), Some((MONTHLY, 2000)))), true),
            (Some(credits(Some(100), Some((DAILY, 1000)))), true),
            (Some(credits(Some(100), Some((MONTHLY, 500)))), false),
            (Some(credits(Some(100), None)), false),
        ];
        for (after, loosens) in table {
            assert_eq!(
                credits_loosened(Some(&base), after.as_ref()).is_some(),
                loosens,
                "{after:?}"
            );
        }
        // Giving an unlimited key credits tightens it.
        assert_eq!(credits_loosened(None, Some(&base)), None);
        // A refill on a key that had none loosens it.
        assert!(credits_loosened(Some(&credits(Some(5), None)), Some(&base)).is_some());
    }

    #[test]
    fn only_a_positive_increment_raises_the_balance() {
        assert!(op_raises(CreditOp::Increment(1)));
        assert!(!op_raises(CreditOp::Increment(0)));
        assert!(!op_raises(CreditOp::Decrement(5)));
        assert!(!op_raises(CreditOp::Set(5)));
    }

    #[test]
    fn credit_settings_are_parsed_once_with_a_sentence_per_mistake() {
        let ok = CreditsSpec {
            remaining: Some(10),
            refill_interval: Some("monthly"),
            refill_amount: Some(100),
            refill_day: Some(31),
            low_threshold: None,
        };
        assert_eq!(
            ok.parse(false).unwrap().refill,
            Some(Refill {
                interval: RefillInterval::Monthly { day: 31 },
                amount: 100
            })
        );
        for bad in [
            CreditsSpec {
                remaining: Some(-1),
                ..CreditsSpec::default()
            },
            CreditsSpec::default(),
            CreditsSpec {
                refill_interval: Some("weekly"),
                refill_amount: Some(1),
                ..CreditsSpec::default()
            },
            CreditsSpec {
                refill_interval: Some("monthly"),
                refill_amount: Some(1),
                refill_day: Some(32),
                ..CreditsSpec::default()
            },
            CreditsSpec {
                refill_interval: Some("daily"),
                refill_amount: Some(1),
                refill_day: Some(3),
                ..CreditsSpec::default()
            },
            CreditsSpec {
                refill_interval: Some("daily"),
                refill_amount: Some(0),
                ..CreditsSpec::default()
            },
            CreditsSpec {
                remaining: Some(1),
                refill_amount: Some(5),
                ..CreditsSpec::default()
            },
        ] {
            let e = bad.parse(false).unwrap_err();
            assert!(e.ends_with('.'), "{e}");
        }
    }
}
