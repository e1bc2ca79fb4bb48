//! Members, invitations, password resets and the email outbox.

use super::{
    NewAudit, Result, Store, audit::insert_audit, two_step::lock_and_has_factor, with_pool,
};

/// What using a password reset link did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordReset {
    Done,
    /// Used, expired or replaced by a newer link: nothing changed.
    LinkUnusable,
    /// The new password is shorter than the single-factor minimum and the account has no
    /// second factor (any more): nothing changed.
    NeedsTwoStep,
}

/// A member of an organization, as the members page shows them.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Member {
    pub user_id: String,
    pub email: String,
    pub name: String,
    pub role: String,
    pub joined_at: i64,
    pub last_login_at: Option<i64>,
    pub has_password: bool,
    /// The account was handed in by the team's app (signs in through it).
    #[sqlx(default)]
    pub handed_in: bool,
    pub has_sso: bool,
    pub email_verified: bool,
    /// Has a second factor (authenticator app or passkey).
    pub two_step: bool,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Invitation {
    pub id: String,
    pub org_id: String,
    pub email: String,
    pub role: String,
    pub invited_by: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub accepted_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxEmail {
    pub id: i64,
    pub created_at: i64,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub status: String,
    pub error: String,
}

/// Why a membership change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    Done,
    NotMember,
    LastOwner,
}

pub(super) const OWNERS: &str =
    "SELECT COUNT(*) FROM memberships WHERE org_id = $1 AND role = 'owner'";

const INVITATION_SELECT: &str = "SELECT id, org_id, email, role, invited_by, created_at, \
     expires_at, accepted_at, revoked_at FROM invitations";

/// On Postgres, locks the organization row for the rest of the transaction, so that two
/// concurrent changes cannot both pass the "at least one owner" check. (SQLite runs one
/// writer at a time.)
macro_rules! lock_org {
    ($store:expr, $exec:expr, $org:expr) => {{
        let r: Result<(), sqlx::Error> = if $store.backend() == "postgres" {
            sqlx::query("SELECT id FROM organizations WHERE id = $1 FOR UPDATE")
                .bind($org)
                .execute($exec)
                .await
                .map(|_| ())
        } else {
            Ok(())
        };
        r
    }};
}
pub(super) use lock_org;

/// Open invitations sent by someone who may no longer invite are revoked with them.
pub(super) const REVOKE_INVITER: &str = "UPDATE invitations SET revoked_at = $3 WHERE org_id = $1 AND invited_by = $2 \
     AND accepted_at IS NULL AND revoked_at IS NULL";

