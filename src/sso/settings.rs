//! Settings → SSO: an organization's OpenID Connect connections (admins and owners).
//! Client secrets are write-only: sealed on save, never rendered.

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

use super::parse_domains;
use crate::{
    audit::ClientMeta,
    auth::{Chrome, CurrentUser},
    error::{AppError, Result},
    orgs::{Action, Role},
    state::AppState,
    store::{NewAudit, SsoConnection, SsoConnectionInput},
    templates::TimeView,
};

/// Roles a connection may give new members (never owner).
const JOIN_ROLES: [Role; 3] = [Role::Admin, Role::Developer, Role::Viewer];

pub struct ConnectionRow {
    pub id: String,
    pub name: String,
    pub issuer: String,
    pub domains: String,
    pub default_role: String,
    pub require_sso: bool,
    pub updated: TimeView,
}

#[derive(Template, WebTemplate)]
#[template(path = "settings/sso/index.html")]
struct ListPage {
    chrome: Chrome,
    /// A personal organization has no members to sign in, so no SSO.
    personal: bool,
    connections: Vec<ConnectionRow>,
    redirect_uri: String,
}

/// The result of "Test connection".
pub struct TestResult {
    pub ok: bool,
    pub message: String,
    pub details: Vec<(&'static str, String)>,
}

#[derive(Template, WebTemplate)]
#[template(path = "settings/sso/form.html")]
struct FormPage {
    chrome: Chrome,
    /// `None` for a new connection.
    id: Option<String>,
    name: String,
    issuer: String,
    client_id: String,
    has_secret: bool,
    domains: String,
    default_role: String,
    require_sso: bool,
    roles: Vec<&'static str>,
    redirect_uri: String,
    error: Option<String>,
    test: Option<TestResult>,
}

impl FormPage {
    fn new(chrome: Chrome, redirect_uri: String) -> Self {
        Self {
            chrome,
            id: None,
            name: String::new(),
            issuer: String::new(),
            client_id: String::new(),
            has_secret: false,
            domains: String::new(),
            default_role: Role::Developer.as_str().into(),
            require_sso: false,
            roles: JOIN_ROLES.iter().map(|r| r.as_str()).collect(),
            redirect_uri,
            error: None,
            test: None,
        }
    }

    fn with_connection(mut self, c: &SsoConnection) -> Self {
        self.id = Some(c.id.clone());
        self.name = c.name.clone();
        self.issuer = c.issuer.clone();
        self.client_id = c.client_id.clone();
        self.has_secret = true;
        self.domains = c.domains.join(", ");
        self.default_role = c.default_role.clone();
        self.require_sso = c.require_sso;
        self
    }
}

/// SSO brings people into an organization; a personal one is just for its owner.
fn team_org(cu: &CurrentUser) -> Result<()> {
    if cu.org.personal {
        return Err(AppError::bad_request(
            "Your personal organization is just for you. Create a team organization (Organizations → New organization) to set up single sign-on for it.",
        ));
    }
    Ok(())
}

async fn connection(state: &AppState, cu: &CurrentUser, id: &str) -> Result<SsoConnection> {
    state
        .store
        .sso_connection(cu.org_id(), id)
        .await?
        .ok_or(AppError::NotFound)
}

pub async fn list(State(state): State<AppState>, cu: CurrentUser) -> Result<Response> {
    cu.require(Action::ManageSso)?;
    let now = state.clock.unix();
    let connections = state
        .store
        .sso_connections(cu.org_id())
        .await?
        .into_iter()
        .map(|c| ConnectionRow {
            domains: c.domains.join(", "),
            updated: TimeView::new(c.updated_at, now),
            id: c.id,
            name: c.name,
            issuer: c.issuer,
            default_role: c.default_role,
            require_sso: c.require_sso,
        })
        .collect();
    Ok(ListPage {
        personal: cu.org.personal,
        chrome: cu.chrome("sso").await?,
        connections,
        redirect_uri: state.sso_redirect_uri(),
    }
    .into_response())
}

pub async fn new_page(State(state): State<AppState>, cu: CurrentUser) -> Result<Response> {
    cu.require(Action::ManageSso)?;
    team_org(&cu)?;
    Ok(FormPage::new(cu.chrome("sso").await?, state.sso_redirect_uri()).into_response())
}

pub async fn edit(
    State(state): State<AppState>,
    cu: CurrentUser,
    Path(id): Path<String>,
) -> Result<Response> {
    cu.require(Action::ManageSso)?;
    let c = connection(&state, &cu, &id).await?;
    Ok(
        FormPage::new(cu.chrome("sso").await?, state.sso_redirect_uri())
            .with_connection(&c)
            .into_response(),
    )
}

#[derive(Deserialize)]
pub struct ConnectionForm {
    org: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    issuer: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    client_secret: String,
    #[serde(default)]
    domains: String,
    #[serde(default)]
    default_role: String,
    require_sso: Option<String>,
}

/// Checks the form; the message names the field to fix.
fn validate(
    f: &ConnectionForm,
    new: bool,
    allow_http: bool,
) -> std::result::Result<SsoConnectionInput, String> {
    let name = f.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err("Give the connection a name of 1 to 100 characters (e.g. “Okta”).".into());
    }
    // Exactly as entered (a trailing slash is part of some issuers, e.g. Auth0's).
    let issuer = f.issuer.trim();
    let parsed = reqwest::Url::parse(issuer).ok();
    let scheme_ok = match parsed.as_ref().map(|u| u.scheme()) {
        Some("https") => true,
        Some("http") => allow_http,
        _ => false,
    };
    if !scheme_ok || parsed.as_ref().and_then(|u| u.host_str()).is_none() || issuer.len() > 500 {
        return Err(if allow_http {
            "The issuer must be the provider's http(s) URL, e.g. https://example.okta.com.".into()
        } else {
            "The issuer must be the provider's https URL, e.g. https://example.okta.com.".into()
        });
    }
    if parsed
        .as_ref()
        .is_some_and(|u| u.query().is_some() || u.fragment().is_some())
    {
        return Err("The issuer URL cannot have a query or fragment.".into());
    }
    let client_id = f.client_id.trim();
    if client_id.is_empty() || client_id.len() > 255 {
        return Err("Enter the client ID the provider gave you.".into());
    }
    let secret = f.client_secret.trim();
    if new && secret.is_empty() {
        return Err("Enter the client secret the provider gave you.".into());
    }
    if secret.len() > 1000 {
        return Err("The client secret is longer than 1,000 characters.".into());
    }
    let domains = parse_domains(&f.domains)?;
    if domains.is_empty() {
        return Err("List at least one email domain (e.g. example.com) that signs in through this connection.".into());
    }
    let role = Role::parse(&f.default_role)
        .filter(|r| JOIN_ROLES.contains(r))
        .ok_or("Choose admin, developer or viewer as the role of new members.")?;
    Ok(SsoConnectionInput {
        name: name.to_string(),
        issuer: issuer.to_string(),
        client_id: client_id.to_string(),
        client_secret: (!secret.is_empty()).then(|| secret.to_string()),
        default_role: role.as_str().to_string(),
        require_sso: f.require_sso.is_some(),
        domains,
    })
}

