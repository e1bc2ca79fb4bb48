//! The HTTP doors of the pipeline:
//! - `POST /v1/keys/verify` for the deploying team's servers (verifier credential
//!   required): always 200 with the full result for a well-formed call.
//! - `/v1/auth` (any method) for reverse proxies' forward-auth: the presented key itself
//!   authenticates; the answer is a status code with headers and the reference docs' error
//!   bodies, and end users learn nothing beyond "invalid" or "expired".

use std::net::{IpAddr, SocketAddr};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{ConnectInfo, FromRequest, Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{any, post},
};
use serde::Deserialize;
use serde_json::json;

use super::{Verification, VerifyCode, VerifyRequest, ratelimit::Decision};
use crate::{
    error::{AppError, Result},
    metrics::Door,
    state::AppState,
    store::ApiKey,
};

/// Largest verify request body.
const MAX_BODY: usize = 16 * 1024;
/// Headers a verify answer can carry: its own (content type and length, cache control,
/// three `X-RateLimit-*`, two IETF fields) and the app's security headers (up to six).
const ANSWER_HEADERS: usize = 16;
/// Header a proxy sets to list the scopes a route requires (comma or space separated).
pub const REQUIRE_SCOPES_HEADER: &str = "x-keyward-require-scopes";

// Header names the doors read or write on every request, made once (looking a header up
// by `&str` parses and hashes the name each time).
const REQUIRE_SCOPES: HeaderName = HeaderName::from_static(REQUIRE_SCOPES_HEADER);
const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_KEYWARD_PROXY: HeaderName = HeaderName::from_static("x-keyward-proxy");
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

pub fn router() -> Router<AppState> {
    // No layers on these routes: every layer is another boxed service cloned per request,
    // on the hottest path there is (the verify API limits its body itself).
    Router::new()
        .route(
            "/v1/keys/verify",
            post(verify).fallback(|| async {
                // Another method: axum's 405 (it adds `Allow`), kept out of caches too.
                no_store(StatusCode::METHOD_NOT_ALLOWED.into_response())
            }),
        )
        .route("/v1/auth", any(forward_auth))
}

/// An answer about a key is about this moment: no cache may keep or replay it. Set on
/// every answer of both doors, errors included.
fn no_store(mut res: Response) -> Response {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

// ------------------------------------------------------------------ verify API

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    /// The key the end user presented.
    key: Option<String>,
    /// Scopes the request needs; every one must be granted.
    #[serde(default)]
    scopes: Vec<String>,
    /// The end user's IP address, for the key's allowlist.
    ip: Option<String>,
    /// Credits this request costs, for a key with credits: a whole number from 0 to
    /// 1,000,000,000 (default 1; 0 checks the key without spending).
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 1_000_000_000)]
    cost: Option<serde_json::Value>,
}

/// Largest cost of one verification.
pub const MAX_COST: i64 = 1_000_000_000;

/// The verify body's `cost`: absent is 1; anything but a whole number from 0 to
/// [`MAX_COST`] is refused with a sentence saying so.
fn parse_cost(v: Option<&serde_json::Value>) -> std::result::Result<i64, AppError> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(1),
        Some(v) => v
            .as_i64()
            .filter(|n| (0..=MAX_COST).contains(n))
            .ok_or_else(|| {
                AppError::bad_request(format!(
                    "\"cost\" must be a whole number from 0 to {MAX_COST} (got {v})."
                ))
            }),
    }
}

/// Checks the caller's verifier credential (in constant time: see
/// [`VerifierTokens`](crate::config::VerifierTokens)).
fn verifier_authorized(state: &AppState, headers: &HeaderMap) -> bool {
    bearer(headers).is_some_and(|p| state.config.verifier_tokens.accepts(p))
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// Verify a presented key: is it good, for which organization, with which scopes, within
/// its limits? Always 200 with the result for a well-formed call; `valid` tells.
#[utoipa::path(post, path = "/v1/keys/verify", tag = "verify", request_body = VerifyBody,
    responses(
        (status = 200, body = super::VerificationBody<'static>, description = "The result; see `valid` and `code`"),
        (status = 400, body = crate::api::ErrorBody), (status = 401, body = crate::api::ErrorBody),
        (status = 413, body = crate::api::ErrorBody), (status = 503, body = crate::api::ErrorBody),
    ),
    security(("verifier" = [])))]
pub async fn verify(State(state): State<AppState>, req: Request) -> Response {
    no_store(verify_answer(&state, req).await.into_response())
}

