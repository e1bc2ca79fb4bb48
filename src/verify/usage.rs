//! Usage batching and daily quotas.
//!
//! A verification only touches memory: it bumps its key's tally, which a background task
//! flushes to the store about once a second (and once more on shutdown). Daily quota counts
//! start from the stored count the first time a key is seen on a day; every flush then
//! replaces the stored part with the database's new total (which includes the other nodes'
//! flushed traffic), so with several nodes a quota can be exceeded by at most about one
//! flush interval of the other nodes' traffic.
//!
//! The tally is the one piece of hand-written lock-free code here (no crate counts "per key,
//! per day, drained by a flusher"): a key's day and its unflushed count share one atomic
//! word, so a count can never land on the wrong day, and only holders of the lock (a day's
//! roll, the flusher) ever change the day or take the count.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
    },
};

use rustc_hash::FxBuildHasher;

use crate::store::{ApiKey, Store, StoreError, UsageDelta};

/// One key's successful verifications on this node that are not yet flushed.
#[derive(Debug)]
pub struct Tally {
    /// The [`Usage`] that flushes it (a key cached in one store may be verified by several
    /// verifiers; only its owner's verifications take the lock-free path).
    owner: u64,
    /// The day (high 32 bits) and that day's unflushed count (low 32 bits).
    day_count: AtomicU64,
    /// The earliest and latest use this node has seen (`i64::MAX` / `i64::MIN`: none). The
    /// store only keeps the latest use, and the earliest for a key's first use ever, so
    /// these are not split by day.
    first: AtomicI64,
    last: AtomicI64,
}

fn pack(day: u32, count: u32) -> u64 {
    (u64::from(day) << 32) | u64::from(count)
}

