//! Settings → Account → Change password.

use crate::audit::AuditAction;
use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Form,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::{
    audit::ClientMeta,
    auth::{
        Chrome, CurrentUser,
        password::{self, MAX_LEN},
        session::EPOCH,
    },
    error::{AppError, Result},
    state::AppState,
    store::NewAudit,
};

#[derive(Template, WebTemplate)]
#[template(path = "settings/account/password.html")]
struct PasswordPage {
    chrome: Chrome,
    has_password: bool,
    current_error: Option<String>,
    new_error: Option<String>,
    sign_out_others: bool,
    min_len: usize,
    /// Without a second factor: the shorter minimum one would allow.
    min_len_with_two_step: Option<usize>,
    max_len: usize,
}

impl PasswordPage {
    async fn new(state: &AppState, cu: &CurrentUser) -> Result<Self> {
        let two_step = state.store.has_second_factor(&cu.user.id).await?;
        let (min_len, with_two_step) = (
            state.config.password_min_for(two_step),
            state.config.password_min_for(true),
        );
        Ok(Self {
            chrome: cu.chrome("account").await?,
            has_password: cu.user.password_hash.is_some(),
            current_error: None,
            new_error: None,
            sign_out_others: true,
            min_len,
            min_len_with_two_step: (with_two_step < min_len).then_some(with_two_step),
            max_len: MAX_LEN,
        })
    }
}

pub async fn page(State(state): State<AppState>, cu: CurrentUser) -> Result<Response> {
    Ok(PasswordPage::new(&state, &cu).await?.into_response())
}

#[derive(Deserialize)]
pub struct ChangeForm {
    current_password: SecretString,
    new_password: SecretString,
    /// A checkbox: present (checked, the default) or absent.
    #[serde(default)]
    sign_out_others: Option<String>,
}

pub async fn change(
    State(state): State<AppState>,
    cu: CurrentUser,
    meta: ClientMeta,
    headers: axum::http::HeaderMap,
    Form(form): Form<ChangeForm>,
) -> Result<Response> {
    let Some(stored) = cu.user.password_hash.as_deref() else {
        return Err(AppError::bad_request(
            "Your account has no password: you sign in with single sign-on, and there is no current password to change.",
        ));
    };
    let sign_out_others = form.sign_out_others.is_some();
    let mut page = PasswordPage::new(&state, &cu).await?;
    page.sign_out_others = sign_out_others;
    // The same argon2 check as sign-in, under the same throttle: someone holding a stolen
    // session cannot guess the password here faster than at the sign-in form.
    use crate::auth::throttle;
    // This browser's device token, if trusted, keeps its own count: an attack on the
    // account from elsewhere does not stop its owner from changing the password here.
    let device = throttle::device_token(&headers, state.config.secure_cookies())
        .map(|t| throttle::device_hash(&t));
    let _turn = state
        .throttle
        .turn(&throttle::lane(&cu.user.email, device.as_deref()))
        .await?;
    let now = state.clock.unix();
    let gate = state
        .store
        .sign_in_gate(&cu.user, device.as_deref(), throttle::RULES, now)
        .await?;
    if gate == crate::store::SignInGate::Closed {
        page.current_error = Some(
            "Too many wrong passwords for this account: try again later, or reset your password."
                .into(),
        );
        return Ok((StatusCode::TOO_MANY_REQUESTS, page).into_response());
    }
    let verified = state
        .passwords
        .verify(&form.current_password, Some(stored))
        .await?;
    if !verified.ok {
        let failed = meta
            .stamp(NewAudit::new(AuditAction::AuthSignInFailed, now))
            .actor(Some(&cu.user.id), &cu.user.email)
            .target("user", &cu.user.id, &cu.user.email);
        state
            .store
            .login_failed(&cu.user.id, &gate, throttle::RULES, &failed)
            .await?;
        tracing::warn!(event = "account.password_change_refused", user_id = %cu.user.id, ip = %meta.ip, "wrong current password");
        page.current_error =
            Some("Your current password is not correct. Nothing was changed.".into());
        return Ok((StatusCode::BAD_REQUEST, page).into_response());
    }
    let new_password = form.new_password.expose_secret();
    if let Err(why) = password::check_policy(
        new_password,
        &cu.user.email,
        page.min_len,
        &state.config.branding.product_name,
    ) {
        page.new_error = Some(why.to_string());
        return Ok((StatusCode::BAD_REQUEST, page).into_response());
    }
    let needs_two_step = new_password.chars().count() < state.config.min_password_length;
    let hash = state.passwords.hash(&form.new_password).await?;
    let current = super::sessions::current_hash(&cu)?;
    let audit = meta
        .stamp(NewAudit::new(AuditAction::AccountPasswordChanged, now))
        .actor(Some(&cu.user.id), &cu.user.email)
        .target("user", &cu.user.id, &cu.user.email)
        .details(serde_json::json!({ "signed_out_other_sessions": sign_out_others }));
    let Some(epoch) = state
        .store
        .change_password(
            &cu.user.id,
            &hash,
            needs_two_step,
            sign_out_others.then_some(current.as_slice()),
            &audit,
        )
        .await?
    else {
        // The last second factor went while this form was open.
        page.min_len = state.config.min_password_length;
        page.min_len_with_two_step = None;
        page.new_error = Some(
            password::PasswordRejection::TooShort {
                min: page.min_len,
                got: new_password.chars().count(),
            }
            .to_string(),
        );
        return Ok((StatusCode::BAD_REQUEST, page).into_response());
    };
    // This browser stays signed in, under a new session id and the account's new epoch.
    cu.session.cycle_id().await?;
    cu.session.insert(EPOCH, epoch).await?;
    tracing::info!(event = %AuditAction::AccountPasswordChanged, user_id = %cu.user.id, signed_out_others = sign_out_others, "password changed");

    let when = crate::templates::exact_utc(state.clock.now());
    let browser = super::useragent::label(&meta.user_agent);
    let sessions = if sign_out_others {
        "Your other sessions were signed out.\n\n"
    } else {
        ""
    };
    let product = &state.config.branding.product_name;
    let body = format!(
        "The password of your {product} account ({}) was changed on {when} from {browser} (IP address {}).\n\n{sessions}If it was not you, choose a new password now at {}/forgot-password, and tell your administrator.\n",
        cu.user.email, meta.ip, state.config.base_url
    );
    state
        .mailer
        .send(
            &cu.user.email,
            &format!("Your {product} password was changed"),
            &body,
        )
        .await;
    cu.flash(
        "success",
        if sign_out_others {
            "Password changed. Your other sessions were signed out."
        } else {
            "Password changed."
        },
    )
    .await?;
    Ok(Redirect::to("/settings/account").into_response())
}