async fn verify_answer(state: &AppState, req: Request) -> Result<Response> {
    let started = std::time::Instant::now();
    // Taken apart rather than extracted: axum's `HeaderMap` extractor copies the headers.
    let (parts, body) = req.into_parts();
    let headers = &parts.headers;
    if !verifier_authorized(state, headers) {
        tracing::warn!(
            event = "verify.unauthorized",
            "verify API called without a valid verifier credential"
        );
        return Ok(error_json(
            StatusCode::UNAUTHORIZED,
            "missing_authorization",
            "Send a verifier credential: Authorization: Bearer <token>.",
        ));
    }
    let body = verify_body(headers, body).await?;
    let ip = match body.ip.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            s.parse::<IpAddr>()
                .map_err(|_| AppError::bad_request("\"ip\" must be an IPv4 or IPv6 address."))?,
        ),
    };
    let cost = parse_cost(body.cost.as_ref())?;
    let result = state
        .verifier
        .check(&VerifyRequest {
            key: body.key.as_deref(),
            scopes: &body.scopes,
            ip,
            cost,
        })
        .await
        .map_err(fail_closed)?;
    state
        .metrics
        .verification(Door::VerifyApi, result.code, started);
    // The answer is built by hand to spare allocations: a boxed slice becomes `Bytes` as it
    // is (a `Vec` with room to spare costs `Bytes` a box of its own; the shrink to a boxed
    // slice stays in place under mimalloc when the JSON fills at least half of its buffer,
    // as an answer about a key does), and the header map is allocated once with room for
    // this answer's headers and the app's security headers instead of growing on the way.
    let mut res = Response::new(Body::from(Bytes::from(result.to_json().into_boxed_slice())));
    *res.headers_mut() = HeaderMap::with_capacity(ANSWER_HEADERS);
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    rate_limit_headers(&mut res, &result);
    if state.config.ietf_ratelimit_headers {
        ietf_rate_limit_headers(&mut res, &result, state.clock.unix());
    }
    Ok(res)
}

/// The verify API's body: at most [`MAX_BODY`] bytes of JSON (413 beyond, whatever its
/// media type), parsed as [`VerifyBody`].
///
/// Written out instead of axum's `Json` extractor behind a `DefaultBodyLimit` layer: that
/// layer is one more boxed service per request, and `Json` parses through
/// `serde_path_to_error` every time. Here the usual call (`application/json`, well formed)
/// is one plain `serde_json` parse; anything else is handed to axum's `Json` itself, so
/// that its rules and messages (415 for another media type, the path of a wrong field)
/// stay the only ones.
async fn verify_body(headers: &HeaderMap, body: Body) -> Result<VerifyBody> {
    let too_large = || {
        AppError::Rejected(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "The request body is larger than {} KiB; a verify call is a small JSON object.",
                MAX_BODY / 1024
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(too_large());
    }
    let bytes = read_to_end(body).await.map_err(|e| {
        if e.is::<http_body_util::LengthLimitError>() {
            too_large()
        } else {
            AppError::bad_request("The request body could not be read to its end.")
        }
    })?;
    // hyper's HTTP/1 reader already refuses a body shorter than its `Content-Length`; this
    // holds the early stop above to it whatever the protocol.
    if declared.is_some_and(|n| n != bytes.len()) {
        return Err(AppError::bad_request(
            "The request body is not as long as its Content-Length says.",
        ));
    }
    let content_type = headers.get(header::CONTENT_TYPE);
    if content_type.is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"application/json"))
        && let Ok(body) = serde_json::from_slice(&bytes)
    {
        return Ok(body);
    }
    let mut req = Request::new(Body::from(bytes));
    if let Some(v) = content_type {
        req.headers_mut().insert(header::CONTENT_TYPE, v.clone());
    }
    match Json::<VerifyBody>::from_request(req, &()).await {
        Ok(Json(body)) => Ok(body),
        Err(e) => {
            // Wrong JSON types are as malformed as broken JSON: both 400.
            let status = match e.status() {
                StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
                other => other,
            };
            Err(AppError::Rejected(
                status,
                format!("Malformed request body: {}", e.body_text()),
            ))
        }
    }
}

