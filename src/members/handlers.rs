use crate::audit::AuditAction;
use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Form,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;
use serde_json::json;

use super::{INVITATION_TTL_SECS, link_token_hash, new_link_token};
use crate::{
    audit::ClientMeta,
    auth::{Chrome, CurrentUser, normalize_email, session::ORG_ID, valid_email},
    error::{AppError, Result},
    orgs::{Action, Role},
    state::AppState,
    store::{Invitation, MemberChange, NewAudit},
    templates::TimeView,
};

pub struct MemberView {
    pub user_id: String,
    pub email: String,
    pub name: String,
    pub role: String,
    pub sign_in: &'static str,
    pub last_sign_in: Option<TimeView>,
    /// Has a second factor (authenticator app or passkey).
    pub two_step: bool,
    pub is_self: bool,
    /// Marked "unverified" wherever the address is shown to others.
    pub email_verified: bool,
    /// The viewer may change this member's role or remove them.
    pub manageable: bool,
}

pub struct InvitationView {
    pub id: String,
    pub email: String,
    pub role: String,
    pub expires: TimeView,
    pub expired: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "settings/members/index.html")]
struct MembersPage {
    chrome: Chrome,
    members: Vec<MemberView>,
    invitations: Vec<InvitationView>,
    can_manage: bool,
    is_owner: bool,
    /// The organization requires two-step verification of password sign-ins.
    require_two_step: bool,
    can_set_two_step: bool,
    roles: Vec<&'static str>,
    invite_email: String,
    invite_error: Option<String>,
    /// The viewer's own address, while it is not verified (no inviting until it is).
    unverified: Option<String>,
    /// A personal organization: just for its owner (no inviting, transferring or leaving).
    personal: bool,
    /// The viewer is the organization's only owner (cannot leave; can transfer only to
    /// another member).
    sole_owner: bool,
}

/// Roles an admin or owner may give through the members page (ownership moves by transfer).
const ASSIGNABLE: [&str; 3] = ["admin", "developer", "viewer"];

async fn members_page(
    state: &AppState,
    cu: &CurrentUser,
    invite_email: String,
    invite_error: Option<String>,
) -> Result<MembersPage> {
    let now = state.clock.unix();
    let can_manage = cu.role.can(Action::ManageMembers);
    let members: Vec<MemberView> = state
        .store
        .members(cu.org_id())
        .await?
        .into_iter()
        .map(|m| {
            let is_self = m.user_id == cu.user.id;
            // Owners can be changed only by owners; nobody changes their own role here.
            let manageable =
                can_manage && !is_self && (m.role != "owner" || cu.role == Role::Owner);
            MemberView {
                sign_in: match (m.has_password, m.has_sso) {
                    _ if m.handed_in => "Through the team's app",
                    (true, true) => "Password or SSO",
                    (false, true) => "SSO",
                    (true, false) => "Password",
                    (false, false) => "Not set up",
                },
                last_sign_in: TimeView::opt(m.last_login_at, now),
                two_step: m.two_step,
                is_self,
                manageable,
                email_verified: m.email_verified,
                user_id: m.user_id,
                email: m.email,
                name: m.name,
                role: m.role,
            }
        })
        .collect();
    let invitations = if can_manage {
        state
            .store
            .open_invitations(cu.org_id())
            .await?
            .into_iter()
            .map(|i| InvitationView {
                expires: TimeView::new(i.expires_at, now),
                expired: i.expires_at <= now,
                id: i.id,
                email: i.email,
                role: i.role,
            })
            .collect()
    } else {
        vec![]
    };
    let sole_owner =
        cu.role == Role::Owner && members.iter().filter(|m| m.role == "owner").count() <= 1;
    Ok(MembersPage {
        chrome: cu.chrome("members").await?,
        members,
        invitations,
        can_manage,
        is_owner: cu.role == Role::Owner,
        require_two_step: cu.org.require_two_step,
        can_set_two_step: cu.role.can(Action::SetTwoStepPolicy) && !cu.org.personal,
        roles: ASSIGNABLE.to_vec(),
        invite_email,
        invite_error,
        unverified: crate::account::unverified_notice(cu),
        personal: cu.org.personal,
        sole_owner,
    })
}

