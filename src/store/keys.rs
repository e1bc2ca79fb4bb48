//! API keys: only hashes and display fields are stored, never a key.

use std::sync::{Arc, LazyLock};

use serde::Serialize;

use super::{NewAudit, Result, Store, audit::insert_audit, cache::Probe, with_pool};

/// Keys whose expiry (or roll grace deadline) is this close are "expiring soon".
pub const EXPIRING_SOON_SECS: i64 = 7 * 24 * 3600;

#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct ApiKey {
    pub id: String,
    pub org_id: String,
    pub created_by: Option<String>,
    /// The creator's email (joined), `None` if the creator no longer exists.
    pub creator_email: Option<String>,
    /// The creator is no longer a member of the organization (their keys stay).
    pub creator_removed: bool,
    pub name: String,
    pub description: String,
    pub environment: String,
    #[serde(skip)]
    pub key_hash: Vec<u8>,
    pub display_prefix: String,
    pub last4: String,
    pub scopes: String,
    pub metadata: String,
    pub enabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub expires_at: Option<i64>,
    /// When revocation takes or took effect (a roll schedules it at the grace deadline).
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub rolled_from: Option<String>,
    /// Requests allowed per `rate_window_secs` (`None`: no limit).
    pub rate_limit: Option<i64>,
    pub rate_window_secs: i64,
    /// Bucket size for bursts (`None`: the limit itself).
    pub rate_burst: Option<i64>,
    /// Verifications allowed per UTC day (`None`: no quota).
    pub daily_quota: Option<i64>,
    /// Space-separated CIDRs the key may be used from (empty: anywhere).
    pub ip_allowlist: String,
    /// Credits left (`None`: unlimited). A snapshot as of the read: never the truth for a
    /// verification, which spends in the database (see `super::credits`).
    pub credits_remaining: Option<i64>,
    /// `daily` or `monthly` (`None`: no refill).
    pub credits_refill_interval: Option<String>,
    pub credits_refill_amount: Option<i64>,
    /// For a monthly refill: the day of the month (1–31; the last day in shorter months).
    pub credits_refill_day: Option<i64>,
    /// When the balance was last set or refilled.
    pub credits_refilled_at: Option<i64>,
    /// `key.credits_low` fires when the balance falls to this or below (`None`: 10 % of
    /// the refill amount, or never without a refill).
    pub credits_low_threshold: Option<i64>,
    /// How `key_hash` was made: [`HASH_SCHEME_KEYWARD`] or [`HASH_SCHEME_IMPORTED`].
    #[serde(skip)]
    pub hash_scheme: String,
    /// When the key was imported (`None`: made by Keyward).
    #[serde(skip)]
    pub imported_at: Option<i64>,
    /// The organization's external id (joined: the team's id for this customer).
    #[sqlx(default)]
    pub org_external_id: Option<String>,
    /// The organization's maximum lifetime (joined, so verification needs no second read).
    #[sqlx(flatten)]
    #[serde(skip)]
    pub lifetime: crate::keys::policy::LifetimePolicy,
    /// The scopes and metadata parsed once per cached key, not once per verification.
    #[sqlx(skip)]
    #[serde(skip)]
    pub parsed: ParsedKey,
}

/// Verification-facing values derived from a key's stored text, computed on first use and
/// kept with the (cached) key; answers borrow them through the key's `Arc`.
#[derive(Debug, Default)]
pub struct ParsedKey {
    scopes: std::sync::OnceLock<Vec<String>>,
    metadata: std::sync::OnceLock<Option<serde_json::Value>>,
    /// The forward-auth door's `X-Keyward-*` headers for the key (built by that door).
    pub(crate) forward_auth_headers:
        std::sync::OnceLock<Vec<(axum::http::HeaderName, axum::http::HeaderValue)>>,
    /// The verify API's JSON fields for the key (built by `Verification::to_json`).
    pub(crate) answer_fields: std::sync::OnceLock<Box<[u8]>>,
    /// The verifier's usage tally for the key, so a successful verification counts itself
    /// without a lock or a map lookup (bound on the key's first verification).
    pub(crate) tally: std::sync::OnceLock<std::sync::Arc<crate::verify::usage::Tally>>,
}

/// A copy of a key starts without them: they are derived again from the copy's own fields,
/// which its holder may change (a copy never answers with its original's name or scopes).
impl Clone for ParsedKey {
    fn clone(&self) -> Self {
        Self::default()
    }
}