/// The whole body, at most [`MAX_BODY`] bytes (a `LengthLimitError` beyond).
///
/// Written out instead of `BodyExt::collect`, which reads until the body says `None`:
/// hyper hands a request body over through a channel, and `collect` polls it once more
/// after the last chunk to learn that it is closed. Here reading stops as soon as the body
/// reports its end (all of its `Content-Length` received), which for the usual verify call
/// is right after its one chunk: one poll of the channel per call instead of two (counted
/// under callgrind; a lock and a waker's registration saved, no more).
async fn read_to_end(body: Body) -> std::result::Result<Bytes, axum::BoxError> {
    use axum::body::HttpBody;
    use http_body_util::BodyExt;
    let mut body = http_body_util::Limited::new(body, MAX_BODY);
    // One chunk is kept as it came; several are copied into one buffer (at most MAX_BODY).
    let mut first = Bytes::new();
    let mut joined = Vec::new();
    while !body.is_end_stream() {
        let Some(frame) = body.frame().await else {
            break;
        };
        let Ok(data) = frame?.into_data() else {
            continue; // trailers: not part of the JSON
        };
        if first.is_empty() && joined.is_empty() {
            first = data;
        } else {
            if joined.is_empty() {
                joined.extend_from_slice(&first);
            }
            joined.extend_from_slice(&data);
        }
    }
    Ok(if joined.is_empty() {
        first
    } else {
        Bytes::from(joined)
    })
}

/// Store failures never produce an answer: 503, and the caller must deny.
pub(crate) fn fail_closed(e: crate::store::StoreError) -> AppError {
    match AppError::from(e) {
        AppError::Internal(inner) => AppError::Unavailable(inner),
        other => other,
    }
}

// ------------------------------------------------------------------ forward auth

/// Query parameters that only ever hold API keys.
const KEY_PARAMS: [&str; 2] = ["api_key", "apikey"];

/// Whether a URL carries an API key: an `api_key` parameter, or any parameter whose value
/// is one of this deployment's keys (keys in URLs end up in logs and browser histories).
/// Parameters are split on `&` and `;` and percent-decoded (repeatedly, so a doubly
/// encoded key is caught too) before they are looked at.
pub(crate) fn key_in_query(uri: &str, prefix: &str) -> bool {
    let query = uri.split_once('?').map_or("", |(_, q)| q);
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    if query.is_empty() {
        return false;
    }
    let looks_like_key = |value: &str| {
        value
            .trim_start()
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('_'))
            .is_some_and(|rest| rest.starts_with("live_") || rest.starts_with("test_"))
    };
    query.split(['&', ';']).any(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decoded(name);
        KEY_PARAMS
            .iter()
            .any(|p| name.trim().eq_ignore_ascii_case(p))
            || looks_like_key(&decoded(value))
    })
}

/// `s` percent-decoded (and `+` as a space) until it no longer changes, at most 3 times;
/// borrowed when there is nothing to decode (the usual case: no allocation).
fn decoded(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut current = s.to_string();
    for _ in 0..3 {
        let next = urlencoding::decode(&current.replace('+', " "))
            .map(|c| c.into_owned())
            .unwrap_or_else(|_| current.clone());
        if next == current {
            break;
        }
        current = next;
    }
    std::borrow::Cow::Owned(current)
}

pub(crate) fn presented_key<'a>(state: &AppState, headers: &'a HeaderMap) -> Option<&'a str> {
    if let Some(name) = &state.config.key_header
        && let Some(v) = headers.get(name).and_then(|v| v.to_str().ok())
    {
        return Some(v.trim());
    }
    bearer(headers).or_else(|| {
        headers
            .get(X_API_KEY)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    })
}

/// The end user's IP (see [`crate::net::client_ip`]).
pub(crate) fn client_ip(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
) -> Option<IpAddr> {
    crate::net::client_ip(state.config.client_ip_header.as_ref(), headers, peer)
}

/// Forward-auth for reverse proxies (any method): 200 with `X-Keyward-*` headers for a good
/// key; 401/403/429 with the reference error bodies otherwise.
#[utoipa::path(method(get, post), path = "/v1/auth", tag = "verify",
    params(
        ("x-keyward-require-scopes" = Option<String>, Header, description = "Scopes the route needs"),
        ("x-api-key" = Option<String>, Header, description = "The key (or Authorization: Bearer)"),
    ),
    responses(
        (status = 200, description = "The key is good; see the X-Keyward-* headers"),
        (status = 400, body = crate::api::ErrorBody, description = "Key in the URL"),
        (status = 401, body = crate::api::ErrorBody), (status = 403, body = crate::api::ErrorBody),
        (status = 429, body = crate::api::ErrorBody), (status = 503, body = crate::api::ErrorBody),
    ),
    security(("api_key" = [])))]
