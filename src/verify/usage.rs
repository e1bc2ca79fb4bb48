//! Usage batching and daily quotas.
//!
//! A verification only touches memory: it bumps a pending counter, which a background task
//! flushes to the store about once a second (and once more on shutdown). Daily quota counts
//! start from the stored count the first time a key is seen on a day, then live in memory.
//! With several nodes each node counts its own verifications on top of the stored count,
//! so a quota can be exceeded by up to one flush interval of the other nodes' traffic.

use std::{collections::HashMap, sync::Mutex};

use crate::store::{ApiKey, Store, StoreError, UsageDelta};

#[derive(Debug, Default)]
struct State {
    /// Not yet flushed, by key id (today's counts; earlier days wait in `closed`).
    pending: HashMap<String, UsageDelta>,
    /// Pending counts of days that ended before the last flush.
    closed: Vec<UsageDelta>,
    /// Today's total (stored + this node's), for keys with a quota.
    counts: HashMap<(String, i64), i64>,
}

#[derive(Debug, Default)]
pub struct Usage {
    state: Mutex<State>,
}

/// Outcome of a quota check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
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
        let known = self.lock().counts.contains_key(&slot);
        if !known {
            let stored = store.usage_count(&key.id, day).await?;
            let mut st = self.lock();
            let pending = st
                .pending
                .get(&key.id)
                .filter(|d| d.day == day)
                .map_or(0, |d| d.count);
            st.counts.entry(slot.clone()).or_insert(stored + pending);
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
            st.closed.push(finished);
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

    /// Writes pending usage to the store; on failure keeps it for the next attempt.
    pub async fn flush(&self, store: &Store, now: i64) -> Result<usize, StoreError> {
        let batch: Vec<UsageDelta> = {
            let mut st = self.lock();
            let today = day_of(now);
            st.counts.retain(|(_, day), _| *day >= today);
            let mut batch: Vec<UsageDelta> = st.closed.drain(..).collect();
            batch.extend(st.pending.drain().map(|(_, d)| d));
            batch
        };
        if batch.is_empty() {
            return Ok(0);
        }
        match store.flush_usage(&batch).await {
            Ok(()) => Ok(batch.len()),
            Err(e) => {
                // Keep the batch for the next attempt; the store adds counts up, so several
                // deltas of one key and day are fine.
                self.lock().closed.extend(batch);
                Err(e)
            }
        }
    }
}
