//! Sign-in hand-offs from the deploying team's app (`POST /api/v1/portal/sessions`): the
//! single-use links, and the accounts, organizations and memberships they provision when
//! opened.

use super::{NewAudit, Org, Result, Store, User, audit::insert_audit, new_id, with_pool};
use crate::audit::AuditAction;

/// What the team's app asked for; kept (with the token's SHA-256, never the token) until
/// the link is opened or expires.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PortalGrant {
    /// The operator credential's name: the namespace of `external_user_id`.
    pub issuer: String,
    pub external_user_id: String,
    pub email: String,
    pub name: String,
    pub org_external_id: String,
    pub org_name: String,
    pub role: String,
    pub return_url: Option<String>,
    /// The team's app vouches for a strong sign-in: the organization's two-step policy
    /// does not ask again.
    pub strong_auth: bool,
    pub created_at: i64,
    pub expires_at: i64,
}

/// An opened link: the account and organization as they are now.
#[derive(Debug, Clone)]
pub struct PortalArrival {
    pub grant: PortalGrant,
    pub user: User,
    pub org: Org,
}

/// Why an unused, unexpired link could not sign anyone in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortalRefusal {
    /// No such link, or it was used or has expired.
    Gone,
    /// The linked account was disabled by an operator.
    Disabled,
}

