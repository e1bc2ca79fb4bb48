//! Users and their sign-up.

use super::{
    NewAudit, Result, Store, audit::insert_audit, two_step::lock_and_has_factor, with_pool,
};
use crate::audit::AuditAction;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: String,
    pub password_hash: Option<String>,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
    pub failed_logins: i64,
    pub last_login_at: Option<i64>,
    /// Sessions started under another epoch are no longer valid.
    pub session_epoch: i64,
    /// Sign-in pauses until then after repeated failures (see `auth::throttle`).
    pub locked_until: Option<i64>,
    /// Failed sign-ins not yet written to the audit log.
    pub failures_unaudited: i64,
    /// When the last `auth.sign_in_failed` row was written.
    pub failure_audit_at: Option<i64>,
    /// When the email address was proved (a verification link, an invitation, a password
    /// reset, or a provider's `email_verified`); `None`: unverified.
    pub email_verified_at: Option<i64>,
    /// For an account handed in by the team's app (`POST /api/v1/portal/sessions`): the
    /// operator credential's name and the app's id for this person. Such an account is
    /// found by these, never by its email.
    #[sqlx(default)]
    pub external_issuer: Option<String>,
    #[sqlx(default)]
    pub external_user_id: Option<String>,
    /// Where "Back to <product>" leads, for an account handed in by the team's app (the
    /// latest hand-off's `return_url`).
    #[sqlx(default)]
    pub portal_return_url: Option<String>,
}

impl User {
    pub fn email_verified(&self) -> bool {
        self.email_verified_at.is_some()
    }
}

/// How the store counts failed sign-ins (the policy lives in `auth::throttle`).
#[derive(Debug, Clone, Copy)]
pub struct FailureRules {
    /// The pause after this many consecutive failures, in seconds.
    pub delay_secs: fn(i64) -> i64,
    /// Consecutive failures that disable the password until a reset.
    pub disable_after: i64,
    /// At most one failure row per account per this many seconds.
    pub audit_window_secs: i64,
}

/// A browser that signed in to an account before (device cookie), with its own count.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TrustedDevice {
    pub failed_logins: i64,
    pub locked_until: Option<i64>,
}

/// Whether sign-in may check a password now, and whose failure count a failure goes to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SignInGate {
    /// Check the password; a failure counts against the account.
    Account,
    /// Check the password; a failure counts against this trusted browser only.
    Device(Vec<u8>),
    /// Paused or disabled: refuse without checking (the caller still does the same work).
    Closed,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: String,
    pub name: String,
    pub password_hash: Option<String>,
    /// Set when the address is already proved (invitation, provider, operator).
    pub email_verified_at: Option<i64>,
}

/// Inserts a user, their personal organization (owner) and the `user.signed_up` audit row
/// through an open transaction; evaluates to `Result<User, sqlx::Error>`.
macro_rules! insert_user {
    ($exec:expr, $user_id:expr, $new:expr, $org_id:expr, $org_name:expr, $now:expr, $audit:expr) => {{
        let new: &$crate::store::NewUser = $new;
        let user_id: &str = $user_id;
        let org_id: &str = $org_id;
        let now: i64 = $now;
        async {
            let user = sqlx::query_as::<_, $crate::store::User>(
                "INSERT INTO users (id, email, name, password_hash, created_at, email_verified_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
            )
            .bind(user_id)
            .bind(&new.email)
            .bind(&new.name)
            .bind(&new.password_hash)
            .bind(now)
            .bind(new.email_verified_at)
            .fetch_one($exec)
            .await?;
            sqlx::query(
                "INSERT INTO organizations (id, name, personal, created_by, created_at) \
                 VALUES ($1, $2, TRUE, $3, $4)",
            )
            .bind(org_id)
            .bind($org_name)
            .bind(user_id)
            .bind(now)
            .execute($exec)
            .await?;
            sqlx::query(
                "INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, 'owner', $3)",
            )
            .bind(org_id)
            .bind(user_id)
            .bind(now)
            .execute($exec)
            .await?;
            let mut audit: $crate::store::NewAudit = $audit.org(org_id);
            audit.actor_id = Some(user_id.to_string());
            audit.actor_email = new.email.clone();
            audit.target_type = "user".into();
            audit.target_id = user_id.to_string();
            audit.target_name = new.email.clone();
            $crate::store::audit::insert_audit!($exec, &audit)?;
            Ok::<_, sqlx::Error>(user)
        }
        .await
    }};
}
pub(crate) use insert_user;

