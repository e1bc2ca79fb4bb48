//! `POST /api/v1/portal/sessions`: the team's backend asks for a sign-in link for one of
//! its users (operator credential).

use axum::{
    Json,
    extract::{Path, State, rejection::JsonRejection},
    http::StatusCode,
    response::Response,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{LINK_TTL_SECS, token_hash};
use crate::{
    api::{ApiError, ApiResult, Data, ErrorBody, data, json_body, operator::Operator},
    audit::AuditAction,
    auth::{normalize_email, valid_email},
    orgs::Role,
    state::AppState,
    store::{PortalGrant, check_external_id},
    templates::rfc3339,
};

/// The person to sign in, as the team's app knows them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortalSessionRequest {
    /// The app's id for this person (1–200 printable ASCII characters). The account is
    /// linked by this id (and the operator credential's name), never by email.
    pub external_user_id: String,
    /// Shown in the dashboard and used for Keyward's emails to this person.
    pub email: String,
    /// Display name (optional, at most 200 characters).
    #[serde(default)]
    pub name: String,
    pub organization: PortalOrganization,
    /// `owner`, `admin`, `developer` (the default) or `viewer`.
    #[serde(default)]
    pub role: Option<String>,
    /// Where "Back to …" leads; its origin must be in KEYWARD_PORTAL_RETURN_ORIGINS.
    #[serde(default)]
    pub return_url: Option<String>,
    /// The app already signed this person in strongly (e.g. with a second factor): the
    /// organization's two-step policy does not ask again. Default false.
    #[serde(default)]
    pub strong_auth: bool,
}

/// The customer the person belongs to: an organization found by (or made with) the
/// team's id for it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortalOrganization {
    /// The team's id for this customer (1–200 printable ASCII characters).
    pub external_id: String,
    /// The organization's name when it is made (1–100 characters); an existing
    /// organization keeps its name.
    pub name: String,
}

/// A single-use sign-in link.
#[derive(Debug, Serialize, ToSchema)]
pub struct PortalLink {
    /// Redirect the person's browser here. It works once, until `expires_at`.
    pub url: String,
    /// RFC 3339.
    pub expires_at: String,
}

/// Ask for a sign-in link for one of the team's users: opening it signs them in to
/// Settings → API Keys of their organization.
#[utoipa::path(post, path = "/api/v1/portal/sessions", tag = "operator",
    request_body = PortalSessionRequest,
    responses(
        (status = 201, body = Data<PortalLink>),
        (status = 400, body = ErrorBody, description = "Malformed JSON"),
        (status = 401, body = ErrorBody, description = "No operator credential"),
        (status = 415, body = ErrorBody, description = "The body is not JSON"),
        (status = 422, body = ErrorBody, description = "`validation_failed`: `fields` names each invalid field"),
    ),
    security(("operator" = [])))]
pub async fn create(
    State(state): State<AppState>,
    operator: Operator,
    body: Result<Json<PortalSessionRequest>, JsonRejection>,
) -> ApiResult<Response> {
    let body = json_body(body)?;
    let now = state.clock.unix();
    let grant = validate(&state, &operator, body, now).map_err(ApiError::Invalid)?;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| crate::error::AppError::internal(anyhow::anyhow!("{e}")))?;
    let token = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes);
    let existing = state
        .store
        .org_by_external_id(&grant.org_external_id)
        .await?;
    let mut audit = operator
        .audit(AuditAction::PortalLinkIssued, now)
        .target("user", &grant.external_user_id, &grant.email)
        .details(serde_json::json!({
            "external_user_id": grant.external_user_id,
            "organization": grant.org_external_id,
            "role": grant.role,
            "strong_auth": grant.strong_auth,
        }));
    if let Some(org) = &existing {
        audit = audit.org(&org.id);
    }
    state
        .store
        .insert_portal_grant(&token_hash(&token), &grant, &audit)
        .await?;
    Ok(data(
        StatusCode::CREATED,
        PortalLink {
            url: format!("{}/portal/{token}", state.config.base_url),
            expires_at: rfc3339(grant.expires_at),
        },
    ))
}

/// `{"disabled": true}` removes the person from Keyward; `false` lets them in again.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortalUserPatch {
    pub disabled: bool,
}

/// A person handed in by the team's app.
#[derive(Debug, Serialize, ToSchema)]
pub struct PortalUser {
    pub external_user_id: String,
    pub email: String,
    pub name: String,
    /// A disabled account has no sessions and cannot sign in by any way (hand-offs,
    /// passkeys, …); its organization's keys stay.
    pub disabled: bool,
}

/// Disable (or enable again) a person the team's app handed in, e.g. when they leave
/// the team's app: their sessions end at once and every way in is refused.
#[utoipa::path(patch, path = "/api/v1/portal/users/{external_user_id}", tag = "operator",
    params(("external_user_id" = String, Path, description = "The app's id for the person (this operator credential's)")),
    request_body = PortalUserPatch,
    responses(
        (status = 200, body = Data<PortalUser>),
        (status = 400, body = ErrorBody, description = "Malformed JSON"),
        (status = 401, body = ErrorBody, description = "No operator credential"),
        (status = 404, body = ErrorBody, description = "No account for this external user id"),
        (status = 415, body = ErrorBody, description = "The body is not JSON"),
    ),
    security(("operator" = [])))]
