//! Organizations and memberships.

use super::{NewAudit, Result, Store, audit::insert_audit, with_pool};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Org {
    pub id: String,
    pub name: String,
    pub personal: bool,
    pub created_by: Option<String>,
    pub created_at: i64,
    /// Limits pre-filled for new keys.
    pub default_rate_limit: Option<i64>,
    pub default_rate_window_secs: i64,
    pub default_daily_quota: Option<i64>,
    /// Whether API keys with `keys:write` may create and roll keys (off by default).
    pub api_keys_can_create_keys: bool,
    /// Members who sign in with a password must have a second factor.
    pub require_two_step: bool,
    /// Key policy: every key needs a description.
    pub key_require_description: bool,
    /// Key policy: the expiry the create form starts on (`7d`, `30d`, `90d`, `1y`, `never`).
    pub key_default_expiry: String,
    /// Key policy: the maximum lifetime, and when keys beyond it stop verifying.
    #[sqlx(flatten)]
    pub lifetime: crate::keys::policy::LifetimePolicy,
    /// The deploying team's id for this customer (unique per deployment), returned by
    /// every verification door so the team's API needs no lookup table.
    #[sqlx(default)]
    pub external_id: Option<String>,
}

/// The longest external id an operator may give an organization.
pub const EXTERNAL_ID_MAX: usize = 200;

/// Checks an external id (an organization's or a person's in the team's app): 1 to
/// [`EXTERNAL_ID_MAX`] printable ASCII characters without surrounding spaces, so it
/// travels unchanged in a header (`X-Keyward-Org-External-Id`). The message names `what`.
pub fn check_external_id(what: &str, id: &str) -> std::result::Result<(), String> {
    if id.is_empty() {
        return Err(format!("{what} must not be empty."));
    }
    if id.len() > EXTERNAL_ID_MAX {
        return Err(format!(
            "{what} must be at most {EXTERNAL_ID_MAX} characters."
        ));
    }
    if id.trim() != id || !id.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(format!(
            "{what} must be printable ASCII (letters, digits, punctuation, inner spaces)."
        ));
    }
    Ok(())
}

/// Settings → Key policy.
#[derive(Debug, Clone)]
pub struct KeyPolicy {
    pub require_description: bool,
    /// The expiry the create form starts on.
    pub default_expiry: String,
    pub lifetime: crate::keys::policy::LifetimePolicy,
}

/// A user's membership, with the organization's name.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Membership {
    pub org_id: String,
    pub org_name: String,
    pub personal: bool,
    pub role: String,
    /// The organization requires two-step verification of password sign-ins.
    pub require_two_step: bool,
}

const MEMBERSHIP_SELECT: &str = "SELECT m.org_id, o.name AS org_name, o.personal, m.role, \
     o.require_two_step \
     FROM memberships m JOIN organizations o ON o.id = m.org_id";

