//! The verification pipeline: one code path for every door — the HTTP verify API, the
//! reverse-proxy forward-auth endpoint, the tower layer and in-process calls.
//!
//! parse + checksum (malformed keys never reach the store) → HMAC hash → cache, else one
//! indexed lookup (a string in another format, possibly an imported key: a second lookup
//! under the imported scheme's hash, and a re-hash on its first success) → revoked (honouring a roll's grace deadline) / expired / disabled →
//! beyond the organization's maximum lifetime → IP allowlist → required scopes → rate
//! limit → daily quota → credits → record use (batched). A limit that refuses spends
//! nothing after it and gives back what the limits before it took (the rate-limit token,
//! the quota count), so one refusal consumes no other limit.
//! Store failures are errors, never a valid answer: callers fail closed.

pub mod http;
pub mod layer;
pub mod ratelimit;
pub mod shared;
pub mod usage;

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use ipnet::IpNet;
use serde::Serialize;

use self::{
    ratelimit::{Decision, KeyLimiter, Limit, RateLimiter},
    shared::SharedLimits,
    usage::{QuotaState, Usage},
};
use crate::{
    clock::Clock,
    config::KeyPepper,
    keys::token::{KeyHash, ParseError, PlainKey, plausible_foreign_key},
    store::{ApiKey, HASH_SCHEME_IMPORTED, Spend, Store, StoreError},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VerifyCode {
    Valid,
    Missing,
    InvalidFormat,
    NotFound,
    Revoked,
    Expired,
    Disabled,
    /// The key lives longer than its organization's maximum lifetime allows, and the
    /// owner chose to block such keys (Settings → Key policy).
    ExceedsMaxLifetime,
    IpNotAllowed,
    InsufficientScope,
    RateLimited,
    QuotaExceeded,
    /// The key's credits are used up (or fewer than the request's cost).
    UsageExceeded,
}

impl VerifyCode {
    /// Every code, in declaration order (`code as usize` indexes it).
    pub const ALL: [VerifyCode; 13] = [
        VerifyCode::Valid,
        VerifyCode::Missing,
        VerifyCode::InvalidFormat,
        VerifyCode::NotFound,
        VerifyCode::Revoked,
        VerifyCode::Expired,
        VerifyCode::Disabled,
        VerifyCode::ExceedsMaxLifetime,
        VerifyCode::IpNotAllowed,
        VerifyCode::InsufficientScope,
        VerifyCode::RateLimited,
        VerifyCode::QuotaExceeded,
        VerifyCode::UsageExceeded,
    ];

    /// The code as the JSON answer spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyCode::Valid => "VALID",
            VerifyCode::Missing => "MISSING",
            VerifyCode::InvalidFormat => "INVALID_FORMAT",
            VerifyCode::NotFound => "NOT_FOUND",
            VerifyCode::Revoked => "REVOKED",
            VerifyCode::Expired => "EXPIRED",
            VerifyCode::Disabled => "DISABLED",
            VerifyCode::ExceedsMaxLifetime => "EXCEEDS_MAX_LIFETIME",
            VerifyCode::IpNotAllowed => "IP_NOT_ALLOWED",
            VerifyCode::InsufficientScope => "INSUFFICIENT_SCOPE",
            VerifyCode::RateLimited => "RATE_LIMITED",
            VerifyCode::QuotaExceeded => "QUOTA_EXCEEDED",
            VerifyCode::UsageExceeded => "USAGE_EXCEEDED",
        }
    }
}

/// The answer for one presented key. It holds the (cached) key itself, so building one
/// copies nothing; the key's texts are read through the accessors and serialized as
/// [`VerificationBody`].
#[derive(Clone)]
pub struct Verification {
    pub valid: bool,
    pub code: VerifyCode,
    key: Option<Arc<ApiKey>>,
    /// When the key stops working (expiry or a roll's grace deadline), Unix seconds.
    pub expires_at: Option<i64>,
    pub ratelimit: Option<Decision>,
    pub quota: Option<QuotaState>,
    /// For a key with credits: the balance after this verification.
    pub credits: Option<CreditState>,
    /// Seconds to wait, for `RATE_LIMITED`, `QUOTA_EXCEEDED`, and `USAGE_EXCEEDED` on a
    /// key with a refill.
    pub retry_after: Option<i64>,
}