pub async fn update_user(
    State(state): State<AppState>,
    operator: Operator,
    Path(external_user_id): Path<String>,
    body: Result<Json<PortalUserPatch>, JsonRejection>,
) -> ApiResult<Response> {
    let body = json_body(body)?;
    let action = if body.disabled {
        AuditAction::UserDisabledByPortal
    } else {
        AuditAction::UserEnabledByPortal
    };
    let audit = operator.audit(action, state.clock.unix());
    let user = state
        .store
        .set_external_user_disabled(&operator.name, &external_user_id, body.disabled, audit)
        .await?
        .ok_or_else(|| {
            ApiError::Status(
                StatusCode::NOT_FOUND,
                "not_found",
                "No one was handed in with this external user id (by this operator credential)."
                    .into(),
            )
        })?;
    Ok(data(
        StatusCode::OK,
        PortalUser {
            external_user_id,
            email: user.email,
            name: user.name,
            disabled: user.disabled_at.is_some(),
        },
    ))
}

/// Checks every field, naming each bad one.
fn validate(
    state: &AppState,
    operator: &Operator,
    body: PortalSessionRequest,
    now: i64,
) -> Result<PortalGrant, serde_json::Map<String, serde_json::Value>> {
    let mut errors = serde_json::Map::new();
    let mut bad = |field: &str, message: String| {
        errors.insert(field.into(), message.into());
    };
    if let Err(m) = check_external_id("external_user_id", &body.external_user_id) {
        bad("external_user_id", m);
    }
    let email = normalize_email(&body.email);
    if !valid_email(&email) {
        bad("email", "Give a valid email address.".into());
    }
    let name = body.name.trim().to_string();
    if name.chars().count() > 200 || name.chars().any(char::is_control) {
        bad(
            "name",
            "The name must be at most 200 characters, without control characters.".into(),
        );
    }
    if let Err(m) = check_external_id("organization.external_id", &body.organization.external_id) {
        bad("organization.external_id", m);
    }
    let org_name = body.organization.name.trim().to_string();
    if let Err(m) = crate::orgs::check_name(&org_name) {
        bad("organization.name", m);
    }
    let role = body.role.as_deref().unwrap_or("developer");
    if Role::parse(role).is_none() {
        bad(
            "role",
            "The role must be owner, admin, developer or viewer.".into(),
        );
    }
    // Kept as parsed (normalized), so what is shown is what was checked.
    let return_url = match body.return_url.as_deref() {
        None => None,
        Some(url) => match check_return_url(&state.config.portal_return_origins, url) {
            Ok(()) => url::Url::parse(url).ok().map(String::from),
            Err(m) => {
                bad("return_url", m);
                None
            }
        },
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(PortalGrant {
        issuer: operator.name.clone(),
        external_user_id: body.external_user_id,
        email,
        name,
        org_external_id: body.organization.external_id,
        org_name,
        role: role.to_string(),
        return_url,
        strong_auth: body.strong_auth,
        created_at: now,
        expires_at: now + LINK_TTL_SECS,
    })
}

/// A `return_url` must be an absolute http(s) URL on one of the allowed origins.
pub fn check_return_url(allowed: &[String], given: &str) -> Result<(), String> {
    if allowed.is_empty() {
        return Err(
            "No return origins are configured: set KEYWARD_PORTAL_RETURN_ORIGINS (e.g. https://app.example.com) or leave return_url out."
                .into(),
        );
    }
    let url = url::Url::parse(given).map_err(|_| {
        "return_url must be an absolute URL like https://app.example.com/account.".to_string()
    })?;
    let origin = url.origin().ascii_serialization();
    if !matches!(url.scheme(), "http" | "https")
        || !url.username().is_empty()
        || url.password().is_some()
        || !allowed.contains(&origin)
    {
        return Err(format!(
            "return_url must be on one of the allowed origins ({}).",
            allowed.join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_return_url;

    #[test]
    fn return_urls_stay_on_allowed_origins() {
        let allowed = vec!["https://app.example.com".to_string()];
        assert!(check_return_url(&allowed, "https://app.example.com/keys?x=1").is_ok());
        assert!(check_return_url(&allowed, "https://APP.example.com/").is_ok());
        for bad in [
            "https://app.example.com.evil.test/",
            "http://app.example.com/",
            "https://app.example.com:444/",
            "https://user@app.example.com/",
            "//app.example.com/",
            "/relative",
            "javascript:alert(1)",
            "https://evil.test/?https://app.example.com",
        ] {
            assert!(check_return_url(&allowed, bad).is_err(), "{bad}");
        }
        assert!(check_return_url(&[], "https://app.example.com/").is_err());
    }
}