impl Store {
    /// Records a sign-in (the members page's "Last sign-in").
    pub async fn record_sign_in(&self, user_id: &str, now: i64) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE users SET last_login_at = $2 WHERE id = $1 \
                 AND (last_login_at IS NULL OR last_login_at < $2)",
            )
            .bind(user_id)
            .bind(now)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Creates a user with their personal organization (owner) and records `user.signed_up`,
    /// in one transaction. Fails with [`StoreError::Conflict`](super::StoreError::Conflict)
    /// when the email is taken.
    pub async fn create_user(
        &self,
        new: &NewUser,
        org_name: &str,
        now: i64,
        audit: NewAudit,
    ) -> Result<(User, String)> {
        let user_id = super::new_id();
        let org_id = super::new_id();
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let user = insert_user!(&mut *tx, &user_id, new, &org_id, org_name, now, audit)?;
            tx.commit().await?;
            Ok((user, org_id))
        })
    }

    /// Keyward's own account with this email (accounts handed in by the team's app share
    /// emails freely and are never found by one).
    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, User>(
                "SELECT * FROM users WHERE email = $1 AND external_issuer IS NULL",
            )
            .bind(email)
            .fetch_optional(pool)
            .await?)
        })
    }

    pub async fn user(&self, id: &str) -> Result<Option<User>> {
        with_pool!(self, |pool| {
            Ok(
                sqlx::query_as::<_, User>("SELECT * FROM users WHERE id = $1")
                    .bind(id)
                    .fetch_optional(pool)
                    .await?,
            )
        })
    }

    /// Whether a password may be checked for `user` now, from a browser holding the device
    /// token whose hash is `device` (if any). A trusted browser keeps its own count; one
    /// whose own count disabled it is treated like any other browser.
    pub async fn sign_in_gate(
        &self,
        user: &User,
        device: Option<&[u8]>,
        rules: FailureRules,
        now: i64,
    ) -> Result<SignInGate> {
        if let Some(hash) = device {
            let row = with_pool!(self, |pool| {
                sqlx::query_as::<_, TrustedDevice>(
                    "SELECT failed_logins, locked_until FROM trusted_devices \
                     WHERE token_hash = $1 AND user_id = $2",
                )
                .bind(hash)
                .bind(&user.id)
                .fetch_optional(pool)
                .await
            })?;
            if let Some(d) = row.filter(|d| d.failed_logins < rules.disable_after) {
                return Ok(if d.locked_until.is_some_and(|t| t > now) {
                    SignInGate::Closed
                } else {
                    SignInGate::Device(hash.to_vec())
                });
            }
        }
        let closed =
            user.failed_logins >= rules.disable_after || user.locked_until.is_some_and(|t| t > now);
        Ok(if closed {
            SignInGate::Closed
        } else {
            SignInGate::Account
        })
    }

    /// Records a successful sign-in: resets the failure count (unless the password was
    /// disabled: only a reset brings it back), writes any failures not yet audited, trusts
    /// this browser (`device`: the hash of its device token) for the account from now on,
    /// optionally stores an upgraded password hash, and writes the audit event.
    pub async fn login_succeeded(
        &self,
        user_id: &str,
        device: &[u8],
        rehash: Option<&str>,
        rules: FailureRules,
        audit: &NewAudit,
    ) -> Result<()> {
        let now = audit.occurred_at;
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            // The first write takes the row (and on SQLite the database) for this
            // transaction and says how many failures are not audited yet.
            let (pending, email): (i64, String) = sqlx::query_as(
                "UPDATE users SET last_login_at = $2 WHERE id = $1 \
                 RETURNING failures_unaudited, email",
            )
            .bind(user_id)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE users SET failed_logins = CASE WHEN failed_logins >= $3 THEN failed_logins ELSE 0 END, \
                 locked_until = NULL, failures_unaudited = 0, \
                 password_hash = COALESCE($2, password_hash) WHERE id = $1",
            )
            .bind(user_id)
            .bind(rehash)
            .bind(rules.disable_after)
            .execute(&mut *tx)
            .await?;
            if pending > 0 {
                let mut failed = NewAudit::new(AuditAction::AuthSignInFailed, now)
                    .actor(Some(user_id), &email)
                    .target("user", user_id, &email)
                    .details(serde_json::json!({ "count": pending }));
                failed.ip = audit.ip.clone();
                failed.user_agent = audit.user_agent.clone();
                insert_audit!(&mut *tx, &failed)?;
            }
            sqlx::query(
                "INSERT INTO trusted_devices (token_hash, user_id, created_at, last_used_at) \
                 VALUES ($1, $2, $3, $3) ON CONFLICT (token_hash, user_id) DO UPDATE \
                 SET last_used_at = $3, failed_logins = 0, locked_until = NULL",
            )
            .bind(device)
            .bind(user_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            // Device tokens are new at every sign-in: forget those unused for a year.
            sqlx::query("DELETE FROM trusted_devices WHERE user_id = $1 AND last_used_at < $2")
                .bind(user_id)
                .bind(now - 366 * 86_400)
                .execute(&mut *tx)
                .await?;
            insert_audit!(&mut *tx, audit)?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Records a failed sign-in for a known account: counts it against the account, or
    /// against the trusted browser it came from (`gate`), sets the pause that follows, and
    /// writes at most one `auth.sign_in_failed` row per account per audit window carrying
    /// the number of failures since the last one, plus `auth.password_disabled` when the
    /// account's count reaches the limit. `audit` carries the source and actor fields.
    pub async fn login_failed(
        &self,
        user_id: &str,
        gate: &SignInGate,
        rules: FailureRules,
        audit: &NewAudit,
    ) -> Result<()> {
        let now = audit.occurred_at;
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let mut account_failures = None;
            match gate {
                SignInGate::Closed => return Ok(()),
                SignInGate::Device(hash) => {
                    let n: i64 = sqlx::query_scalar(
                        "UPDATE trusted_devices SET failed_logins = failed_logins + 1 \
                         WHERE token_hash = $1 AND user_id = $2 RETURNING failed_logins",
                    )
                    .bind(hash)
                    .bind(user_id)
                    .fetch_one(&mut *tx)
                    .await?;
                    sqlx::query(
                        "UPDATE trusted_devices SET locked_until = $3 \
                         WHERE token_hash = $1 AND user_id = $2",
                    )
                    .bind(hash)
                    .bind(user_id)
                    .bind(now + (rules.delay_secs)(n))
                    .execute(&mut *tx)
                    .await?;
                }
                SignInGate::Account => {
                    let n: i64 = sqlx::query_scalar(
                        "UPDATE users SET failed_logins = failed_logins + 1 WHERE id = $1 \
                         RETURNING failed_logins",
                    )
                    .bind(user_id)
                    .fetch_one(&mut *tx)
                    .await?;
                    sqlx::query("UPDATE users SET locked_until = $2 WHERE id = $1")
                        .bind(user_id)
                        .bind(now + (rules.delay_secs)(n))
                        .execute(&mut *tx)
                        .await?;
                    account_failures = Some(n);
                }
            }
            let (pending, last_row): (i64, Option<i64>) = sqlx::query_as(
                "UPDATE users SET failures_unaudited = failures_unaudited + 1 WHERE id = $1 \
                 RETURNING failures_unaudited, failure_audit_at",
            )
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?;
            let consecutive = account_failures;
            if last_row.is_none_or(|t| now - t >= rules.audit_window_secs) {
                let row = audit.clone().details(serde_json::json!({
                    "count": pending,
                    "consecutive": consecutive,
                    "trusted_device": matches!(gate, SignInGate::Device(_)),
                }));
                insert_audit!(&mut *tx, &row)?;
                sqlx::query(
                    "UPDATE users SET failures_unaudited = 0, failure_audit_at = $2 WHERE id = $1",
                )
                .bind(user_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            if account_failures == Some(rules.disable_after) {
                let mut disabled = audit.clone().details(serde_json::json!({
                    "consecutive": rules.disable_after,
                }));
                disabled.action = AuditAction::AuthPasswordDisabled.as_str().into();
                insert_audit!(&mut *tx, &disabled)?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Sets a new password hash; with `keep_session`, every other session of the account
    /// ends (the epoch moves on and their rows go). Audited. Returns the account's session
    /// epoch, or `None` (nothing written) when `needs_two_step` (a password shorter than
    /// the single-factor minimum) but the account has no second factor any more.
    pub async fn change_password(
        &self,
        user_id: &str,
        password_hash: &str,
        needs_two_step: bool,
        keep_session: Option<&[u8]>,
        audit: &NewAudit,
    ) -> Result<Option<i64>> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            if needs_two_step && !lock_and_has_factor!(tx, user_id)? {
                return Ok(None);
            }
            let epoch: i64 = sqlx::query_scalar(
                "UPDATE users SET password_hash = $2, password_needs_two_step = $4, \
                 session_epoch = session_epoch + (CASE WHEN $3 THEN 1 ELSE 0 END) \
                 WHERE id = $1 RETURNING session_epoch",
            )
            .bind(user_id)
            .bind(password_hash)
            .bind(keep_session.is_some())
            .bind(needs_two_step)
            .fetch_one(&mut *tx)
            .await?;
            if let Some(keep) = keep_session {
                sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND id_hash <> $2")
                    .bind(user_id)
                    .bind(keep)
                    .execute(&mut *tx)
                    .await?;
            }
            insert_audit!(&mut *tx, audit)?;
            tx.commit().await?;
            Ok(Some(epoch))
        })
    }

    // ------------------------------------------------------------ email verification

    /// Stores a new verification token for the user's current address; older unused
    /// tokens stop working.
    pub async fn create_email_verification(
        &self,
        user: &User,
        token_hash: &[u8],
        now: i64,
        expires_at: i64,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "UPDATE email_verifications SET used_at = $2 WHERE user_id = $1 AND used_at IS NULL",
            )
            .bind(&user.id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO email_verifications (token_hash, user_id, email, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(token_hash)
            .bind(&user.id)
            .bind(&user.email)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Whether a verification link was sent to the user since `since`.
    pub async fn recent_email_verification(&self, user_id: &str, since: i64) -> Result<bool> {
        with_pool!(self, |pool| {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM email_verifications WHERE user_id = $1 AND created_at > $2",
            )
            .bind(user_id)
            .bind(since)
            .fetch_one(pool)
            .await?;
            Ok(n > 0)
        })
    }

    /// The address a usable (unused, unexpired) verification token was sent to.
    pub async fn email_verification(&self, token_hash: &[u8], now: i64) -> Result<Option<String>> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_scalar(
                "SELECT v.email FROM email_verifications v JOIN users u ON u.id = v.user_id \
                 WHERE v.token_hash = $1 AND v.used_at IS NULL AND v.expires_at > $2 AND u.email = v.email",
            )
            .bind(token_hash)
            .bind(now)
            .fetch_optional(pool)
            .await?)
        })
    }

    /// Uses a verification token: marks the address verified, audited, in one transaction.
    /// Returns the user, or `None` when the token is not usable (unknown, used, expired,
    /// superseded, or for an address the account no longer has).
    pub async fn verify_email(
        &self,
        token_hash: &[u8],
        now: i64,
        audit: NewAudit,
    ) -> Result<Option<User>> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let found: Option<(String, String)> = sqlx::query_as(
                "UPDATE email_verifications SET used_at = $2 WHERE token_hash = $1 \
                 AND used_at IS NULL AND expires_at > $2 RETURNING user_id, email",
            )
            .bind(token_hash)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((user_id, email)) = found else {
                return Ok(None);
            };
            let user = sqlx::query_as::<_, User>(
                "UPDATE users SET email_verified_at = COALESCE(email_verified_at, $3) \
                 WHERE id = $1 AND email = $2 RETURNING *",
            )
            .bind(&user_id)
            .bind(&email)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(user) = user else {
                return Ok(None);
            };
            let audit =
                audit
                    .actor(Some(&user.id), &user.email)
                    .target("user", &user.id, &user.email);
            insert_audit!(&mut *tx, &audit)?;
            tx.commit().await?;
            Ok(Some(user))
        })
    }

    /// Whether an email with this subject went to `recipient` since `since` (throttles
    /// notices that anyone can trigger).
    pub async fn recent_email(&self, recipient: &str, subject: &str, since: i64) -> Result<bool> {
        with_pool!(self, |pool| {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM outbox WHERE recipient = $1 AND subject = $2 AND created_at > $3",
            )
            .bind(recipient)
            .bind(subject)
            .bind(since)
            .fetch_one(pool)
            .await?;
            Ok(n > 0)
        })
    }
}