fn unpack(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

impl Tally {
    fn new(owner: u64, day: u32) -> Self {
        Self {
            owner,
            day_count: AtomicU64::new(pack(day, 0)),
            first: AtomicI64::new(i64::MAX),
            last: AtomicI64::new(i64::MIN),
        }
    }

    /// Counts one verification if the tally is on `day` and has room (`Some(true)`: the
    /// first count since the last flush took the count); otherwise (`None`) leaves the
    /// day's roll, or a full count, to the locked path.
    fn count(&self, day: u32) -> Option<bool> {
        let mut word = self.day_count.load(Relaxed);
        loop {
            let (d, n) = unpack(word);
            if d != day || n == u32::MAX {
                return None;
            }
            match self
                .day_count
                .compare_exchange_weak(word, word + 1, Relaxed, Relaxed)
            {
                Ok(_) => return Some(n == 0),
                Err(seen) => word = seen,
            }
        }
    }

    /// Widens the first/last use to `now` (plain loads when nothing changes: the latest use
    /// moves once a second at most).
    fn touch(&self, now: i64) {
        if now > self.last.load(Relaxed) {
            self.last.fetch_max(now, Relaxed);
        }
        if now < self.first.load(Relaxed) {
            self.first.fetch_min(now, Relaxed);
        }
    }

    /// Takes the unflushed count, leaving the day in place. Only under the [`Usage`] lock.
    fn take(&self) -> (u32, u32) {
        unpack(self.day_count.fetch_and(!u64::from(u32::MAX), Relaxed))
    }

    /// The unflushed count, if the tally is on `day`.
    fn peek(&self, day: i64) -> i64 {
        let (d, n) = unpack(self.day_count.load(Relaxed));
        if i64::from(d) == day { i64::from(n) } else { 0 }
    }

    fn last(&self) -> i64 {
        self.last.load(Relaxed)
    }
}

/// A key's tally in the registry, with what a flushed row names.
#[derive(Debug)]
struct Entry {
    tally: Arc<Tally>,
    org_id: String,
    key_name: String,
    /// The latest use the last flush wrote.
    sent_last: i64,
}

impl Entry {
    fn delta(&self, key_id: &str, day: i64, count: i64, last: i64) -> UsageDelta {
        UsageDelta {
            key_id: key_id.to_string(),
            org_id: self.org_id.clone(),
            key_name: self.key_name.clone(),
            day,
            count,
            first_used_at: self.tally.first.load(Relaxed).min(last),
            last_used_at: last,
        }
    }
}

/// Flushes between two sweeps of the registry for tallies no cached key holds any more.
const SWEEP_EVERY: u32 = 60;

#[derive(Debug, Default)]
struct State {
    /// Every key this node verified since its last sweep, or still holds in its cache.
    /// Key ids are generated here, never chosen by a client, so the fast non-keyed hash
    /// (FxHash) is safe.
    tallies: HashMap<String, Entry, FxBuildHasher>,
    /// The keys a flush visits (not every cached key): those counted since the last flush
    /// (each tally's first count after a flush adds its key), and those the last flush
    /// wrote (a verification counted in that batch may write its time just after it).
    dirty: HashSet<String, FxBuildHasher>,
    flushes: u32,
    /// Not yet flushed: days that ended, and batches whose write failed, by (key, day).
    closed: HashMap<(String, i64), UsageDelta>,
    /// Today's total (stored + this node's unflushed), for keys with a quota.
    counts: HashMap<(String, i64), i64>,
}

impl State {
    fn keep(&mut self, d: UsageDelta) {
        match self.closed.get_mut(&(d.key_id.clone(), d.day)) {
            Some(p) => {
                p.count += d.count;
                p.first_used_at = p.first_used_at.min(d.first_used_at);
                p.last_used_at = p.last_used_at.max(d.last_used_at);
            }
            None => {
                self.closed.insert((d.key_id.clone(), d.day), d);
            }
        }
    }

    /// Verifications of a key on a day that are counted here but not yet stored.
    fn unflushed(&self, key_id: &str, day: i64) -> i64 {
        let pending = self.tallies.get(key_id).map_or(0, |e| e.tally.peek(day));
        let closed = self
            .closed
            .get(&(key_id.to_string(), day))
            .map_or(0, |d| d.count);
        pending + closed
    }

    /// Everything not yet flushed, taken out for writing; every [`SWEEP_EVERY`] flushes,
    /// also [sweeps](Self::sweep) the registry.
    fn take_batch(&mut self) -> Vec<UsageDelta> {
        let mut batch: Vec<UsageDelta> = self.closed.drain().map(|(_, d)| d).collect();
        for key_id in std::mem::take(&mut self.dirty) {
            let Some(e) = self.tallies.get_mut(&key_id) else {
                continue;
            };
            let (day, count) = e.tally.take();
            let last = e.tally.last();
            // A time written after its count was taken goes out alone.
            if count > 0 || last > e.sent_last {
                batch.push(e.delta(&key_id, i64::from(day), i64::from(count), last));
                e.sent_last = last;
                self.dirty.insert(key_id);
            }
        }
        self.flushes = self.flushes.wrapping_add(1);
        if self.flushes.is_multiple_of(SWEEP_EVERY) {
            self.sweep();
        }
        batch
    }

    /// Drops the tallies that no cached key holds any more (nothing can count into them)
    /// and that have nothing left to write.
    fn sweep(&mut self) {
        let dirty = &self.dirty;
        self.tallies.retain(|key_id, e| {
            Arc::strong_count(&e.tally) > 1
                || dirty.contains(key_id)
                || unpack(e.tally.day_count.load(Relaxed)).1 > 0
                || e.tally.last() > e.sent_last
        });
    }
}

/// Batched usage and daily quota counts of one verifier.
#[derive(Debug)]
pub struct Usage {
    /// Tells this verifier's tallies from another's on the same cached key.
    id: u64,
    state: Mutex<State>,
}

impl Default for Usage {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self {
            id: NEXT.fetch_add(1, Relaxed),
            state: Mutex::default(),
        }
    }
}

/// Outcome of a quota check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct QuotaState {
    pub limit: i64,
    pub remaining: i64,
    /// Unix time of the next UTC midnight.
    pub reset: i64,
}

pub fn day_of(unix: i64) -> i64 {
    unix.div_euclid(86_400)
}

impl Usage {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one verification against the key's daily quota, if it has one. Returns the
    /// quota state and whether the verification may pass.
    pub async fn take_quota(
        &self,
        store: &Store,
        key: &ApiKey,
        now: i64,
    ) -> Result<Option<(QuotaState, bool)>, StoreError> {
        let Some(quota) = key.daily_quota else {
            return Ok(None);
        };
        let day = day_of(now);
        let slot = (key.id.clone(), day);
        if !self.lock().counts.contains_key(&slot) {
            let stored = store.usage_count(&key.id, day).await?;
            let mut st = self.lock();
            let unflushed = st.unflushed(&key.id, day);
            st.counts.entry(slot.clone()).or_insert(stored + unflushed);
        }
        let mut st = self.lock();
        let used = st.counts.entry(slot).or_insert(0);
        let reset = (day + 1) * 86_400;
        if *used >= quota {
            return Ok(Some((
                QuotaState {
                    limit: quota,
                    remaining: 0,
                    reset,
                },
                false,
            )));
        }
        *used += 1;
        Ok(Some((
            QuotaState {
                limit: quota,
                remaining: quota - *used,
                reset,
            },
            true,
        )))
    }

