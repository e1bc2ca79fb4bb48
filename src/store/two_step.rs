//! Second factors: the TOTP authenticator (sealed secret, last accepted step), recovery
//! codes (hashed, single use), passkeys (WebAuthn credentials) and the organizations'
//! "require two-step verification" policy.

use super::{NewAudit, Result, Store, audit::insert_audit, with_pool};

/// SQL: whether the account `user_col` has a second factor (an authenticator app or a
/// passkey). Recovery codes come with a factor and are not one by themselves.
pub(crate) fn has_factor_sql(user_col: &str) -> String {
    format!(
        "(EXISTS (SELECT 1 FROM totp_factors t WHERE t.user_id = {user_col}) \
         OR EXISTS (SELECT 1 FROM passkeys p WHERE p.user_id = {user_col}))"
    )
}

/// Locks the account's row until the end of the transaction `$tx` (so that a password
/// change and the removal of a factor, each checking the other, cannot interleave) and
/// tells whether the account has a second factor. A no-op `UPDATE` rather than `SELECT …
/// FOR UPDATE`, which SQLite lacks.
macro_rules! lock_and_has_factor {
    ($tx:expr, $user_id:expr) => {{
        async {
            sqlx::query(
                "UPDATE users SET password_needs_two_step = password_needs_two_step WHERE id = $1",
            )
            .bind($user_id)
            .execute(&mut *$tx)
            .await?;
            let sql = format!("SELECT {}", $crate::store::two_step::has_factor_sql("$1"));
            sqlx::query_scalar::<_, bool>(&sql)
                .bind($user_id)
                .fetch_one(&mut *$tx)
                .await
        }
        .await
    }};
}
pub(crate) use lock_and_has_factor;

/// What removing a second factor did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactorRemoval {
    Removed,
    /// The account has no such factor.
    NotFound,
    /// Nothing removed: it is the last factor and the password is shorter than the
    /// single-factor minimum (allowed only with two-step verification).
    PasswordTooShort,
}