impl Store {
    pub async fn members(&self, org_id: &str) -> Result<Vec<Member>> {
        let sql = format!(
            "SELECT u.id AS user_id, u.email, u.name, m.role, m.created_at AS joined_at, \
             u.last_login_at, (u.password_hash IS NOT NULL) AS has_password, \
             (u.external_issuer IS NOT NULL) AS handed_in, \
             EXISTS (SELECT 1 FROM sso_identities i WHERE i.user_id = u.id) AS has_sso, \
             (u.email_verified_at IS NOT NULL) AS email_verified, \
             {} AS two_step \
             FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.org_id = $1 \
             ORDER BY CASE m.role WHEN 'owner' THEN 0 WHEN 'admin' THEN 1 WHEN 'developer' THEN 2 ELSE 3 END, u.email",
            super::two_step::has_factor_sql("u.id")
        );
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, Member>(&sql)
                .bind(org_id)
                .fetch_all(pool)
                .await?)
        })
    }

    /// Changes a member's role; refuses to leave the organization without an owner.
    pub async fn set_role(
        &self,
        org_id: &str,
        user_id: &str,
        role: &str,
        audit: &NewAudit,
    ) -> Result<MemberChange> {
        self.change_member(org_id, user_id, Some(role), audit).await
    }

    /// Removes a member (their keys stay with the organization); never the last owner.
    pub async fn remove_member(
        &self,
        org_id: &str,
        user_id: &str,
        audit: &NewAudit,
    ) -> Result<MemberChange> {
        self.change_member(org_id, user_id, None, audit).await
    }

    /// Gives a member a new role (`Some`) or removes them (`None`), audited, keeping at
    /// least one owner. Someone who can no longer invite loses their open invitations.
    async fn change_member(
        &self,
        org_id: &str,
        user_id: &str,
        new_role: Option<&str>,
        audit: &NewAudit,
    ) -> Result<MemberChange> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            lock_org!(self, &mut *tx, org_id)?;
            let current: Option<String> = sqlx::query_scalar(
                "SELECT role FROM memberships WHERE org_id = $1 AND user_id = $2",
            )
            .bind(org_id)
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(current) = current else {
                return Ok(MemberChange::NotMember);
            };
            if current == "owner" && new_role != Some("owner") {
                let owners: i64 = sqlx::query_scalar(OWNERS)
                    .bind(org_id)
                    .fetch_one(&mut *tx)
                    .await?;
                if owners <= 1 {
                    return Ok(MemberChange::LastOwner);
                }
            }
            match new_role {
                Some(role) => sqlx::query(
                    "UPDATE memberships SET role = $3 WHERE org_id = $1 AND user_id = $2",
                )
                .bind(org_id)
                .bind(user_id)
                .bind(role)
                .execute(&mut *tx)
                .await
                .map(|_| ()),
                None => sqlx::query("DELETE FROM memberships WHERE org_id = $1 AND user_id = $2")
                    .bind(org_id)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await
                    .map(|_| ()),
            }?;
            if !matches!(new_role, Some("owner" | "admin")) {
                sqlx::query(REVOKE_INVITER)
                    .bind(org_id)
                    .bind(user_id)
                    .bind(audit.occurred_at)
                    .execute(&mut *tx)
                    .await?;
            }
            insert_audit!(&mut *tx, audit)?;
            tx.commit().await?;
            Ok(MemberChange::Done)
        })
    }

    /// Makes `to` an owner and `from` an admin, in one transaction.
    pub async fn transfer_ownership(
        &self,
        org_id: &str,
        from: &str,
        to: &str,
        audit: &NewAudit,
    ) -> Result<MemberChange> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            lock_org!(self, &mut *tx, org_id)?;
            let n = sqlx::query(
                "UPDATE memberships SET role = 'owner' WHERE org_id = $1 AND user_id = $2",
            )
            .bind(org_id)
            .bind(to)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 || from == to {
                return Ok(MemberChange::NotMember);
            }
            sqlx::query("UPDATE memberships SET role = 'admin' WHERE org_id = $1 AND user_id = $2 AND role = 'owner'")
                .bind(org_id)
                .bind(from)
                .execute(&mut *tx)
                .await?;
            insert_audit!(&mut *tx, audit)?;
            tx.commit().await?;
            Ok(MemberChange::Done)
        })
    }

    // ---------------------------------------------------------------- invitations

    pub async fn create_invitation(
        &self,
        inv: &Invitation,
        token_hash: &[u8],
        audit: &NewAudit,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO invitations (id, org_id, email, role, token_hash, invited_by, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&inv.id)
            .bind(&inv.org_id)
            .bind(&inv.email)
            .bind(&inv.role)
            .bind(token_hash)
            .bind(&inv.invited_by)
            .bind(inv.created_at)
            .bind(inv.expires_at)
            .execute(&mut *tx)
            .await?;
            insert_audit!(&mut *tx, audit)?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Invitations not accepted or revoked, newest first (expired ones included, marked by
    /// the caller).
    pub async fn open_invitations(&self, org_id: &str) -> Result<Vec<Invitation>> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, Invitation>(
                &format!(
                "{INVITATION_SELECT} WHERE org_id = $1 AND accepted_at IS NULL AND revoked_at IS NULL \
                 ORDER BY created_at DESC"
            ),
            )
            .bind(org_id)
            .fetch_all(pool)
            .await?)
        })
    }

    pub async fn invitation_by_token(&self, token_hash: &[u8]) -> Result<Option<Invitation>> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, Invitation>(&format!(
                "{INVITATION_SELECT} WHERE token_hash = $1"
            ))
            .bind(token_hash)
            .fetch_optional(pool)
            .await?)
        })
    }

    pub async fn invitation(&self, org_id: &str, id: &str) -> Result<Option<Invitation>> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, Invitation>(&format!(
                "{INVITATION_SELECT} WHERE org_id = $1 AND id = $2"
            ))
            .bind(org_id)
            .bind(id)
            .fetch_optional(pool)
            .await?)
        })
    }

    /// Revokes an open invitation; false if it was not open.
    pub async fn revoke_invitation(
        &self,
        org_id: &str,
        id: &str,
        now: i64,
        audit: &NewAudit,
    ) -> Result<bool> {
        self.change_open_invitation(org_id, id, None, now, audit)
            .await
    }

    /// Gives an open invitation a new token and expiry (the old link stops working).
    pub async fn reissue_invitation(
        &self,
        org_id: &str,
        id: &str,
        token_hash: &[u8],
        expires_at: i64,
        audit: &NewAudit,
    ) -> Result<bool> {
        self.change_open_invitation(org_id, id, Some(token_hash), expires_at, audit)
            .await
    }

    /// Reissues (`Some(new token hash)`, valid until `at`) or revokes (`None`, at `at`) an
    /// invitation that is still open, audited; false if it was not open.
    async fn change_open_invitation(
        &self,
        org_id: &str,
        id: &str,
        new_token: Option<&[u8]>,
        at: i64,
        audit: &NewAudit,
    ) -> Result<bool> {
        let sql = match new_token {
            Some(_) => {
                "UPDATE invitations SET token_hash = $3, expires_at = $4 WHERE org_id = $1 AND id = $2 \
                 AND accepted_at IS NULL AND revoked_at IS NULL"
            }
            // `$3 IS NULL` only uses the (absent) token, so that both statements take the
            // same four parameters.
            None => {
                "UPDATE invitations SET revoked_at = $4 WHERE org_id = $1 AND id = $2 \
                 AND accepted_at IS NULL AND revoked_at IS NULL AND $3 IS NULL"
            }
        };
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(sql)
                .bind(org_id)
                .bind(id)
                .bind(new_token)
                .bind(at)
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

    /// Accepts an invitation for `user_id`: single use, only while open and unexpired. An
    /// existing member keeps their role. Returns false when the invitation is not usable.
    pub async fn accept_invitation(
        &self,
        inv: &Invitation,
        user_id: &str,
        now: i64,
        audit: &NewAudit,
    ) -> Result<bool> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(
                "UPDATE invitations SET accepted_at = $2, accepted_by = $3 WHERE id = $1 \
                 AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > $2",
            )
            .bind(&inv.id)
            .bind(now)
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (org_id, user_id) DO NOTHING",
            )
            .bind(&inv.org_id)
            .bind(user_id)
            .bind(&inv.role)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            // The invitation link was sent to this address: using it proves the address.
            sqlx::query(
                "UPDATE users SET email_verified_at = COALESCE(email_verified_at, $3) \
                 WHERE id = $1 AND email = $2",
            )
            .bind(user_id)
            .bind(&inv.email)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            insert_audit!(&mut *tx, audit)?;
            tx.commit().await?;
            Ok(true)
        })
    }

    // ------------------------------------------------------------ password resets

    /// Stores a new reset token for a user; any older unused token stops working.
    pub async fn create_password_reset(
        &self,
        user_id: &str,
        token_hash: &[u8],
        now: i64,
        expires_at: i64,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "UPDATE password_resets SET used_at = $2 WHERE user_id = $1 AND used_at IS NULL",
            )
            .bind(user_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query("INSERT INTO password_resets (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
                .bind(token_hash)
                .bind(user_id)
                .bind(now)
                .bind(expires_at)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Whether a reset was requested for the user since `since`.
    pub async fn recent_password_reset(&self, user_id: &str, since: i64) -> Result<bool> {
        with_pool!(self, |pool| {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM password_resets WHERE user_id = $1 AND created_at > $2",
            )
            .bind(user_id)
            .bind(since)
            .fetch_one(pool)
            .await?;
            Ok(n > 0)
        })
    }

    /// The user a usable (unused, unexpired) reset token belongs to.
    pub async fn password_reset_user(&self, token_hash: &[u8], now: i64) -> Result<Option<String>> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_scalar(
                "SELECT user_id FROM password_resets WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
            )
            .bind(token_hash)
            .bind(now)
            .fetch_optional(pool)
            .await?)
        })
    }

    /// Uses a reset token: sets the new password hash and signs the user out everywhere
    /// (new session epoch), audited, in one transaction. With `needs_two_step` (a password
    /// shorter than the single-factor minimum), only while the account has a second factor.
    pub async fn complete_password_reset(
        &self,
        token_hash: &[u8],
        user_id: &str,
        password_hash: &str,
        needs_two_step: bool,
        now: i64,
        audit: &NewAudit,
    ) -> Result<PasswordReset> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            if needs_two_step && !lock_and_has_factor!(tx, user_id)? {
                return Ok(PasswordReset::NeedsTwoStep);
            }
            let n = sqlx::query(
                "UPDATE password_resets SET used_at = $3 WHERE token_hash = $1 AND user_id = $2 \
                 AND used_at IS NULL AND expires_at > $3",
            )
            .bind(token_hash)
            .bind(user_id)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                return Ok(PasswordReset::LinkUnusable);
            }
            sqlx::query(
                "UPDATE users SET password_hash = $2, password_needs_two_step = $4, session_epoch = session_epoch + 1, failed_logins = 0, \
                 locked_until = NULL, email_verified_at = COALESCE(email_verified_at, $3) WHERE id = $1",
            )
            .bind(user_id)
            .bind(password_hash)
            .bind(now)
            .bind(needs_two_step)
            .execute(&mut *tx)
            .await?;
            // Every session of the account ends (the new epoch would refuse them; their rows
            // go too, so the sessions page and the table hold nothing stale).
            sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            // The reset proved the email address. Identities linked through an
            // organization's connection are dropped (their owner links them again): an
            // account someone else created through SSO for this address must not keep a
            // way in after its real owner takes it over.
            sqlx::query(
                "DELETE FROM sso_identities WHERE user_id = $1 AND source LIKE 'connection:%'",
            )
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
            insert_audit!(&mut *tx, audit)?;
            tx.commit().await?;
            Ok(PasswordReset::Done)
        })
    }

    // ---------------------------------------------------------------------- outbox

    pub async fn record_email(&self, e: &OutboxEmail) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO outbox (created_at, recipient, subject, body, status, error) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(e.created_at)
            .bind(&e.recipient)
            .bind(&e.subject)
            .bind(&e.body)
            .bind(&e.status)
            .bind(&e.error)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    pub async fn outbox(&self, limit: i64) -> Result<Vec<OutboxEmail>> {
        with_pool!(self, |pool| {
            Ok(
                sqlx::query_as::<_, OutboxEmail>("SELECT * FROM outbox ORDER BY id DESC LIMIT $1")
                    .bind(limit)
                    .fetch_all(pool)
                    .await?,
            )
        })
    }

    /// Kept bodies not yet sealed (not starting with `sealed_prefix`).
    pub async fn unsealed_outbox(&self, sealed_prefix: &str) -> Result<Vec<OutboxEmail>> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, OutboxEmail>(
                "SELECT * FROM outbox WHERE body <> '' AND substr(body, 1, 3) <> $1",
            )
            .bind(sealed_prefix)
            .fetch_all(pool)
            .await?)
        })
    }

    pub async fn set_outbox_body(&self, id: i64, body: &str) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE outbox SET body = $2 WHERE id = $1")
                .bind(id)
                .bind(body)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    // ------------------------------------------------------- keys of former members

    /// Gives keys of the organization a new creator (bulk, each audited).
    pub async fn reassign_keys(
        &self,
        org_id: &str,
        key_ids: &[String],
        to_user: &str,
        audits: &[NewAudit],
    ) -> Result<u64> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let mut changed = 0;
            for (id, audit) in key_ids.iter().zip(audits) {
                let n = sqlx::query(
                    "UPDATE api_keys SET created_by = $3 WHERE org_id = $1 AND id = $2",
                )
                .bind(org_id)
                .bind(id)
                .bind(to_user)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n == 1 {
                    insert_audit!(&mut *tx, audit)?;
                    changed += 1;
                }
            }
            tx.commit().await?;
            Ok(changed)
        })
    }
}
