//! Settings → Members: an owner requires two-step verification of the organization's
//! members who sign in with a password (SSO sign-ins are the provider's business).

use crate::audit::AuditAction;
use axum::{
    Form,
    extract::State,
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;

use crate::{
    audit::ClientMeta,
    auth::{CurrentUser, session},
    error::{AppError, Result},
    orgs::Action,
    state::AppState,
};

#[derive(Deserialize)]
pub struct PolicyForm {
    #[serde(default)]
    org: String,
    required: bool,
}

pub async fn set_policy(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Form(f): Form<PolicyForm>,
) -> Result<Response> {
    cu.require(Action::SetTwoStepPolicy)?;
    cu.same_org(&f.org)?;
    if cu.org.personal {
        return Err(AppError::Conflict(
            "A personal organization has no other members: two-step verification is set up per account in Settings → Account → Security.".into(),
        ));
    }
    if f.required == cu.org.require_two_step {
        return Ok(Redirect::to("/settings/members").into_response());
    }
    // The owner would be shut out of the organization's pages at once.
    if f.required
        && session::sign_in_method(&cu.session).await? != session::org_sso_method(cu.org_id())
        && !state.store.has_second_factor(&cu.user.id).await?
    {
        cu.flash(
            "error",
            "Set up two-step verification for your own account first (Settings → Account → Security), then require it of everyone.",
        )
        .await?;
        return Ok(Redirect::to("/settings/members").into_response());
    }
    let audit = cu
        .audit(
            AuditAction::OrgTwoStepPolicyChanged,
            &meta,
            state.clock.unix(),
        )
        .target("organization", cu.org_id(), &cu.org.org_name)
        .details(serde_json::json!({ "required": f.required }));
    state
        .store
        .set_require_two_step(cu.org_id(), f.required, &audit)
        .await?;
    tracing::info!(event = %AuditAction::OrgTwoStepPolicyChanged, org_id = %cu.org_id(), required = f.required, "two-step policy changed");
    cu.flash(
        "success",
        if f.required {
            "Two-step verification is now required for password sign-ins. Members without it are asked to set it up before they continue."
        } else {
            "Two-step verification is no longer required."
        },
    )
    .await?;
    Ok(Redirect::to("/settings/members").into_response())
}
