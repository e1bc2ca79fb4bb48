//! The store: one interface over SQLite and Postgres.
//!
//! Following atuin's dual-backend precedent, queries are runtime `sqlx::query_as` with
//! `FromRow` row types. Unlike atuin we do not write each query twice: both backends
//! accept `$N` parameters and our schema keeps types that read alike (text ids, BIGINT
//! Unix-second timestamps), so every method is written once and [`with_pool!`] expands
//! it for the concrete pool. Where the dialects differ, the migrations differ
//! (`migrations/sqlite`, `migrations/postgres`), not the queries.
//!
//! Every change that is audited writes its audit row in the same transaction.

mod audit;
mod audit_chain;
pub mod cache;
mod credits;
mod keys;
mod orgs;
mod portal;
pub mod sessions;
mod sso;
pub mod stats;
mod teams;
mod two_step;
mod usage;
mod users;
pub mod webhooks;

use std::{str::FromStr, sync::Arc, time::Duration};

use sqlx::{
    PgPool, SqlitePool,
    postgres::PgPoolOptions,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

pub use audit::{AuditEvent, AuditFilter, NewAudit};
pub use audit_chain::{ChainHead, Checkpoint};
pub use credits::{CreditOp, CreditOpOutcome, KeyCredits, Refill, RefillInterval, Spend};
pub use keys::{
    ApiKey, HASH_SCHEME_IMPORTED, HASH_SCHEME_KEYWARD, Hygiene, HygieneCounts, ImportedKey,
    KeyChanges, KeyFilter, KeyLimits, KeyStatus, NewKey,
};
pub use orgs::{EXTERNAL_ID_MAX, KeyPolicy, Membership, Org, check_external_id};
pub use portal::{PortalArrival, PortalGrant, PortalRefusal};
pub use sso::{SsoConnection, SsoConnectionInput, SsoIdentity, SsoJoin};
pub use teams::{Invitation, Member, MemberChange, OutboxEmail, PasswordReset};
pub use two_step::{FactorRemoval, PasskeyRow, TotpFactor};
pub use usage::UsageDelta;
pub use users::{FailureRules, NewUser, SignInGate, TrustedDevice, User};

/// How long a request waits for a pooled connection before the store reports itself
/// unavailable (→ 503), instead of hanging: the default of `KEYWARD_DB_TIMEOUT_SECONDS`.
pub const DEFAULT_DB_TIMEOUT: Duration = Duration::from_secs(5);

/// How the store's pool behaves when the database is slow or away.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// The longest a request waits for a connection (Postgres: including connecting to the
    /// server) and, on SQLite, for a busy writer; then it answers 503.
    pub db_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            db_timeout: DEFAULT_DB_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same code against whichever pool the store holds. `$pool` is bound to the
/// concrete `SqlitePool` or `PgPool`, so the body is type-checked for both backends.
macro_rules! with_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.db {
            $crate::store::Db::Sqlite($pool) => $body,
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

/// The application's data store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) db: Db,
    /// The verification lookup cache, invalidated by this store's own writes.
    pub(crate) key_cache: Arc<cache::KeyCache>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint was violated (e.g. an email already registered).
    #[error("a record with the same unique value already exists")]
    Conflict,
    #[error("database error: {0}")]
    Db(#[source] sqlx::Error),
    /// A shared service the answer depends on (Redis, for limits that fail closed) is
    /// unreachable: callers answer 503 and deny.
    #[error("{0}")]
    Unavailable(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict,
            _ => StoreError::Db(e),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Whether `e` means the database is unreachable, overloaded or busy (→ 503, retry later)
/// rather than a fault in Keyward (→ 500): no connection within the timeout, a connection
/// that broke or could not be made, the server shutting down or out of connection slots,
/// a SQLite database locked past the busy timeout.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => {
            let code = d.code().unwrap_or_default();
            // Postgres: class 08 (connection exception), 53 (insufficient resources),
            // 57P01–57P03 (admin shutdown, crash shutdown, cannot connect now).
            code.starts_with("08")
                || code.starts_with("53")
                || matches!(&*code, "57P01" | "57P02" | "57P03")
                // SQLite: SQLITE_BUSY (5) and SQLITE_LOCKED (6), with extended codes.
                || d.message().contains("database is locked")
                || d.message().contains("database table is locked")
        }
        _ => false,
    }
}

impl Store {
    /// Opens (and for SQLite, creates) the database named by `url`.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        Self::connect_with(url, StoreOptions::default()).await
    }

    /// [`Store::connect`] with explicit pool options.
    pub async fn connect_with(url: &str, options: StoreOptions) -> anyhow::Result<Self> {
        let db = if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                // WAL lets readers proceed while one writer writes; NORMAL sync is safe with WAL.
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                // SQLite does not enforce foreign keys unless asked, per connection.
                .foreign_keys(true)
                // Wait for a busy writer up to this long, then fail (→ 503) rather than hang.
                .busy_timeout(options.db_timeout);
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .acquire_timeout(options.db_timeout)
                .connect_with(opts)
                .await?;
            Db::Sqlite(pool)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(options.db_timeout)
                .connect(url)
                .await?;
            Db::Postgres(pool)
        } else {
            anyhow::bail!("unsupported database URL (use sqlite://… or postgres://…)");
        };
        Ok(Self {
            db,
            key_cache: Arc::new(cache::KeyCache::new()),
        })
    }

    /// Applies the embedded migrations of this backend.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        match &self.db {
            Db::Sqlite(pool) => {
                // One connection with foreign keys off, so a migration may rebuild a table
                // that others reference (SQLite's documented way to change a column,
                // e.g. 0018); the keys are checked before the connection goes back.
                let mut conn = pool.acquire().await?;
                sqlx::query("PRAGMA foreign_keys = OFF")
                    .execute(&mut *conn)
                    .await?;
                let ran = sqlx::migrate!("./migrations/sqlite").run(&mut *conn).await;
                let broken: Vec<(String, i64)> =
                    sqlx::query_as("SELECT \"table\", rowid FROM pragma_foreign_key_check")
                        .fetch_all(&mut *conn)
                        .await
                        .unwrap_or_default();
                sqlx::query("PRAGMA foreign_keys = ON")
                    .execute(&mut *conn)
                    .await?;
                ran?;
                if let Some((table, row)) = broken.first() {
                    anyhow::bail!(
                        "after the migrations, {} rows break a foreign key (first: {table} row {row})",
                        broken.len()
                    );
                }
            }
            Db::Postgres(pool) => sqlx::migrate!("./migrations/postgres").run(pool).await?,
        }
        // Rows written before the audit chain (migration 0017) get their hashes before
        // anything new is chained after them.
        let chained = self.chain_pending_audit().await?;
        if chained > 0 {
            tracing::info!(rows = chained, "chained existing audit events");
        }
        Ok(())
    }

    /// Writes a consistent copy of a live SQLite store to `path` with `VACUUM INTO` (one
    /// read transaction: writers carry on, and the copy holds every transaction committed
    /// before it started and none after), then checks the copy's integrity. The copy is
    /// written beside `path` and renamed into place, so `path` never holds half a backup.
    /// Postgres has its own tool for this (`pg_dump`, see README "Backups").
    pub async fn backup_to(&self, path: &std::path::Path) -> anyhow::Result<u64> {
        use anyhow::Context;
        let Db::Sqlite(pool) = &self.db else {
            anyhow::bail!(
                "`keyward backup` copies a SQLite database; for Postgres use pg_dump, e.g. \
                 `pg_dump --format=custom --file=keyward.dump \"$DATABASE_URL\"` (see README \"Backups\")"
            );
        };
        if path.exists() {
            anyhow::bail!("{} already exists; choose a new file name", path.display());
        }
        let name = path
            .file_name()
            .with_context(|| format!("{} is not a file name", path.display()))?
            .to_string_lossy();
        let partial = path.with_file_name(format!(".{name}.partial-{}", std::process::id()));
        let _ = std::fs::remove_file(&partial);
        let partial_str = partial
            .to_str()
            .with_context(|| format!("{} is not valid UTF-8", partial.display()))?;
        let copied = async {
            sqlx::query("VACUUM INTO $1")
                .bind(partial_str)
                .execute(pool)
                .await
                .with_context(|| format!("writing {}", partial.display()))?;
            let opts = SqliteConnectOptions::new()
                .filename(&partial)
                .read_only(true);
            let mut conn = sqlx::ConnectOptions::connect(&opts).await?;
            let check: String = sqlx::query_scalar("PRAGMA integrity_check")
                .fetch_one(&mut conn)
                .await?;
            sqlx::Connection::close(conn).await?;
            if check != "ok" {
                anyhow::bail!("the copy failed SQLite's integrity check: {check}");
            }
            std::fs::rename(&partial, path)
                .with_context(|| format!("moving the copy to {}", path.display()))?;
            Ok(std::fs::metadata(path)?.len())
        }
        .await;
        if copied.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        copied
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// A cheap round trip, for readiness checks.
    /// Claims a one-time token: true the first time, false ever after. A primary-key
    /// insert, so of several concurrent claims exactly one wins (on both backends). Claims
    /// older than a day are forgotten (form tokens live in sessions that expire sooner).
    pub async fn claim_once(&self, token: &str, now: i64) -> Result<bool> {
        use sha2::Digest;
        let hash = hex::encode(sha2::Sha256::digest(token.as_bytes()));
        with_pool!(self, |pool| {
            sqlx::query("DELETE FROM used_form_tokens WHERE used_at < $1")
                .bind(now - 86_400)
                .execute(pool)
                .await?;
            let claimed = sqlx::query(
                "INSERT INTO used_form_tokens (token_hash, used_at) VALUES ($1, $2) \
                 ON CONFLICT (token_hash) DO NOTHING",
            )
            .bind(&hash)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected();
            Ok(claimed == 1)
        })
    }

    pub async fn ping(&self) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    /// Guards against a lost or changed pepper: the first start records
    /// `check` (HMAC(pepper, fixed text)); later starts must present the same value, since
    /// with another pepper no stored key would ever verify again.
    pub async fn check_pepper(&self, check: &str) -> anyhow::Result<()> {
        let stored: Option<String> = with_pool!(self, |pool| {
            sqlx::query("INSERT INTO settings (name, value) VALUES ('pepper_check', $1) ON CONFLICT (name) DO NOTHING")
                .bind(check)
                .execute(pool)
                .await?;
            sqlx::query_scalar("SELECT value FROM settings WHERE name = 'pepper_check'")
                .fetch_optional(pool)
                .await?
        });
        if stored.as_deref() != Some(check) {
            anyhow::bail!(
                "this database's API keys were hashed with a different pepper: restore the secrets file \
                 (KEYWARD_SECRETS_FILE) or KEYWARD_KEY_PEPPER that was used before; starting with \
                 this one would make every existing key fail"
            );
        }
        Ok(())
    }

    /// Drops cached keys when another node changes them (Postgres `LISTEN keyward_keys`).
    /// On SQLite there is one node, and this node's writes invalidate directly. Runs until
    /// the pool closes; reconnects by itself and clears the cache when it may have missed
    /// notifications.
    pub fn spawn_invalidation_listener(&self) -> Option<tokio::task::JoinHandle<()>> {
        let Db::Postgres(pool) = &self.db else {
            return None;
        };
        let pool = pool.clone();
        let cache = self.key_cache.clone();
        Some(tokio::spawn(async move {
            loop {
                let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
                    Ok(l) => l,
                    Err(_) if pool.is_closed() => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "cache invalidation listener cannot connect; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                if let Err(e) = listener.listen(keys::NOTIFY_CHANNEL).await {
                    tracing::warn!(error = %e, "LISTEN failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                // Anything may have changed while we were not listening.
                cache.invalidate_all();
                loop {
                    match listener.try_recv().await {
                        Ok(Some(n)) => match hex::decode(n.payload()) {
                            Ok(hash) => cache.invalidate(&hash),
                            Err(_) => cache.invalidate_all(),
                        },
                        Ok(None) => {
                            // The connection dropped; notifications may be lost.
                            cache.invalidate_all();
                        }
                        Err(e) => {
                            if pool.is_closed() {
                                return;
                            }
                            tracing::warn!(error = %e, "cache invalidation listener failed; reconnecting");
                            cache.invalidate_all();
                            break;
                        }
                    }
                }
            }
        }))
    }

    /// A key already in the verification cache at `now` (the caller's clock, Unix
    /// seconds), without database access.
    pub fn cached_key(&self, hash: &[u8; 32], now: i64) -> Option<Arc<keys::ApiKey>> {
        self.key_cache.cached(hash, now)
    }

    pub fn is_closed(&self) -> bool {
        match &self.db {
            Db::Sqlite(p) => p.is_closed(),
            Db::Postgres(p) => p.is_closed(),
        }
    }

    pub async fn close(&self) {
        with_pool!(self, |pool| pool.close().await)
    }
}

/// A new random id (UUIDv7: unique, time-ordered, not guessable in its random part).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Escapes `%`, `_` and `\` for a `LIKE … ESCAPE '\'` pattern.
pub fn like_contains(needle: &str) -> String {
    let mut out = String::with_capacity(needle.len() + 2);
    out.push('%');
    for c in needle.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(super::like_contains("a%b_c\\"), "%a\\%b\\_c\\\\%");
        assert_eq!(super::like_contains("ABC"), "%abc%");
    }
}