/// `key_hash` is HMAC-SHA-256(pepper, key) (`KeyHash::of`).
pub const HASH_SCHEME_KEYWARD: &str = "keyward";
/// `key_hash` is the keyed hash of the team's SHA-256 of the key (`KeyHash::imported`),
/// until the key's first successful verification re-hashes it.
pub const HASH_SCHEME_IMPORTED: &str = "imported_sha256";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    Active,
    ExpiringSoon,
    Expired,
    Revoked,
    Disabled,
}

impl KeyStatus {
    pub fn label(self) -> &'static str {
        match self {
            KeyStatus::Active => "Active",
            KeyStatus::ExpiringSoon => "Expiring soon",
            KeyStatus::Expired => "Expired",
            KeyStatus::Revoked => "Revoked",
            KeyStatus::Disabled => "Disabled",
        }
    }
    /// The CSS badge class.
    pub fn badge(self) -> &'static str {
        match self {
            KeyStatus::Active => "badge-active",
            KeyStatus::ExpiringSoon => "badge-expiring",
            KeyStatus::Expired => "badge-expired",
            KeyStatus::Revoked => "badge-revoked",
            KeyStatus::Disabled => "badge-disabled",
        }
    }
}

impl ApiKey {
    /// The key's status at `now`. Revocation wins over expiry, expiry over disabling.
    pub fn status(&self, now: i64) -> KeyStatus {
        if self.revoked_at.is_some_and(|r| r <= now) {
            KeyStatus::Revoked
        } else if self.expires_at.is_some_and(|e| e <= now) {
            KeyStatus::Expired
        } else if !self.enabled {
            KeyStatus::Disabled
        } else if self
            .ends_at()
            .is_some_and(|e| e <= now + EXPIRING_SOON_SECS)
        {
            KeyStatus::ExpiringSoon
        } else {
            KeyStatus::Active
        }
    }

    /// When the key stops working: the earlier of its expiry and a scheduled revocation.
    pub fn ends_at(&self) -> Option<i64> {
        match (self.expires_at, self.revoked_at) {
            (Some(e), Some(r)) => Some(e.min(r)),
            (e, r) => e.or(r),
        }
    }

    /// Imported from the team's earlier system (`keyward keys import`).
    pub fn is_imported(&self) -> bool {
        self.imported_at.is_some()
    }

    pub fn scope_list(&self) -> Vec<String> {
        crate::keys::scopes::split(&self.scopes)
    }

    /// A key with every field set to something plausible, for unit tests.
    #[cfg(test)]
    pub(crate) fn fixture() -> Self {
        Self {
            id: "k".into(),
            org_id: "o".into(),
            created_by: None,
            creator_email: None,
            creator_removed: false,
            name: "ci".into(),
            description: String::new(),
            environment: "live".into(),
            key_hash: vec![],
            display_prefix: "kw_live_ab".into(),
            last4: "wxyz".into(),
            scopes: "read keys:write".into(),
            metadata: "{}".into(),
            enabled: true,
            created_at: 0,
            updated_at: 0,
            expires_at: Some(1_000),
            revoked_at: None,
            last_used_at: None,
            rolled_from: None,
            rate_limit: Some(100),
            rate_window_secs: 60,
            rate_burst: None,
            daily_quota: Some(1_000),
            ip_allowlist: "10.0.0.0/8".into(),
            credits_remaining: None,
            credits_refill_interval: None,
            credits_refill_amount: None,
            credits_refill_day: None,
            credits_refilled_at: None,
            credits_low_threshold: None,
            org_external_id: None,
            hash_scheme: "keyward".into(),
            imported_at: None,
            lifetime: Default::default(),
            parsed: Default::default(),
        }
    }

    /// The scopes, split once per (cached) key.
    pub fn scopes_parsed(&self) -> &[String] {
        self.parsed.scopes.get_or_init(|| self.scope_list())
    }

    /// The metadata as JSON, parsed once per (cached) key (`None` if the stored text is not
    /// JSON).
    pub fn metadata_parsed(&self) -> Option<&serde_json::Value> {
        self.parsed
            .metadata
            .get_or_init(|| serde_json::from_str(&self.metadata).ok())
            .as_ref()
    }
}

