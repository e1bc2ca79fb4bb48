//! Settings → Account: who you are, how you sign in, and your linked SSO identities.

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    extract::State,
    response::{IntoResponse, Response},
};

use crate::{
    auth::{Chrome, CurrentUser},
    error::Result,
    state::AppState,
    templates::TimeView,
};

pub struct IdentityRow {
    pub issuer: String,
    pub subject: String,
    pub source_name: String,
    pub email: String,
    pub linked: TimeView,
    pub last_used: Option<TimeView>,
}

#[derive(Template, WebTemplate)]
#[template(path = "settings/account.html")]
struct AccountPage {
    chrome: Chrome,
    email: String,
    /// The address is verified (linking SSO identities needs it).
    verified: bool,
    name: String,
    has_password: bool,
    identities: Vec<IdentityRow>,
    /// (source key, label) the user may link: their organizations' connections and the
    /// operator-wide providers.
    linkable: Vec<(String, String)>,
}

pub async fn page(State(state): State<AppState>, cu: CurrentUser) -> Result<Response> {
    let now = state.clock.unix();
    let identities = state
        .store
        .sso_identities(&cu.user.id)
        .await?
        .into_iter()
        .map(|i| IdentityRow {
            linked: TimeView::new(i.created_at, now),
            last_used: TimeView::opt(i.last_used_at, now),
            issuer: i.issuer,
            subject: i.subject,
            source_name: i.source_name,
            email: i.email,
        })
        .collect();
    let mut linkable = Vec::new();
    for m in &cu.orgs {
        for c in state.store.sso_connections(&m.org_id).await? {
            linkable.push((
                format!("connection:{}", c.id),
                format!("{} ({})", c.name, m.org_name),
            ));
        }
    }
    for p in &state.config.sso_providers {
        linkable.push((format!("provider:{}", p.id), p.name.clone()));
    }
    Ok(AccountPage {
        chrome: cu.chrome("account").await?,
        email: cu.user.email.clone(),
        verified: cu.user.email_verified(),
        name: cu.user.name.clone(),
        has_password: cu.user.password_hash.is_some(),
        identities,
        linkable,
    }
    .into_response())
}
