//! Rate limits shared by every node through Redis (`KEYWARD_REDIS_URL`).
//!
//! **Local decision, shared truth.** The truth is one token bucket per key in Redis, kept as
//! a GCRA "theoretical arrival time" and changed only by one Lua script. A node does not ask
//! Redis on every request: it takes a *lease* of a few tokens at once with that script and
//! spends them from memory, refilling in the background when half is gone. Redis never
//! grants more tokens than the bucket holds, so the nodes together can never pass more than
//! the limit allows; what a lease changes is *when* a token is spent (at most
//! [`LEASE_TTL`] after Redis granted it; unspent tokens are dropped then). The bound the
//! README publishes follows: over any interval, allowed ≤ burst + rate × (interval +
//! lease TTL).
//!
//! **Strict near the edge.** When the bucket's remaining tokens fall below
//! [`STRICT_LEASES`] leases, the node takes one token per request, synchronously, so the
//! last tokens are not stranded in another node's lease while this one refuses. Keys far
//! from their limit never wait on Redis.
//!
//! **Failure policy.** When Redis cannot be reached (or answers slower than
//! [`REDIS_TIMEOUT`]), rate limits fall back to this node's own bucket (the single-node
//! behaviour: with N nodes up to N × the limit), the event is logged and counted, and Redis
//! is tried again after [`RETRY_AFTER_FAILURE`]; with `KEYWARD_REDIS_FAILURE=closed` the
//! request is refused with a store error instead (503 at the HTTP doors).
//!
//! Written by hand because no crate combines a Redis-backed bucket with node-local leases
//! (Redis-only limiters such as `redis-cell` cost a round trip per request, and in-memory
//! ones such as `governor` know nothing of other nodes).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::aio::ConnectionManager;
use rustc_hash::FxBuildHasher;

use super::ratelimit::{Decision, KeyLimiter, Limit};

/// How long leased tokens may be spent after Redis granted them.
pub const LEASE_TTL: f64 = 1.0;
/// Below this many leases' worth of tokens left in the shared bucket, a node takes one token
/// per request.
pub const STRICT_LEASES: i64 = 4;
/// Slower answers count as failures.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// After a failure, this node decides locally for this long before trying Redis again.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// What a rate limit does while Redis is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FailurePolicy {
    /// Enforce this node's own bucket (logged and counted).
    #[default]
    Local,
    /// Refuse verification (503 at the HTTP doors).
    Closed,
}

/// Takes up to `want` tokens from a GCRA bucket. KEYS[1]: the bucket; ARGV: (unused),
/// emission interval T (µs per token), burst (tokens), want. Time is Redis's own
/// (`TIME`), so nodes whose clocks disagree still share one bucket fairly. Returns the
/// tokens granted, the tokens left after the grant, and the µs until one more token is
/// available.
const LEASE_SCRIPT: &str = r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local t = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
-- After the key's limit was edited, the stored time may lie further ahead than the new
-- limit can ever reach: at most an empty bucket under the new limit.
if tat > now + burst * t then tat = now + burst * t end
local avail = math.floor((now + burst * t - tat) / t)
if avail < 0 then avail = 0 end
local grant = math.min(want, avail)
if grant > 0 then
  tat = tat + grant * t
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
end
local wait = 0
if avail - grant < 1 then wait = math.ceil(tat - (now + burst * t) + t) end
return {grant, avail - grant, wait}
";

/// Takes up to `want` units of a daily quota. KEYS[1]: the day's counter; ARGV: quota,
/// want, seed (the stored count, or -1 when the caller has none), TTL (s), and the units of
/// an expired lease the caller did not spend (given back first). Returns the
/// units granted, the units left after the grant, and 1 when the counter was missing and
/// no seed was given (the caller then reads the stored count and asks again).
const QUOTA_SCRIPT: &str = r"
local quota = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local seed = tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 0 then
  if seed < 0 then return {0, 0, 1} end
  redis.call('SET', KEYS[1], seed, 'EX', tonumber(ARGV[4]))