/// Deletes with `$delete` (bound to `$user_id` and `$id`) in a transaction that first
/// locks the account; keeps the recovery codes only while a factor is left; refuses to
/// remove the last factor of an account whose password needs one. Audited.
macro_rules! remove_factor {
    ($pool:expr, $user_id:expr, $id:expr, $delete:expr, $audit:expr) => {{
        let mut tx = $pool.begin().await?;
        lock_and_has_factor!(tx, $user_id)?;
        let done = sqlx::query($delete)
            .bind($user_id)
            .bind($id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            >= 1;
        if !done {
            return Ok(FactorRemoval::NotFound);
        }
        let sql = format!(
            "SELECT password_needs_two_step AND NOT {} FROM users WHERE id = $1",
            has_factor_sql("$1")
        );
        let stranded: bool = sqlx::query_scalar(&sql)
            .bind($user_id)
            .fetch_one(&mut *tx)
            .await?;
        if stranded {
            // Dropping `tx` rolls the deletion back.
            return Ok(FactorRemoval::PasswordTooShort);
        }
        drop_codes_without_factor!(tx, $user_id)?;
        insert_audit!(&mut *tx, $audit)?;
        tx.commit().await?;
        Ok(FactorRemoval::Removed)
    }};
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TotpFactor {
    pub user_id: String,
    /// Sealed with the `totp-secret` box, bound to the user id.
    pub secret: String,
    pub last_step: i64,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PasskeyRow {
    pub id: String,
    pub user_id: String,
    pub credential_id: String,
    pub name: String,
    /// The webauthn-rs `Passkey` as JSON (public key and signature counter).
    pub passkey: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// Inserts fresh recovery codes (hashes) for a user after deleting the old ones.
macro_rules! replace_codes {
    ($exec:expr, $user_id:expr, $hashes:expr, $now:expr) => {{
        async {
            sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
                .bind($user_id)
                .execute(&mut *$exec)
                .await?;
            for h in $hashes {
                sqlx::query(
                    "INSERT INTO recovery_codes (user_id, code_hash, created_at) VALUES ($1, $2, $3)",
                )
                .bind($user_id)
                .bind(h)
                .bind($now)
                .execute(&mut *$exec)
                .await?;
            }
            Ok::<(), sqlx::Error>(())
        }
        .await
    }};
}

/// Without any factor left, recovery codes mean nothing: they go with the last factor.
macro_rules! drop_codes_without_factor {
    ($exec:expr, $user_id:expr) => {{
        let sql = format!(
            "DELETE FROM recovery_codes WHERE user_id = $1 AND NOT {}",
            has_factor_sql("$1")
        );
        sqlx::query(&sql).bind($user_id).execute(&mut *$exec).await
    }};
}

impl Store {
    /// Whether the account has a second factor.
    pub async fn has_second_factor(&self, user_id: &str) -> Result<bool> {
        let sql = format!("SELECT {}", has_factor_sql("$1"));
        with_pool!(self, |pool| {
            Ok(sqlx::query_scalar::<_, bool>(&sql)
                .bind(user_id)
                .fetch_one(pool)
                .await?)
        })
    }

    pub async fn totp_factor(&self, user_id: &str) -> Result<Option<TotpFactor>> {
        with_pool!(self, |pool| {
            Ok(
                sqlx::query_as::<_, TotpFactor>("SELECT * FROM totp_factors WHERE user_id = $1")
                    .bind(user_id)
                    .fetch_optional(pool)
                    .await?,
            )
        })
    }

    /// Enrols an authenticator app whose first code was accepted at `step`; with
    /// `recovery` (the first factor of the account), its recovery codes too. Audited.
    /// False when the account already has one.
    pub async fn enable_totp(
        &self,
        user_id: &str,
        sealed: &str,
        step: i64,
        recovery: Option<&[String]>,
        audit: &NewAudit,
    ) -> Result<bool> {
        let now = audit.occurred_at;
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let done = sqlx::query(
                "INSERT INTO totp_factors (user_id, secret, last_step, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (user_id) DO NOTHING",
            )
            .bind(user_id)
            .bind(sealed)
            .bind(step)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !done {
                return Ok(false);
            }
            if let Some(hashes) = recovery {
                replace_codes!(tx, user_id, hashes, now)?;
            }
            insert_audit!(&mut *tx, audit)?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Accepts a code's time step once: only a step later than every step accepted before
    /// (a replayed code, or an older one, is refused). Atomic across nodes.
    pub async fn accept_totp_step(&self, user_id: &str, step: i64, now: i64) -> Result<bool> {
        with_pool!(self, |pool| {
            Ok(sqlx::query(
                "UPDATE totp_factors SET last_step = $2, last_used_at = $3 \
                 WHERE user_id = $1 AND last_step < $2",
            )
            .bind(user_id)
            .bind(step)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
                == 1)
        })
    }

    /// Removes the authenticator app (and the recovery codes if no factor is left), unless
    /// the password needs a second factor. Audited.
    pub async fn remove_totp(&self, user_id: &str, audit: &NewAudit) -> Result<FactorRemoval> {
        with_pool!(self, |pool| {
            remove_factor!(
                pool,
                user_id,
                user_id,
                "DELETE FROM totp_factors WHERE user_id = $1 AND user_id = $2",
                audit
            )
        })
    }

    /// The recovery codes not used yet.
    pub async fn recovery_codes_left(&self, user_id: &str) -> Result<i64> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
            )
            .bind(user_id)
            .fetch_one(pool)
            .await?)
        })
    }

    /// Uses a recovery code once: the number left afterwards, or `None` when no unused
    /// code has this hash. The audit event (with the count left) is written with it.
    pub async fn use_recovery_code(
        &self,
        user_id: &str,
        hash: &str,
        audit: NewAudit,
    ) -> Result<Option<i64>> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let used = sqlx::query(
                "UPDATE recovery_codes SET used_at = $3 \
                 WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL",
            )
            .bind(user_id)
            .bind(hash)
            .bind(audit.occurred_at)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !used {
                return Ok(None);
            }
            let left: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
            )
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?;
            let audit = audit.details(serde_json::json!({ "remaining": left }));
            insert_audit!(&mut *tx, &audit)?;
            tx.commit().await?;
            Ok(Some(left))
        })
    }

    /// Replaces every recovery code of the account (the old ones stop working). Audited.
    pub async fn regenerate_recovery_codes(
        &self,
        user_id: &str,
        hashes: &[String],
        audit: &NewAudit,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            replace_codes!(tx, user_id, hashes, audit.occurred_at)?;
            insert_audit!(&mut *tx, audit)?;
            tx.commit().await?;
            Ok(())
        })
    }

    // ------------------------------------------------------------------ passkeys

    pub async fn passkeys(&self, user_id: &str) -> Result<Vec<PasskeyRow>> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, PasskeyRow>(
                "SELECT * FROM passkeys WHERE user_id = $1 ORDER BY created_at, id",
            )
            .bind(user_id)
            .fetch_all(pool)
            .await?)
        })
    }

    pub async fn passkey_by_credential(&self, credential_id: &str) -> Result<Option<PasskeyRow>> {
        with_pool!(self, |pool| {
            Ok(
                sqlx::query_as::<_, PasskeyRow>("SELECT * FROM passkeys WHERE credential_id = $1")
                    .bind(credential_id)
                    .fetch_optional(pool)
                    .await?,
            )
        })
    }

    /// Registers a passkey; with `recovery` (the first factor of the account), its
    /// recovery codes too. Audited. Fails with `Conflict` for a credential already known.
    pub async fn add_passkey(
        &self,
        row: &PasskeyRow,
        recovery: Option<&[String]>,
        audit: &NewAudit,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO passkeys (id, user_id, credential_id, name, passkey, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&row.id)
            .bind(&row.user_id)
            .bind(&row.credential_id)
            .bind(&row.name)
            .bind(&row.passkey)
            .bind(row.created_at)
            .execute(&mut *tx)
            .await?;
            if let Some(hashes) = recovery {
                replace_codes!(tx, &row.user_id, hashes, row.created_at)?;
            }
            insert_audit!(&mut *tx, audit)?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Records a use of a passkey (its updated counter, when it was used).
    pub async fn passkey_used(&self, id: &str, passkey: &str, now: i64) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE passkeys SET passkey = $2, last_used_at = $3 WHERE id = $1")
                .bind(id)
                .bind(passkey)
                .bind(now)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Removes one of the user's passkeys (and the recovery codes if no factor is left),
    /// unless it is the last factor of an account whose password needs one. Audited.
    pub async fn remove_passkey(
        &self,
        user_id: &str,
        id: &str,
        audit: &NewAudit,
    ) -> Result<FactorRemoval> {
        with_pool!(self, |pool| {
            remove_factor!(
                pool,
                user_id,
                id,
                "DELETE FROM passkeys WHERE user_id = $1 AND id = $2",
                audit
            )
        })
    }

    /// The account's WebAuthn user handle, created on first use (random, so that it says
    /// nothing about the account).
    pub async fn webauthn_handle(&self, user_id: &str) -> Result<String> {
        let fresh = uuid::Uuid::new_v4().to_string();
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO webauthn_users (user_id, handle) VALUES ($1, $2) \
                 ON CONFLICT (user_id) DO NOTHING",
            )
            .bind(user_id)
            .bind(&fresh)
            .execute(pool)
            .await?;
            Ok(sqlx::query_scalar::<_, String>(
                "SELECT handle FROM webauthn_users WHERE user_id = $1",
            )
            .bind(user_id)
            .fetch_one(pool)
            .await?)
        })
    }

    pub async fn user_by_webauthn_handle(&self, handle: &str) -> Result<Option<String>> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_scalar::<_, String>(
                "SELECT user_id FROM webauthn_users WHERE handle = $1",
            )
            .bind(handle)
            .fetch_optional(pool)
            .await?)
        })
    }

    // ------------------------------------------------------------------ policy

    /// Sets the organization's "require two-step verification" policy. Audited.
    pub async fn set_require_two_step(
        &self,
        org_id: &str,
        required: bool,
        audit: &NewAudit,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE organizations SET require_two_step = $2 WHERE id = $1")
                .bind(org_id)
                .bind(required)
                .execute(&mut *tx)
                .await?;
            insert_audit!(&mut *tx, audit)?;
            tx.commit().await?;
            Ok(())
        })
    }
}