// The request by value: extracting `Parts` would copy every header.
pub async fn forward_auth(State(state): State<AppState>, req: axum::extract::Request) -> Response {
    no_store(forward_auth_answer(&state, req).await)
}

async fn forward_auth_answer(state: &AppState, req: axum::extract::Request) -> Response {
    let started = std::time::Instant::now();
    let (uri, headers) = (req.uri(), req.headers());
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let original_uri = headers
        .get(X_ORIGINAL_URI)
        .or_else(|| headers.get(X_FORWARDED_URI))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let prefix = &state.config.key_prefix;
    let query = uri.query().unwrap_or("");
    if (!query.is_empty() && key_in_query(&format!("?{query}"), prefix))
        || key_in_query(original_uri, prefix)
    {
        return error_json(
            StatusCode::BAD_REQUEST,
            "key_in_query",
            "Send the API key in a header (Authorization: Bearer …), never in the URL.",
        );
    }
    // Every value of the header counts (a proxy that appends rather than replaces must not
    // let a client's own, weaker value win).
    let scopes: Vec<String> = headers
        .get_all(REQUIRE_SCOPES)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ' ']))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let req = VerifyRequest {
        key: presented_key(state, headers),
        scopes: &scopes,
        ip: client_ip(state, headers, peer),
        ..VerifyRequest::default()
    };
    let result = match state.verifier.check(&req).await {
        Ok(r) => r,
        Err(e) => return fail_closed(e).into_response(),
    };
    state
        .metrics
        .verification(Door::ForwardAuth, result.code, started);
    let nginx = headers
        .get(X_KEYWARD_PROXY)
        .is_some_and(|v| v.as_bytes() == b"nginx");
    let mut res = forward_auth_response(&result, nginx);
    rate_limit_headers(&mut res, &result);
    if state.config.ietf_ratelimit_headers {
        ietf_rate_limit_headers(&mut res, &result, state.clock.unix());
    }
    res
}

/// Maps a result to the status and body an end user behind the proxy sees. Unknown,
/// revoked, disabled and malformed keys all look alike (`invalid_api_key`).
pub fn forward_auth_response(v: &Verification, nginx: bool) -> Response {
    let (status, code, message) = match v.code {
        VerifyCode::Valid => {
            let mut res = StatusCode::OK.into_response();
            if let Some(key) = v.key.as_deref() {
                let identity = identity_headers(key);
                let h = res.headers_mut();
                // Room for these, the rate-limit headers and the security headers at once.
                h.reserve(identity.len() + 10);
                for (name, value) in identity {
                    h.insert(name.clone(), value.clone());
                }
            }
            return res;
        }
        VerifyCode::Missing => (
            StatusCode::UNAUTHORIZED,
            "missing_authorization",
            "No API key was sent. Send it as Authorization: Bearer <key>.",
        ),
        VerifyCode::Expired => (
            StatusCode::UNAUTHORIZED,
            "expired_api_key",
            "This API key has expired. Create a new key in the dashboard.",
        ),
        VerifyCode::ExceedsMaxLifetime => (
            StatusCode::UNAUTHORIZED,
            "exceeds_max_lifetime",
            "This API key lives longer than its organization's key policy allows. Shorten its expiry or create a new key in the dashboard.",
        ),
        VerifyCode::InvalidFormat
        | VerifyCode::NotFound
        | VerifyCode::Revoked
        | VerifyCode::Disabled => (
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "The API key is invalid or has been revoked.",
        ),
        VerifyCode::InsufficientScope => (
            StatusCode::FORBIDDEN,
            "insufficient_permissions",
            "This API key does not have the scope this request needs.",
        ),
        VerifyCode::IpNotAllowed => (
            StatusCode::FORBIDDEN,
            "insufficient_permissions",
            "This API key may not be used from this IP address.",
        ),
        VerifyCode::RateLimited => (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            "Too many requests.",
        ),
        VerifyCode::QuotaExceeded => (
            StatusCode::TOO_MANY_REQUESTS,
            "quota_exceeded",
            "The daily request quota of this API key is used up.",
        ),
        VerifyCode::UsageExceeded => (
            StatusCode::TOO_MANY_REQUESTS,
            "credits_exhausted",
            "The credits of this API key are used up.",
        ),
    };
    // Credits without a refill come back only when someone adds some: no retry time.
    let no_retry = v.code == VerifyCode::UsageExceeded && v.retry_after.is_none();
    let mut res = if status == StatusCode::TOO_MANY_REQUESTS && no_retry {
        let message = format!("{message} Ask the key's owner to add credits.");
        (
            status,
            Json(json!({ "error": { "code": code, "message": message } })),
        )
            .into_response()
    } else if status == StatusCode::TOO_MANY_REQUESTS {
        let retry = v.retry_after.unwrap_or(1);
        let message = format!("{message} Please retry after {retry} seconds.");
        let mut res = (
            status,
            Json(json!({ "error": { "code": code, "message": message }, "retry_after": retry })),
        )
            .into_response();
        if let Ok(value) = HeaderValue::from_str(&retry.to_string()) {
            res.headers_mut().insert(header::RETRY_AFTER, value);
        }
        res
    } else {
        error_json(status, code, message)
    };
    if let Ok(value) = HeaderValue::from_str(code) {
        res.headers_mut()
            .insert(HeaderName::from_static("x-keyward-error"), value);
    }
    // nginx `auth_request` treats anything but 2xx/401/403 as a server error, so for
    // nginx the 429 travels as a 403 that names the real status (see README).
    if nginx && status == StatusCode::TOO_MANY_REQUESTS {
        *res.status_mut() = StatusCode::FORBIDDEN;
        res.headers_mut().insert(
            HeaderName::from_static("x-keyward-status"),
            HeaderValue::from_static("429"),
        );
    }
    res
}

