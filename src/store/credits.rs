//! Credits: a balance per key, spent by verifications, exact across nodes.
//!
//! The database is the only truth. A verification spends with ONE conditional `UPDATE …
//! WHERE credits_remaining >= cost RETURNING …`, which also applies a refill that has
//! fallen due (the refill sets the balance to the refill amount, as Unkey's does): on
//! Postgres the row lock re-checks the condition for concurrent spenders, on SQLite the
//! single writer serializes them, so N verifications against M credits pass exactly
//! min(N, M) on any number of nodes. Keys without credits (`credits_remaining IS NULL`)
//! never reach this module: the verifier knows from the cached key that it has no
//! balance, and every change of that is a key write that invalidates the cache (and, on
//! Postgres, every node's cache through NOTIFY).

use time::{Date, Month, OffsetDateTime, Time};

use super::{
    NewAudit, Result, Store,
    audit::insert_audit,
    keys::{ApiKey, NOTIFY_CHANNEL, commit_key_write, notify_key},
    with_pool,
};
use crate::audit::AuditAction;

/// How often a balance is refilled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefillInterval {
    /// At 00:00 UTC every day.
    Daily,
    /// At 00:00 UTC on the given day of every month (the month's last day when it is
    /// shorter).
    Monthly { day: u8 },
}

/// A refill: the balance becomes `amount` at every boundary of `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refill {
    pub interval: RefillInterval,
    pub amount: i64,
}

impl Refill {
    /// `daily` or `monthly`.
    pub fn interval_name(&self) -> &'static str {
        match self.interval {
            RefillInterval::Daily => "daily",
            RefillInterval::Monthly { .. } => "monthly",
        }
    }

    pub fn day(&self) -> Option<i64> {
        match self.interval {
            RefillInterval::Daily => None,
            RefillInterval::Monthly { day } => Some(i64::from(day)),
        }
    }

    /// The latest refill boundary at or before `now` (Unix seconds): a balance last set
    /// before it is due for a refill.
    pub fn last_boundary(&self, now: i64) -> i64 {
        match self.interval {
            RefillInterval::Daily => now.div_euclid(86_400) * 86_400,
            RefillInterval::Monthly { day } => {
                let today = date_of(now);
                let this = refill_date(today.year(), today.month(), day);
                if this <= today {
                    midnight(this)
                } else {
                    let prev = this.replace_day(1).ok().and_then(|d| d.previous_day());
                    prev.map_or(i64::MIN, |p| {
                        midnight(refill_date(p.year(), p.month(), day))
                    })
                }
            }
        }
    }

    /// The first refill boundary after `now`.
    pub fn next_boundary(&self, now: i64) -> i64 {
        match self.interval {
            RefillInterval::Daily => (now.div_euclid(86_400) + 1) * 86_400,
            RefillInterval::Monthly { day } => {
                let today = date_of(now);
                let this = refill_date(today.year(), today.month(), day);
                if this > today {
                    midnight(this)
                } else {
                    let (y, m) = match today.month() {
                        Month::December => (today.year() + 1, Month::January),
                        m => (today.year(), m.next()),
                    };
                    midnight(refill_date(y, m, day))
                }
            }
        }
    }
}

fn date_of(unix: i64) -> Date {
    OffsetDateTime::from_unix_timestamp(unix)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .date()
}

fn midnight(d: Date) -> i64 {
    d.with_time(Time::MIDNIGHT).assume_utc().unix_timestamp()
}

/// The refill day in a month: `day`, or the month's last day when the month is shorter.
fn refill_date(year: i32, month: Month, day: u8) -> Date {
    let last = time::util::days_in_month(month, year);
    Date::from_calendar_date(year, month, day.clamp(1, last)).unwrap_or(Date::MIN)
}

/// A key's credit settings. `remaining: None` keeps the current balance on an edit, and
/// starts a new key at the refill amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyCredits {
    pub remaining: Option<i64>,
    pub refill: Option<Refill>,
    /// `key.credits_low` fires when the balance falls to this or below.
    pub low_threshold: Option<i64>,
}

impl KeyCredits {
    /// The threshold in force: the one set, else 10 % of the refill amount, else none.
    pub fn effective_threshold(&self) -> Option<i64> {
        low_threshold(self.low_threshold, self.refill.map(|r| r.amount))
    }
}

/// The low-balance threshold in force (see [`KeyCredits::low_threshold`]).
pub fn low_threshold(set: Option<i64>, refill_amount: Option<i64>) -> Option<i64> {
    set.or(refill_amount.map(|a| a / 10))
}