/// Usage limits and verifier-facing settings of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLimits {
    pub rate_limit: Option<i64>,
    pub rate_window_secs: i64,
    pub rate_burst: Option<i64>,
    pub daily_quota: Option<i64>,
    pub ip_allowlist: String,
    /// JSON object returned by the verifier.
    pub metadata: String,
}

impl Default for KeyLimits {
    fn default() -> Self {
        Self {
            rate_limit: None,
            rate_window_secs: 60,
            rate_burst: None,
            daily_quota: None,
            ip_allowlist: String::new(),
            metadata: "{}".into(),
        }
    }
}

impl ApiKey {
    pub fn limits(&self) -> KeyLimits {
        KeyLimits {
            rate_limit: self.rate_limit,
            rate_window_secs: self.rate_window_secs,
            rate_burst: self.rate_burst,
            daily_quota: self.daily_quota,
            ip_allowlist: self.ip_allowlist.clone(),
            metadata: self.metadata.clone(),
        }
    }
}

/// A key to insert (the caller generated and hashed it).
#[derive(Debug, Clone)]
pub struct NewKey {
    pub id: String,
    pub org_id: String,
    pub created_by: Option<String>,
    pub name: String,
    pub description: String,
    pub environment: String,
    pub key_hash: Vec<u8>,
    pub display_prefix: String,
    pub last4: String,
    pub scopes: String,
    pub limits: KeyLimits,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub rolled_from: Option<String>,
    /// Credits (`None`: unlimited), written with the key in the same transaction.
    pub credits: Option<super::credits::KeyCredits>,
}

/// An imported key to insert: the key itself, how its hash was made and its import
/// fingerprint ([`KeyHash::imported`](crate::keys::token::KeyHash::imported), unique).
#[derive(Debug, Clone)]
pub struct ImportedKey {
    pub key: NewKey,
    /// [`HASH_SCHEME_KEYWARD`] (imported as plaintext) or [`HASH_SCHEME_IMPORTED`].
    pub hash_scheme: &'static str,
    pub import_hash: Vec<u8>,
}

/// Editable fields.
#[derive(Debug, Clone)]
pub struct KeyChanges {
    pub name: String,
    pub description: String,
    pub scopes: String,
    pub expires_at: Option<i64>,
    pub limits: KeyLimits,
}

/// List filters; empty strings mean "any". `status` is one of `active`, `expiring`,
/// `expired`, `revoked`.
#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    pub status: String,
    pub environment: String,
    pub name_contains: String,
    /// Only keys whose creator is no longer a member.
    pub creator_removed: bool,
}

/// `$1` org, `$2` environment, `$3` LIKE pattern, `$4` status, `$5` now, `$6` now + 7 days,
/// `$7` 1 for "creator removed" only.
static KEY_WHERE: LazyLock<String> = LazyLock::new(|| {
    let revoked = "(k.revoked_at IS NOT NULL AND k.revoked_at <= $5)";
    let expired = "(k.expires_at IS NOT NULL AND k.expires_at <= $5)";
    let soon = "((k.expires_at IS NOT NULL AND k.expires_at <= $6) \
                OR (k.revoked_at IS NOT NULL AND k.revoked_at <= $6))";
    format!(
        "k.org_id = $1 \
         AND ($2 = '' OR k.environment = $2) \
         AND ($3 = '' OR k.name_lower LIKE $3 ESCAPE '\\') \
         AND ($4 = '' \
           OR ($4 = 'revoked' AND {revoked}) \
           OR ($4 = 'expired' AND NOT {revoked} AND {expired}) \
           OR ($4 = 'expiring' AND NOT {revoked} AND NOT {expired} AND {soon}) \
           OR ($4 = 'active' AND NOT {revoked} AND NOT {expired} AND NOT {soon})) \
         AND ($7 = 0 OR NOT EXISTS (SELECT 1 FROM memberships m \
              WHERE m.org_id = k.org_id AND m.user_id = k.created_by))"
    )
});

/// The groups of the key hygiene view (Settings → API Keys → Key hygiene).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hygiene {
    NeverExpires,
    /// Neither used nor created in the last N days.
    Unused,
    NeverUsed,
    /// Created by someone who is no longer a member.
    FormerMembers,
    /// Living longer than the organization's maximum lifetime allows.
    BeyondLifetime,
}

