//! The router: every feature's routes merged in one place, with the middleware stack
//! around them. The state they share is in [`crate::state`].

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderName, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};
use tower_http::{catch_panic::CatchPanicLayer, trace::TraceLayer};
use tower_sessions::{Expiry, SessionManagerLayer, cookie::SameSite};

pub use crate::state::{AppState, Inner};
use crate::{
    audit, auth,
    error::{self, AppError},
    keys, orgs,
    store::sessions::SessionBackend,
    verify,
};

/// Name of the session cookie. With https the `__Host-` prefix pins it to this exact
/// origin (Secure, Path=/, no Domain). It must not collide with an identity provider's
/// cookies on the same host (`_session`, `_interaction`).
pub fn session_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-keyward_session"
    } else {
        "keyward_session"
    }
}

/// Builds the whole application.
pub fn router(state: AppState, sessions: SessionBackend) -> Router {
    let secure = state.config.secure_cookies();
    let session_layer = SessionManagerLayer::new(sessions)
        .with_name(session_cookie_name(secure))
        .with_secure(secure)
        .with_http_only(true)
        // Lax, not Strict: the SSO callback is a top-level cross-site redirect that must
        // carry the session; CSRF tokens protect every form.
        .with_same_site(SameSite::Lax)
        .with_path("/")
        .with_expiry(Expiry::OnInactivity(
            time::Duration::try_from(state.config.session_idle).unwrap_or(time::Duration::HOUR),
        ));

    let dashboard = Router::new()
        .route("/", get(|| async { Redirect::to("/settings/api-keys") }))
        .merge(auth::router())
        .merge(crate::account::router())
        .merge(orgs::router())
        .merge(keys::router())
        .merge(audit::router())
        .merge(crate::members::router())
        .merge(crate::sso::router())
        .merge(crate::webhooks::router())
        .merge(crate::two_step::router())
        .merge(crate::portal::router())
        .fallback(|| async { AppError::NotFound })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::csrf::guard,
        ))
        // Before the CSRF check reads the session: budget and capacity refusals cost no
        // database access.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::throttle::guard,
        ))
        .layer(session_layer.clone())
        .layer(middleware::from_fn(session_outage))
        // Outside the session layer, so that loading and saving the session are bounded
        // too; inside the error renderer, so that a timeout is rendered like any error.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::deadline::guard,
        ))
        .layer(middleware::from_fn(no_store))
        .layer(middleware::from_fn(error::html_errors))
        // Outermost: every page, error pages included, shows this deployment's branding.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::branding::scope,
        ));

    // The deadline and JSON errors as one allocation-free layer (the verification hot path,
    // and the trivial JSON endpoint the load script compares it with: every route has the
    // request deadline).
    let api = verify::http::router()
        .merge(crate::leaks::router())
        .route(
            "/v1/ping",
            get(|| async { axum::Json(serde_json::json!({ "ok": true })) }),
        )
        .layer(crate::deadline::JsonDeadlineLayer(state.clone()));
    // The management API: a session (cookie) or an API key; its own CSRF check (header).
    // `api::router()` renders its own errors; the outer `json_errors` renders the deadline's
    // (it re-renders an already rendered error to the same JSON).
    let management = crate::api::router()
        .layer(session_layer)
        .layer(middleware::from_fn(session_outage))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::deadline::guard,
        ))
        .layer(middleware::from_fn(no_store))
        .layer(middleware::from_fn(error::json_errors))
        // Its error messages name the product too. (Not the verification doors: their
        // callers are the team's servers, and they stay free of per-request boxing.)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::branding::scope,
        ));

    // Liveness never touches the database (a restart would not bring it back); readiness
    // does, within the database timeout. Both are answered as plain text.
    let probes = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        // Off the session stack: Prometheus has no cookie (optional bearer token).
        .route("/metrics", get(crate::metrics::scrape))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::deadline::guard,
        ));

    Router::new()
        .merge(api)
        .merge(management)
        .merge(probes)
        .route("/static/app.css", get(static_css))
        .route("/static/app.js", get(static_js))
        .route("/static/passkeys.js", get(static_passkeys_js))
        .route("/brand.css", get(crate::branding::stylesheet))
        .route("/favicon.ico", get(crate::branding::favicon))
        .route(crate::branding::LOGO_PATH, get(crate::branding::logo))
        .merge(dashboard)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            security_headers,
        ))
        .layer(crate::metrics::HttpMetricsLayer(state.metrics.clone()))
        .layer(TraceLayer::new_for_http())
        .layer(CatchPanicLayer::custom(|_| {
            AppError::internal(anyhow::anyhow!("handler panicked")).into_response()
        }))
        .with_state(state)
}

async fn readyz(State(state): State<AppState>) -> Result<&'static str, AppError> {
    state.store.ping().await?;
    Ok("ready")
}

/// tower-sessions answers a bare 500 when it cannot save the session after the handler ran
/// (the database went away mid-request, or is locked). Tell the person what happened: 503
/// when the database was unavailable, else an internal error; both rendered as pages (or
/// JSON) by the surface like any error.
async fn session_outage(req: Request, next: Next) -> Response {
    let (res, failure) = crate::store::sessions::observe_failures(next.run(req)).await;
    if res.status() != StatusCode::INTERNAL_SERVER_ERROR
        || res.extensions().get::<error::ErrorInfo>().is_some()
    {
        return res;
    }
    match failure {
        Some(true) => AppError::Unavailable(anyhow::anyhow!("the session store is unavailable"))
            .into_response(),
        _ => AppError::internal(anyhow::anyhow!("the session could not be saved")).into_response(),
    }
}

/// Bumped when the assets change, so browsers fetch the new ones (`?v=`).
pub const ASSET_VERSION: &str = "1";

async fn static_css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        include_str!("../static/app.css"),
    )
}

async fn static_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        include_str!("../static/app.js"),
    )
}

async fn static_passkeys_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        include_str!("../static/passkeys.js"),
    )
}

/// Dashboard pages are personal and some show secrets once: never cache them.
async fn no_store(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

async fn security_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    if state.config.secure_cookies() {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    if res.status() == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::debug!("500 response");
    }
    res
}
