use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Form,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;

use crate::{
    app::AppState,
    audit::ClientMeta,
    auth::{Chrome, CurrentUser, session::ORG_ID},
    error::{AppError, Result},
};

#[derive(Template, WebTemplate)]
#[template(path = "orgs/new.html")]
struct NewOrgPage {
    chrome: Chrome,
    name: String,
    error: Option<String>,
}

pub async fn new_page(cu: CurrentUser) -> Result<Response> {
    Ok(NewOrgPage {
        chrome: cu.chrome("orgs").await?,
        name: String::new(),
        error: None,
    }
    .into_response())
}

#[derive(Deserialize)]
pub struct NewOrgForm {
    name: String,
}

pub async fn create(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    Form(form): Form<NewOrgForm>,
) -> Result<Response> {
    let name = form.name.trim().to_string();
    let len = name.chars().count();
    if len == 0 || len > 100 || name.chars().any(char::is_control) {
        return Ok((
            StatusCode::BAD_REQUEST,
            NewOrgPage {
                chrome: cu.chrome("orgs").await?,
                error: Some("Give the organization a name of 1 to 100 characters.".into()),
                name,
            },
        )
            .into_response());
    }
    let now = state.clock.unix();
    let org = state
        .store
        .create_org(&cu.user.id, &name, now, cu.audit("org.created", &meta, now))
        .await?;
    cu.session.insert(ORG_ID, &org.id).await?;
    cu.flash(
        "success",
        format!("Created {}. You are its owner.", org.name),
    )
    .await?;
    Ok(Redirect::to("/settings/api-keys").into_response())
}

#[derive(Deserialize)]
pub struct SwitchForm {
    org_id: String,
}

pub async fn switch(
    State(state): State<AppState>,
    cu: CurrentUser,
    Form(form): Form<SwitchForm>,
) -> Result<Response> {
    // Only organizations the user belongs to; anything else is "not found".
    let m = state
        .store
        .membership(&cu.user.id, &form.org_id)
        .await?
        .ok_or(AppError::NotFound)?;
    cu.session.insert(ORG_ID, &m.org_id).await?;
    cu.flash("info", format!("Switched to {}.", m.org_name))
        .await?;
    Ok(Redirect::to("/settings/api-keys").into_response())
}
