//! Usage batching and daily quotas.
//!
//! A verification only touches memory: it bumps a pending counter, which a background task
//! flushes to the store about once a second (and once more on shutdown). Daily quota counts
//! start from the stored count the first time a key is seen on a day; every flush then
//! replaces the stored part with the database's new total (which includes the other nodes'
//! flushed traffic), so with several nodes a quota can be exceeded by at most about one
//! flush interval of the other nodes' traffic.

use std::{collections::HashMap, sync::Mutex};

use rustc_hash::FxBuildHasher;

use crate::store::{ApiKey, Store, StoreError, UsageDelta};

#[derive(Debug, Default)]
struct State {
    /// Not yet flushed, by key id (today's counts). Key ids are generated here, never
    /// chosen by a client, so the fast non-keyed hash (FxHash) is safe: every successful
    /// verification looks its key up in this map.
    pending: HashMap<String, UsageDelta, FxBuildHasher>,
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
        let pending = self
            .pending
            .get(key_id)
            .filter(|d| d.day == day)
            .map_or(0, |d| d.count);
        let closed = self
            .closed
            .get(&(key_id.to_string(), day))
            .map_or(0, |d| d.count);
        pending + closed
    }
}

#[derive(Debug, Default)]
pub struct Usage {
    state: Mutex<State>,
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
        let mut guard = self.lock();
        let st = &mut *guard;
        // The hot path: the key already has a pending entry for today (no allocation).
        if let Some(d) = st.pending.get_mut(key.id.as_str()) {
            if d.day == day {
                d.count += 1;
                d.last_used_at = d.last_used_at.max(now);
                return;
            }
            let finished = d.clone();
            st.keep(finished);
        }
        st.pending.insert(
            key.id.clone(),
            UsageDelta {
                key_id: key.id.clone(),
                org_id: key.org_id.clone(),
                key_name: key.name.clone(),
                day,
                count: 1,
                first_used_at: now,
                last_used_at: now,
            },
        );
    }

    /// Writes unflushed usage to the store; on failure keeps it (merged per key and day) for
    /// the next attempt. Returns how many (key, day) rows were written.
    pub async fn flush(&self, store: &Store, now: i64) -> Result<usize, StoreError> {
        let batch: Vec<UsageDelta> = {
            let mut st = self.lock();
            let today = day_of(now);
            st.counts.retain(|(_, day), _| *day >= today);
            let mut batch: Vec<UsageDelta> = st.closed.drain().map(|(_, d)| d).collect();
            batch.extend(st.pending.drain().map(|(_, d)| d));
            batch
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