    /// Uncounts a verification that [`take_quota`](Self::take_quota) counted, when a later
    /// check refused it.
    pub fn give_back_quota(&self, key: &ApiKey, now: i64) {
        let mut st = self.lock();
        if let Some(used) = st.counts.get_mut(&(key.id.clone(), day_of(now))) {
            *used = (*used - 1).max(0);
        }
    }

    /// Records a successful verification (flushed later).
    pub fn record(&self, key: &ApiKey, now: i64) {
        let day = day_of(now);
        // The hot path: the key's tally is bound and on today (no lock, no lookup).
        if let Some(t) = key.parsed.tally.get()
            && t.owner == self.id
            && let Ok(d) = u32::try_from(day)
            && let Some(first) = t.count(d)
        {
            t.touch(now);
            if first {
                // Once per key and flush: the flusher visits only the keys listed.
                self.lock().dirty.insert(key.id.clone());
            }
            return;
        }
        self.record_locked(key, day, now);
    }

    /// A key's first verification here, a new day, a full count, or another verifier's key.
    fn record_locked(&self, key: &ApiKey, day: i64, now: i64) {
        let mut st = self.lock();
        let Ok(today) = u32::try_from(day) else {
            // Outside the days a tally holds (before 1970, a test's clock): straight to
            // the batch.
            st.keep(UsageDelta {
                key_id: key.id.clone(),
                org_id: key.org_id.clone(),
                key_name: key.name.clone(),
                day,
                count: 1,
                first_used_at: now,
                last_used_at: now,
            });
            return;
        };
        let tally = match st.tallies.get_mut(key.id.as_str()) {
            Some(e) => {
                if e.key_name != key.name {
                    e.key_name.clone_from(&key.name);
                }
                Arc::clone(&e.tally)
            }
            None => {
                let tally = Arc::new(Tally::new(self.id, today));
                st.tallies.insert(
                    key.id.clone(),
                    Entry {
                        tally: Arc::clone(&tally),
                        org_id: key.org_id.clone(),
                        key_name: key.name.clone(),
                        sent_last: i64::MIN,
                    },
                );
                tally
            }
        };
        // Touched before it is bound or counted, and both under the lock: a flush never
        // sees a count without a time.
        tally.touch(now);
        // Binds the tally to the cached key (a no-op when another verifier bound its own:
        // that key's verifications here keep taking this path until the cache reloads it).
        let _ = key.parsed.tally.set(Arc::clone(&tally));
        let closing = |st: &State, day: i64, count: i64| {
            st.tallies[key.id.as_str()].delta(&key.id, day, count, tally.last())
        };
        loop {
            if let Some(first) = tally.count(today) {
                if first {
                    st.dirty.insert(key.id.clone());
                }
                return;
            }
            let word = tally.day_count.load(Relaxed);
            let (d, n) = unpack(word);
            if d > today {
                // The clock was read before midnight and the day rolled since: that day's
                // row takes it.
                let delta = closing(&st, day, 1);
                st.keep(delta);
                return;
            }
            if d == today && n < u32::MAX {
                continue; // counted concurrently in between: try again
            }
            // A new day (or a full count): what the tally holds moves to the batch of its
            // own day, and the tally starts on today. Fast-path counts of the old day that
            // land before the swap are moved with it; none can land after it.
            if tally
                .day_count
                .compare_exchange(word, pack(today, 0), Relaxed, Relaxed)
                .is_ok()
                && n > 0
            {
                let delta = closing(&st, i64::from(d), i64::from(n));
                st.keep(delta);
            }
        }
    }

