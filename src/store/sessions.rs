//! Dashboard sessions, in a table of our own (`sessions`, migration 0010).
//!
//! Why not tower-sessions' sqlx store, which this replaces: it keys its table by the raw
//! session id — the very value of the cookie — so anyone holding a database dump (or a
//! backup, or read access through an injection) could replay every live session; and its
//! rows are opaque blobs, so it cannot list or end one user's sessions. Here the cookie's id
//! is stored only as its SHA-256 (a 128-bit random id needs no slow hash: nothing can be
//! guessed from the digest), and each row carries the user, sign-in time, last activity, IP
//! and user agent, indexed by user, for Settings → Account → Sessions.
//!
//! The values a session holds are the ones the dashboard puts into it (see
//! `auth::session`), kept as JSON — the record's values only, never its id. The row's user
//! id, times, IP and user agent are read from those values whenever the record is written,
//! so there is one source of truth.
//!
//! Expiry: `expires_at` is tower-sessions' own idle expiry of the record, which it computes
//! from the system clock; records are compared with the same clock here. The sign-in's idle
//! and absolute limits are enforced with the injected clock by `CurrentUser`.

use async_trait::async_trait;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tower_sessions::{
    session::{Id, Record},
    session_store::{self, ExpiredDeletion, SessionStore},
};

use super::{NewAudit, Store, audit::insert_audit, with_pool};
use crate::clock::{Clock, SystemClock};

/// The session store for `SessionManagerLayer`, on the application's database.
#[derive(Debug, Clone)]
pub struct SessionBackend {
    store: Store,
}

impl Store {
    /// The session store on this database (its table comes with the migrations).
    pub async fn session_store(&self) -> anyhow::Result<SessionBackend> {
        Ok(SessionBackend {
            store: self.clone(),
        })
    }
}

/// What the sessions page shows of one session.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionInfo {
    pub id_hash: Vec<u8>,
    pub handle: String,
    pub created_at: i64,
    pub last_active: i64,
    pub ip: String,
    pub user_agent: String,
}

/// The stored digest of a session id (the cookie value).
pub fn session_id_hash(id: &Id) -> Vec<u8> {
    Sha256::digest(id.to_string().as_bytes()).to_vec()
}

/// The columns derived from a record's values.
struct Columns {
    user_id: Option<String>,
    created_at: Option<i64>,
    last_active: Option<i64>,
    ip: Option<String>,
    user_agent: Option<String>,
    data: String,
    expires_at: i64,
}

impl Columns {
    fn of(record: &Record) -> session_store::Result<Self> {
        use crate::auth::session::{AUTHENTICATED_AT, IP, SEEN_AT, USER_AGENT, USER_ID};
        let text = |k: &str| {
            record
                .data
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let int = |k: &str| record.data.get(k).and_then(Value::as_i64);
        Ok(Self {
            user_id: text(USER_ID),
            created_at: int(AUTHENTICATED_AT),
            last_active: int(SEEN_AT),
            ip: text(IP),
            user_agent: text(USER_AGENT),
            data: serde_json::to_string(&record.data)
                .map_err(|e| session_store::Error::Encode(e.to_string()))?,
            expires_at: record.expiry_date.unix_timestamp(),
        })
    }
}

fn backend(e: sqlx::Error) -> session_store::Error {
    let unavailable = super::is_unavailable(&e);
    let _ = FAILURE.try_with(|f| f.set(Some(unavailable)));
    session_store::Error::Backend(e.to_string())
}

tokio::task_local! {
    /// The last database failure of the session store in this request: `Some(true)` when
    /// the database was unavailable. tower-sessions answers a failed save with a bare 500
    /// and drops the error; [`observe_failures`] keeps the difference.
    static FAILURE: std::cell::Cell<Option<bool>>;
}

/// Runs `request` and says whether the session store failed during it, and how:
/// `Some(true)` the database was unavailable (→ 503), `Some(false)` another database error.
pub async fn observe_failures<F: std::future::Future>(request: F) -> (F::Output, Option<bool>) {
    FAILURE
        .scope(std::cell::Cell::new(None), async move {
            let out = request.await;
            (out, FAILURE.with(std::cell::Cell::get))
        })
        .await
}

/// Compared with tower-sessions' expiry dates, which come from the system clock.
fn wall_now() -> i64 {
    SystemClock.unix()
}

#[async_trait]
impl SessionStore for SessionBackend {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let c = Columns::of(record)?;
        let now = wall_now();
        loop {
            let handle = uuid::Uuid::new_v4().simple().to_string();
            let res = with_pool!(self.store, |pool| {
                sqlx::query(
                    "INSERT INTO sessions (id_hash, handle, user_id, data, created_at, last_active, \
                     expires_at, ip, user_agent) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(session_id_hash(&record.id))
                .bind(&handle)
                .bind(&c.user_id)
                .bind(&c.data)
                .bind(c.created_at.unwrap_or(now))
                .bind(c.last_active.unwrap_or(now))
                .bind(c.expires_at)
                .bind(c.ip.as_deref().unwrap_or(""))
                .bind(c.user_agent.as_deref().unwrap_or(""))
                .execute(pool)
                .await
                .map(|_| ())
            });
            match res {
                Ok(_) => return Ok(()),
                // An id (or handle) already taken: draw again.
                Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                    record.id = Id::default();
                }
                Err(e) => return Err(backend(e)),
            }
        }
    }

