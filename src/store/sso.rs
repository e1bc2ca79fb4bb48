//! Single sign-on: organizations' OpenID Connect connections, the domains they own, and
//! the (issuer, subject) identities linked to accounts.

use super::{NewAudit, Result, Store, StoreError, audit::insert_audit, users::User, with_pool};

/// An organization's OpenID Connect connection. `client_secret` is sealed
/// ([`crate::secretbox`]); it is opened only to talk to the provider.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SsoConnection {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    pub default_role: String,
    pub require_sso: bool,
    pub created_by: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The email domains this connection owns, sorted.
    #[sqlx(skip)]
    pub domains: Vec<String>,
}

/// What an admin saves; `client_secret: None` keeps the stored one.
#[derive(Debug, Clone)]
pub struct SsoConnectionInput {
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub default_role: String,
    pub require_sso: bool,
    pub domains: Vec<String>,
}

/// An (issuer, subject) pair linked to an account.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SsoIdentity {
    pub issuer: String,
    pub subject: String,
    pub user_id: String,
    /// `connection:<id>` or `provider:<id>`.
    pub source: String,
    pub source_name: String,
    pub email: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// The organization a first SSO sign-in's new account joins: with the role of an open
/// invitation for its address (consumed in the same transaction), else `default_role`.
#[derive(Debug, Clone)]
pub struct SsoJoin {
    pub org_id: String,
    pub default_role: String,
    pub invitation: Option<(super::Invitation, NewAudit)>,
    /// `member.joined`; its details get the role actually granted.
    pub audit: NewAudit,
}

const CONNECTION_COLUMNS: &str = "id, org_id, name, issuer, client_id, client_secret, default_role, \
     require_sso, created_by, created_at, updated_at";