end
local used = tonumber(redis.call('GET', KEYS[1]))
local back = math.min(tonumber(ARGV[5]), used)
if back > 0 then
  redis.call('DECRBY', KEYS[1], back)
  used = used - back
end
local grant = math.min(want, quota - used)
if grant < 0 then grant = 0 end
if grant > 0 then redis.call('INCRBY', KEYS[1], grant) end
return {grant, math.max(quota - used - grant, 0), 0}
";

/// A node's lease of one key's quota for one UTC day.
#[derive(Debug)]
struct QuotaLease {
    quota: i64,
    tokens: i64,
    expires: f64,
    strict: bool,
    /// Units left in the shared counter at the last answer.
    shared_left: i64,
}

impl Lease {
    fn empty(limit: Limit) -> Self {
        Self {
            limit,
            tokens: 0,
            expires: 0.0,
            strict: false,
            shared_left: 0,
            refilling: false,
        }
    }
}

#[derive(Debug)]
struct Lease {
    limit: Limit,
    tokens: i64,
    /// Unix seconds after which unspent tokens are dropped.
    expires: f64,
    /// The shared bucket is near empty: one token per request.
    strict: bool,
    /// Tokens left in the shared bucket at the last answer (for headers).
    shared_left: i64,
    refilling: bool,
}

/// The shared limiter of one node.
pub struct SharedLimits {
    client: redis::Client,
    conn: Mutex<Option<ConnectionManager>>,
    /// Held while a connection is being made.
    connecting: tokio::sync::Mutex<()>,
    prefix: String,
    script: redis::Script,
    quota_script: redis::Script,
    /// By key id (generated by Keyward, never chosen by a client: FxHash is safe).
    leases: Mutex<HashMap<String, Lease, FxBuildHasher>>,
    quota_leases: Mutex<HashMap<(String, i64), QuotaLease, FxBuildHasher>>,
    /// Monotonic ms (since `start`) before which Redis is not tried.
    down_until: AtomicU64,
    start: std::time::Instant,
    policy: FailurePolicy,
    quota_policy: FailurePolicy,
    /// Times a decision fell back to the local bucket (or was refused) for want of Redis.
    pub failures: AtomicU64,
}

impl std::fmt::Debug for SharedLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimits")
            .field("prefix", &self.prefix)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Why a shared decision could not be made.
#[derive(Debug, thiserror::Error)]
#[error("Redis is unavailable for shared rate limits: {0}")]
pub struct SharedUnavailable(pub String);