/// A verification as the verify API answers it (JSON).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Verification)]
pub struct VerificationBody<'a> {
    pub valid: bool,
    pub code: VerifyCode,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub key_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub org_id: Option<&'a str>,
    /// The deploying team's id for the key's organization (its customer), when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub external_org_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub environment: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    pub scopes: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<&'a serde_json::Value>,
    /// When the key stops working (expiry or a roll's grace deadline), Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratelimit: Option<Decision>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaState>,
    /// For a key with credits: the balance after this verification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credits: Option<CreditState>,
    /// Seconds to wait, for `RATE_LIMITED`, `QUOTA_EXCEEDED`, and `USAGE_EXCEEDED` on a
    /// key with a refill.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<i64>,
}

impl Serialize for Verification {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.body().serialize(s)
    }
}

impl std::fmt::Debug for Verification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.body().fmt(f)
    }
}

impl Verification {
    fn without_key(code: VerifyCode) -> Self {
        Self {
            valid: false,
            code,
            key: None,
            expires_at: None,
            ratelimit: None,
            quota: None,
            credits: None,
            retry_after: None,
        }
    }

    fn for_key(code: VerifyCode, key: Arc<ApiKey>) -> Self {
        Self {
            valid: code == VerifyCode::Valid,
            code,
            expires_at: key.ends_at(),
            key: Some(key),
            ratelimit: None,
            quota: None,
            credits: None,
            retry_after: None,
        }
    }

    /// The answer as the verify API sends it.
    pub fn body(&self) -> VerificationBody<'_> {
        let key = self.key.as_deref();
        VerificationBody {
            valid: self.valid,
            code: self.code,
            key_id: self.key_id(),
            org_id: self.org_id(),
            external_org_id: self.external_org_id(),
            name: self.name(),
            environment: self.environment(),
            scopes: key.map(ApiKey::scopes_parsed),
            metadata: key.and_then(ApiKey::metadata_parsed),
            expires_at: self.expires_at,
            ratelimit: self.ratelimit,
            quota: self.quota,
            credits: self.credits,
            retry_after: self.retry_after,
        }
    }

    /// The answer as the verify API sends it, as JSON: the same object as serializing
    /// [`VerificationBody`], written faster. The key's own fields (ids, name, scopes,
    /// metadata: strings that serde_json escapes byte by byte) are serialized once per
    /// cached key and copied into every answer after that; only the numbers of this moment
    /// (limits, expiry) are written per call.
    pub fn to_json(&self) -> Vec<u8> {
        /// The key's fields of [`VerificationBody`], in its order.
        #[derive(Serialize)]
        struct KeyFields<'a> {
            key_id: &'a str,
            org_id: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            external_org_id: Option<&'a str>,
            name: &'a str,
            environment: &'a str,
            scopes: &'a [String],
            #[serde(skip_serializing_if = "Option::is_none")]
            metadata: Option<&'a serde_json::Value>,
        }
        /// Appends `value`'s fields (its JSON object without the braces) after a comma.
        fn append_fields(out: &mut Vec<u8>, value: &impl Serialize) {
            let at = out.len();
            // Serializing these plain structs into a Vec cannot fail.
            serde_json::to_writer(&mut *out, value).expect("JSON of plain fields");
            if out.len() - at <= 2 {
                out.truncate(at); // `{}`: nothing to add
            } else {
                out[at] = b',';
                out.pop();
            }
        }
        let mut out = Vec::with_capacity(384);
        out.extend_from_slice(if self.valid {
            b"{\"valid\":true,\"code\":\""
        } else {
            b"{\"valid\":false,\"code\":\""
        });
        out.extend_from_slice(self.code.as_str().as_bytes());
        out.push(b'"');
        if let Some(key) = self.key.as_deref() {
            let fields = key.parsed.answer_fields.get_or_init(|| {
                let mut fields = Vec::new();
                append_fields(
                    &mut fields,
                    &KeyFields {
                        key_id: &key.id,
                        org_id: &key.org_id,
                        external_org_id: key.org_external_id.as_deref(),
                        name: &key.name,
                        environment: &key.environment,
                        scopes: key.scopes_parsed(),
                        metadata: key.metadata_parsed(),
                    },
                );
                fields.into_boxed_slice()
            });
            out.extend_from_slice(fields);
        }
        self.moment_fields(&mut out);
        out.push(b'}');
        out
    }

    /// The fields of this moment of [`VerificationBody`] (numbers only), in its order,
    /// each after a comma. Written out rather than serialized: serde_json would escape
    /// every field name byte by byte on every answer. The unit test
    /// `the_fast_json_answer_is_the_serialized_body` holds this to the serialized body.
    fn moment_fields(&self, out: &mut Vec<u8>) {
        let mut digits = itoa::Buffer::new();
        let mut field = |out: &mut Vec<u8>, name: &[u8], n: i64| {
            out.extend_from_slice(name);
            out.extend_from_slice(digits.format(n).as_bytes());
        };
        if let Some(at) = self.expires_at {
            field(out, b",\"expires_at\":", at);
        }
        let limits = [
            self.ratelimit
                .map(|d| (&b",\"ratelimit\":{"[..], d.limit, d.remaining, d.reset)),
            self.quota
                .map(|q| (&b",\"quota\":{"[..], q.limit, q.remaining, q.reset)),
        ];
        for (name, limit, remaining, reset) in limits.into_iter().flatten() {
            out.extend_from_slice(name);
            field(out, b"\"limit\":", limit);
            field(out, b",\"remaining\":", remaining);
            field(out, b",\"reset\":", reset);
            out.push(b'}');
        }
        if let Some(c) = self.credits {
            field(out, b",\"credits\":{\"remaining\":", c.remaining);
            if let Some(at) = c.refill_at {
                field(out, b",\"refill_at\":", at);
            }
            out.push(b'}');
        }
        if let Some(after) = self.retry_after {
            field(out, b",\"retry_after\":", after);
        }
    }

    /// The key's id (when a key was found).
    pub fn key_id(&self) -> Option<&str> {
        self.key.as_deref().map(|k| k.id.as_str())
    }

    /// The key's organization.
    pub fn org_id(&self) -> Option<&str> {
        self.key.as_deref().map(|k| k.org_id.as_str())
    }

    /// The deploying team's id for the key's organization, when set.
    pub fn external_org_id(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|k| k.org_external_id.as_deref())
    }

    /// The key's name.
    pub fn name(&self) -> Option<&str> {
        self.key.as_deref().map(|k| k.name.as_str())
    }

    /// The key's environment (`live` or `test`).
    pub fn environment(&self) -> Option<&str> {
        self.key.as_deref().map(|k| k.environment.as_str())
    }

    /// The key's metadata (JSON), when it has any.
    pub fn metadata(&self) -> Option<&serde_json::Value> {
        self.key.as_deref().and_then(ApiKey::metadata_parsed)
    }

    /// The key's scopes (empty when no key was found).
    pub fn scope_list(&self) -> &[String] {
        self.key.as_deref().map_or(&[], ApiKey::scopes_parsed)
    }
}

