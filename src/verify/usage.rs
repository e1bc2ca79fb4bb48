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
    /// Not yet flushed, by (key id, day).
    pending: HashMap<(String, i64), UsageDelta>,
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
            let pending = st.pending.get(&slot).map_or(0, |d| d.count);
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
        let mut st = self.lock();
        let d = st
            .pending
            .entry((key.id.clone(), day))
            .or_insert_with(|| UsageDelta {
                key_id: key.id.clone(),
                org_id: key.org_id.clone(),
                key_name: key.name.clone(),
                day,
                count: 0,
                first_used_at: now,
                last_used_at: now,
            });
        d.count += 1;
        d.last_used_at = d.last_used_at.max(now);
        // Keys without a quota are counted only once they get one (from the store then).
    }

    /// Writes pending usage to the store; on failure keeps it for the next attempt.
    pub async fn flush(&self, store: &Store, now: i64) -> Result<usize, StoreError> {
        let batch: Vec<UsageDelta> = {
            let mut st = self.lock();
            let today = day_of(now);
            st.counts.retain(|(_, day), _| *day >= today);
            st.pending.drain().map(|(_, d)| d).collect()
        };
        if batch.is_empty() {
            return Ok(0);
        }
        match store.flush_usage(&batch).await {
            Ok(()) => Ok(batch.len()),
            Err(e) => {
                let mut st = self.lock();
                for d in batch {
                    let slot = (d.key_id.clone(), d.day);
                    match st.pending.get_mut(&slot) {
                        Some(p) => {
                            p.count += d.count;
                            p.first_used_at = p.first_used_at.min(d.first_used_at);
                            p.last_used_at = p.last_used_at.max(d.last_used_at);
                        }
                        None => {
                            st.pending.insert(slot, d);
                        }
                    }
                }
                Err(e)
            }
        }
    }
}