impl Store {
    /// Disables (or enables again) the account the team's app knows as
    /// (`issuer`, `external_user_id`), audited. Disabling ends its sessions everywhere (a
    /// new session epoch) and refuses its hand-offs, passkeys and every other way in.
    /// `None`: no such account; `Some(user)`: the account as it is now.
    pub async fn set_external_user_disabled(
        &self,
        issuer: &str,
        external_user_id: &str,
        disabled: bool,
        audit: NewAudit,
    ) -> Result<Option<User>> {
        let now = audit.occurred_at;
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let before = sqlx::query_as::<_, User>(
                "SELECT * FROM users WHERE external_issuer = $1 AND external_user_id = $2",
            )
            .bind(issuer)
            .bind(external_user_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(before) = before else {
                return Ok(None);
            };
            if before.disabled_at.is_some() == disabled {
                return Ok(Some(before));
            }
            let user = sqlx::query_as::<_, User>(
                "UPDATE users SET disabled_at = $2, \
                 session_epoch = session_epoch + CASE WHEN $3 THEN 1 ELSE 0 END \
                 WHERE id = $1 RETURNING *",
            )
            .bind(&before.id)
            .bind(disabled.then_some(now))
            .bind(disabled)
            .fetch_one(&mut *tx)
            .await?;
            let audit = audit
                .target("user", &user.id, &user.email)
                .details(serde_json::json!({
                    "external_user_id": format!("{issuer}:{external_user_id}"),
                }));
            insert_audit!(&mut *tx, &audit)?;
            tx.commit().await?;
            Ok(Some(user))
        })
    }

    /// Keeps a link's grant under the token's SHA-256, audited (`portal.link_issued`).
    pub async fn insert_portal_grant(
        &self,
        token_hash: &[u8],
        grant: &PortalGrant,
        audit: &NewAudit,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            // Expired links are of no use to anyone: sweep them on the way.
            sqlx::query("DELETE FROM portal_tokens WHERE expires_at < $1")
                .bind(grant.created_at - 24 * 3600)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO portal_tokens (token_hash, issuer, external_user_id, email, name, \
                 org_external_id, org_name, role, return_url, strong_auth, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(token_hash)
            .bind(&grant.issuer)
            .bind(&grant.external_user_id)
            .bind(&grant.email)
            .bind(&grant.name)
            .bind(&grant.org_external_id)
            .bind(&grant.org_name)
            .bind(&grant.role)
            .bind(&grant.return_url)
            .bind(grant.strong_auth)
            .bind(grant.created_at)
            .bind(grant.expires_at)
            .execute(&mut *tx)
            .await?;
            insert_audit!(&mut *tx, audit)?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// A link's grant if it is unused and unexpired, without using it, and the name of the
    /// organization it leads to (existing, or the one it would make).
    pub async fn peek_portal_grant(
        &self,
        token_hash: &[u8],
        now: i64,
    ) -> Result<Option<(PortalGrant, String)>> {
        with_pool!(self, |pool| {
            let grant = sqlx::query_as::<_, PortalGrant>(
                "SELECT issuer, external_user_id, email, name, org_external_id, org_name, role, \
                 return_url, strong_auth, created_at, expires_at FROM portal_tokens \
                 WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
            )
            .bind(token_hash)
            .bind(now)
            .fetch_optional(pool)
            .await?;
            let Some(grant) = grant else {
                return Ok(None);
            };
            let existing: Option<String> =
                sqlx::query_scalar("SELECT name FROM organizations WHERE external_id = $1")
                    .bind(&grant.org_external_id)
                    .fetch_optional(pool)
                    .await?;
            let org_name = existing.unwrap_or_else(|| grant.org_name.clone());
            Ok(Some((grant, org_name)))
        })
    }

    /// Uses a link (once: the first opener wins) and, in the same transaction, makes or
    /// updates the account linked by (issuer, external user id) — never found by email —
    /// the organization by its external id, and the membership with the grant's role.
    /// Each change is audited; `meta` stamps the rows with the browser's address.
    pub async fn open_portal_grant(
        &self,
        token_hash: &[u8],
        now: i64,
        meta: &crate::audit::ClientMeta,
    ) -> Result<std::result::Result<PortalArrival, PortalRefusal>> {
        let user_id = new_id();
        let org_id = new_id();
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let grant = sqlx::query_as::<_, PortalGrant>(
                "UPDATE portal_tokens SET used_at = $2 \
                 WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 \
                 RETURNING issuer, external_user_id, email, name, org_external_id, org_name, \
                 role, return_url, strong_auth, created_at, expires_at",
            )
            .bind(token_hash)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(grant) = grant else {
                return Ok(Err(PortalRefusal::Gone));
            };
            let label = format!("{}:{}", grant.issuer, grant.external_user_id);

            // The account: by (issuer, external id) only.
            let created = sqlx::query(
                "INSERT INTO users (id, email, name, created_at, email_verified_at, \
                 external_issuer, external_user_id, portal_return_url) \
                 VALUES ($1, $2, $3, $4, $4, $5, $6, $7) \
                 ON CONFLICT (external_issuer, external_user_id) DO NOTHING",
            )
            .bind(&user_id)
            .bind(&grant.email)
            .bind(&grant.name)
            .bind(now)
            .bind(&grant.issuer)
            .bind(&grant.external_user_id)
            .bind(&grant.return_url)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            let before = sqlx::query_as::<_, User>(
                "SELECT * FROM users WHERE external_issuer = $1 AND external_user_id = $2",
            )
            .bind(&grant.issuer)
            .bind(&grant.external_user_id)
            .fetch_one(&mut *tx)
            .await?;
            if before.disabled_at.is_some() {
                // The link is spent either way; nothing else changes.
                tx.commit().await?;
                return Ok(Err(PortalRefusal::Disabled));
            }
            let stamp = |action| {
                meta.stamp(NewAudit::new(action, now))
                    .actor(None, &format!("operator:{}", grant.issuer))
            };
            let user = if created {
                let audit = stamp(AuditAction::UserCreatedByPortal)
                    .target("user", &before.id, &before.email)
                    .details(serde_json::json!({ "external_user_id": label }));
                insert_audit!(&mut *tx, &audit)?;
                before
            } else {
                let user = sqlx::query_as::<_, User>(
                    "UPDATE users SET email = $2, name = $3, \
                     portal_return_url = COALESCE($4, portal_return_url), \
                     email_verified_at = COALESCE(email_verified_at, $5) \
                     WHERE id = $1 RETURNING *",
                )
                .bind(&before.id)
                .bind(&grant.email)
                .bind(&grant.name)
                .bind(&grant.return_url)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                if user.email != before.email || user.name != before.name {
                    let audit = stamp(AuditAction::UserUpdatedByPortal)
                        .target("user", &user.id, &user.email)
                        .details(serde_json::json!({
                            "external_user_id": label,
                            "email": { "from": before.email, "to": user.email },
                            "name": { "from": before.name, "to": user.name },
                        }));
                    insert_audit!(&mut *tx, &audit)?;
                }
                user
            };

            // The organization: by the team's id for it, made on first sight.
            let org_created = sqlx::query(
                "INSERT INTO organizations (id, name, personal, created_by, created_at, external_id) \
                 VALUES ($1, $2, FALSE, $3, $4, $5) ON CONFLICT (external_id) DO NOTHING",
            )
            .bind(&org_id)
            .bind(&grant.org_name)
            .bind(&user.id)
            .bind(now)
            .bind(&grant.org_external_id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            let org =
                sqlx::query_as::<_, Org>("SELECT * FROM organizations WHERE external_id = $1")
                    .bind(&grant.org_external_id)
                    .fetch_one(&mut *tx)
                    .await?;
            if org_created {
                let audit = stamp(AuditAction::OrgCreatedByOperator)
                    .org(&org.id)
                    .target("organization", &org.id, &org.name)
                    .details(serde_json::json!({ "external_id": org.external_id }));
                insert_audit!(&mut *tx, &audit)?;
            }

            // The membership, with the role the team's app gave — under the same rules as
            // a change in Members: an organization never loses its last owner (the first
            // person handed into a new organization becomes its owner, so someone can
            // manage it), and someone who may no longer invite has their open
            // invitations revoked.
            super::teams::lock_org!(self, &mut *tx, &org.id)?;
            let current: Option<(String,)> =
                sqlx::query_as("SELECT role FROM memberships WHERE org_id = $1 AND user_id = $2")
                    .bind(&org.id)
                    .bind(&user.id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let owners: i64 = sqlx::query_scalar(super::teams::OWNERS)
                .bind(&org.id)
                .fetch_one(&mut *tx)
                .await?;
            let role = match &current {
                None if owners == 0 => "owner".to_string(),
                Some((old,)) if old == "owner" && owners <= 1 => "owner".to_string(),
                _ => grant.role.clone(),
            };
            let change = match current {
                None => {
                    sqlx::query(
                        "INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(&org.id)
                    .bind(&user.id)
                    .bind(&role)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    Some((
                        AuditAction::MemberAdded,
                        serde_json::json!({ "role": role, "asked": grant.role }),
                    ))
                }
                Some((old,)) if old != role => {
                    sqlx::query(
                        "UPDATE memberships SET role = $3 WHERE org_id = $1 AND user_id = $2",
                    )
                    .bind(&org.id)
                    .bind(&user.id)
                    .bind(&role)
                    .execute(&mut *tx)
                    .await?;
                    if !matches!(role.as_str(), "owner" | "admin") {
                        sqlx::query(super::teams::REVOKE_INVITER)
                            .bind(&org.id)
                            .bind(&user.id)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                    }
                    Some((
                        AuditAction::MemberRoleChanged,
                        serde_json::json!({ "from": old, "to": role }),
                    ))
                }
                Some(_) => None,
            };
            if let Some((action, details)) = change {
                let audit = stamp(action)
                    .org(&org.id)
                    .target("user", &user.id, &user.email)
                    .details(details);
                insert_audit!(&mut *tx, &audit)?;
            }
            tx.commit().await?;
            Ok(Ok(PortalArrival { grant, user, org }))
        })
    }
}