/// A key's credits as a verification reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CreditState {
    /// Credits left after this verification.
    pub remaining: i64,
    /// When the balance is next refilled (Unix seconds), for a key with a refill.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refill_at: Option<i64>,
}

/// What to verify.
#[derive(Debug, Clone)]
pub struct VerifyRequest<'a> {
    pub key: Option<&'a str>,
    /// Every one of these scopes is required.
    pub scopes: &'a [String],
    /// The end user's address, for the key's IP allowlist and the per-source limit on
    /// invalid attempts.
    pub ip: Option<IpAddr>,
    /// Credits this request costs a key that has credits (0 checks without spending).
    pub cost: i64,
}

impl Default for VerifyRequest<'_> {
    fn default() -> Self {
        Self {
            key: None,
            scopes: &[],
            ip: None,
            cost: 1,
        }
    }
}

/// Tuning of the verifier.
#[derive(Debug, Clone)]
pub struct VerifierOptions {
    /// Invalid keys (malformed or unknown) one source may present per minute before it is
    /// answered `RATE_LIMITED` without a lookup.
    pub invalid_attempts_per_minute: i64,
    /// Rate limits shared by every node through Redis (`None`: each node its own).
    pub shared: Option<Arc<SharedLimits>>,
}

impl Default for VerifierOptions {
    fn default() -> Self {
        Self {
            invalid_attempts_per_minute: 60,
            shared: None,
        }
    }
}

/// Verifies keys. Cheap to clone; shares the store's cache, the rate-limit buckets and
/// the usage batch.
#[derive(Clone)]
pub struct Verifier(Arc<Inner>);

struct Inner {
    store: Store,
    prefix: String,
    pepper: KeyPepper,
    clock: Arc<dyn Clock>,
    limiter: KeyLimiter,
    /// By source address, which a client chooses: SipHash.
    sources: RateLimiter,
    usage: Usage,
    options: VerifierOptions,
    stats: Stats,
}

