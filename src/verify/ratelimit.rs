//! Token buckets, one per key (and one per source for invalid attempts).
//!
//! Written by hand because limits differ per key and change when a key is edited, which
//! the keyed limiters of crates such as `governor` (one quota for all keys) do not model.
//! Exact on one node: one mutex guards the map, so concurrent requests cannot both take
//! the last token.

use std::{collections::HashMap, sync::Mutex};

/// A limit: `limit` requests per `window_secs`, with bursts up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub limit: i64,
    pub window_secs: i64,
    pub burst: i64,
}

impl Limit {
    fn capacity(&self) -> f64 {
        self.burst.max(1) as f64
    }
    fn rate(&self) -> f64 {
        self.limit.max(1) as f64 / self.window_secs.max(1) as f64
    }
}

/// The state reported in `X-RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Decision {
    #[serde(skip)]
    pub allowed: bool,
    pub limit: i64,
    pub remaining: i64,
    /// Unix time when the bucket is full again.
    pub reset: i64,
    /// Seconds until the next request may pass (0 when allowed).
    #[serde(skip)]
    pub retry_after: i64,
    /// The limit's window in seconds (for the IETF `RateLimit-Policy` header).
    #[serde(skip)]
    pub window: i64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: f64,
    limit: Limit,
}

impl Bucket {
    fn refill(&mut self, limit: Limit, now: f64) {
        if self.limit != limit {
            // The key was edited: keep the fill level, within the new capacity.
            self.tokens = self.tokens.min(limit.capacity());
            self.limit = limit;
        }
        let elapsed = (now - self.updated).max(0.0);
        self.tokens = (self.tokens + elapsed * limit.rate()).min(limit.capacity());
        self.updated = now;
    }

    fn decision(&self, allowed: bool, now: f64) -> Decision {
        let rate = self.limit.rate();
        let to_full = (self.limit.capacity() - self.tokens).max(0.0) / rate;
        let retry_after = if allowed {
            0
        } else {
            ((1.0 - self.tokens) / rate).ceil().max(1.0) as i64
        };
        Decision {
            allowed,
            limit: self.limit.limit,
            remaining: self.tokens.floor().max(0.0) as i64,
            reset: (now + to_full).ceil() as i64,
            retry_after,
            window: self.limit.window_secs,
        }
    }
}

#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// Takes one token for `id` if one is available. `now` is Unix seconds (fractional).
    pub fn check(&self, id: &str, limit: Limit, now: f64) -> Decision {
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        // Looked up by `&str` first: the id is copied only for a key's first bucket.
        if !map.contains_key(id) {
            map.insert(
                id.to_string(),
                Bucket {
                    tokens: limit.capacity(),
                    updated: now,
                    limit,
                },
            );
        }
        let Some(bucket) = map.get_mut(id) else {
            unreachable!("inserted above")
        };
        bucket.refill(limit, now);
        let allowed = bucket.tokens >= 1.0;
        if allowed {
            bucket.tokens -= 1.0;
        }
        bucket.decision(allowed, now)
    }

    /// Returns a token taken by [`check`](Self::check) (the work it paid for turned out
    /// not to count), within the bucket's capacity.
    pub fn give_back(&self, id: &str, limit: Limit) {
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = map.get_mut(id) {
            b.tokens = (b.tokens + 1.0).min(limit.capacity());
        }
    }

    /// Forgets buckets that have refilled completely (they behave like new ones).
    pub fn prune(&self, now: f64) {
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, b| {
            let full_at = b.updated + (b.limit.capacity() - b.tokens).max(0.0) / b.limit.rate();
            full_at > now
        });
    }

    pub fn len(&self) -> usize {
        self.buckets.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_PER_MINUTE: Limit = Limit {
        limit: 10,
        window_secs: 60,
        burst: 10,
    };

    #[test]
    fn allows_the_limit_then_refuses() {
        let rl = RateLimiter::default();
        for i in 0..10 {
            let d = rl.check("k", TEN_PER_MINUTE, 1000.0);
            assert!(d.allowed);
            assert_eq!(d.remaining, 9 - i);
        }
        let d = rl.check("k", TEN_PER_MINUTE, 1000.0);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, 6); // one token every 6 s
        assert_eq!(d.reset, 1060);
        // Six seconds later one more passes.
        assert!(rl.check("k", TEN_PER_MINUTE, 1006.0).allowed);
        assert!(!rl.check("k", TEN_PER_MINUTE, 1006.0).allowed);
        // Keys are independent.
        assert!(rl.check("other", TEN_PER_MINUTE, 1006.0).allowed);
    }

    #[test]
    fn burst_above_the_steady_rate() {
        let rl = RateLimiter::default();
        let l = Limit {
            limit: 1,
            window_secs: 1,
            burst: 5,
        };
        let passed = (0..10).filter(|_| rl.check("k", l, 0.0).allowed).count();
        assert_eq!(passed, 5);
        assert!(rl.check("k", l, 1.0).allowed);
    }

    #[test]
    fn a_token_given_back_can_be_taken_again() {
        let rl = RateLimiter::default();
        let one = Limit {
            limit: 1,
            window_secs: 60,
            burst: 1,
        };
        assert!(rl.check("k", one, 0.0).allowed);
        assert!(!rl.check("k", one, 0.0).allowed);
        rl.give_back("k", one);
        assert!(rl.check("k", one, 0.0).allowed);
        // Never above the capacity.
        rl.give_back("k", one);
        rl.give_back("k", one);
        assert!(rl.check("k", one, 0.0).allowed);
        assert!(!rl.check("k", one, 0.0).allowed);
    }

    #[test]
    fn prune_forgets_full_buckets() {
        let rl = RateLimiter::default();
        rl.check("k", TEN_PER_MINUTE, 0.0);
        rl.prune(1.0);
        assert_eq!(rl.len(), 1);
        rl.prune(61.0);
        assert!(rl.is_empty());
    }
}