pub async fn page(State(state): State<AppState>, cu: CurrentUser) -> Result<Response> {
    cu.require(Action::ViewKeys)?;
    Ok(members_page(&state, &cu, String::new(), None)
        .await?
        .into_response())
}

#[derive(Deserialize)]
pub struct OrgOnly {
    #[serde(default)]
    org: String,
}

#[derive(Deserialize)]
pub struct RoleForm {
    #[serde(default)]
    org: String,
    #[serde(default)]
    role: String,
}

const BACK: &str = "/settings/members";

fn last_owner() -> AppError {
    AppError::Conflict(
        "An organization needs at least one owner: transfer ownership to another member first."
            .into(),
    )
}

pub async fn set_role(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Path(user_id): Path<String>,
    Form(f): Form<RoleForm>,
) -> Result<Response> {
    cu.require(Action::ManageMembers)?;
    cu.same_org(&f.org)?;
    if !ASSIGNABLE.contains(&f.role.as_str()) {
        return Err(AppError::bad_request(
            "Choose admin, developer or viewer. Ownership moves with “Transfer ownership”.",
        ));
    }
    if user_id == cu.user.id {
        return Err(AppError::bad_request(
            "You cannot change your own role. Ask another admin, or transfer ownership.",
        ));
    }
    let target = state
        .store
        .membership(&user_id, cu.org_id())
        .await?
        .ok_or(AppError::NotFound)?;
    if target.role == "owner" && cu.role != Role::Owner {
        return Err(AppError::forbidden(
            "Only owners can change an owner's role.",
        ));
    }
    let user = state
        .store
        .user(&user_id)
        .await?
        .ok_or(AppError::NotFound)?;
    let now = state.clock.unix();
    let audit = cu
        .audit(AuditAction::MemberRoleChanged, &meta, now)
        .target("user", &user.id, &user.email)
        .details(json!({ "from": target.role, "to": f.role }));
    match state
        .store
        .set_role(cu.org_id(), &user_id, &f.role, &audit)
        .await?
    {
        MemberChange::Done => {
            cu.flash("success", format!("{} is now {}.", user.email, f.role))
                .await?
        }
        MemberChange::NotMember => return Err(AppError::NotFound),
        MemberChange::LastOwner => return Err(last_owner()),
    }
    Ok(Redirect::to(BACK).into_response())
}

pub async fn remove(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Path(user_id): Path<String>,
    Form(f): Form<OrgOnly>,
) -> Result<Response> {
    cu.require(Action::ManageMembers)?;
    cu.same_org(&f.org)?;
    if user_id == cu.user.id {
        return Err(AppError::bad_request(
            "To leave the organization yourself, use “Leave organization”.",
        ));
    }
    let target = state
        .store
        .membership(&user_id, cu.org_id())
        .await?
        .ok_or(AppError::NotFound)?;
    if target.role == "owner" && cu.role != Role::Owner {
        return Err(AppError::forbidden("Only owners can remove an owner."));
    }
    let user = state
        .store
        .user(&user_id)
        .await?
        .ok_or(AppError::NotFound)?;
    let now = state.clock.unix();
    let audit =
        cu.audit(AuditAction::MemberRemoved, &meta, now)
            .target("user", &user.id, &user.email);
    match state.store.remove_member(cu.org_id(), &user_id, &audit).await? {
        MemberChange::Done => {
            cu.flash(
                "success",
                format!("Removed {}. Their API keys stay with the organization: see “Former members” on the API keys page.", user.email),
            )
            .await?
        }
        MemberChange::NotMember => return Err(AppError::NotFound),
        MemberChange::LastOwner => return Err(last_owner()),
    }
    Ok(Redirect::to(BACK).into_response())
}