impl Store {
    /// Saves the key policy, audited. The lifetime policy is joined onto every key the
    /// verifier caches, so every node's cache is dropped when this commits (on Postgres
    /// through the same NOTIFY channel as key writes).
    pub async fn set_key_policy(
        &self,
        org_id: &str,
        policy: &KeyPolicy,
        audit: &NewAudit,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "UPDATE organizations SET key_require_description = $2, key_default_expiry = $3, \
                 key_max_lifetime_days = $4, key_lifetime_enforced_at = $5 WHERE id = $1",
            )
            .bind(org_id)
            .bind(policy.require_description)
            .bind(&policy.default_expiry)
            .bind(policy.lifetime.max_lifetime_days)
            .bind(policy.lifetime.lifetime_enforced_at)
            .execute(&mut *tx)
            .await?;
            insert_audit!(&mut *tx, audit)?;
            if self.backend() == "postgres" {
                // Not a hash: every listener drops its whole cache.
                sqlx::query("SELECT pg_notify($1, 'all')")
                    .bind(super::keys::NOTIFY_CHANNEL)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            self.key_cache.invalidate_all();
            Ok(())
        })
    }

    /// The organization the team knows by `external_id`.
    pub async fn org_by_external_id(&self, external_id: &str) -> Result<Option<Org>> {
        with_pool!(self, |pool| {
            Ok(
                sqlx::query_as::<_, Org>("SELECT * FROM organizations WHERE external_id = $1")
                    .bind(external_id)
                    .fetch_optional(pool)
                    .await?,
            )
        })
    }

    /// Sets (or with `None` clears) an organization's external id, audited. `Ok(false)`
    /// when there is no such organization; [`StoreError::Conflict`](super::StoreError)
    /// when another organization has the id. Every verifier's cache holds the id with
    /// each key, so every node's cache is dropped when this commits.
    pub async fn set_org_external_id(
        &self,
        org_id: &str,
        external_id: Option<&str>,
        audit: &NewAudit,
    ) -> Result<bool> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let changed = sqlx::query("UPDATE organizations SET external_id = $2 WHERE id = $1")
                .bind(org_id)
                .bind(external_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if changed == 0 {
                return Ok(false);
            }
            insert_audit!(&mut *tx, audit)?;
            if self.backend() == "postgres" {
                sqlx::query("SELECT pg_notify($1, 'all')")
                    .bind(super::keys::NOTIFY_CHANNEL)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            self.key_cache.invalidate_all();
            Ok(true)
        })
    }

    /// Creates an organization with `user_id` as its owner, audited, in one transaction.
    pub async fn create_org(
        &self,
        user_id: &str,
        name: &str,
        now: i64,
        audit: NewAudit,
    ) -> Result<Org> {
        let org_id = super::new_id();
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let org = sqlx::query_as::<_, Org>(
                "INSERT INTO organizations (id, name, personal, created_by, created_at) \
                 VALUES ($1, $2, FALSE, $3, $4) RETURNING *",
            )
            .bind(&org_id)
            .bind(name)
            .bind(user_id)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, 'owner', $3)",
            )
            .bind(&org_id)
            .bind(user_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let audit = audit.org(&org_id).target("organization", &org_id, name);
            insert_audit!(&mut *tx, &audit)?;
            tx.commit().await?;
            Ok(org)
        })
    }

    /// Adds a member (or changes their role), audited. Used by the operator CLI.
    pub async fn add_member(
        &self,
        org_id: &str,
        user_id: &str,
        role: &str,
        audit: NewAudit,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (org_id, user_id) DO UPDATE SET role = excluded.role",
            )
            .bind(org_id)
            .bind(user_id)
            .bind(role)
            .bind(audit.occurred_at)
            .execute(&mut *tx)
            .await?;
            insert_audit!(&mut *tx, &audit.org(org_id))?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Sets the limits pre-filled for new keys, audited.
    pub async fn set_org_defaults(
        &self,
        org_id: &str,
        rate_limit: Option<i64>,
        rate_window_secs: i64,
        daily_quota: Option<i64>,
        audit: &NewAudit,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "UPDATE organizations SET default_rate_limit = $2, default_rate_window_secs = $3, \
                 default_daily_quota = $4 WHERE id = $1",
            )
            .bind(org_id)
            .bind(rate_limit)
            .bind(rate_window_secs)
            .bind(daily_quota)
            .execute(&mut *tx)
            .await?;
            insert_audit!(&mut *tx, audit)?;
            tx.commit().await?;
            Ok(())
        })
    }

    pub async fn org(&self, id: &str) -> Result<Option<Org>> {
        with_pool!(self, |pool| {
            Ok(
                sqlx::query_as::<_, Org>("SELECT * FROM organizations WHERE id = $1")
                    .bind(id)
                    .fetch_optional(pool)
                    .await?,
            )
        })
    }

    /// The organizations a user belongs to: personal first, then by name.
    pub async fn memberships(&self, user_id: &str) -> Result<Vec<Membership>> {
        let sql = format!(
            "{MEMBERSHIP_SELECT} WHERE m.user_id = $1 ORDER BY o.personal DESC, o.name, o.id"
        );
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, Membership>(&sql)
                .bind(user_id)
                .fetch_all(pool)
                .await?)
        })
    }

    pub async fn membership(&self, user_id: &str, org_id: &str) -> Result<Option<Membership>> {
        let sql = format!("{MEMBERSHIP_SELECT} WHERE m.user_id = $1 AND m.org_id = $2");
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, Membership>(&sql)
                .bind(user_id)
                .bind(org_id)
                .fetch_optional(pool)
                .await?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::check_external_id;

    #[test]
    fn external_ids_travel_in_headers() {
        assert!(check_external_id("x", "cus_123").is_ok());
        assert!(check_external_id("x", "Acme Corp #7").is_ok());
        assert!(check_external_id("x", "").is_err());
        assert!(check_external_id("x", " lead").is_err());
        assert!(check_external_id("x", "caf\u{e9}").is_err());
        assert!(check_external_id("x", "a\nb").is_err());
        assert!(check_external_id("x", &"a".repeat(201)).is_err());
        assert!(check_external_id("x", &"a".repeat(200)).is_ok());
    }
}