impl SharedLimits {
    /// A limiter on `url` (nothing is connected until the first request). `prefix` keeps
    /// deployments (and tests) sharing one Redis apart.
    pub fn new(
        url: &str,
        prefix: &str,
        policy: FailurePolicy,
        quota_policy: FailurePolicy,
    ) -> anyhow::Result<Arc<Self>> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("KEYWARD_REDIS_URL is not a Redis URL: {e}"))?;
        Ok(Arc::new(Self {
            client,
            conn: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            prefix: prefix.to_string(),
            script: redis::Script::new(LEASE_SCRIPT),
            quota_script: redis::Script::new(QUOTA_SCRIPT),
            leases: Mutex::default(),
            quota_leases: Mutex::default(),
            down_until: AtomicU64::new(0),
            start: std::time::Instant::now(),
            policy,
            quota_policy,
            failures: AtomicU64::new(0),
        }))
    }

    /// Tokens taken per lease: a tenth of the burst, but at least a quarter of it up to
    /// 5 (so small bursts still lease), at most 1,000. A burst under 8 leases 1 token:
    /// such keys ask Redis on every request.
    pub fn lease_size(limit: Limit) -> i64 {
        let burst = limit.burst.max(1);
        (burst / 10).max((burst / 4).min(5)).clamp(1, 1000)
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Whether Redis is marked unreachable (decisions are local or refused meanwhile).
    pub fn is_down(&self) -> bool {
        self.now_ms() < self.down_until.load(Ordering::Relaxed)
    }

    fn mark_down(&self, why: &str) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let until = self.now_ms() + RETRY_AFTER_FAILURE.as_millis() as u64;
        let before = self.down_until.swap(until, Ordering::Relaxed);
        if before <= self.now_ms() {
            tracing::warn!(event = "ratelimit.redis_unavailable", error = %why, "Redis unavailable: rate limits decided locally until it answers again");
        }
    }

    /// The connection, made on first use (one attempt at a time, bounded by
    /// [`REDIS_TIMEOUT`]); `None` while Redis is marked unreachable. Once made, the
    /// connection manager reconnects by itself after Redis comes back.
    async fn connection(&self) -> Option<ConnectionManager> {
        if let Some(c) = self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Some(c);
        }
        let _turn = self.connecting.lock().await;
        if let Some(c) = self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Some(c);
        }
        if self.is_down() {
            return None;
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(REDIS_TIMEOUT)
            .set_number_of_retries(1)
            .set_max_delay(500);
        let made = tokio::time::timeout(
            REDIS_TIMEOUT * 2,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await;
        match made {
            Ok(Ok(c)) => {
                tracing::info!(
                    event = "ratelimit.redis_connected",
                    "shared rate limits: connected to Redis"
                );
                *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
                Some(c)
            }
            Ok(Err(e)) => {
                self.mark_down(&e.to_string());
                None
            }
            Err(_) => {
                self.mark_down("connecting timed out");
                None
            }
        }
    }

    /// Runs the lease script: (granted, left in the bucket, µs until the next token).
    async fn take(
        &self,
        key_id: &str,
        limit: Limit,
        now: f64,
        want: i64,
    ) -> Result<(i64, i64, i64), SharedUnavailable> {
        let interval_us = limit.window_secs.max(1) as f64 * 1e6 / limit.limit.max(1) as f64;
        self.redis(|mut conn| async move {
            self.script
                .key(format!("{}rl:{key_id}", self.prefix))
                .arg((now * 1e6).round() as i64)
                .arg(interval_us)
                .arg(limit.burst.max(1))
                .arg(want)
                .invoke_async::<(i64, i64, i64)>(&mut conn)
                .await
        })
        .await
    }

    /// Runs one Redis call, bounded by [`REDIS_TIMEOUT`]; a failure marks Redis down for
    /// [`RETRY_AFTER_FAILURE`], during which calls fail at once.
    async fn redis<T, F, Fut>(&self, call: F) -> Result<T, SharedUnavailable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if self.is_down() {
            return Err(SharedUnavailable("recently unreachable".into()));
        }
        let Some(conn) = self.connection().await else {
            return Err(SharedUnavailable("unreachable".into()));
        };
        match tokio::time::timeout(REDIS_TIMEOUT, call(conn)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => {
                self.mark_down(&e.to_string());
                Err(SharedUnavailable(e.to_string()))
            }
            Err(_) => {
                self.mark_down("timed out");
                Err(SharedUnavailable("timed out".into()))
            }
        }
    }

    fn decision(limit: Limit, allowed: bool, left: i64, wait_us: i64, now: f64) -> Decision {
        let rate = limit.limit.max(1) as f64 / limit.window_secs.max(1) as f64;
        let to_full = (limit.burst.max(1) - left).max(0) as f64 / rate;
        Decision {
            allowed,
            limit: limit.limit,
            remaining: left.max(0),
            reset: (now + to_full).ceil() as i64,
            retry_after: if allowed {
                0
            } else {
                ((wait_us as f64) / 1e6).ceil().max(1.0) as i64
            },
            window: limit.window_secs,
        }
    }

    /// Takes one token for `key_id`: from this node's lease when it has one, else from
    /// Redis. Falls back to `local` (or fails, by the failure policy) without Redis.
    pub async fn check(
        self: &Arc<Self>,
        key_id: &str,
        limit: Limit,
        now: f64,
        local: &KeyLimiter,
    ) -> Result<Decision, SharedUnavailable> {
        let lease_size = Self::lease_size(limit);
        // 1. Spend from the lease.
        let refill = {
            let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
            match leases.get_mut(key_id) {
                Some(l) if l.limit == limit && l.tokens > 0 && l.expires > now => {
                    l.tokens -= 1;
                    let d = Self::decision(limit, true, l.shared_left + l.tokens, 0, now);
                    let refill = !l.strict && !l.refilling && l.tokens * 2 <= lease_size;
                    if refill {
                        l.refilling = true;
                    }
                    if !refill {
                        return Ok(d);
                    }
                    Some(d)
                }
                _ => None,
            }
        };
        if let Some(d) = refill {
            // Top the lease up in the background; this request is already decided.
            let me = self.clone();
            let key = key_id.to_string();
            tokio::spawn(async move {
                let got = me.take(&key, limit, now, lease_size).await;
                let mut leases = me.leases.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(l) = leases.get_mut(&key) {
                    l.refilling = false;
                    if let Ok((granted, left, _)) = got
                        && l.limit == limit
                    {
                        l.tokens += granted;
                        l.expires = now + LEASE_TTL;
                        l.shared_left = left;
                        l.strict = left < STRICT_LEASES * lease_size;
                    }
                }
            });
            return Ok(d);
        }
        // 2. No lease left: ask Redis now. Boxed, so that the future of every verification
        // (which embeds this one) stays small on the fast path above.
        Box::pin(self.take_now(key_id, limit, now, local, lease_size)).await
    }

    /// [`check`](Self::check) without a lease to spend from: asks Redis for a whole lease
    /// when no other request of this node is already doing so and the key is not near its
    /// edge, else for one token (so simultaneous first requests do not pull the bucket into
    /// one node).
    async fn take_now(
        &self,
        key_id: &str,
        limit: Limit,
        now: f64,
        local: &KeyLimiter,
        lease_size: i64,
    ) -> Result<Decision, SharedUnavailable> {
        let want = {
            let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
            let l = leases
                .entry(key_id.to_string())
                .or_insert_with(|| Lease::empty(limit));
            if l.limit != limit {
                // The key was edited: nothing leased under the old limit carries over.
                l.limit = limit;
                l.tokens = 0;
                l.strict = false;
            }
            if l.strict || l.refilling {
                1
            } else {
                l.refilling = true;
                lease_size
            }
        };
        let got = self.take(key_id, limit, now, want).await;
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        let l = leases
            .entry(key_id.to_string())
            .or_insert_with(|| Lease::empty(limit));
        if want > 1 {
            l.refilling = false;
        }
        match got {
            Ok((granted, left, wait)) => {
                if l.limit != limit {
                    l.limit = limit;
                    l.tokens = 0;
                }
                l.shared_left = left;
                l.strict = left < STRICT_LEASES * lease_size;
                // Unexpired tokens (another request's grant, arrived meanwhile) are kept.
                let kept = if l.expires > now { l.tokens } else { 0 };
                if granted > 0 {
                    l.tokens = kept + granted - 1;
                    l.expires = now + LEASE_TTL;
                    Ok(Self::decision(limit, true, left + l.tokens, 0, now))
                } else if kept > 0 {
                    l.tokens = kept - 1;
                    Ok(Self::decision(limit, true, l.tokens, 0, now))
                } else {
                    l.tokens = 0;
                    Ok(Self::decision(limit, false, 0, wait, now))
                }
            }
            Err(e) => match self.policy {
                FailurePolicy::Local => Ok(local.check(key_id, limit, now)),
                FailurePolicy::Closed => Err(e),
            },
        }
    }

    /// Returns a token taken by [`check`](Self::check) to this node's lease (a later check
    /// refused the request). Falls back to `local` when there is no lease.
    pub fn give_back(&self, key_id: &str, limit: Limit, local: &KeyLimiter) {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        match leases.get_mut(key_id) {
            Some(l) if l.limit == limit => l.tokens += 1,
            _ => local.give_back(key_id, limit),
        }
    }

    /// Forgets leases that expired long ago.
    pub fn prune(&self, now: f64) {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        leases.retain(|_, l| l.expires > now - 60.0 || l.refilling);
        drop(leases);
        let today = super::usage::day_of(now as i64);
        self.quota_leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(_, day), _| *day >= today);
    }

    /// Units of a daily quota taken per lease: a hundredth of the quota, 1 to 100.
    pub fn quota_lease_size(quota: i64) -> i64 {
        (quota / 100).clamp(1, 100)
    }

    async fn take_quota_units(
        &self,
        key_id: &str,
        day: i64,
        quota: i64,
        want: i64,
        seed: i64,
        back: i64,
    ) -> Result<(i64, i64, i64), SharedUnavailable> {
        self.redis(|mut conn| async move {
            self.quota_script
                .key(format!("{}q:{key_id}:{day}", self.prefix))
                .arg(quota)
                .arg(want)
                .arg(seed)
                .arg(2 * 86_400)
                .arg(back)
                .invoke_async::<(i64, i64, i64)>(&mut conn)
                .await
        })
        .await
    }

    /// Takes one unit of the key's quota for `day`, shared by every node: from this node's
    /// lease, else from Redis (seeded from the stored count, `stored`, the first time the
    /// day's counter is missing). Returns (allowed, units left). Without Redis, `None`
    /// under the local failure policy (the caller counts as one node does), an error under
    /// the closed one (the default for quotas).
    pub async fn take_quota<F, Fut>(
        &self,
        key_id: &str,
        quota: i64,
        day: i64,
        now: f64,
        stored: F,
    ) -> Result<Option<(bool, i64)>, SharedUnavailable>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Option<i64>>,
    {
        let slot = (key_id.to_string(), day);
        // Units of an expired lease go back to the shared counter with the next request, so
        // a quiet node does not waste them (at most one lease per node stays unspent).
        let (strict, back) = {
            let mut leases = self.quota_leases.lock().unwrap_or_else(|e| e.into_inner());
            match leases.get_mut(&slot) {
                Some(l) if l.quota == quota && l.tokens > 0 && l.expires > now => {
                    l.tokens -= 1;
                    return Ok(Some((true, l.shared_left + l.tokens)));
                }
                Some(l) => {
                    let back = if l.quota == quota { l.tokens } else { 0 };
                    l.tokens = 0;
                    (l.strict && l.quota == quota, back)
                }
                None => (false, 0),
            }
        };
        let want = if strict {
            1
        } else {
            Self::quota_lease_size(quota)
        };
        let fail = |e: SharedUnavailable| match self.quota_policy {
            FailurePolicy::Local => Ok(None),
            FailurePolicy::Closed => Err(e),
        };
        let mut answer = match self
            .take_quota_units(key_id, day, quota, want, -1, back)
            .await
        {
            Ok(a) => a,
            Err(e) => return fail(e),
        };
        if answer.2 == 1 {
            // Redis has no counter for the day (a new day, or Redis restarted): start it
            // from the stored count, which includes every node's flushed traffic.
            let Some(seed) = stored().await else {
                return fail(SharedUnavailable("the stored count is unavailable".into()));
            };
            answer = match self
                .take_quota_units(key_id, day, quota, want, seed, 0)
                .await
            {
                Ok(a) => a,
                Err(e) => return fail(e),
            };
        }
        let (granted, left, _) = answer;
        let mut leases = self.quota_leases.lock().unwrap_or_else(|e| e.into_inner());
        let l = leases.entry(slot).or_insert(QuotaLease {
            quota,
            tokens: 0,
            expires: 0.0,
            strict: false,
            shared_left: 0,
        });
        // Another request's grant may have arrived meanwhile.
        let kept = if l.quota == quota { l.tokens } else { 0 };
        l.quota = quota;
        l.shared_left = left;
        l.strict = left < STRICT_LEASES * Self::quota_lease_size(quota);
        let tokens = kept + granted;
        if tokens > 0 {
            l.tokens = tokens - 1;
            l.expires = now + LEASE_TTL;
            Ok(Some((true, left + l.tokens)))
        } else {
            l.tokens = 0;
            Ok(Some((false, 0)))
        }
    }

    /// Returns a quota unit taken by [`take_quota`](Self::take_quota) to this node's lease.
    pub fn give_back_quota(&self, key_id: &str, day: i64) {
        let mut leases = self.quota_leases.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = leases.get_mut(&(key_id.to_string(), day)) {
            l.tokens += 1;
        }
    }
}
