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
        self.unix_secs_and_f64().1
    }

    /// The current time as Unix nanoseconds.
    fn unix_nanos(&self) -> i128 {
        self.now().unix_timestamp_nanos()
    }

    /// The current time as whole Unix seconds and as seconds with fractions: the verifier's
    /// one reading per request (expiry and days in seconds, rate-limit buckets in fractions).
    fn unix_secs_and_f64(&self) -> (i64, f64) {
        secs_and_f64(self.unix_nanos())
    }
}

/// Unix nanoseconds as whole seconds (rounded down) and as seconds with fractions, in i64
/// (clamped: nanoseconds reach the years 1677 and 2262).
fn secs_and_f64(nanos: i128) -> (i64, f64) {
    let nanos = nanos.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    (nanos.div_euclid(1_000_000_000), nanos as f64 / 1e9)
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

    // Straight from the seconds and nanoseconds the system gives (no 128-bit product, no
    // division); a time before 1970 takes the general path.
    #[allow(clippy::disallowed_methods)]
    fn unix_secs_and_f64(&self) -> (i64, f64) {
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(d) if d.as_secs() < i64::MAX as u64 / 2 => (
                d.as_secs() as i64,
                d.as_secs() as f64 + f64::from(d.subsec_nanos()) * 1e-9,
            ),
            _ => secs_and_f64(self.unix_nanos()),
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

    #[test]
    fn seconds_and_fractions_agree_with_the_nanoseconds() {
        assert_eq!(secs_and_f64(1_500_000_000), (1, 1.5));
        // Before 1970 whole seconds round down, not toward zero.
        assert_eq!(secs_and_f64(-1_500_000_000), (-2, -1.5));
        assert_eq!(secs_and_f64(i128::MAX).0, i64::MAX / 1_000_000_000);
        let c = ManualClock::new(OffsetDateTime::UNIX_EPOCH + Duration::milliseconds(-250));
        assert_eq!(c.unix_secs_and_f64(), (-1, -0.25));
        // The system clock's own path gives the same reading as the general one.
        let (secs, f) = SystemClock.unix_secs_and_f64();
        let (secs2, f2) = secs_and_f64(SystemClock.unix_nanos());
        assert!(
            secs2 - secs <= 1 && (f2 - f).abs() < 0.5,
            "{secs} {f} vs {secs2} {f2}"
        );
        // The fraction is there (a reading falls on a whole second once in 10⁹).
        let frac = f - secs as f64;
        assert!((0.0..=1.0).contains(&frac), "{secs} {f}");
        assert!((0..5).any(|_| {
            let (s, f) = SystemClock.unix_secs_and_f64();
            f != s as f64
        }));
    }
}