/// What the verifier counts as it decides (read by the metrics endpoint).
#[derive(Debug, Default)]
struct Stats {
    local_allowed: AtomicU64,
    local_refused: AtomicU64,
    shared_allowed: AtomicU64,
    shared_refused: AtomicU64,
    sources_throttled: AtomicU64,
}

/// A snapshot of the verifier's counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifierStats {
    /// Rate-limit decisions taken by this node's own buckets (no Redis, or Redis away).
    pub local_allowed: u64,
    pub local_refused: u64,
    /// Rate-limit decisions taken through Redis (a lease or a synchronous call).
    pub shared_allowed: u64,
    pub shared_refused: u64,
    /// Requests refused because their source sent too many invalid keys.
    pub sources_throttled: u64,
    /// Limit decisions taken without Redis because it was unreachable.
    pub shared_unavailable: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("prefix", &self.0.prefix)
            .finish_non_exhaustive()
    }
}

/// How often batched usage is written to the store.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

impl Verifier {
    pub fn new(store: Store, prefix: String, pepper: KeyPepper, clock: Arc<dyn Clock>) -> Self {
        Self::with_options(store, prefix, pepper, clock, VerifierOptions::default())
    }

    pub fn with_options(
        store: Store,
        prefix: String,
        pepper: KeyPepper,
        clock: Arc<dyn Clock>,
        options: VerifierOptions,
    ) -> Self {
        Self(Arc::new(Inner {
            store,
            prefix,
            pepper,
            clock,
            limiter: KeyLimiter::default(),
            sources: RateLimiter::default(),
            usage: Usage::default(),
            options,
            stats: Stats::default(),
        }))
    }

    /// Opens a verifier on a Keyward database for use inside another Rust service: the
    /// same store, prefix and pepper as the Keyward server. Starts the usage flusher and,
    /// on Postgres, the cache invalidation listener.
    pub async fn open(database_url: &str, prefix: &str, pepper: KeyPepper) -> anyhow::Result<Self> {
        let store = Store::connect(database_url).await?;
        store.migrate().await?;
        store.check_pepper(&pepper.check_value()).await?;
        store.spawn_invalidation_listener();
        let v = Self::new(
            store,
            prefix.to_string(),
            pepper,
            Arc::new(crate::clock::SystemClock),
        );
        v.spawn_flusher();
        Ok(v)
    }

    /// Shorthand for an in-process check with no IP.
    pub async fn verify(
        &self,
        key: Option<&str>,
        scopes: &[String],
    ) -> Result<Verification, StoreError> {
        self.check(&VerifyRequest {
            key,
            scopes,
            ..VerifyRequest::default()
        })
        .await
    }