#[derive(Deserialize)]
pub struct TransferForm {
    #[serde(default)]
    org: String,
    #[serde(default)]
    to: String,
}

pub async fn transfer(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Form(f): Form<TransferForm>,
) -> Result<Response> {
    if cu.role != Role::Owner {
        return Err(AppError::forbidden("Only an owner can transfer ownership."));
    }
    cu.same_org(&f.org)?;
    if cu.org.personal {
        return Err(AppError::bad_request(
            "A personal organization cannot be transferred.",
        ));
    }
    let user = state.store.user(&f.to).await?.ok_or(AppError::NotFound)?;
    let now = state.clock.unix();
    let audit = cu
        .audit(AuditAction::OrgOwnershipTransferred, &meta, now)
        .target("user", &user.id, &user.email);
    match state
        .store
        .transfer_ownership(cu.org_id(), &cu.user.id, &f.to, &audit)
        .await?
    {
        MemberChange::Done => {
            cu.flash(
                "success",
                format!("{} is now an owner; you are an admin.", user.email),
            )
            .await?
        }
        _ => {
            return Err(AppError::bad_request(
                "Choose another member of this organization.",
            ));
        }
    }
    Ok(Redirect::to(BACK).into_response())
}

pub async fn leave(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Form(f): Form<OrgOnly>,
) -> Result<Response> {
    cu.same_org(&f.org)?;
    if cu.org.personal {
        return Err(AppError::bad_request(
            "You cannot leave your personal organization.",
        ));
    }
    let now = state.clock.unix();
    let audit =
        cu.audit(AuditAction::MemberLeft, &meta, now)
            .target("user", &cu.user.id, &cu.user.email);
    match state
        .store
        .remove_member(cu.org_id(), &cu.user.id, &audit)
        .await?
    {
        MemberChange::Done => {
            cu.session.remove::<String>(ORG_ID).await?;
            cu.flash("success", format!("You left {}.", cu.org.org_name))
                .await?;
        }
        MemberChange::NotMember => return Err(AppError::NotFound),
        MemberChange::LastOwner => return Err(last_owner()),
    }
    Ok(Redirect::to("/settings/api-keys").into_response())
}

// ---------------------------------------------------------------- invitations

#[derive(Template, WebTemplate)]
#[template(path = "settings/members/invited.html")]
struct InvitedPage {
    chrome: Chrome,
    email: String,
    role: String,
    link: String,
    emailed: bool,
    expires: TimeView,
}

#[derive(Deserialize)]
pub struct InviteForm {
    #[serde(default)]
    org: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    role: String,
}

/// Emails a new invitation link (when SMTP is configured; else it goes to the outbox) and
/// shows it once to the admin.
async fn deliver_invitation(
    state: &AppState,
    cu: &CurrentUser,
    email: String,
    role: String,
    token: &str,
    expires_at: i64,
    now: i64,
) -> Result<Response> {
    let link = format!("{}/invitations/{token}", state.config.base_url);
    let product = &state.config.branding.product_name;
    let body = format!(
        "{} invited you to join {} on {product} as {role}.\n\nAccept the invitation (valid for 7 days, once):\n{link}\n\nIf you did not expect this, ignore this email.\n",
        cu.user.email, cu.org.org_name
    );
    state
        .mailer
        .send(
            &email,
            &format!("You're invited to {} on {product}", cu.org.org_name),
            &body,
        )
        .await;
    Ok(InvitedPage {
        chrome: cu.chrome("members").await?,
        email,
        role,
        link,
        emailed: state.mailer.smtp_configured(),
        expires: TimeView::new(expires_at, now),
    }
    .into_response())
}