    /// Updates an existing record only. A session signed out elsewhere (its row deleted)
    /// while one of its requests was in flight must stay deleted: an upsert here would bring
    /// it back at the end of that request.
    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let c = Columns::of(record)?;
        with_pool!(self.store, |pool| {
            sqlx::query(
                "UPDATE sessions SET data = $2, user_id = $3, created_at = COALESCE($4, created_at), \
                 last_active = COALESCE($5, last_active), ip = COALESCE($6, ip), \
                 user_agent = COALESCE($7, user_agent), expires_at = $8 WHERE id_hash = $1",
            )
            .bind(session_id_hash(&record.id))
            .bind(&c.data)
            .bind(&c.user_id)
            .bind(c.created_at)
            .bind(c.last_active)
            .bind(&c.ip)
            .bind(&c.user_agent)
            .bind(c.expires_at)
            .execute(pool)
            .await
            .map_err(backend)?;
        });
        Ok(())
    }

    /// An unknown, forged or expired id finds nothing: tower-sessions then treats the
    /// request as anonymous and issues a fresh id if it needs one.
    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let row: Option<(String, i64)> = with_pool!(self.store, |pool| {
            sqlx::query_as(
                "SELECT data, expires_at FROM sessions WHERE id_hash = $1 AND expires_at > $2",
            )
            .bind(session_id_hash(id))
            .bind(wall_now())
            .fetch_optional(pool)
            .await
            .map_err(backend)?
        });
        let Some((data, expires_at)) = row else {
            return Ok(None);
        };
        Ok(Some(Record {
            id: *id,
            data: serde_json::from_str(&data)
                .map_err(|e| session_store::Error::Decode(e.to_string()))?,
            expiry_date: crate::clock::from_unix(expires_at),
        }))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        with_pool!(self.store, |pool| {
            sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
                .bind(session_id_hash(id))
                .execute(pool)
                .await
                .map_err(backend)?;
        });
        Ok(())
    }
}

#[async_trait]
impl ExpiredDeletion for SessionBackend {
    async fn delete_expired(&self) -> session_store::Result<()> {
        with_pool!(self.store, |pool| {
            sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
                .bind(wall_now())
                .execute(pool)
                .await
                .map_err(backend)?;
        });
        Ok(())
    }
}

impl Store {
    /// The user's signed-in sessions whose record has not expired, most recently active
    /// first. (Idle and absolute limits are applied by the caller, with its clock.)
    pub async fn user_sessions(&self, user_id: &str) -> super::Result<Vec<SessionInfo>> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, SessionInfo>(
                "SELECT id_hash, handle, created_at, last_active, ip, user_agent FROM sessions \
                 WHERE user_id = $1 AND expires_at > $2 ORDER BY last_active DESC, created_at DESC",
            )
            .bind(user_id)
            .bind(wall_now())
            .fetch_all(pool)
            .await?)
        })
    }

    /// Ends one of the user's sessions by its handle, audited. False when the user has no
    /// such session (another user's handle included).
    pub async fn revoke_session(
        &self,
        user_id: &str,
        handle: &str,
        audit: &NewAudit,
    ) -> super::Result<bool> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let n = sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND handle = $2")
                .bind(user_id)
                .bind(handle)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 0 {
                return Ok(false);
            }
            insert_audit!(&mut *tx, audit)?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Ends every session of the user except the one whose id hashes to `keep`, audited.
    /// Returns how many ended.
    pub async fn revoke_other_sessions(
        &self,
        user_id: &str,
        keep: &[u8],
        audit: &NewAudit,
    ) -> super::Result<u64> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let n = sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND id_hash <> $2")
                .bind(user_id)
                .bind(keep)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            insert_audit!(&mut *tx, audit)?;
            tx.commit().await?;
            Ok(n)
        })
    }
}
