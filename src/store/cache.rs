//! The read-through cache in front of the verification lookup.
//!
//! Keyed by the key hash, bounded, with a short time-to-live as a backstop. Every write
//! through the [`Store`](super::Store) invalidates the affected hashes on this node before
//! it returns; on Postgres the same write sends `NOTIFY keyward_keys` inside its
//! transaction, so every other node drops its entry as soon as the change commits. The
//! verifier re-checks revocation and expiry against the clock on every hit, so a cached
//! entry never outlives `revoked_at` or `expires_at`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use moka::sync::Cache;

use super::ApiKey;

/// Entries live at most this long without an invalidation: the bound (SECURITY.md R1) for a
/// lost NOTIFY, and for an in-process verifier on SQLite, which gets no notifications.
pub const POSITIVE_TTL: Duration = Duration::from_secs(5);
/// Unknown hashes are remembered this long, so floods of garbage do not reach the DB.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);
const CAPACITY: u64 = 100_000;

pub struct KeyCache {
    positive: Cache<[u8; 32], Arc<ApiKey>>,
    negative: Cache<[u8; 32], ()>,
    /// Bumped on every invalidation: a lookup that started before one must not insert
    /// what it read (it may be stale).
    generation: AtomicU64,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("entries", &self.positive.entry_count())
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

impl KeyCache {
    pub fn new() -> Self {
        Self {
            positive: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(POSITIVE_TTL)
                .build(),
            negative: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(NEGATIVE_TTL)
                .build(),
            generation: AtomicU64::new(0),
        }
    }

    pub fn probe(&self, hash: &[u8; 32]) -> Probe {
        if let Some(k) = self.positive.get(hash) {
            return Probe::Hit(k);
        }
        if self.negative.contains_key(hash) {
            return Probe::KnownMissing;
        }
        Probe::Miss(self.generation.load(Ordering::Acquire))
    }

    /// Stores a lookup result unless an invalidation happened since `generation`.
    pub fn fill(&self, hash: [u8; 32], found: Option<Arc<ApiKey>>, generation: u64) {
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        match found {
            Some(k) => self.positive.insert(hash, k),
            None => self.negative.insert(hash, ()),
        }
        // An invalidation may have slipped in between the check and the insert: undo.
        if self.generation.load(Ordering::Acquire) != generation {
            self.positive.invalidate(&hash);
            self.negative.invalidate(&hash);
        }
    }

    /// A cached key, without touching the database.
    pub fn cached(&self, hash: &[u8; 32]) -> Option<Arc<ApiKey>> {
        self.positive.get(hash)
    }

    pub fn invalidate(&self, hash: &[u8]) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(h) = <[u8; 32]>::try_from(hash) {
            self.positive.invalidate(&h);
            self.negative.invalidate(&h);
        }
    }

    pub fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.positive.invalidate_all();
        self.negative.invalidate_all();
    }
}