    /// Writes unflushed usage to the store; on failure keeps it (merged per key and day) for
    /// the next attempt. Returns how many (key, day) rows were written.
    pub async fn flush(&self, store: &Store, now: i64) -> Result<usize, StoreError> {
        let batch: Vec<UsageDelta> = {
            let mut st = self.lock();
            let today = day_of(now);
            st.counts.retain(|(_, day), _| *day >= today);
            st.take_batch()
        };
        if batch.is_empty() {
            return Ok(0);
        }
        match store.flush_usage(&batch).await {
            Ok(totals) => {
                // Re-base quota counts on the database's totals (which include the other
                // nodes' flushed traffic), plus what this node counted since the batch left.
                let mut st = self.lock();
                for (key_id, day, total) in totals {
                    let unflushed = st.unflushed(&key_id, day);
                    if let Some(c) = st.counts.get_mut(&(key_id, day)) {
                        *c = (*c).max(total + unflushed);
                    }
                }
                Ok(batch.len())
            }
            Err(e) => {
                let mut st = self.lock();
                for d in batch {
                    st.keep(d);
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(count: i64) -> UsageDelta {
        UsageDelta {
            key_id: "k".into(),
            org_id: "o".into(),
            key_name: "n".into(),
            day: 1,
            count,
            first_used_at: 10,
            last_used_at: 20,
        }
    }

    const DAY: i64 = 86_400;
    const D1: i64 = 20_000 * DAY;

    fn key(id: &str) -> ApiKey {
        ApiKey {
            id: id.into(),
            ..ApiKey::fixture()
        }
    }

    fn batch(u: &Usage) -> Vec<(String, i64, i64, i64, i64)> {
        let mut b: Vec<_> = u
            .lock()
            .take_batch()
            .into_iter()
            .map(|d| (d.key_id, d.day, d.count, d.first_used_at, d.last_used_at))
            .collect();
        b.sort();
        b
    }

    #[test]
    fn counts_per_day_with_first_and_last_use() {
        let u = Usage::default();
        let k = key("k1");
        u.record(&k, D1 + 100);
        u.record(&k, D1 + 150);
        // The first use binds the key's tally; the second took the lock-free path.
        assert!(k.parsed.tally.get().is_some());
        assert_eq!(u.lock().unflushed("k1", day_of(D1)), 2);
        // A new day rolls the tally: the first day's count is closed with its own day.
        u.record(&k, D1 + DAY + 5);
        u.record(&k, D1 + DAY + 7);
        assert_eq!(u.lock().unflushed("k1", day_of(D1)), 2);
        assert_eq!(u.lock().unflushed("k1", day_of(D1 + DAY)), 2);
        let b = batch(&u);
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].1, b[0].2), (day_of(D1), 2));
        assert_eq!((b[1].1, b[1].2), (day_of(D1) + 1, 2));
        // The closed day carries the latest use known when it rolled.
        assert_eq!((b[0].3, b[0].4), (D1 + 100, D1 + DAY + 5));
        assert_eq!((b[1].3, b[1].4), (D1 + 100, D1 + DAY + 7));
        // Nothing new: nothing to write.
        assert!(batch(&u).is_empty());
        u.record(&k, D1 + DAY + 9);
        assert_eq!(
            batch(&u),
            vec![("k1".into(), day_of(D1) + 1, 1, D1 + 100, D1 + DAY + 9)]
        );
    }

    #[test]
    fn a_verification_read_before_midnight_counts_on_its_own_day() {
        let u = Usage::default();
        let k = key("k1");
        u.record(&k, D1 + DAY + 1);
        u.record(&k, D1 + DAY - 1);
        // The tally stays on the later day.
        assert_eq!(k.parsed.tally.get().unwrap().peek(day_of(D1) + 1), 1);
        let b = batch(&u);
        assert_eq!(
            b.iter().map(|r| (r.1, r.2)).collect::<Vec<_>>(),
            vec![(day_of(D1), 1), (day_of(D1) + 1, 1)]
        );
    }

    #[test]
    fn a_time_written_after_its_count_was_flushed_is_flushed_alone() {
        let u = Usage::default();
        let k = key("k1");
        u.record(&k, D1 + 10);
        let t = Arc::clone(k.parsed.tally.get().unwrap());
        // A verification counted, then flushed before it wrote its time.
        assert_eq!(t.count(day_of(D1) as u32), Some(false));
        assert_eq!(
            batch(&u),
            vec![("k1".into(), day_of(D1), 2, D1 + 10, D1 + 10)]
        );
        t.touch(D1 + 12);
        assert_eq!(
            batch(&u),
            vec![("k1".into(), day_of(D1), 0, D1 + 10, D1 + 12)]
        );
    }

    #[test]
    fn a_tally_leaves_once_flushed_and_no_cached_key_holds_it() {
        let u = Usage::default();
        let k = key("k1");
        u.record(&k, D1);
        assert_eq!(batch(&u).len(), 1);
        assert!(batch(&u).is_empty());
        u.lock().sweep();
        assert_eq!(u.lock().tallies.len(), 1, "the cached key still holds it");
        // The key leaves the cache after one more use: the count is written, then the
        // tally goes.
        u.record(&k, D1 + 1);
        drop(k);
        u.lock().sweep();
        assert_eq!(u.lock().tallies.len(), 1, "its count is not written yet");
        assert_eq!(batch(&u).len(), 1);
        assert!(batch(&u).is_empty());
        u.lock().sweep();
        assert!(u.lock().tallies.is_empty());
        // A fresh copy of the key (the cache reloaded it) starts a new tally.
        let k = key("k1");
        u.record(&k, D1 + 2);
        assert_eq!(
            batch(&u),
            vec![("k1".into(), day_of(D1), 1, D1 + 2, D1 + 2)]
        );
        // Flushes sweep on their own now and then.
        drop(k);
        for _ in 0..SWEEP_EVERY {
            let _ = batch(&u);
        }
        assert!(u.lock().tallies.is_empty());
    }

    #[test]
    fn a_flush_visits_only_the_keys_counted_since_the_last() {
        let u = Usage::default();
        let (k1, k2) = (key("k1"), key("k2"));
        u.record(&k1, D1);
        u.record(&k2, D1);
        let _ = batch(&u);
        let _ = batch(&u);
        assert!(u.lock().dirty.is_empty());
        // Counting again after a flush lists the key again (from the lock-free path too).
        u.record(&k1, D1 + 1);
        assert_eq!(u.lock().dirty.iter().collect::<Vec<_>>(), vec!["k1"]);
        assert_eq!(batch(&u), vec![("k1".into(), day_of(D1), 1, D1, D1 + 1)]);
    }

    #[test]
    fn a_full_count_moves_to_the_batch_instead_of_spilling_into_the_day() {
        let u = Usage::default();
        let k = key("k1");
        u.record(&k, D1);
        let t = Arc::clone(k.parsed.tally.get().unwrap());
        t.day_count
            .store(pack(day_of(D1) as u32, u32::MAX), Relaxed);
        u.record(&k, D1 + 1);
        assert_eq!(t.peek(day_of(D1)), 1);
        let total: i64 = batch(&u).iter().map(|r| r.2).sum();
        assert_eq!(total, i64::from(u32::MAX) + 1);
    }

    #[test]
    fn before_1970_counts_without_a_tally() {
        let u = Usage::default();
        let k = key("k1");
        u.record(&k, -5);
        assert!(u.lock().tallies.is_empty() && k.parsed.tally.get().is_none());
        assert_eq!(batch(&u), vec![("k1".into(), -1, 1, -5, -5)]);
        assert!(batch(&u).is_empty());
    }

    #[test]
    fn two_verifiers_on_one_cached_key_each_count_their_own() {
        let (a, b) = (Usage::default(), Usage::default());
        let k = key("k1");
        a.record(&k, D1);
        b.record(&k, D1);
        b.record(&k, D1);
        a.record(&k, D1);
        a.record(&k, D1);
        assert_eq!(batch(&a)[0].2, 3);
        assert_eq!(batch(&b)[0].2, 2);
    }

    #[test]
    fn concurrent_counts_across_midnight_and_flushes_add_up() {
        const THREADS: i64 = 4;
        const EACH: i64 = 20_000;
        const PER_DAY: i64 = 200;
        let u = Arc::new(Usage::default());
        let keys: Arc<Vec<ApiKey>> = Arc::new((0..3).map(|i| key(&format!("k{i}"))).collect());
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flusher = {
            let (u, done) = (Arc::clone(&u), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut all = Vec::new();
                while !done.load(std::sync::atomic::Ordering::Acquire) {
                    all.extend(u.lock().take_batch());
                    std::thread::yield_now();
                }
                all
            })
        };
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (u, keys) = (Arc::clone(&u), Arc::clone(&keys));
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        // A new day every PER_DAY records: each thread crosses midnight on its
                        // own, some while others still count the day before.
                        u.record(&keys[((i + t) % 3) as usize], D1 + (i / PER_DAY) * DAY);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Release);
        let mut all = flusher.join().unwrap();
        all.extend(u.lock().take_batch());
        for day in 0..EACH / PER_DAY {
            let on = all
                .iter()
                .filter(|d| d.day == day_of(D1) + day)
                .map(|d| d.count)
                .sum::<i64>();
            assert_eq!(on, THREADS * PER_DAY, "day {day}");
        }
    }

    #[test]
    fn kept_batches_merge_per_key_and_day() {
        let mut st = State::default();
        st.keep(delta(2));
        st.keep(delta(3));
        assert_eq!(st.closed.len(), 1);
        assert_eq!(st.unflushed("k", 1), 5);
        assert_eq!(st.unflushed("k", 2), 0);
    }
}
