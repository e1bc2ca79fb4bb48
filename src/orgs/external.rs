//! Organizations mapped to the deploying team's customers: the team's own id for each
//! (`external_id`). One rule for the operator API and the CLI.

use crate::store::{NewAudit, Org, Store, StoreError, check_external_id};

#[derive(Debug, thiserror::Error)]
pub enum ExternalIdError {
    #[error("{0}")]
    Invalid(String),
    #[error("Another organization already has the external id {0:?}.")]
    Taken(String),
    #[error("No organization has this id.")]
    NoOrg,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Sets (or with `None` clears) `org_id`'s external id, audited with the old and new
/// values (`audit` names the actor). Answers the organization as it is now.
pub async fn set(
    store: &Store,
    org_id: &str,
    external_id: Option<&str>,
    audit: NewAudit,
) -> Result<Org, ExternalIdError> {
    if let Some(ext) = external_id {
        check_external_id("The external id", ext).map_err(ExternalIdError::Invalid)?;
    }
    let org = store.org(org_id).await?.ok_or(ExternalIdError::NoOrg)?;
    let audit = audit
        .org(&org.id)
        .target("organization", &org.id, &org.name)
        .details(serde_json::json!({ "from": org.external_id, "to": external_id }));
    match store
        .set_org_external_id(&org.id, external_id, &audit)
        .await
    {
        Ok(true) => {}
        Ok(false) => return Err(ExternalIdError::NoOrg),
        Err(StoreError::Conflict) => {
            return Err(ExternalIdError::Taken(
                external_id.unwrap_or_default().to_string(),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    store.org(org_id).await?.ok_or(ExternalIdError::NoOrg)
}
