//! Expiry and roll-grace choices offered by the forms, turned into timestamps.

use time::{Date, macros::format_description};

/// Longest custom expiry accepted.
pub const MAX_CUSTOM_DAYS: i64 = 5 * 365;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryChoice {
    Days(i64),
    Custom,
    Never,
    /// On edit: leave the expiry as it is.
    Keep,
    /// An exact, already checked timestamp (`None`: never) — the JSON API's.
    Exact(Option<i64>),
}

impl ExpiryChoice {
    /// `(value, label)` pairs for the create form, in order.
    pub const CREATE_OPTIONS: [(&'static str, &'static str); 6] = [
        ("7d", "7 days"),
        ("30d", "30 days"),
        ("90d", "90 days"),
        ("1y", "1 year"),
        ("custom", "Custom date"),
        ("never", "No expiration"),
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "7d" => Self::Days(7),
            "30d" => Self::Days(30),
            "90d" => Self::Days(90),
            "1y" => Self::Days(365),
            "custom" => Self::Custom,
            "never" => Self::Never,
            "keep" => Self::Keep,
            _ => return None,
        })
    }

    /// The new expiry (`Ok(None)` = never). A custom date means "through the end of that
    /// day, UTC"; a date before today is refused.
    pub fn resolve(
        self,
        custom_date: &str,
        current: Option<i64>,
        now: i64,
    ) -> Result<Option<i64>, String> {
        match self {
            Self::Days(d) => Ok(Some(now + d * 86_400)),
            Self::Never => Ok(None),
            Self::Keep => Ok(current),
            Self::Exact(t) => Ok(t),
            Self::Custom => {
                let fmt = format_description!("[year]-[month]-[day]");
                let date = Date::parse(custom_date.trim(), &fmt)
                    .map_err(|_| "Enter the expiry date as YYYY-MM-DD.".to_string())?;
                let end = date.midnight().assume_utc().unix_timestamp() + 86_400;
                if end <= now {
                    return Err(
                        "The expiry date is in the past. Choose today or a later date.".into(),
                    );
                }
                if end > now + MAX_CUSTOM_DAYS * 86_400 {
                    return Err("Choose an expiry date within 5 years.".into());
                }
                Ok(Some(end))
            }
        }
    }
}

/// How long a rolled key keeps working.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraceChoice {
    Now,
    Hour,
    Day,
    Week,
}

impl GraceChoice {
    pub const OPTIONS: [(&'static str, &'static str); 4] = [
        ("now", "Immediately"),
        ("1h", "In 1 hour"),
        ("24h", "In 24 hours"),
        ("7d", "In 7 days"),
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "now" => Self::Now,
            "1h" => Self::Hour,
            "24h" => Self::Day,
            "7d" => Self::Week,
            _ => return None,
        })
    }

    pub fn seconds(self) -> i64 {
        match self {
            Self::Now => 0,
            Self::Hour => 3600,
            Self::Day => 86_400,
            Self::Week => 7 * 86_400,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_resolution() {
        let now = 1_800_000_000; // 2027-01-15
        assert_eq!(
            ExpiryChoice::parse("30d").unwrap().resolve("", None, now),
            Ok(Some(now + 30 * 86_400))
        );
        assert_eq!(ExpiryChoice::Never.resolve("", Some(5), now), Ok(None));
        assert_eq!(ExpiryChoice::Keep.resolve("", Some(5), now), Ok(Some(5)));
        assert!(
            ExpiryChoice::Custom
                .resolve("2020-01-01", None, now)
                .is_err()
        );
        assert!(ExpiryChoice::Custom.resolve("soon", None, now).is_err());
        assert!(
            ExpiryChoice::Custom
                .resolve("2099-01-01", None, now)
                .is_err()
        );
        let r = ExpiryChoice::Custom
            .resolve("2027-02-01", None, now)
            .unwrap()
            .unwrap();
        assert!(r > now);
        assert_eq!(ExpiryChoice::parse("forever"), None);
        assert_eq!(GraceChoice::parse("24h").unwrap().seconds(), 86_400);
    }
}
