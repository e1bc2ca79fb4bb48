//! Operator endpoints for organizations: the team's own id for each of its customers
//! (`external_id`), which every verification door returns with a key's organization.

use axum::{
    Json,
    extract::{Path, State, rejection::JsonRejection},
    http::StatusCode,
    response::Response,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, ApiResult, Data, ErrorBody, data, json_body, operator::Operator};
use crate::{
    audit::AuditAction,
    orgs::external::{self, ExternalIdError},
    state::AppState,
    store::Org,
};

/// An organization as the operator endpoints show it.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrgView {
    pub id: String,
    pub name: String,
    /// A personal organization belongs to one account.
    pub personal: bool,
    /// The deploying team's id for this customer, when set.
    pub external_id: Option<String>,
}

impl From<&Org> for OrgView {
    fn from(o: &Org) -> Self {
        Self {
            id: o.id.clone(),
            name: o.name.clone(),
            personal: o.personal,
            external_id: o.external_id.clone(),
        }
    }
}

/// The refusals of the operator endpoints for organizations.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum Refusals {
    /// Malformed JSON
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No operator credential
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// No such organization
    #[response(status = 404)]
    NotFound(ErrorBody),
}

fn no_org() -> ApiError {
    ApiError::Status(
        StatusCode::NOT_FOUND,
        "not_found",
        "No organization has this id.".into(),
    )
}

/// The organization the team knows by `external_id`.
#[utoipa::path(get, path = "/api/v1/orgs/by-external-id/{external_id}", tag = "operator",
    params(("external_id" = String, Path, description = "The team's id for the organization")),
    responses((status = 200, body = Data<OrgView>), Refusals),
    security(("operator" = [])))]
pub async fn by_external_id(
    State(state): State<AppState>,
    _operator: Operator,
    Path(external_id): Path<String>,
) -> ApiResult<Response> {
    let org = state
        .store
        .org_by_external_id(&external_id)
        .await?
        .ok_or_else(|| {
            ApiError::Status(
                StatusCode::NOT_FOUND,
                "not_found",
                "No organization has this external id.".into(),
            )
        })?;
    Ok(data(StatusCode::OK, OrgView::from(&org)))
}

/// `{"external_id": "…"}`, or `null` to clear it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetExternalId {
    /// 1–200 printable ASCII characters, unique in this deployment; `null` clears it.
    pub external_id: Option<String>,
}

/// Set (or clear) an organization's external id: the team's id for this customer.
#[utoipa::path(put, path = "/api/v1/orgs/{id}/external-id", tag = "operator",
    params(("id" = String, Path, description = "Organization id")),
    request_body = SetExternalId,
    responses(
        (status = 200, body = Data<OrgView>),
        Refusals,
        (status = 409, body = ErrorBody, description = "Another organization has this external id"),
        (status = 415, body = ErrorBody, description = "The body is not JSON"),
        (status = 422, body = ErrorBody, description = "`validation_failed`: the external id is not valid"),
    ),
    security(("operator" = [])))]
pub async fn set_external_id(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
    body: Result<Json<SetExternalId>, JsonRejection>,
) -> ApiResult<Response> {
    let body = json_body(body)?;
    let audit = operator.audit(AuditAction::OrgExternalIdChanged, state.clock.unix());
    match external::set(&state.store, &id, body.external_id.as_deref(), audit).await {
        Ok(org) => Ok(data(StatusCode::OK, OrgView::from(&org))),
        Err(ExternalIdError::Invalid(message)) => {
            let mut fields = serde_json::Map::new();
            fields.insert("external_id".into(), message.into());
            Err(ApiError::Invalid(fields))
        }
        Err(e @ ExternalIdError::Taken(_)) => Err(ApiError::conflict(e.to_string())),
        Err(ExternalIdError::NoOrg) => Err(no_org()),
        Err(ExternalIdError::Store(e)) => Err(e.into()),
    }
}
