//! The OpenAPI 3.1 document (`/api/v1/openapi.json`), generated from the handlers'
//! annotations: the management routes are registered through `utoipa-axum`, so a route
//! cannot exist without its entry; the verification doors are listed here.

use axum::{Router, middleware, routing::get};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{
        ApiKey as ApiKeyScheme, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
    },
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{audit, keys_import, orgs};
use crate::keys::api as keys;
use crate::{state::AppState, verify::http as verify_http};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Keyward API",
        description = "Management API (`/api/v1`: keys and the audit log) and the verification doors (`/v1/keys/verify`, `/v1/auth`). Success: `{\"data\": …}`; failure: `{\"error\": {\"code\", \"message\"}}`.",
        license(name = "MIT OR Apache-2.0"),
    ),
    paths(verify_http::verify, verify_http::forward_auth),
    modifiers(&Security),
    tags(
        (name = "keys", description = "Create, list, change, roll and revoke API keys"),
        (name = "audit", description = "The organization's audit log"),
        (name = "verify", description = "Verification of presented keys"),
        (name = "operator", description = "The deploying team's backend (an operator credential): organizations' external ids, sign-in hand-offs, key import"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key with the keys:read or keys:write scope (also accepted as X-API-Key).",
                    ))
                    .build(),
            ),
        );
        c.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKeyScheme::Cookie(ApiKeyValue::with_description(
                "keyward_session",
                "A dashboard session; writes also need the X-CSRF-Token header.",
            ))),
        );
        c.add_security_scheme(
            "verifier",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The deployment's verifier credential (KEYWARD_VERIFIER_TOKENS).",
                    ))
                    .build(),
            ),
        );
        c.add_security_scheme(
            "operator",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The deploying team's operator credential (KEYWARD_OPERATOR_TOKENS).",
                    ))
                    .build(),
            ),
        );
    }
}

/// The management routes, and the document covering them and the verification doors.
pub fn split() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(keys::list, keys::create))
        .routes(routes!(keys::get, keys::update))
        .routes(routes!(keys::roll))
        .routes(routes!(keys::revoke))
        .routes(routes!(keys::change_credits))
        .routes(routes!(keys::revoke_current))
        .routes(routes!(audit::list))
        .routes(routes!(audit::export))
        .routes(routes!(orgs::by_external_id))
        .routes(routes!(orgs::set_external_id))
        .routes(routes!(crate::portal::api::create))
        .routes(routes!(crate::portal::api::update_user))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(keys_import::import))
                .layer(keys_import::body_limit()),
        )
        .split_for_parts()
}

/// The generated document.
pub fn document() -> utoipa::openapi::OpenApi {
    split().1
}

/// `/api/v1/…` with `/api/v1/openapi.json`.
pub fn router() -> Router<AppState> {
    let (routes, doc) = split();
    let json = doc.to_pretty_json().unwrap_or_else(|_| "{}".into());
    routes
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let json = json.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        json,
                    )
                }
            }),
        )
        .layer(middleware::from_fn(crate::error::json_errors))
}
