//! Protecting an axum (or any tower) service with Keyward keys, in-process:
//!
//! ```no_run
//! # async fn demo(verifier: keyward::Verifier) {
//! use axum::{Router, routing::get};
//! use keyward::verify::layer::{RequireKey, VerifiedKey};
//!
//! async fn handler(key: VerifiedKey) -> String {
//!     format!("hello, org {}", key.org_id)
//! }
//! let app: Router = Router::new()
//!     .route("/things", get(handler))
//!     .layer(RequireKey::new(verifier).scopes(["read"]));
//! # }
//! ```
//!
//! The layer reads the key like the forward-auth endpoint (`Authorization: Bearer`,
//! `X-API-Key`), answers refusals with the same JSON bodies and `X-RateLimit-*` headers,
//! and hands the verified key to handlers as the [`VerifiedKey`] extractor.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    body::Body,
    extract::{ConnectInfo, FromRequestParts},
    http::{Request, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use futures_util::future::BoxFuture;
use tower::{Layer, Service};

use super::{Verifier, VerifyRequest, http::forward_auth_response};

/// The key that authenticated this request.
#[derive(Debug, Clone)]
pub struct VerifiedKey {
    pub key_id: String,
    pub org_id: String,
    pub name: String,
    pub environment: String,
    pub scopes: Vec<String>,
    pub metadata: serde_json::Value,
}

impl<S: Send + Sync> FromRequestParts<S> for VerifiedKey {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<VerifiedKey>().cloned().ok_or((
            StatusCode::INTERNAL_SERVER_ERROR,
            "route is not behind RequireKey",
        ))
    }
}

/// A tower layer that requires a valid key with the given scopes.
#[derive(Clone)]
pub struct RequireKey {
    verifier: Verifier,
    scopes: Arc<[String]>,
    cost: i64,
}

impl RequireKey {
    pub fn new(verifier: Verifier) -> Self {
        Self {
            verifier,
            scopes: Arc::from(Vec::new()),
            cost: 1,
        }
    }

    /// Credits a request through this layer costs a key that has credits (default 1; 0
    /// checks without spending).
    pub fn cost(mut self, cost: u32) -> Self {
        self.cost = i64::from(cost);
        self
    }

    /// Every one of these scopes is required.
    pub fn scopes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.scopes = scopes
            .into_iter()
            .map(Into::into)
            .collect::<Vec<_>>()
            .into();
        self
    }
}

impl<S> Layer<S> for RequireKey {
    type Service = RequireKeyService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequireKeyService {
            inner,
            guard: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RequireKeyService<S> {
    inner: S,
    guard: RequireKey,
}

impl<S> Service<Request<Body>> for RequireKeyService<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        // Take the service that was polled ready; leave a clone for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let guard = self.guard.clone();
        Box::pin(async move {
            let headers = req.headers();
            let key = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, k)| k.trim().to_string())
                .or_else(|| {
                    headers
                        .get("x-api-key")
                        .and_then(|v| v.to_str().ok())
                        .map(|s| s.trim().to_string())
                });
            let ip = req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip());
            let result = guard
                .verifier
                .check(&VerifyRequest {
                    key: key.as_deref(),
                    scopes: &guard.scopes,
                    ip,
                    cost: guard.cost,
                })
                .await;
            let v = match result {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(error = %e, "key verification failed; refusing (fail closed)");
                    return Ok((
                        StatusCode::SERVICE_UNAVAILABLE,
                        "key verification unavailable",
                    )
                        .into_response());
                }
            };
            if !v.valid {
                return Ok(forward_auth_response(&v, false));
            }
            let ratelimit = v.ratelimit;
            req.extensions_mut().insert(VerifiedKey {
                key_id: v.key_id().unwrap_or_default().to_string(),
                org_id: v.org_id().unwrap_or_default().to_string(),
                name: v.name().unwrap_or_default().to_string(),
                environment: v.environment().unwrap_or_default().to_string(),
                scopes: v.scope_list().to_vec(),
                metadata: v.metadata().cloned().unwrap_or(serde_json::Value::Null),
            });
            let mut res = inner.call(req).await?;
            if let Some(d) = ratelimit {
                let h = res.headers_mut();
                h.insert("x-ratelimit-limit", d.limit.into());
                h.insert("x-ratelimit-remaining", d.remaining.into());
                h.insert("x-ratelimit-reset", d.reset.into());
            }
            Ok(res)
        })
    }
}