impl ApiKey {
    /// The key's refill, if it has a valid one.
    pub fn credit_refill(&self) -> Option<Refill> {
        let amount = self.credits_refill_amount?;
        let interval = match self.credits_refill_interval.as_deref()? {
            "daily" => RefillInterval::Daily,
            "monthly" => RefillInterval::Monthly {
                day: u8::try_from(self.credits_refill_day.unwrap_or(1)).unwrap_or(1),
            },
            _ => return None,
        };
        Some(Refill { interval, amount })
    }

    /// The key's credit settings as stored (`None`: unlimited).
    pub fn credits(&self) -> Option<KeyCredits> {
        self.credits_remaining.map(|r| KeyCredits {
            remaining: Some(r),
            refill: self.credit_refill(),
            low_threshold: self.credits_low_threshold,
        })
    }

    /// The refill boundary a spend compares the last refill with (0 without a refill,
    /// which the SQL ignores then).
    pub fn credit_boundary(&self, now: i64) -> i64 {
        self.credit_refill().map_or(0, |r| r.last_boundary(now))
    }
}

/// The outcome of spending credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    /// The key has no balance (any more): nothing was spent.
    Unlimited,
    /// Spent; the balance and notice state after it.
    Spent(CreditLevel),
    /// Not enough credits: nothing was spent.
    Refused { remaining: i64 },
}

/// A balance after a change, with what is needed to announce crossings once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct CreditLevel {
    #[sqlx(rename = "credits_remaining")]
    pub remaining: i64,
    #[sqlx(rename = "credits_low_notified")]
    pub low_notified: bool,
    #[sqlx(rename = "credits_exhausted_notified")]
    pub exhausted_notified: bool,
    #[sqlx(rename = "credits_low_threshold")]
    pub threshold_set: Option<i64>,
    #[sqlx(rename = "credits_refill_amount")]
    pub refill_amount: Option<i64>,
}

impl CreditLevel {
    pub fn threshold(&self) -> Option<i64> {
        low_threshold(self.threshold_set, self.refill_amount)
    }
}

/// A change made through the management API or the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditOp {
    Set(i64),
    Increment(i64),
    Decrement(i64),
}