impl Hygiene {
    pub const ALL: [Hygiene; 5] = [
        Hygiene::BeyondLifetime,
        Hygiene::NeverExpires,
        Hygiene::Unused,
        Hygiene::NeverUsed,
        Hygiene::FormerMembers,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Hygiene::NeverExpires => "never_expires",
            Hygiene::Unused => "unused",
            Hygiene::NeverUsed => "never_used",
            Hygiene::FormerMembers => "former_members",
            Hygiene::BeyondLifetime => "beyond_lifetime",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.as_str() == s)
    }
}

/// How many open keys are in each hygiene group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HygieneCounts {
    pub never_expires: i64,
    pub unused: i64,
    pub never_used: i64,
    pub former_members: i64,
    pub beyond_lifetime: i64,
}

impl HygieneCounts {
    pub fn get(&self, group: Hygiene) -> i64 {
        match group {
            Hygiene::NeverExpires => self.never_expires,
            Hygiene::Unused => self.unused,
            Hygiene::NeverUsed => self.never_used,
            Hygiene::FormerMembers => self.former_members,
            Hygiene::BeyondLifetime => self.beyond_lifetime,
        }
    }
}

/// A key that still works or may again: not revoked (nor scheduled to be), not expired.
/// `$2` is now.
const OPEN_KEY: &str = "k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > $2)";

/// The SQL condition of one hygiene group, over `k` (the key) and `cm` (its creator's
/// membership); `$3` is the "unused" cutoff, `$4` the latest expiry the lifetime policy
/// allows now (0: no maximum).
fn hygiene_condition(group: &str) -> &'static str {
    match group {
        "never_expires" => "(k.expires_at IS NULL)",
        "unused" => "(COALESCE(k.last_used_at, k.created_at) <= $3)",
        "never_used" => "(k.last_used_at IS NULL)",
        "former_members" => "(cm.user_id IS NULL)",
        _ => "($4 > 0 AND (k.expires_at IS NULL OR k.expires_at > $4))",
    }
}

/// Keys with their creator's email, whether the creator has left the organization, and the
/// organization's lifetime policy.
pub(crate) const KEY_SELECT: &str = "SELECT k.*, u.email AS creator_email, \
     (cm.user_id IS NULL) AS creator_removed, \
     ko.key_max_lifetime_days, ko.key_lifetime_enforced_at, ko.external_id AS org_external_id \
     FROM api_keys k LEFT JOIN users u ON u.id = k.created_by \
     LEFT JOIN memberships cm ON cm.org_id = k.org_id AND cm.user_id = k.created_by \
     JOIN organizations ko ON ko.id = k.org_id";

const INSERT_KEY: &str = "INSERT INTO api_keys (id, org_id, created_by, name, description, \
     environment, key_hash, display_prefix, last4, scopes, metadata, created_at, updated_at, \
     expires_at, rolled_from, rate_limit, rate_window_secs, rate_burst, daily_quota, ip_allowlist, \
     name_lower) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $13, $14, $15, $16, $17, $18, $19, $20)";

/// Ends a key write: its audit row and (on Postgres) its NOTIFY go into the transaction,
/// which commits; then this node's cache forgets the key at once.
macro_rules! commit_key_write {
    ($store:expr, $tx:expr, $hash:expr, $audit:expr) => {{
        insert_audit!(&mut *$tx, $audit)?;
        notify_key!($store, &mut *$tx, $hash)?;
        $tx.commit().await?;
        $store.key_cache.invalidate($hash);
    }};
}

/// One key write, in a transaction: `$update` (an `UPDATE … RETURNING key_hash` run on
/// `$tx`) and, if it matched a key, the audit row, the NOTIFY and the commit. Evaluates to
/// `Ok(whether it matched)`; an unmatched write rolls back and records nothing.
macro_rules! write_key {
    ($store:expr, $pool:expr, $audit:expr, |$tx:ident| $update:expr) => {{
        let mut $tx = $pool.begin().await?;
        let hash: Option<Vec<u8>> = $update;
        match hash {
            None => Ok(false),
            Some(hash) => {
                commit_key_write!($store, $tx, &hash, $audit);
                Ok(true)
            }
        }
    }};
}

/// Postgres channel on which key writes announce the changed hash (hex).
pub const NOTIFY_CHANNEL: &str = "keyward_keys";

/// On Postgres, queues `NOTIFY keyward_keys, '<hash>'` in the open transaction: it is
/// delivered to every node's listener when (and only if) the transaction commits.
macro_rules! notify_key {
    ($store:expr, $exec:expr, $hash:expr) => {{
        let result: Result<(), sqlx::Error> = if $store.backend() == "postgres" {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(hex::encode($hash))
                .execute($exec)
                .await
                .map(|_| ())
        } else {
            Ok(())
        };
        result
    }};
}