    /// Runs the pipeline.
    pub async fn check(&self, req: &VerifyRequest<'_>) -> Result<Verification, StoreError> {
        let me = &*self.0;
        let Some(presented) = req.key.map(trim_key).filter(|s| !s.is_empty()) else {
            return Ok(Verification::without_key(VerifyCode::Missing));
        };
        let (now, now_f) = me.clock.unix_secs_and_f64();
        // The source's name for the invalid-attempts budget, made only on the paths that
        // pay from it (a cached key never does).
        let source_of = || req.ip.map(source_bucket);
        let source_limit = Limit {
            limit: me.options.invalid_attempts_per_minute,
            window_secs: 60,
            burst: me.options.invalid_attempts_per_minute,
        };
        // A source that sent too many invalid keys gets no more database lookups for a
        // while; keys already in the cache still verify, so a noisy neighbour behind the
        // same address cannot lock out everyone else's working keys. A lookup is paid for
        // before it runs (and paid back when the key exists): checking the budget first
        // and counting after would let a burst of simultaneous guesses all through.
        let refuse = |src: &str| {
            me.stats.sources_throttled.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(event = "verify.source_throttled", source = %src, "too many invalid keys from one source");
            let mut v = Verification::without_key(VerifyCode::RateLimited);
            v.retry_after = Some(60);
            Ok(v)
        };
        let pay = |src: &Option<String>| match src {
            Some(src) => me.sources.check(src, source_limit, now_f).allowed,
            None => true,
        };

        // Keys in this deployment's format (checksum included) take the fast path: one
        // keyed hash, the cache, else one lookup. A string starting like our keys
        // (`kw_live_…`) that does not parse is a typo or garbage: malformed, never looked
        // up. Any other string that could be a key at all may be one the team issued before
        // Keyward and imported (`keyward keys import`): it takes the slower path below.
        // Malformed strings still count against the source's budget of invalid attempts,
        // as every lookup does.
        let foreign = match PlainKey::check(&me.prefix, presented) {
            Ok(_) => false,
            Err(ParseError::Format)
                if plausible_foreign_key(presented) && !PlainKey::claims(&me.prefix, presented) =>
            {
                true
            }
            Err(_) => {
                let source = source_of();
                return match &source {
                    Some(src) if !pay(&source) => refuse(src),
                    _ => Ok(Verification::without_key(VerifyCode::InvalidFormat)),
                };
            }
        };
        let hash = KeyHash::of(presented, &me.pepper);
        // The imported-scheme hash the key was found under, to re-hash it once it verifies.
        let mut imported_under = None;
        let found = match me.store.cached_key(&hash.0, now) {
            Some(found) => found,
            None => {
                let source = source_of();
                if let Some(src) = &source
                    && !pay(&source)
                {
                    return refuse(src);
                }
                // Cold awaits are boxed here and below: the future of a verification is moved at
                // least once per request, and a cached key's path should not carry the
                // database's futures inline.
                let mut found = Box::pin(me.store.key_by_hash_cached(&hash.0, now)).await?;
                if found.is_none() && foreign {
                    // The slower path: Keyward's own hash of the string was unknown (a
                    // plaintext import, or an imported key already re-hashed, is found
                    // under it); try the hash of an import that gave only its SHA-256.
                    let imported = KeyHash::imported_of(presented, &me.pepper);
                    found = Box::pin(me.store.key_by_hash_cached(&imported.0, now)).await?;
                    if found
                        .as_ref()
                        .is_some_and(|k| k.hash_scheme == HASH_SCHEME_IMPORTED)
                    {
                        imported_under = Some(imported);
                    }
                }
                match found {
                    Some(found) => {
                        if let Some(src) = &source {
                            me.sources.give_back(src, source_limit);
                        }
                        found
                    }
                    None => return Ok(Verification::without_key(VerifyCode::NotFound)),
                }
            }
        };

        let code = if found.revoked_at.is_some_and(|r| r <= now) {
            Some(VerifyCode::Revoked)
        } else if found.expires_at.is_some_and(|e| e <= now) {
            Some(VerifyCode::Expired)
        } else if !found.enabled {
            Some(VerifyCode::Disabled)
        } else if found.lifetime.blocks(found.expires_at, now) {
            Some(VerifyCode::ExceedsMaxLifetime)
        } else if !ip_allowed(&found.ip_allowlist, req.ip) {
            Some(VerifyCode::IpNotAllowed)
        } else if !req.scopes.is_empty() && {
            let held = found.scopes_parsed();
            !req.scopes.iter().all(|s| held.contains(s))
        } {
            Some(VerifyCode::InsufficientScope)
        } else {
            None
        };
        if let Some(code) = code {
            return Ok(Verification::for_key(code, found));
        }
        // Most keys have no limit at all: they skip the limits' future (built, polled and
        // dropped on every verification otherwise).
        let limits = if found.rate_limit.is_none()
            && found.daily_quota.is_none()
            && found.credits_remaining.is_none()
        {
            Limits::PASSED
        } else {
            self.limits(req, &found, now, now_f).await?
        };
        if limits.code == VerifyCode::Valid {
            me.usage.record(&found, now);
            if let Some(old) = &imported_under {
                // First successful use of a key imported as its SHA-256: now that we hold
                // the key, store Keyward's own hash of it instead, so later verifications
                // take one lookup. A failure costs nothing but the next verification's
                // second lookup, which retries.
                if let Err(e) =
                    Box::pin(me.store.rehash_imported_key(&found.id, &old.0, &hash.0)).await
                {
                    tracing::warn!(error = %e, key_id = %found.id, "could not re-hash an imported key; its next verification retries");
                }
            }
        }
        let mut result = Verification::for_key(limits.code, found);
        result.ratelimit = limits.ratelimit;
        result.quota = limits.quota;
        result.credits = limits.credits;
        result.retry_after = limits.retry_after;
        Ok(result)
    }

