//! Time is injected: production code asks a [`Clock`] for "now" so that expiry, session
//! timeouts and (later) rate-limit windows are tested by moving a [`ManualClock`] instead of
//! sleeping.
//!
//! All timestamps in the store are UTC Unix seconds (`i64`) so that SQLite and Postgres
//! compare them the same way.

use std::sync::{Arc, Mutex};
use time::{Duration, OffsetDateTime};

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    fn now(&self) -> OffsetDateTime;

    /// The current time as Unix seconds, the unit every stored timestamp uses.
    fn unix(&self) -> i64 {
        self.now().unix_timestamp()
    }

    /// The current time as Unix seconds with fractions (for attempt budgets).
    fn unix_f64(&self) -> f64 {
        self.unix_nanos() as f64 / 1e9
    }

    /// The current time as Unix nanoseconds (the verifier's one reading per request).
    fn unix_nanos(&self) -> i128 {
        self.now().unix_timestamp_nanos()
    }
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    // The one place allowed to read the system clock (see clippy.toml).
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    // Without building a calendar date: the verifier reads the clock on every request.
    #[allow(clippy::disallowed_methods)]
    fn unix_nanos(&self) -> i128 {
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(before) => -(before.duration().as_nanos() as i128),
        }
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<OffsetDateTime>>);

impl ManualClock {
    pub fn new(start: OffsetDateTime) -> Self {
        Self(Arc::new(Mutex::new(start)))
    }

    /// Starts at the real current time, truncated to whole seconds.
    pub fn starting_now() -> Self {
        let now = SystemClock.now();
        Self::new(now.replace_nanosecond(0).unwrap_or(now))
    }

    pub fn advance(&self, by: Duration) {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *guard += by;
    }

    pub fn set(&self, to: OffsetDateTime) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Converts stored Unix seconds back to a date-time (clamped to the valid range).
pub fn from_unix(ts: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(ts).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(OffsetDateTime::UNIX_EPOCH);
        assert_eq!(c.unix(), 0);
        c.advance(Duration::hours(1));
        assert_eq!(c.unix(), 3600);
    }
}