/// The `X-Keyward-*` headers that tell the upstream whose key it was: built once per
/// cached key (header values share their bytes when cloned), not once per request.
fn identity_headers(key: &ApiKey) -> &[(HeaderName, HeaderValue)] {
    key.parsed.forward_auth_headers.get_or_init(|| {
        let scopes = key.scopes_parsed().join(" ");
        [
            ("x-keyward-key-id", key.id.as_str()),
            ("x-keyward-org-id", key.org_id.as_str()),
            ("x-keyward-scopes", scopes.as_str()),
            ("x-keyward-environment", key.environment.as_str()),
            (
                "x-keyward-org-external-id",
                key.org_external_id.as_deref().unwrap_or_default(),
            ),
        ]
        .into_iter()
        .filter(|(name, value)| !(value.is_empty() && *name == "x-keyward-org-external-id"))
        .filter_map(|(name, value)| {
            Some((
                HeaderName::from_static(name),
                HeaderValue::from_str(value).ok()?,
            ))
        })
        .collect()
    })
}

pub(crate) fn error_json(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

pub(crate) fn rate_limit_headers(res: &mut Response, v: &Verification) {
    let Some(d) = v.ratelimit.or_else(|| {
        v.quota.map(|q| Decision {
            allowed: true,
            limit: q.limit,
            remaining: q.remaining,
            reset: q.reset,
            retry_after: 0,
            window: 86_400,
        })
    }) else {
        return;
    };
    let h = res.headers_mut();
    for (name, value) in [
        (X_RATELIMIT_LIMIT, d.limit),
        (X_RATELIMIT_REMAINING, d.remaining),
        (X_RATELIMIT_RESET, d.reset),
    ] {
        h.insert(name, number_value(value));
    }
}

/// A number as a header value, in one allocation (`HeaderValue::from(i64)` takes two: it
/// writes into a growable buffer and then shares it).
fn number_value(n: i64) -> HeaderValue {
    HeaderValue::from_bytes(itoa::Buffer::new().format(n).as_bytes())
        .expect("digits and a minus sign are a valid header value")
}

/// The IETF draft's `RateLimit-Policy` and `RateLimit` fields
/// (draft-ietf-httpapi-ratelimit-headers-09): one item per limit of the key, `"key"` for
/// its rate limit (quota `q` per window `w` seconds) and `"daily"` for its daily quota;
/// `r` is what remains and `t` the seconds until it is whole again.
pub(crate) fn ietf_rate_limit_headers(res: &mut Response, v: &Verification, now: i64) {
    let limits = [
        v.ratelimit
            .map(|d| ("key", d.limit, d.window, d.remaining, d.reset)),
        v.quota
            .map(|q| ("daily", q.limit, 86_400, q.remaining, q.reset)),
    ];
    let (mut policy, mut state) = (Vec::new(), Vec::new());
    for (name, limit, window, remaining, reset) in limits.into_iter().flatten() {
        policy.push(format!("\"{name}\";q={limit};w={window}"));
        state.push(format!(
            "\"{name}\";r={};t={}",
            remaining.max(0),
            (reset - now).max(0)
        ));
    }
    if policy.is_empty() {
        return;
    }
    let h = res.headers_mut();
    for (name, items) in [("ratelimit-policy", policy), ("ratelimit", state)] {
        if let Ok(value) = HeaderValue::from_str(&items.join(", ")) {
            h.insert(HeaderName::from_static(name), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Body, Bytes, MAX_BODY, key_in_query, number_value, read_to_end, verify_body};
    use axum::{
        http::{HeaderMap, HeaderValue, StatusCode, header},
        response::IntoResponse,
    };

    #[tokio::test]
    async fn a_body_must_be_as_long_as_it_says() {
        let headers = |n: usize| {
            let mut h = HeaderMap::new();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            h
        };
        let json = r#"{"key":"k"}"#;
        let body = verify_body(&headers(json.len()), Body::from(json))
            .await
            .unwrap();
        assert_eq!(body.key.as_deref(), Some("k"));
        for n in [json.len() - 1, json.len() + 1] {
            let err = verify_body(&headers(n), Body::from(json))
                .await
                .unwrap_err();
            assert_eq!(err.into_response().status(), StatusCode::BAD_REQUEST);
        }
    }

    #[tokio::test]
    async fn a_body_is_read_whole() {
        // One chunk is handed on as it came.
        let one = read_to_end(Body::from("{\"key\":\"k\"}")).await.unwrap();
        assert_eq!(one, "{\"key\":\"k\"}");
        // Several are joined in order, empty ones included.
        let chunks =
            ["{\"ke", "", "y\":", "\"k\"}"].map(|c| Ok::<_, std::io::Error>(Bytes::from(c)));
        let joined = read_to_end(Body::from_stream(futures_util::stream::iter(chunks)))
            .await
            .unwrap();
        assert_eq!(joined, "{\"key\":\"k\"}");
        assert_eq!(read_to_end(Body::empty()).await.unwrap(), "");
        // One byte over the limit, in pieces, is the limit's error.
        let big = vec![
            Ok::<_, std::io::Error>(Bytes::from(vec![b' '; MAX_BODY])),
            Ok(Bytes::from("x")),
        ];
        let err = read_to_end(Body::from_stream(futures_util::stream::iter(big)))
            .await
            .unwrap_err();
        assert!(err.is::<http_body_util::LengthLimitError>(), "{err}");
    }

    #[test]
    fn numbers_are_header_values_as_http_writes_them() {
        for n in [0, 7, -1, 1_000_000, 1_796_377_800, i64::MAX, i64::MIN] {
            assert_eq!(number_value(n), HeaderValue::from(n), "{n}");
        }
    }

    #[test]
    fn keys_in_urls_are_spotted() {
        assert!(key_in_query("/v1/auth?api_key=x", "kw"));
        assert!(key_in_query("/things?a=1&ApiKey=abc", "kw"));
        assert!(key_in_query("/things?token=kw_live_abc", "kw"));
        assert!(key_in_query("/things?t=kw_test_abc", "kw"));
        assert!(!key_in_query("/things?page_token=abc&key=name", "kw"));
        assert!(!key_in_query("/v1/auth", "kw"));
    }

    #[test]
    fn encoded_and_semicolon_separated_keys_are_spotted() {
        // Percent-encoded values and names, once and twice.
        assert!(key_in_query("/things?t=kw%5Flive%5Fabc", "kw"));
        assert!(key_in_query("/things?t=%6Bw_test_abc", "kw"));
        assert!(key_in_query("/things?t=kw%255Flive%255Fabc", "kw"));
        assert!(key_in_query("/things?api%5Fkey=x", "kw"));
        assert!(key_in_query("/things?API%5FKEY=x", "kw"));
        // `;` separates parameters too.
        assert!(key_in_query("/things?a=1;api_key=x", "kw"));
        assert!(key_in_query("/things?a=1;t=kw_live_abc", "kw"));
        // Leading spaces (`+` or `%20`) do not hide a key.
        assert!(key_in_query("/things?t=+kw_live_abc", "kw"));
        assert!(key_in_query("/things?t=%20kw_live_abc", "kw"));
        // Not keys.
        assert!(!key_in_query("/things?q=kw%5Flive", "kw"));
        assert!(!key_in_query("/things?q=100%25;x=%zz", "kw"));
        assert!(!key_in_query("/things#api_key=x", "kw"));
    }
}