pub async fn invite(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Form(f): Form<InviteForm>,
) -> Result<Response> {
    cu.require(Action::ManageMembers)?;
    cu.same_org(&f.org)?;
    cu.require_verified_email()?;
    if cu.org.personal {
        return Err(AppError::bad_request(
            "Your personal organization is just for you. Create a team organization (Organizations → New organization) to invite people.",
        ));
    }
    let email = normalize_email(&f.email);
    let error = if !valid_email(&email) {
        Some("Enter a valid email address.".to_string())
    } else if !ASSIGNABLE.contains(&f.role.as_str()) {
        Some("Choose admin, developer or viewer.".to_string())
    } else if state
        .store
        .members(cu.org_id())
        .await?
        .iter()
        .any(|m| m.email == email)
    {
        Some(format!("{email} is already a member."))
    } else {
        None
    };
    if let Some(e) = error {
        let page = members_page(&state, &cu, email, Some(e)).await?;
        return Ok((StatusCode::BAD_REQUEST, page).into_response());
    }
    let now = state.clock.unix();
    let (token, hash) = new_link_token().map_err(AppError::internal)?;
    let inv = Invitation {
        id: crate::store::new_id(),
        org_id: cu.org_id().to_string(),
        email: email.clone(),
        role: f.role.clone(),
        invited_by: Some(cu.user.id.clone()),
        created_at: now,
        expires_at: now + INVITATION_TTL_SECS,
        accepted_at: None,
        revoked_at: None,
    };
    let audit = cu
        .audit(AuditAction::InvitationCreated, &meta, now)
        .target("invitation", &inv.id, &email)
        .details(json!({ "role": f.role }));
    state.store.create_invitation(&inv, &hash, &audit).await?;
    deliver_invitation(&state, &cu, email, f.role, &token, inv.expires_at, now).await
}

/// An invitation of the active organization, for an admin acting on it from its page.
async fn managed_invitation(
    state: &AppState,
    cu: &CurrentUser,
    id: &str,
    form_org: &str,
) -> Result<Invitation> {
    cu.require(Action::ManageMembers)?;
    cu.same_org(form_org)?;
    state
        .store
        .invitation(cu.org_id(), id)
        .await?
        .ok_or(AppError::NotFound)
}

pub async fn revoke_invitation(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Path(id): Path<String>,
    Form(f): Form<OrgOnly>,
) -> Result<Response> {
    let inv = managed_invitation(&state, &cu, &id, &f.org).await?;
    let now = state.clock.unix();
    let audit = cu.audit(AuditAction::InvitationRevoked, &meta, now).target(
        "invitation",
        &inv.id,
        &inv.email,
    );
    if state
        .store
        .revoke_invitation(cu.org_id(), &id, now, &audit)
        .await?
    {
        cu.flash(
            "success",
            format!("Revoked the invitation for {}.", inv.email),
        )
        .await?;
    } else {
        cu.flash("info", "That invitation was already used or revoked.")
            .await?;
    }
    Ok(Redirect::to(BACK).into_response())
}

pub async fn resend_invitation(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Path(id): Path<String>,
    Form(f): Form<OrgOnly>,
) -> Result<Response> {
    let inv = managed_invitation(&state, &cu, &id, &f.org).await?;
    cu.require_verified_email()?;
    let now = state.clock.unix();
    let (token, hash) = new_link_token().map_err(AppError::internal)?;
    let expires_at = now + INVITATION_TTL_SECS;
    let audit = cu.audit(AuditAction::InvitationResent, &meta, now).target(
        "invitation",
        &inv.id,
        &inv.email,
    );
    if !state
        .store
        .reissue_invitation(cu.org_id(), &id, &hash, expires_at, &audit)
        .await?
    {
        cu.flash("info", "That invitation was already used or revoked.")
            .await?;
        return Ok(Redirect::to(BACK).into_response());
    }
    deliver_invitation(&state, &cu, inv.email, inv.role, &token, expires_at, now).await
}

// ------------------------------------------------------- accepting (invitee side)

#[derive(Template, WebTemplate)]
#[template(path = "invitations/show.html")]
struct InvitationPage {
    token: String,
    org_name: String,
    email: String,
    role: String,
    /// `open`, `expired`, `used`, `revoked`, `invalid`.
    state: &'static str,
    /// Signed in as: (email, csrf); `None` when signed out.
    signed_in: Option<(String, String)>,
    /// The organization signs this address in through SSO: `Some(required)`.
    sso: Option<bool>,
    /// The visitor's CSRF token (for "Continue with SSO").
    csrf: String,
}