pub async fn create(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Form(f): Form<ConnectionForm>,
) -> Result<Response> {
    save(state, cu, meta, None, f).await
}

pub async fn update(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Path(id): Path<String>,
    Form(f): Form<ConnectionForm>,
) -> Result<Response> {
    save(state, cu, meta, Some(id), f).await
}

async fn save(
    state: AppState,
    cu: CurrentUser,
    meta: ClientMeta,
    id: Option<String>,
    f: ConnectionForm,
) -> Result<Response> {
    cu.require(Action::ManageSso)?;
    cu.same_org(&f.org)?;
    team_org(&cu)?;
    let existing = match &id {
        Some(id) => Some(connection(&state, &cu, id).await?),
        None => None,
    };
    let refuse = |msg: String, chrome: Chrome| {
        let mut page = FormPage::new(chrome, state.sso_redirect_uri());
        if let Some(c) = &existing {
            page = page.with_connection(c);
        }
        page.name = f.name.clone();
        page.issuer = f.issuer.clone();
        page.client_id = f.client_id.clone();
        page.domains = f.domains.clone();
        page.default_role = f.default_role.clone();
        page.require_sso = f.require_sso.is_some();
        page.error = Some(msg);
        (StatusCode::BAD_REQUEST, page).into_response()
    };
    let input = match validate(&f, id.is_none(), state.config.allow_private_networks) {
        Ok(i) => i,
        Err(msg) => return Ok(refuse(msg, cu.chrome("sso").await?)),
    };
    let taken = state
        .store
        .sso_domains_taken(&input.domains, id.as_deref())
        .await?;
    if !taken.is_empty() {
        return Ok(refuse(
            format!(
                "{} already signs in through another SSO connection. Each domain can belong to one connection.",
                taken.join(", ")
            ),
            cu.chrome("sso").await?,
        ));
    }
    let conn_id = id.clone().unwrap_or_else(crate::store::new_id);
    let sealed = match &input.client_secret {
        Some(s) => Some(
            state
                .sso
                .secrets
                .seal(s, &conn_id)
                .map_err(AppError::internal)?,
        ),
        None => None,
    };
    let action = if id.is_some() {
        AuditAction::SsoConnectionUpdated
    } else {
        AuditAction::SsoConnectionCreated
    };
    let audit = meta
        .stamp(NewAudit::new(action, state.clock.unix()))
        .actor(Some(&cu.user.id), &cu.user.email)
        .details(serde_json::json!({
            "issuer": input.issuer,
            "client_id": input.client_id,
            "domains": input.domains,
            "default_role": input.default_role,
            "require_sso": input.require_sso,
            "secret_changed": input.client_secret.is_some(),
        }));
    let saved = state
        .store
        .save_sso_connection(
            cu.org_id(),
            &conn_id,
            id.is_some(),
            &input,
            sealed.as_deref(),
            Some(&cu.user.id),
            audit,
        )
        .await;
    match saved {
        Ok(true) => {}
        Ok(false) => return Err(AppError::NotFound),
        // Another connection took a domain between the check and the save.
        Err(crate::store::StoreError::Conflict) => {
            return Ok(refuse(
                "One of these domains already signs in through another SSO connection.".into(),
                cu.chrome("sso").await?,
            ));
        }
        Err(e) => return Err(e.into()),
    }
    if let Some(old) = &existing {
        state.sso.oidc.forget(&old.issuer);
    }
    state.sso.oidc.forget(&input.issuer);
    cu.flash(
        "success",
        format!(
            "Saved the SSO connection “{}”. Use “Test connection” to check it.",
            input.name
        ),
    )
    .await?;
    Ok(Redirect::to(&format!("/settings/sso/{conn_id}")).into_response())
}