macro_rules! insert_key {
    ($exec:expr, $k:expr) => {{
        let k: &NewKey = $k;
        sqlx::query(INSERT_KEY)
            .bind(&k.id)
            .bind(&k.org_id)
            .bind(&k.created_by)
            .bind(&k.name)
            .bind(&k.description)
            .bind(&k.environment)
            .bind(&k.key_hash)
            .bind(&k.display_prefix)
            .bind(&k.last4)
            .bind(&k.scopes)
            .bind(&k.limits.metadata)
            .bind(k.created_at)
            .bind(k.expires_at)
            .bind(&k.rolled_from)
            .bind(k.limits.rate_limit)
            .bind(k.limits.rate_window_secs)
            .bind(k.limits.rate_burst)
            .bind(k.limits.daily_quota)
            .bind(&k.limits.ip_allowlist)
            .bind(k.name.to_lowercase())
            .execute($exec)
            .await
            .map(|_| ())
    }};
}

pub(super) use {commit_key_write, notify_key};

impl Store {
    /// Inserts a key and its `key.created` event in one transaction.
    pub async fn insert_key(&self, key: &NewKey, audit: &NewAudit) -> Result<()> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            insert_key!(&mut *tx, key)?;
            super::credits::write_new_key_credits!(&mut *tx, key)?;
            commit_key_write!(self, tx, &key.key_hash, audit);
            Ok(())
        })
    }

    /// The key imported with this import fingerprint, if any (whatever its hash is now).
    pub async fn imported_key_id(&self, import_hash: &[u8]) -> Result<Option<String>> {
        with_pool!(self, |pool| {
            Ok(
                sqlx::query_scalar("SELECT id FROM api_keys WHERE import_hash = $1")
                    .bind(import_hash)
                    .fetch_optional(pool)
                    .await?,
            )
        })
    }

    /// Inserts imported keys, each with its `key.imported` event, in one transaction.
    /// A key whose hash or import fingerprint is already stored (an import running at the
    /// same time) is skipped without an event. Answers, per key, whether it was inserted.
    pub async fn insert_imported_keys(
        &self,
        keys: &[(ImportedKey, NewAudit)],
    ) -> Result<Vec<bool>> {
        const SQL: &str = "INSERT INTO api_keys (id, org_id, created_by, name, description, \
             environment, key_hash, display_prefix, last4, scopes, metadata, created_at, \
             updated_at, expires_at, name_lower, hash_scheme, imported_at, import_hash) \
             VALUES ($1, $2, NULL, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13, $14, $11, $15) \
             ON CONFLICT DO NOTHING";
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let mut inserted = Vec::with_capacity(keys.len());
            for (k, audit) in keys {
                let n = &k.key;
                let done = sqlx::query(SQL)
                    .bind(&n.id)
                    .bind(&n.org_id)
                    .bind(&n.name)
                    .bind(&n.description)
                    .bind(&n.environment)
                    .bind(&n.key_hash)
                    .bind(&n.display_prefix)
                    .bind(&n.last4)
                    .bind(&n.scopes)
                    .bind(&n.limits.metadata)
                    .bind(n.created_at)
                    .bind(n.expires_at)
                    .bind(n.name.to_lowercase())
                    .bind(k.hash_scheme)
                    .bind(&k.import_hash)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
                if done {
                    insert_audit!(&mut *tx, audit)?;
                    // A verification may have cached "unknown" for this hash.
                    notify_key!(self, &mut *tx, &n.key_hash)?;
                }
                inserted.push(done);
            }
            tx.commit().await?;
            for ((k, _), done) in keys.iter().zip(&inserted) {
                if *done {
                    self.key_cache.invalidate(&k.key.key_hash);
                }
            }
            Ok(inserted)
        })
    }

    /// Replaces an imported key's hash ([`HASH_SCHEME_IMPORTED`]) with Keyward's own
    /// ([`HASH_SCHEME_KEYWARD`]), after the key verified: from then on it is found with one
    /// lookup. Both hashes are invalidated on every node (the new one may be cached as
    /// unknown). No audit event: the key, its string and its settings are unchanged, only
    /// how it is stored. Answers false when another verification re-hashed it first.
    pub async fn rehash_imported_key(
        &self,
        key_id: &str,
        old_hash: &[u8],
        new_hash: &[u8],
    ) -> Result<bool> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let done = sqlx::query(
                "UPDATE api_keys SET key_hash = $3, hash_scheme = $4 \
                 WHERE id = $1 AND key_hash = $2 AND hash_scheme = $5",
            )
            .bind(key_id)
            .bind(old_hash)
            .bind(new_hash)
            .bind(HASH_SCHEME_KEYWARD)
            .bind(HASH_SCHEME_IMPORTED)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if done {
                notify_key!(self, &mut *tx, old_hash)?;
                notify_key!(self, &mut *tx, new_hash)?;
            }
            tx.commit().await?;
            if done {
                self.key_cache.invalidate(old_hash);
                self.key_cache.invalidate(new_hash);
            }
            Ok(done)
        })
    }

    /// One key of one organization; `None` for another organization's key.
    pub async fn key(&self, org_id: &str, key_id: &str) -> Result<Option<ApiKey>> {
        let sql = format!("{KEY_SELECT} WHERE k.id = $1 AND k.org_id = $2");
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, ApiKey>(&sql)
                .bind(key_id)
                .bind(org_id)
                .fetch_optional(pool)
                .await?)
        })
    }

    /// The verification lookup, through the cache: one indexed query by hash on a miss.
    /// `now` (the caller's clock, Unix seconds) ages the cache entries.
    pub async fn key_by_hash_cached(
        &self,
        hash: &[u8; 32],
        now: i64,
    ) -> Result<Option<Arc<ApiKey>>> {
        let generation = match self.key_cache.probe(hash, now) {
            Probe::Hit(k) => return Ok(Some(k)),
            Probe::KnownMissing => return Ok(None),
            Probe::Miss(generation) => generation,
        };
        let found = self.key_by_hash(hash).await?.map(Arc::new);
        self.key_cache.fill(*hash, found.clone(), generation, now);
        Ok(found)
    }

    /// The verification lookup without the cache: one indexed query by hash.
    pub async fn key_by_hash(&self, hash: &[u8]) -> Result<Option<ApiKey>> {
        let sql = format!("{KEY_SELECT} WHERE k.key_hash = $1");
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, ApiKey>(&sql)
                .bind(hash)
                .fetch_optional(pool)
                .await?)
        })
    }

    /// A page of an organization's keys, newest first, with the total matching count.
    pub async fn list_keys(
        &self,
        org_id: &str,
        f: &KeyFilter,
        now: i64,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<ApiKey>, i64)> {
        let list_sql = format!(
            "{KEY_SELECT} WHERE {} ORDER BY k.created_at DESC, k.id DESC LIMIT $8 OFFSET $9",
            *KEY_WHERE
        );
        let count_sql = format!("SELECT COUNT(*) FROM api_keys k WHERE {}", *KEY_WHERE);
        let pattern = if f.name_contains.is_empty() {
            String::new()
        } else {
            super::like_contains(&f.name_contains)
        };
        with_pool!(self, |pool| {
            let rows = sqlx::query_as::<_, ApiKey>(&list_sql)
                .bind(org_id)
                .bind(&f.environment)
                .bind(&pattern)
                .bind(&f.status)
                .bind(now)
                .bind(now + EXPIRING_SOON_SECS)
                .bind(i64::from(f.creator_removed))
                .bind(limit)
                .bind(offset)
                .fetch_all(pool)
                .await?;
            let total: i64 = sqlx::query_scalar(&count_sql)
                .bind(org_id)
                .bind(&f.environment)
                .bind(&pattern)
                .bind(&f.status)
                .bind(now)
                .bind(now + EXPIRING_SOON_SECS)
                .bind(i64::from(f.creator_removed))
                .fetch_one(pool)
                .await?;
            Ok((rows, total))
        })
    }

    /// Up to `limit` keys after the cursor `after_id` (exclusive), newest first: ids are
    /// UUIDv7, so id order is creation order.
    pub async fn list_keys_after(
        &self,
        org_id: &str,
        f: &KeyFilter,
        now: i64,
        after_id: &str,
        limit: i64,
    ) -> Result<Vec<ApiKey>> {
        let sql = format!(
            "{KEY_SELECT} WHERE {} AND ($8 = '' OR k.id < $8) ORDER BY k.id DESC LIMIT $9",
            *KEY_WHERE
        );
        let pattern = if f.name_contains.is_empty() {
            String::new()
        } else {
            super::like_contains(&f.name_contains)
        };
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, ApiKey>(&sql)
                .bind(org_id)
                .bind(&f.environment)
                .bind(&pattern)
                .bind(&f.status)
                .bind(now)
                .bind(now + EXPIRING_SOON_SECS)
                .bind(i64::from(f.creator_removed))
                .bind(after_id)
                .bind(limit)
                .fetch_all(pool)
                .await?)
        })
    }

    /// How many open keys fall in each [`Hygiene`] group. `unused_before`: the cutoff of
    /// "unused"; `latest_expiry`: the maximum lifetime's bound now (0: no maximum).
    pub async fn hygiene_counts(
        &self,
        org_id: &str,
        now: i64,
        unused_before: i64,
        latest_expiry: i64,
    ) -> Result<HygieneCounts> {
        let count = |group: &str| {
            format!(
                "COALESCE(SUM(CASE WHEN {} THEN 1 ELSE 0 END), 0)",
                hygiene_condition(group)
            )
        };
        let sql = format!(
            "SELECT {}, {}, {}, {}, {} \
             FROM api_keys k \
             LEFT JOIN memberships cm ON cm.org_id = k.org_id AND cm.user_id = k.created_by \
             WHERE k.org_id = $1 AND {OPEN_KEY}",
            count("never_expires"),
            count("unused"),
            count("never_used"),
            count("former_members"),
            count("beyond_lifetime"),
        );
        with_pool!(self, |pool| {
            let (never_expires, unused, never_used, former_members, beyond_lifetime): (
                i64,
                i64,
                i64,
                i64,
                i64,
            ) = sqlx::query_as(&sql)
                .bind(org_id)
                .bind(now)
                .bind(unused_before)
                .bind(latest_expiry)
                .fetch_one(pool)
                .await?;
            Ok(HygieneCounts {
                never_expires,
                unused,
                never_used,
                former_members,
                beyond_lifetime,
            })
        })
    }

    /// Up to `limit` open keys of one [`Hygiene`] group, oldest first.
    pub async fn hygiene_keys(
        &self,
        org_id: &str,
        group: Hygiene,
        now: i64,
        unused_before: i64,
        latest_expiry: i64,
        limit: i64,
    ) -> Result<Vec<ApiKey>> {
        // `$3 = $3 AND $4 = $4`: every parameter appears whichever group is asked for.
        let sql = format!(
            "{KEY_SELECT} WHERE k.org_id = $1 AND {OPEN_KEY} AND {} AND $3 = $3 AND $4 = $4 \
             ORDER BY k.created_at, k.id LIMIT $5",
            hygiene_condition(group.as_str())
        );
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, ApiKey>(&sql)
                .bind(org_id)
                .bind(now)
                .bind(unused_before)
                .bind(latest_expiry)
                .bind(limit)
                .fetch_all(pool)
                .await?)
        })
    }

    /// Applies edits and records `key.updated`, in one transaction. Returns false when the
    /// key is not in this organization, or is revoked or expired by now.
    pub async fn update_key(
        &self,
        org_id: &str,
        key_id: &str,
        c: &KeyChanges,
        now: i64,
        audit: &NewAudit,
    ) -> Result<bool> {
        with_pool!(self, |pool| {
            write_key!(self, pool, audit, |tx| {
                sqlx::query_scalar(
                "UPDATE api_keys SET name = $3, description = $4, scopes = $5, expires_at = $6, \
                 updated_at = $7, metadata = $8, rate_limit = $9, rate_window_secs = $10, \
                 rate_burst = $11, daily_quota = $12, ip_allowlist = $13, name_lower = $14 \
                 WHERE id = $1 AND org_id = $2 \
                   AND (revoked_at IS NULL OR revoked_at > $7) AND (expires_at IS NULL OR expires_at > $7) \
                 RETURNING key_hash",
            )
            .bind(key_id)
            .bind(org_id)
            .bind(&c.name)
            .bind(&c.description)
            .bind(&c.scopes)
            .bind(c.expires_at)
            .bind(now)
            .bind(&c.limits.metadata)
            .bind(c.limits.rate_limit)
            .bind(c.limits.rate_window_secs)
            .bind(c.limits.rate_burst)
            .bind(c.limits.daily_quota)
            .bind(&c.limits.ip_allowlist)
            .bind(c.name.to_lowercase())
            .fetch_optional(&mut *tx)
            .await?
            })
        })
    }

    /// Pauses or resumes a key (`enabled`), audited. Returns false when the key is not in
    /// this organization, is revoked or expired, or already has that state.
    pub async fn set_key_enabled(
        &self,
        org_id: &str,
        key_id: &str,
        enabled: bool,
        now: i64,
        audit: &NewAudit,
    ) -> Result<bool> {
        with_pool!(self, |pool| {
            write_key!(self, pool, audit, |tx| {
                sqlx::query_scalar(
                "UPDATE api_keys SET enabled = $3, updated_at = $4 \
                 WHERE id = $1 AND org_id = $2 AND enabled <> $3 \
                   AND (revoked_at IS NULL OR revoked_at > $4) AND (expires_at IS NULL OR expires_at > $4) \
                 RETURNING key_hash",
            )
            .bind(key_id)
            .bind(org_id)
            .bind(enabled)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?
            })
        })
    }

    /// Revokes a key now, recording `key.revoked`. Returns false when the key is not in
    /// this organization or was already revoked.
    pub async fn revoke_key(
        &self,
        org_id: &str,
        key_id: &str,
        now: i64,
        audit: &NewAudit,
    ) -> Result<bool> {
        with_pool!(self, |pool| {
            write_key!(self, pool, audit, |tx| sqlx::query_scalar(
                "UPDATE api_keys SET revoked_at = $3, updated_at = $3 \
                 WHERE id = $1 AND org_id = $2 AND (revoked_at IS NULL OR revoked_at > $3) \
                 RETURNING key_hash",
            )
            .bind(key_id)
            .bind(org_id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?)
        })
    }

    /// A key reported as leaked: records `key.leaked` and, with `revoke`, revokes the key
    /// (recording `key.revoked`), in one transaction. Returns whether it was revoked now.
    pub async fn report_leaked_key(
        &self,
        key: &ApiKey,
        now: i64,
        leaked: &NewAudit,
        revoke: Option<&NewAudit>,
    ) -> Result<bool> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            insert_audit!(&mut *tx, leaked)?;
            let Some(revoked) = revoke else {
                tx.commit().await?;
                return Ok(false);
            };
            let hash: Option<Vec<u8>> = sqlx::query_scalar(
                "UPDATE api_keys SET revoked_at = $3, updated_at = $3 \
                 WHERE id = $1 AND org_id = $2 AND (revoked_at IS NULL OR revoked_at > $3) \
                 RETURNING key_hash",
            )
            .bind(&key.id)
            .bind(&key.org_id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(hash) = hash else {
                tx.commit().await?;
                return Ok(false);
            };
            commit_key_write!(self, tx, &hash, revoked);
            Ok(true)
        })
    }

    /// Rolls a key: inserts its successor and schedules the old key's revocation at
    /// `grace_until` (never later than an earlier scheduled revocation), with both audit
    /// events, in one transaction. Returns false when the old key is not in this
    /// organization or no longer active.
    pub async fn roll_key(
        &self,
        org_id: &str,
        old_id: &str,
        new: &NewKey,
        grace_until: i64,
        now: i64,
        audits: [&NewAudit; 2],
    ) -> Result<bool> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let hash: Option<Vec<u8>> = sqlx::query_scalar(
                "UPDATE api_keys SET \
                   revoked_at = CASE WHEN revoked_at IS NOT NULL AND revoked_at < $3 THEN revoked_at ELSE $3 END, \
                   updated_at = $4 \
                 WHERE id = $1 AND org_id = $2 AND (revoked_at IS NULL OR revoked_at > $4) \
                   AND (expires_at IS NULL OR expires_at > $4) \
                 RETURNING key_hash",
            )
            .bind(old_id)
            .bind(org_id)
            .bind(grace_until)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(hash) = hash else {
                return Ok(false);
            };
            insert_key!(&mut *tx, new)?;
            super::credits::write_new_key_credits!(&mut *tx, new)?;
            for a in audits {
                insert_audit!(&mut *tx, a)?;
            }
            notify_key!(self, &mut *tx, &hash)?;
            notify_key!(self, &mut *tx, &new.key_hash)?;
            tx.commit().await?;
            self.key_cache.invalidate(&hash);
            self.key_cache.invalidate(&new.key_hash);
            Ok(true)
        })
    }
}
