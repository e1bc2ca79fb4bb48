//! The read-through cache in front of the verification lookup.
//!
//! Keyed by the key hash, bounded, with a short time-to-live as a backstop. Every write
//! through the [`Store`](super::Store) invalidates the affected hashes on this node before
//! it returns; on Postgres the same write sends `NOTIFY keyward_keys` inside its
//! transaction, so every other node drops its entry as soon as the change commits. The
//! verifier re-checks revocation and expiry against the clock on every hit, so a cached
//! entry never outlives `revoked_at` or `expires_at`.
//!
//! The cache is `quick_cache` (a sharded table with S3-FIFO eviction and no bookkeeping on
//! reads beyond one flag) rather than moka: a hit is on every verification, and moka's read
//! path (frequency sketch, read buffer, its own clock for the time-to-live) cost about a
//! quarter of a cached verification. quick_cache has no time-to-live, so each entry carries
//! its deadline in the verifier's (injected) clock, checked on every hit.

use std::{
    hash::{BuildHasher, Hasher},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use quick_cache::{UnitWeighter, sync::Cache};

use super::ApiKey;

/// Entries live at most this long (seconds) without an invalidation: the bound
/// (SECURITY.md R1) for a lost NOTIFY, and for an in-process verifier on SQLite, which
/// gets no notifications.
pub const POSITIVE_TTL: i64 = 5;
/// Unknown hashes are remembered this long (seconds), so floods of garbage do not reach
/// the database.
pub const NEGATIVE_TTL: i64 = 5;
const CAPACITY: usize = 100_000;

/// Hashes the cache's keys, which are already HMAC-SHA-256 outputs under the secret pepper:
/// their first eight bytes are uniformly distributed and cannot be steered by a client
/// (it would need the pepper), so hashing them again (SipHash) would only cost time.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyHashHasher;

impl BuildHasher for KeyHashHasher {
    type Hasher = FirstWord;
    fn build_hasher(&self) -> FirstWord {
        FirstWord(0)
    }
}

/// See [`KeyHashHasher`].
#[derive(Debug, Default)]
pub struct FirstWord(u64);

impl Hasher for FirstWord {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // A `[u8; 32]` arrives as its length, then its bytes: the first word of each write.
        let mut word = [0u8; 8];
        let n = bytes.len().min(8);
        word[..n].copy_from_slice(&bytes[..n]);
        self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
    }
}

#[derive(Clone)]
struct Entry<T> {
    value: T,
    /// The verifier clock's Unix second from which the entry is no longer used.
    until: i64,
}

type Table<T> = Cache<[u8; 32], Entry<T>, UnitWeighter, KeyHashHasher, CountEvictions>;

/// Counts the entries the cache drops to stay within its capacity.
#[derive(Debug, Clone, Default)]
struct CountEvictions(Arc<AtomicU64>);

impl<T> quick_cache::Lifecycle<[u8; 32], Entry<T>> for CountEvictions {
    type RequestState = ();
    fn begin_request(&self) {}
    fn on_evict(&self, _: &mut (), _: [u8; 32], _: Entry<T>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

pub struct KeyCache {
    positive: Table<Arc<ApiKey>>,
    evictions: CountEvictions,
    negative: Table<()>,
    /// Bumped on every invalidation: a lookup that started before one must not insert
    /// what it read (it may be stale).
    generation: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// The cache's counters (for metrics).
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Keys dropped to stay within the capacity (not invalidations or expiries).
    pub evictions: u64,
    pub entries: u64,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("entries", &self.positive.len())
            .finish()
    }
}

/// What a cache probe found.
pub enum Probe {
    Hit(Arc<ApiKey>),
    KnownMissing,
    Miss(u64),
}

impl Default for KeyCache {
    fn default() -> Self {
        Self::new()
    }
}

fn table<T: Clone>(evictions: CountEvictions) -> Table<T> {
    Cache::with(
        CAPACITY,
        CAPACITY as u64,
        UnitWeighter,
        KeyHashHasher,
        evictions,
    )
}

impl KeyCache {
    pub fn new() -> Self {
        let evictions = CountEvictions::default();
        Self {
            positive: table(evictions.clone()),
            negative: table(CountEvictions::default()),
            evictions,
            generation: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.0.load(Ordering::Relaxed),
            entries: self.positive.len() as u64,
        }
    }

    /// What the cache knows about `hash` at `now` (the verifier clock's Unix seconds).
    pub fn probe(&self, hash: &[u8; 32], now: i64) -> Probe {
        if let Some(k) = self.cached(hash, now) {
            return Probe::Hit(k);
        }
        if self.negative.get(hash).is_some_and(|e| now < e.until) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Probe::KnownMissing;
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        Probe::Miss(self.generation.load(Ordering::Acquire))
    }

    /// Stores a lookup result read at `now` unless an invalidation happened since
    /// `generation`.
    pub fn fill(&self, hash: [u8; 32], found: Option<Arc<ApiKey>>, generation: u64, now: i64) {
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        match found {
            Some(value) => self.positive.insert(
                hash,
                Entry {
                    value,
                    until: now + POSITIVE_TTL,
                },
            ),
            None => self.negative.insert(
                hash,
                Entry {
                    value: (),
                    until: now + NEGATIVE_TTL,
                },
            ),
        }
        // An invalidation may have slipped in between the check and the insert: undo.
        if self.generation.load(Ordering::Acquire) != generation {
            self.positive.remove(&hash);
            self.negative.remove(&hash);
        }
    }

    /// A cached key still within its time-to-live at `now`, without touching the database.
    pub fn cached(&self, hash: &[u8; 32], now: i64) -> Option<Arc<ApiKey>> {
        let hit = self
            .positive
            .get(hash)
            .filter(|e| now < e.until)
            .map(|e| e.value);
        if hit.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    pub fn invalidate(&self, hash: &[u8]) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(h) = <[u8; 32]>::try_from(hash) {
            self.positive.remove(&h);
            self.negative.remove(&h);
        }
    }

    pub fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.positive.clear();
        self.negative.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_by_the_given_clock() {
        let cache = KeyCache::new();
        let h = [7u8; 32];
        let Probe::Miss(g) = cache.probe(&h, 100) else {
            panic!("empty cache")
        };
        cache.fill(h, None, g, 100);
        assert!(matches!(cache.probe(&h, 104), Probe::KnownMissing));
        assert!(matches!(cache.probe(&h, 105), Probe::Miss(_)));
    }

    #[test]
    fn an_invalidation_during_a_lookup_keeps_the_result_out() {
        let cache = KeyCache::new();
        let h = [9u8; 32];
        let Probe::Miss(g) = cache.probe(&h, 0) else {
            panic!("empty cache")
        };
        cache.invalidate(&h);
        cache.fill(h, None, g, 0);
        assert!(matches!(cache.probe(&h, 0), Probe::Miss(_)));
    }
}