/// Inserts an identity row through any executor.
macro_rules! insert_identity {
    ($exec:expr, $id:expr) => {{
        let id: &SsoIdentity = $id;
        sqlx::query(
            "INSERT INTO sso_identities (issuer, subject, user_id, source, source_name, email, \
             created_at, last_used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&id.issuer)
        .bind(&id.subject)
        .bind(&id.user_id)
        .bind(&id.source)
        .bind(&id.source_name)
        .bind(&id.email)
        .bind(id.created_at)
        .bind(id.last_used_at)
        .execute($exec)
        .await
    }};
}

impl Store {
    /// Fills in each connection's domains.
    async fn with_domains(&self, mut conns: Vec<SsoConnection>) -> Result<Vec<SsoConnection>> {
        for c in &mut conns {
            c.domains = with_pool!(self, |pool| {
                sqlx::query_scalar::<_, String>(
                    "SELECT domain FROM sso_domains WHERE connection_id = $1 ORDER BY domain",
                )
                .bind(&c.id)
                .fetch_all(pool)
                .await?
            });
        }
        Ok(conns)
    }

    async fn one_connection(
        &self,
        sql: &str,
        a: &str,
        b: Option<&str>,
    ) -> Result<Option<SsoConnection>> {
        let row = with_pool!(self, |pool| {
            let mut q = sqlx::query_as::<_, SsoConnection>(sql).bind(a);
            if let Some(b) = b {
                q = q.bind(b);
            }
            q.fetch_optional(pool).await?
        });
        Ok(self.with_domains(row.into_iter().collect()).await?.pop())
    }

    /// The organization's connections, oldest first.
    pub async fn sso_connections(&self, org_id: &str) -> Result<Vec<SsoConnection>> {
        let rows = with_pool!(self, |pool| {
            sqlx::query_as::<_, SsoConnection>(&format!(
                "SELECT {CONNECTION_COLUMNS} FROM sso_connections WHERE org_id = $1 ORDER BY created_at, id"
            ))
            .bind(org_id)
            .fetch_all(pool)
            .await?
        });
        self.with_domains(rows).await
    }

    /// One connection of an organization (another organization's id is `None`).
    pub async fn sso_connection(&self, org_id: &str, id: &str) -> Result<Option<SsoConnection>> {
        let sql = format!(
            "SELECT {CONNECTION_COLUMNS} FROM sso_connections WHERE org_id = $1 AND id = $2"
        );
        self.one_connection(&sql, org_id, Some(id)).await
    }

    /// A connection by id alone: only for a sign-in transaction that already names it.
    pub async fn sso_connection_by_id(&self, id: &str) -> Result<Option<SsoConnection>> {
        let sql = format!("SELECT {CONNECTION_COLUMNS} FROM sso_connections WHERE id = $1");
        self.one_connection(&sql, id, None).await
    }

    /// The connection that owns an email domain.
    pub async fn sso_connection_for_domain(&self, domain: &str) -> Result<Option<SsoConnection>> {
        let sql = format!(
            "SELECT {CONNECTION_COLUMNS} FROM sso_connections WHERE id = \
             (SELECT connection_id FROM sso_domains WHERE domain = $1)"
        );
        self.one_connection(&sql, domain, None).await
    }

    /// Which of `domains` another connection already owns.
    pub async fn sso_domains_taken(
        &self,
        domains: &[String],
        except_connection: Option<&str>,
    ) -> Result<Vec<String>> {
        let mut taken = Vec::new();
        for d in domains {
            let owner: Option<String> = with_pool!(self, |pool| {
                sqlx::query_scalar("SELECT connection_id FROM sso_domains WHERE domain = $1")
                    .bind(d)
                    .fetch_optional(pool)
                    .await?
            });
            if owner.is_some_and(|o| Some(o.as_str()) != except_connection) {
                taken.push(d.clone());
            }
        }
        Ok(taken)
    }

    /// Creates (`update: false`) or updates a connection with its domains, audited. A
    /// domain owned by another connection fails with [`StoreError::Conflict`]; updating
    /// another organization's connection id changes nothing and returns false.
    #[allow(clippy::too_many_arguments)]
    pub async fn save_sso_connection(
        &self,
        org_id: &str,
        conn_id: &str,
        update: bool,
        input: &SsoConnectionInput,
        sealed_secret: Option<&str>,
        actor: Option<&str>,
        audit: NewAudit,
    ) -> Result<bool> {
        let now = audit.occurred_at;
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let n = if !update {
                let Some(secret) = sealed_secret else {
                    return Err(StoreError::Db(sqlx::Error::Protocol(
                        "a new SSO connection needs a client secret".into(),
                    )));
                };
                sqlx::query(
                    "INSERT INTO sso_connections (id, org_id, name, issuer, client_id, client_secret, \
                     default_role, require_sso, created_by, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
                )
                .bind(conn_id)
                .bind(org_id)
                .bind(&input.name)
                .bind(&input.issuer)
                .bind(&input.client_id)
                .bind(secret)
                .bind(&input.default_role)
                .bind(input.require_sso)
                .bind(actor)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected()
            } else {
                // A new issuer means new identities: drop those linked through the old one.
                sqlx::query(
                    "DELETE FROM sso_identities WHERE source = $1 AND EXISTS \
                     (SELECT 1 FROM sso_connections WHERE id = $2 AND org_id = $3 AND issuer <> $4)",
                )
                .bind(format!("connection:{conn_id}"))
                .bind(conn_id)
                .bind(org_id)
                .bind(&input.issuer)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE sso_connections SET name = $3, issuer = $4, client_id = $5, \
                     client_secret = COALESCE($6, client_secret), default_role = $7, require_sso = $8, \
                     updated_at = $9 WHERE id = $1 AND org_id = $2",
                )
                .bind(conn_id)
                .bind(org_id)
                .bind(&input.name)
                .bind(&input.issuer)
                .bind(&input.client_id)
                .bind(sealed_secret)
                .bind(&input.default_role)
                .bind(input.require_sso)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected()
            };
            if n == 0 {
                return Ok(false);
            }
            sqlx::query("DELETE FROM sso_domains WHERE connection_id = $1")
                .bind(conn_id)
                .execute(&mut *tx)
                .await?;
            for d in &input.domains {
                sqlx::query("INSERT INTO sso_domains (domain, connection_id) VALUES ($1, $2)")
                    .bind(d)
                    .bind(conn_id)
                    .execute(&mut *tx)
                    .await?;
            }
            let audit = audit
                .org(org_id)
                .target("sso_connection", conn_id, &input.name);
            insert_audit!(&mut *tx, &audit)?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Deletes a connection and its domains, audited. Linked identities stay (they are
    /// keyed by issuer and subject, and work again if the connection is added back).
    pub async fn delete_sso_connection(
        &self,
        org_id: &str,
        id: &str,
        audit: &NewAudit,
    ) -> Result<bool> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "DELETE FROM sso_domains WHERE connection_id = \
                 (SELECT id FROM sso_connections WHERE id = $1 AND org_id = $2)",
            )
            .bind(id)
            .bind(org_id)
            .execute(&mut *tx)
            .await?;
            // Identities that came through this connection go with it: the issuer may later
            // be added by someone else.
            sqlx::query(
                "DELETE FROM sso_identities WHERE source = $1 AND EXISTS \
                 (SELECT 1 FROM sso_connections WHERE id = $2 AND org_id = $3)",
            )
            .bind(format!("connection:{id}"))
            .bind(id)
            .bind(org_id)
            .execute(&mut *tx)
            .await?;
            let n = sqlx::query("DELETE FROM sso_connections WHERE id = $1 AND org_id = $2")
                .bind(id)
                .bind(org_id)
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

    /// The connection that makes SSO mandatory for this member: one of their organizations
    /// owns their email's domain and requires SSO for it.
    pub async fn sso_required_for(
        &self,
        user_id: &str,
        email: &str,
    ) -> Result<Option<SsoConnection>> {
        let Some((_, domain)) = email.rsplit_once('@') else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT {CONNECTION_COLUMNS} FROM sso_connections c WHERE c.require_sso = TRUE \
             AND c.id = (SELECT connection_id FROM sso_domains WHERE domain = $1) \
             AND EXISTS (SELECT 1 FROM memberships m WHERE m.org_id = c.org_id AND m.user_id = $2)"
        );
        self.one_connection(&sql, domain, Some(user_id)).await
    }

    pub async fn sso_identity(&self, issuer: &str, subject: &str) -> Result<Option<SsoIdentity>> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, SsoIdentity>(
                "SELECT * FROM sso_identities WHERE issuer = $1 AND subject = $2",
            )
            .bind(issuer)
            .bind(subject)
            .fetch_optional(pool)
            .await?)
        })
    }

    pub async fn sso_identities(&self, user_id: &str) -> Result<Vec<SsoIdentity>> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, SsoIdentity>(
                "SELECT * FROM sso_identities WHERE user_id = $1 ORDER BY created_at, issuer, subject",
            )
            .bind(user_id)
            .fetch_all(pool)
            .await?)
        })
    }

    /// Links an identity to an existing account, audited. Fails with
    /// [`StoreError::Conflict`] when the identity is linked already.
    pub async fn link_sso_identity(&self, identity: &SsoIdentity, audit: &NewAudit) -> Result<()> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            insert_identity!(&mut *tx, identity)?;
            insert_audit!(&mut *tx, audit)?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Unlinks one of the user's identities, audited. False when it is not theirs.
    pub async fn unlink_sso_identity(
        &self,
        user_id: &str,
        issuer: &str,
        subject: &str,
        audit: &NewAudit,
    ) -> Result<bool> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(
                "DELETE FROM sso_identities WHERE user_id = $1 AND issuer = $2 AND subject = $3",
            )
            .bind(user_id)
            .bind(issuer)
            .bind(subject)
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

    /// Records an SSO sign-in: the identity's and the account's last use, and the audit row.
    pub async fn sso_signed_in(&self, identity: &SsoIdentity, audit: &NewAudit) -> Result<()> {
        let now = audit.occurred_at;
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "UPDATE sso_identities SET last_used_at = $3 WHERE issuer = $1 AND subject = $2",
            )
            .bind(&identity.issuer)
            .bind(&identity.subject)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            // Not a password success: the password's failure count stays as it is.
            sqlx::query("UPDATE users SET last_login_at = $2 WHERE id = $1")
                .bind(&identity.user_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            insert_audit!(&mut *tx, audit)?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// A first SSO sign-in with no account yet: creates the account (no password) with its
    /// personal organization, links the identity, and joins the connection's organization
    /// when given — all in one transaction. `identity.user_id` is ignored.
    pub async fn create_sso_user(
        &self,
        email: &str,
        name: &str,
        personal_org_name: &str,
        identity: &SsoIdentity,
        join: Option<&SsoJoin>,
        signup_audit: NewAudit,
    ) -> Result<User> {
        let now = signup_audit.occurred_at;
        let new = super::NewUser {
            email: email.to_string(),
            name: name.to_string(),
            password_hash: None,
            // Only a provider's verified email creates an account.
            email_verified_at: Some(now),
        };
        let user_id = super::new_id();
        let org_id = super::new_id();
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let user = super::users::insert_user!(
                &mut *tx,
                &user_id,
                &new,
                &org_id,
                personal_org_name,
                now,
                signup_audit
            )?;
            let identity = SsoIdentity {
                user_id: user.id.clone(),
                ..identity.clone()
            };
            insert_identity!(&mut *tx, &identity)?;
            if let Some(j) = join {
                let mut role = j.default_role.clone();
                if let Some((inv, inv_audit)) = &j.invitation {
                    let used = sqlx::query(
                        "UPDATE invitations SET accepted_at = $2, accepted_by = $3 WHERE id = $1 \
                         AND org_id = $4 AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > $2",
                    )
                    .bind(&inv.id)
                    .bind(now)
                    .bind(&user.id)
                    .bind(&j.org_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if used == 1 {
                        role = inv.role.clone();
                        let mut a = inv_audit.clone();
                        a.actor_id = Some(user.id.clone());
                        a.actor_email = user.email.clone();
                        insert_audit!(&mut *tx, &a)?;
                    }
                }
                sqlx::query(
                    "INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(&j.org_id)
                .bind(&user.id)
                .bind(&role)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let mut audit = j.audit.clone().org(&j.org_id);
                let mut details: serde_json::Value =
                    serde_json::from_str(&audit.details).unwrap_or_else(|_| serde_json::json!({}));
                details["role"] = serde_json::Value::from(role.as_str());
                audit.details = details.to_string();
                audit.actor_id = Some(user.id.clone());
                audit.target_id = user.id.clone();
                insert_audit!(&mut *tx, &audit)?;
            }
            tx.commit().await?;
            Ok(user)
        })
    }
}