/// The invitation behind a link, with its state.
pub async fn lookup_invitation(
    state: &AppState,
    token: &str,
) -> Result<(Option<Invitation>, &'static str, String)> {
    let inv = state
        .store
        .invitation_by_token(&link_token_hash(token))
        .await?;
    let now = state.clock.unix();
    let (status, org_name) = match &inv {
        None => ("invalid", String::new()),
        Some(i) => {
            let name = state
                .store
                .org(&i.org_id)
                .await?
                .map(|o| o.name)
                .unwrap_or_default();
            let status = if i.revoked_at.is_some() {
                "revoked"
            } else if i.accepted_at.is_some() {
                "used"
            } else if i.expires_at <= now {
                "expired"
            } else {
                "open"
            };
            (status, name)
        }
    };
    Ok((inv, status, org_name))
}

pub async fn invitation_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
    session: tower_sessions::Session,
    cu: Option<CurrentUser>,
) -> Result<Response> {
    let (inv, status, org_name) = lookup_invitation(&state, &token).await?;
    let sso = match &inv {
        Some(i) if status == "open" => state
            .org_connection_for_email(&i.org_id, &i.email)
            .await?
            .map(|c| c.require_sso),
        _ => None,
    };
    let page = InvitationPage {
        sso,
        csrf: crate::auth::session::csrf_token(&session).await?,
        org_name,
        email: inv.as_ref().map(|i| i.email.clone()).unwrap_or_default(),
        role: inv.as_ref().map(|i| i.role.clone()).unwrap_or_default(),
        state: status,
        signed_in: cu.map(|c| (c.user.email.clone(), c.csrf.clone())),
        token,
    };
    let code = if status == "open" {
        StatusCode::OK
    } else {
        StatusCode::GONE
    };
    let code = if status == "invalid" {
        StatusCode::NOT_FOUND
    } else {
        code
    };
    Ok((code, page).into_response())
}

pub async fn accept(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Path(token): Path<String>,
) -> Result<Response> {
    let (inv, status, org_name) = lookup_invitation(&state, &token).await?;
    let Some(inv) = inv.filter(|_| status == "open") else {
        tracing::warn!(event = "invitation.refused", user_id = %cu.user.id, state = status, "unusable invitation");
        return Err(AppError::Rejected(StatusCode::GONE, "This invitation can no longer be used (it was used, revoked or has expired). Ask for a new one.".into()));
    };
    if inv.email != cu.user.email {
        tracing::warn!(event = "invitation.refused", user_id = %cu.user.id, "invitation for another email");
        return Err(AppError::forbidden(format!(
            "This invitation is for {}, but you are signed in as {}. Sign out and sign in (or sign up) with that address.",
            inv.email, cu.user.email
        )));
    }
    let now = state.clock.unix();
    let audit = meta
        .stamp(NewAudit::new(AuditAction::InvitationAccepted, now))
        .org(&inv.org_id)
        .actor(Some(&cu.user.id), &cu.user.email)
        .target("invitation", &inv.id, &inv.email)
        .details(json!({ "role": inv.role }));
    if !state
        .store
        .accept_invitation(&inv, &cu.user.id, now, &audit)
        .await?
    {
        return Err(AppError::Rejected(
            StatusCode::GONE,
            "This invitation can no longer be used. Ask for a new one.".into(),
        ));
    }
    cu.session.insert(ORG_ID, &inv.org_id).await?;
    // Someone who was already a member keeps the role they had.
    let role = state
        .store
        .membership(&cu.user.id, &inv.org_id)
        .await?
        .map_or(inv.role.clone(), |m| m.role);
    cu.flash(
        "success",
        format!("Welcome to {org_name}! Your role is {role}."),
    )
    .await?;
    Ok(Redirect::to("/settings/api-keys").into_response())
}