impl CreditOp {
    pub fn name(self) -> &'static str {
        match self {
            CreditOp::Set(_) => "set",
            CreditOp::Increment(_) => "increment",
            CreditOp::Decrement(_) => "decrement",
        }
    }
    pub fn value(self) -> i64 {
        match self {
            CreditOp::Set(v) | CreditOp::Increment(v) | CreditOp::Decrement(v) => v,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditOpOutcome {
    Changed(CreditLevel),
    /// The key has no balance to change (set one first).
    Unlimited,
    /// A decrement below zero (or, with `no_raise`, a set above the balance): refused.
    Insufficient {
        remaining: i64,
    },
    /// Not in this organization, or revoked or expired.
    Closed,
}

/// A refill has fallen due: the key has one and the balance was last set before the
/// boundary (`$3`).
const DUE: &str = "(credits_refill_amount IS NOT NULL AND COALESCE(credits_refilled_at, 0) < $3)";

const LEVEL: &str = "credits_remaining, credits_low_notified, credits_exhausted_notified, \
     credits_low_threshold, credits_refill_amount";

/// Re-arms the low and exhausted notices when the balance is above their level again.
const REARM: &str = "UPDATE api_keys SET \
     credits_exhausted_notified = CASE WHEN credits_remaining > 0 THEN FALSE ELSE credits_exhausted_notified END, \
     credits_low_notified = CASE WHEN credits_remaining > COALESCE(credits_low_threshold, credits_refill_amount / 10, -1) \
       THEN FALSE ELSE credits_low_notified END \
     WHERE id = $1";

/// A new key's credits, in the transaction that inserts it.
macro_rules! write_new_key_credits {
    ($exec:expr, $k:expr) => {{
        let k: &$crate::store::NewKey = $k;
        match &k.credits {
            None => Ok(()),
            Some(c) => sqlx::query(
                "UPDATE api_keys SET credits_remaining = $2, credits_refill_interval = $3, \
                 credits_refill_amount = $4, credits_refill_day = $5, credits_low_threshold = $6, \
                 credits_refilled_at = $7 WHERE id = $1",
            )
            .bind(&k.id)
            .bind(c.remaining.or(c.refill.map(|r| r.amount)).unwrap_or(0))
            .bind(c.refill.map(|r| r.interval_name()))
            .bind(c.refill.map(|r| r.amount))
            .bind(c.refill.and_then(|r| r.day()))
            .bind(c.low_threshold)
            .bind(k.created_at)
            .execute($exec)
            .await
            .map(|_| ()),
        }
    }};
}
pub(super) use write_new_key_credits;

impl Store {
    /// Spends `cost` credits of a key (applying a due refill first), atomically. `boundary`
    /// is the key's last refill boundary ([`ApiKey::credit_boundary`]).
    pub async fn spend_credits(
        &self,
        key_id: &str,
        cost: i64,
        boundary: i64,
        now: i64,
    ) -> Result<Spend> {
        let sql = format!(
            "UPDATE api_keys SET \
               credits_remaining = (CASE WHEN {DUE} THEN credits_refill_amount ELSE credits_remaining END) - $2, \
               credits_refilled_at = CASE WHEN {DUE} THEN $4 ELSE credits_refilled_at END, \
               credits_low_notified = CASE WHEN {DUE} THEN FALSE ELSE credits_low_notified END, \
               credits_exhausted_notified = CASE WHEN {DUE} THEN FALSE ELSE credits_exhausted_notified END \
             WHERE id = $1 AND credits_remaining IS NOT NULL \
               AND (CASE WHEN {DUE} THEN credits_refill_amount ELSE credits_remaining END) >= $2 \
             RETURNING {LEVEL}"
        );
        with_pool!(self, |pool| {
            let spent: Option<CreditLevel> = sqlx::query_as(&sql)
                .bind(key_id)
                .bind(cost)
                .bind(boundary)
                .bind(now)
                .fetch_optional(pool)
                .await?;
            if let Some(level) = spent {
                return Ok(Spend::Spent(level));
            }
            // Refused, or the key lost its balance since it was cached.
            let stored: Option<Option<i64>> =
                sqlx::query_scalar("SELECT credits_remaining FROM api_keys WHERE id = $1")
                    .bind(key_id)
                    .fetch_optional(pool)
                    .await?;
            Ok(match stored {
                Some(None) => Spend::Unlimited,
                Some(Some(remaining)) => Spend::Refused { remaining },
                None => Spend::Refused { remaining: 0 },
            })
        })
    }

    /// Announces a balance's crossings once each: `key.credits_low` when it is at or below
    /// the threshold, `key.credits_exhausted` when it is 0. Each claim flips its flag with
    /// a conditional UPDATE and records the event (which fans out to webhooks) in the same
    /// transaction, so concurrent spenders on any node announce a crossing exactly once.
    pub async fn announce_credit_level(
        &self,
        key: &ApiKey,
        level: &CreditLevel,
        now: i64,
    ) -> Result<()> {
        let threshold = level.threshold();
        if let Some(t) = threshold
            && level.remaining <= t
            && !level.low_notified
        {
            let audit = NewAudit::new(AuditAction::KeyCreditsLow, now)
                .org(&key.org_id)
                .target("api_key", &key.id, &key.name)
                .details(serde_json::json!({ "remaining": level.remaining, "threshold": t }));
            self.claim_credit_notice(
                &key.id,
                "UPDATE api_keys SET credits_low_notified = TRUE \
                 WHERE id = $1 AND credits_low_notified = FALSE AND credits_remaining <= $2",
                t,
                &audit,
            )
            .await?;
        }
        if level.remaining <= 0 && !level.exhausted_notified {
            let audit = NewAudit::new(AuditAction::KeyCreditsExhausted, now)
                .org(&key.org_id)
                .target("api_key", &key.id, &key.name)
                .details(serde_json::json!({ "remaining": level.remaining }));
            self.claim_credit_notice(
                &key.id,
                "UPDATE api_keys SET credits_exhausted_notified = TRUE \
                 WHERE id = $1 AND credits_exhausted_notified = FALSE AND credits_remaining <= $2",
                0,
                &audit,
            )
            .await?;
        }
        Ok(())
    }

    async fn claim_credit_notice(
        &self,
        key_id: &str,
        claim: &str,
        level: i64,
        audit: &NewAudit,
    ) -> Result<bool> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let claimed = sqlx::query(claim)
                .bind(key_id)
                .bind(level)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            if claimed {
                insert_audit!(&mut *tx, audit)?;
            }
            tx.commit().await?;
            Ok(claimed)
        })
    }

    /// Sets, increments or decrements a key's balance (applying a due refill first), with
    /// its audit event, in one transaction. With `no_raise` (a key acting on itself) a set
    /// may not raise the balance. The audit details gain the new `remaining`.
    pub async fn change_credits(
        &self,
        key: &ApiKey,
        op: CreditOp,
        no_raise: bool,
        now: i64,
        mut audit: NewAudit,
    ) -> Result<CreditOpOutcome> {
        let base =
            format!("(CASE WHEN {DUE} THEN credits_refill_amount ELSE credits_remaining END)");
        // A set may also give an unlimited key a balance; increments and decrements need one.
        let (value, condition) = match op {
            CreditOp::Set(_) if no_raise => (
                "$4".to_string(),
                format!("AND (credits_remaining IS NULL OR {base} >= $4)"),
            ),
            CreditOp::Set(_) => ("$4".to_string(), String::new()),
            CreditOp::Increment(_) => (
                format!("{base} + $4"),
                "AND credits_remaining IS NOT NULL".to_string(),
            ),
            CreditOp::Decrement(_) => (
                format!("{base} - $4"),
                format!("AND credits_remaining IS NOT NULL AND {base} >= $4"),
            ),
        };
        let refilled = match op {
            CreditOp::Set(_) => "$5".to_string(),
            _ => format!("CASE WHEN {DUE} THEN $5 ELSE credits_refilled_at END"),
        };
        let sql = format!(
            "UPDATE api_keys SET credits_remaining = {value}, credits_refilled_at = {refilled}, \
               updated_at = $5 \
             WHERE id = $1 AND org_id = $2 {condition} \
               AND (revoked_at IS NULL OR revoked_at > $5) AND (expires_at IS NULL OR expires_at > $5) \
             RETURNING key_hash"
        );
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let hash: Option<Vec<u8>> = sqlx::query_scalar(&sql)
                .bind(&key.id)
                .bind(&key.org_id)
                .bind(key.credit_boundary(now))
                .bind(op.value())
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(hash) = hash else {
                let stored: Option<Option<i64>> = sqlx::query_scalar(
                    "SELECT credits_remaining FROM api_keys WHERE id = $1 AND org_id = $2 \
                     AND (revoked_at IS NULL OR revoked_at > $3) AND (expires_at IS NULL OR expires_at > $3)",
                )
                .bind(&key.id)
                .bind(&key.org_id)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                return Ok(match stored {
                    None => CreditOpOutcome::Closed,
                    Some(None) => CreditOpOutcome::Unlimited,
                    Some(Some(remaining)) => CreditOpOutcome::Insufficient { remaining },
                });
            };
            let level: CreditLevel = sqlx::query_as(&format!("{REARM} RETURNING {LEVEL}"))
                .bind(&key.id)
                .fetch_one(&mut *tx)
                .await?;
            let mut details: serde_json::Value =
                serde_json::from_str(&audit.details).unwrap_or_else(|_| serde_json::json!({}));
            details["remaining"] = level.remaining.into();
            audit.details = details.to_string();
            commit_key_write!(self, tx, &hash, &audit);
            Ok(CreditOpOutcome::Changed(level))
        })
    }

    /// Replaces a key's credit settings (`None`: unlimited), with its audit event, in one
    /// transaction. A balance left out keeps the current one (or, for a key that had none,
    /// starts at the refill amount); setting a balance, or a new refill, counts as a refill
    /// (the next one comes at the next boundary). Returns whether
    /// the key was written (false: not in this organization, or no longer open) and its new
    /// level (`None`: unlimited).
    pub async fn set_credit_settings(
        &self,
        key: &ApiKey,
        credits: Option<&KeyCredits>,
        now: i64,
        audit: &NewAudit,
    ) -> Result<(bool, Option<CreditLevel>)> {
        let c = credits.copied().unwrap_or_default();
        let limited = i64::from(credits.is_some());
        let refill = c.refill;
        // A new or changed refill starts its schedule now (a refill of the old schedule
        // that fell due but was not applied yet is not applied).
        let restart = i64::from(refill != key.credit_refill());
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let hash: Option<Vec<u8>> = sqlx::query_scalar(
                "UPDATE api_keys SET \
                   credits_remaining = CASE WHEN $3 = 0 THEN NULL ELSE COALESCE($4, credits_remaining, $6) END, \
                   credits_refilled_at = CASE WHEN $3 = 0 THEN NULL \
                     WHEN $4 IS NOT NULL OR credits_remaining IS NULL OR $10 = 1 THEN $9 \
                     ELSE COALESCE(credits_refilled_at, $9) END, \
                   credits_refill_interval = $5, credits_refill_amount = $6, credits_refill_day = $7, \
                   credits_low_threshold = $8, updated_at = $9 \
                 WHERE id = $1 AND org_id = $2 \
                   AND (revoked_at IS NULL OR revoked_at > $9) AND (expires_at IS NULL OR expires_at > $9) \
                 RETURNING key_hash",
            )
            .bind(&key.id)
            .bind(&key.org_id)
            .bind(limited)
            .bind(c.remaining)
            .bind(refill.map(|r| r.interval_name()))
            .bind(refill.map(|r| r.amount))
            .bind(refill.and_then(|r| r.day()))
            .bind(c.low_threshold)
            .bind(now)
            .bind(restart)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(hash) = hash else {
                return Ok((false, None));
            };
            let level: Option<CreditLevel> = if credits.is_some() {
                Some(
                    sqlx::query_as(&format!("{REARM} RETURNING {LEVEL}"))
                        .bind(&key.id)
                        .fetch_one(&mut *tx)
                        .await?,
                )
            } else {
                sqlx::query(
                    "UPDATE api_keys SET credits_low_notified = FALSE, credits_exhausted_notified = FALSE \
                     WHERE id = $1",
                )
                .bind(&key.id)
                .execute(&mut *tx)
                .await?;
                None
            };
            commit_key_write!(self, tx, &hash, audit);
            Ok((true, level))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp()
    }

    fn monthly(day: u8) -> Refill {
        Refill {
            interval: RefillInterval::Monthly { day },
            amount: 100,
        }
    }

    #[test]
    fn a_daily_refill_falls_due_at_each_utc_midnight() {
        let daily = Refill {
            interval: RefillInterval::Daily,
            amount: 10,
        };
        let noon = at("2026-12-02T12:00:00Z");
        assert_eq!(daily.last_boundary(noon), at("2026-12-02T00:00:00Z"));
        assert_eq!(daily.next_boundary(noon), at("2026-12-03T00:00:00Z"));
        let midnight = at("2026-12-02T00:00:00Z");
        assert_eq!(daily.last_boundary(midnight), midnight);
    }

    #[test]
    fn a_monthly_refill_falls_due_on_its_day_or_the_months_last() {
        // (refill day, now, last boundary, next boundary)
        let table = [
            (
                15,
                "2026-12-20T08:00:00Z",
                "2026-12-15T00:00:00Z",
                "2027-01-15T00:00:00Z",
            ),
            (
                15,
                "2026-12-10T08:00:00Z",
                "2026-11-15T00:00:00Z",
                "2026-12-15T00:00:00Z",
            ),
            (
                15,
                "2026-12-15T00:00:00Z",
                "2026-12-15T00:00:00Z",
                "2027-01-15T00:00:00Z",
            ),
            (
                1,
                "2027-01-01T00:00:01Z",
                "2027-01-01T00:00:00Z",
                "2027-02-01T00:00:00Z",
            ),
            (
                31,
                "2027-02-28T10:00:00Z",
                "2027-02-28T00:00:00Z",
                "2027-03-31T00:00:00Z",
            ),
            (
                31,
                "2027-02-27T10:00:00Z",
                "2027-01-31T00:00:00Z",
                "2027-02-28T00:00:00Z",
            ),
            (
                30,
                "2027-03-01T10:00:00Z",
                "2027-02-28T00:00:00Z",
                "2027-03-30T00:00:00Z",
            ),
            (
                31,
                "2026-12-31T23:59:59Z",
                "2026-12-31T00:00:00Z",
                "2027-01-31T00:00:00Z",
            ),
            (
                5,
                "2027-01-02T00:00:00Z",
                "2026-12-05T00:00:00Z",
                "2027-01-05T00:00:00Z",
            ),
        ];
        for (day, now, last, next) in table {
            let r = monthly(day);
            assert_eq!(r.last_boundary(at(now)), at(last), "day {day} at {now}");
            assert_eq!(r.next_boundary(at(now)), at(next), "day {day} at {now}");
        }
    }

    #[test]
    fn the_low_threshold_defaults_to_a_tenth_of_the_refill() {
        assert_eq!(low_threshold(Some(5), Some(1000)), Some(5));
        assert_eq!(low_threshold(None, Some(1000)), Some(100));
        assert_eq!(low_threshold(None, None), None);
    }
}