    /// Rate limit, daily quota and credits, in that order, for a key that passed every
    /// other check. Nothing is spent when an earlier limit refuses, and what the earlier
    /// ones took is given back when a later one refuses.
    async fn limits(
        &self,
        req: &VerifyRequest<'_>,
        found: &ApiKey,
        now: i64,
        now_f: f64,
    ) -> Result<Limits, StoreError> {
        let me = &*self.0;
        let mut result = Limits::PASSED;
        let limit = found.rate_limit.map(|limit| Limit {
            limit,
            window_secs: found.rate_window_secs,
            burst: found.rate_burst.unwrap_or(limit),
        });
        if let Some(l) = limit {
            let (d, shared) = match &me.options.shared {
                Some(shared) => (
                    shared
                        .check(&found.id, l, now_f, &me.limiter)
                        .await
                        .map_err(|e| StoreError::Unavailable(e.to_string()))?,
                    !shared.is_down(),
                ),
                None => (me.limiter.check(&found.id, l, now_f), false),
            };
            let counter = match (shared, d.allowed) {
                (false, true) => &me.stats.local_allowed,
                (false, false) => &me.stats.local_refused,
                (true, true) => &me.stats.shared_allowed,
                (true, false) => &me.stats.shared_refused,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            result.ratelimit = Some(d);
            if !d.allowed {
                result.code = VerifyCode::RateLimited;
                result.retry_after = Some(d.retry_after);
                return Ok(result);
            }
        }
        // What the limits took so far, given back when a later check refuses.
        let give_back = |quota: QuotaTaken| {
            if let Some(l) = limit {
                match &me.options.shared {
                    Some(shared) => shared.give_back(&found.id, l, &me.limiter),
                    None => me.limiter.give_back(&found.id, l),
                }
            }
            match (quota, &me.options.shared) {
                (QuotaTaken::Shared, Some(shared)) => {
                    shared.give_back_quota(&found.id, usage::day_of(now));
                }
                (QuotaTaken::Local, _) => me.usage.give_back_quota(found, now),
                _ => {}
            }
        };
        // With Redis, a daily quota is one counter for every node; without it (or when
        // Redis is away and quotas may fall back), each node counts as below.
        let mut counted = QuotaTaken::No;
        if let (Some(shared), Some(quota)) = (&me.options.shared, found.daily_quota) {
            let day = usage::day_of(now);
            let stored = || async { me.store.usage_count(&found.id, day).await.ok() };
            let taken =
                match Box::pin(shared.take_quota(&found.id, quota, day, now_f, stored)).await {
                    Ok(taken) => taken,
                    Err(e) => {
                        give_back(QuotaTaken::No);
                        return Err(StoreError::Unavailable(e.to_string()));
                    }
                };
            if let Some((ok, left)) = taken {
                let q = QuotaState {
                    limit: quota,
                    remaining: left,
                    reset: (day + 1) * 86_400,
                };
                result.quota = Some(q);
                if !ok {
                    give_back(QuotaTaken::No);
                    result.code = VerifyCode::QuotaExceeded;
                    result.retry_after = Some((q.reset - now).max(1));
                    return Ok(result);
                }
                counted = QuotaTaken::Shared;
            }
        }
        if counted == QuotaTaken::No && found.daily_quota.is_some() {
            let local = match Box::pin(me.usage.take_quota(&me.store, found, now)).await {
                Ok(q) => q,
                Err(e) => {
                    give_back(QuotaTaken::No);
                    return Err(e);
                }
            };
            if let Some((q, ok)) = local {
                result.quota = Some(q);
                if !ok {
                    give_back(QuotaTaken::No);
                    result.code = VerifyCode::QuotaExceeded;
                    result.retry_after = Some((q.reset - now).max(1));
                    return Ok(result);
                }
                counted = QuotaTaken::Local;
            }
        }
        // Credits last, and only for keys that have them: the one database write of the
        // pipeline (exact across nodes; see `store::credits`).
        if found.credits_remaining.is_some() {
            let refill_at = found.credit_refill().map(|r| r.next_boundary(now));
            let spent = Box::pin(me.store.spend_credits(
                &found.id,
                req.cost.max(0),
                found.credit_boundary(now),
                now,
            ))
            .await;
            match spent {
                Err(e) => {
                    give_back(counted);
                    return Err(e);
                }
                Ok(Spend::Unlimited) => {}
                Ok(Spend::Spent(level)) => {
                    result.credits = Some(CreditState {
                        remaining: level.remaining,
                        refill_at,
                    });
                    if let Err(e) =
                        Box::pin(me.store.announce_credit_level(found, &level, now)).await
                    {
                        tracing::warn!(error = %e, key_id = %found.id, "could not record a credits notice; the next verification retries");
                    }
                }
                Ok(Spend::Refused { remaining }) => {
                    give_back(counted);
                    result.code = VerifyCode::UsageExceeded;
                    result.credits = Some(CreditState {
                        remaining,
                        refill_at,
                    });
                    result.retry_after = refill_at.map(|t| (t - now).max(1));
                    return Ok(result);
                }
            }
        }
        Ok(result)
    }

    /// Writes batched usage now (also called on shutdown).
    pub async fn flush(&self) -> Result<usize, StoreError> {
        let now = self.0.clock.unix();
        self.0.limiter.prune(now as f64);
        if let Some(shared) = &self.0.options.shared {
            shared.prune(now as f64);
        }
        self.0.sources.prune(now as f64);
        self.0.usage.flush(&self.0.store, now).await
    }

    /// Flushes usage every [`FLUSH_INTERVAL`] until the store closes. At shutdown, call
    /// [`flush`](Self::flush) once more before closing the store (the flusher keeps any
    /// batch it fails to write).
    pub fn spawn_flusher(&self) -> tokio::task::JoinHandle<()> {
        let v = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if v.0.store.is_closed() {
                    return;
                }
                if let Err(e) = v.flush().await {
                    tracing::warn!(error = %e, "could not write key usage; will retry");
                }
            }
        })
    }

    pub fn store(&self) -> &Store {
        &self.0.store
    }

    /// The verifier's counters so far (for metrics).
    pub fn stats(&self) -> VerifierStats {
        let s = &self.0.stats;
        let read = |a: &AtomicU64| a.load(Ordering::Relaxed);
        VerifierStats {
            local_allowed: read(&s.local_allowed),
            local_refused: read(&s.local_refused),
            shared_allowed: read(&s.shared_allowed),
            shared_refused: read(&s.shared_refused),
            sources_throttled: read(&s.sources_throttled),
            shared_unavailable: self
                .0
                .options
                .shared
                .as_ref()
                .map_or(0, |sh| sh.failures.load(Ordering::Relaxed)),
        }
    }
}