#[derive(Deserialize)]
pub struct OrgForm {
    org: String,
}

pub async fn delete(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Path(id): Path<String>,
    Form(f): Form<OrgForm>,
) -> Result<Response> {
    cu.require(Action::ManageSso)?;
    cu.same_org(&f.org)?;
    let c = connection(&state, &cu, &id).await?;
    let audit = meta
        .stamp(NewAudit::new(
            AuditAction::SsoConnectionDeleted,
            state.clock.unix(),
        ))
        .org(cu.org_id())
        .actor(Some(&cu.user.id), &cu.user.email)
        .target("sso_connection", &c.id, &c.name)
        .details(serde_json::json!({ "issuer": c.issuer, "domains": c.domains }));
    if !state
        .store
        .delete_sso_connection(cu.org_id(), &c.id, &audit)
        .await?
    {
        return Err(AppError::NotFound);
    }
    cu.flash(
        "success",
        format!("Deleted the SSO connection “{}”. Its members keep their accounts and can sign in with a password if they have one.", c.name),
    )
    .await?;
    Ok(Redirect::to("/settings/sso").into_response())
}

/// "Test connection": fresh discovery (and key fetch) against the saved issuer.
pub async fn test(
    State(state): State<AppState>,
    cu: CurrentUser,
    Path(id): Path<String>,
    Form(f): Form<OrgForm>,
) -> Result<Response> {
    cu.require(Action::ManageSso)?;
    cu.same_org(&f.org)?;
    let c = connection(&state, &cu, &id).await?;
    let result = match crate::net::check_outbound(&c.issuer, state.config.allow_private_networks)
        .await
    {
        Err(msg) => TestResult {
            ok: false,
            message: msg,
            details: vec![],
        },
        Ok(()) => match state.sso.oidc.discover_fresh(&c.issuer, false).await {
            Ok(m) => {
                state.sso.oidc.forget(&c.issuer);
                TestResult {
                    ok: true,
                    message: format!("{} answered and its metadata names this issuer.", c.issuer),
                    details: vec![
                        (
                            "Authorization endpoint",
                            m.authorization_endpoint().to_string(),
                        ),
                        (
                            "Token endpoint",
                            m.token_endpoint()
                                .map(|u| u.to_string())
                                .unwrap_or_else(|| "none (required for sign-in)".into()),
                        ),
                        ("Signing keys", m.jwks().keys().len().to_string()),
                        (
                            "PKCE S256",
                            match &m.additional_metadata().code_challenge_methods_supported {
                                Some(list) if list.iter().any(|x| x == "S256") => {
                                    "supported".into()
                                }
                                Some(_) => "not advertised: sign-in may fail".into(),
                                None => "not advertised (most providers support it anyway)".into(),
                            },
                        ),
                        (
                            "iss in responses (RFC 9207)",
                            if m.additional_metadata()
                                .authorization_response_iss_parameter_supported
                            {
                                "yes (checked)".into()
                            } else {
                                "no".into()
                            },
                        ),
                    ],
                }
            }
            Err(e) => TestResult {
                ok: false,
                message: e.to_string(),
                details: vec![],
            },
        },
    };
    let mut page =
        FormPage::new(cu.chrome("sso").await?, state.sso_redirect_uri()).with_connection(&c);
    page.test = Some(result);
    Ok(page.into_response())
}