/// What the limits decided for a key that passed every other check.
struct Limits {
    code: VerifyCode,
    ratelimit: Option<Decision>,
    quota: Option<QuotaState>,
    credits: Option<CreditState>,
    retry_after: Option<i64>,
}

impl Limits {
    /// Nothing refused, nothing to tell.
    const PASSED: Self = Self {
        code: VerifyCode::Valid,
        ratelimit: None,
        quota: None,
        credits: None,
        retry_after: None,
    };
}

/// Where a verification's daily quota use was counted (to give it back there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QuotaTaken {
    No,
    /// In Redis, through this node's quota lease.
    Shared,
    /// In this node's memory.
    Local,
}

/// The bucket a source address counts in: the address for IPv4, its /64 for IPv6 (one
/// host usually holds a whole /64).
fn source_bucket(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("src:{v4}"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("src:{v4}"),
            None => {
                let s = v6.segments();
                format!("src:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// `str::trim` of a presented key, without decoding both of its ends when they are plain
/// ASCII (no printable ASCII character is white space): the usual key.
fn trim_key(key: &str) -> &str {
    match key.as_bytes() {
        [first, .., last] if first.is_ascii_graphic() && last.is_ascii_graphic() => key,
        _ => key.trim(),
    }
}

/// Whether `ip` may use a key with this allowlist (space-separated CIDRs or addresses;
/// empty allows everyone). A key with an allowlist and no known IP is refused.
pub fn ip_allowed(allowlist: &str, ip: Option<IpAddr>) -> bool {
    if allowlist.is_empty() || allowlist.trim().is_empty() {
        return true;
    }
    let Some(ip) = ip else {
        return false;
    };
    let ip = match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    allowlist
        .split_whitespace()
        .any(|entry| match parse_network(entry) {
            Some(net) => net.contains(&ip),
            None => false,
        })
}

/// A CIDR (`10.0.0.0/8`, `2001:db8::/32`) or a single address.
pub fn parse_network(entry: &str) -> Option<IpNet> {
    entry
        .parse::<IpNet>()
        .ok()
        .or_else(|| entry.parse::<IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_presented_key_is_trimmed_as_str_trim_does() {
        for s in [
            "",
            " ",
            "a",
            "kw_live_x",
            " kw_live_x",
            "kw_live_x\n",
            "\tkw\u{2003}",
            "\u{a0}kw",
            "kw\u{85}",
            "\u{b}kw",
            "kw\u{c}",
            "é",
            "a b",
        ] {
            assert_eq!(trim_key(s), s.trim(), "{s:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn trimming_a_key_is_str_trim(s in "[ \t\n\u{b}\u{c}\u{a0}\u{85}\u{2003}a-z_é]{0,6}") {
            proptest::prop_assert_eq!(trim_key(&s), s.trim());
        }
    }

    #[test]
    fn allowlists() {
        let v4: IpAddr = "10.1.2.3".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(ip_allowed("", Some(v4)));
        assert!(ip_allowed("", None));
        assert!(!ip_allowed("10.0.0.0/8", None));
        assert!(ip_allowed("192.168.0.0/16 10.0.0.0/8", Some(v4)));
        assert!(!ip_allowed("192.168.0.0/16", Some(v4)));
        assert!(ip_allowed("2001:db8::/32", Some(v6)));
        assert!(!ip_allowed("10.0.0.0/8", Some(v6)));
        assert!(ip_allowed("10.1.2.3", Some(v4)));
        assert!(ip_allowed(
            "10.0.0.0/8",
            Some("::ffff:10.9.9.9".parse().unwrap())
        ));
        assert!(parse_network("not-an-ip").is_none());
    }
}

#[cfg(test)]
mod code_tests {
    use super::*;

    #[test]
    fn the_fast_json_answer_is_the_serialized_body() {
        let mut key = ApiKey::fixture();
        key.name = "quote \" and \\ and \u{e9} and \n".into();
        key.metadata = r#"{"plan":"pro","n":[1,2]}"#.into();
        key.org_external_id = Some("cus_1".into());
        let bare = Arc::new(ApiKey {
            scopes: String::new(),
            metadata: "not json".into(),
            org_external_id: None,
            expires_at: None,
            ..ApiKey::fixture()
        });
        let key = Arc::new(key);
        let full = |mut v: Verification| {
            v.ratelimit = Some(Decision {
                allowed: true,
                limit: 100,
                remaining: 99,
                reset: 60,
                retry_after: 0,
                window: 60,
            });
            v.quota = Some(QuotaState {
                limit: 1000,
                remaining: 999,
                reset: 86_400,
            });
            v.credits = Some(CreditState {
                remaining: 5,
                refill_at: None,
            });
            v.retry_after = Some(3);
            v
        };
        let cases = [
            Verification::without_key(VerifyCode::NotFound),
            Verification::for_key(VerifyCode::Valid, key.clone()),
            // Twice: the second answer copies the fields the first one serialized.
            full(Verification::for_key(VerifyCode::RateLimited, key.clone())),
            Verification::for_key(VerifyCode::Valid, bare.clone()),
            full(Verification::for_key(VerifyCode::Valid, bare.clone())),
            {
                let mut v = full(Verification::for_key(VerifyCode::UsageExceeded, bare));
                v.credits = Some(CreditState {
                    remaining: 0,
                    refill_at: Some(-7),
                });
                v.ratelimit = None;
                v
            },
        ];
        for v in cases {
            let fast: serde_json::Value = serde_json::from_slice(&v.to_json()).unwrap();
            assert_eq!(fast, serde_json::to_value(&v).unwrap());
            // The same order of fields too (clients may read them in order).
            assert_eq!(
                String::from_utf8(v.to_json()).unwrap(),
                serde_json::to_string(&v).unwrap()
            );
        }
        // A copy of a key whose fields were serialized answers with its own fields.
        let mut renamed = (*key).clone();
        renamed.name = "renamed".into();
        let v = Verification::for_key(VerifyCode::Valid, Arc::new(renamed));
        assert_eq!(
            String::from_utf8(v.to_json()).unwrap(),
            serde_json::to_string(&v).unwrap()
        );
        assert!(String::from_utf8(v.to_json()).unwrap().contains("renamed"));
    }

    #[test]
    fn every_code_is_listed_in_order_and_spelled_as_in_json() {
        for (i, code) in VerifyCode::ALL.iter().enumerate() {
            assert_eq!(*code as usize, i);
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::String(code.as_str().into())
            );
        }
    }
}
