//! Prometheus metrics: `GET /metrics` in the text exposition format.
//!
//! Built on the `metrics` facade with `metrics-exporter-prometheus`. Each [`AppState`] owns
//! its own recorder (not the process-global one), so several apps in one process (the
//! tests) keep separate counts. Labels are bounded: doors, codes, methods, outcomes, route
//! templates and status codes — never a key id, an organization id or an email.
//!
//! The hot paths use handles registered once: a verification bumps a pre-registered
//! counter and histogram (no allocation), and the HTTP layer looks its handles up by route
//! template under a read lock, registering them only the first time a (route, method,
//! status) is seen. Values the application already keeps (cache statistics, rate-limit
//! decisions, the pool, outbox backlogs) are read when Prometheus scrapes.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, RwLock},
    task::{Context, Poll},
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use metrics::{Counter, Histogram, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use tower::{Layer, Service};

use crate::{state::AppState, verify::VerifyCode};

/// Where a verification came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// `POST /v1/keys/verify`.
    VerifyApi,
    /// `/v1/auth` (reverse proxies).
    ForwardAuth,
    /// The management API, called with an API key.
    ManagementApi,
}

impl Door {
    const ALL: [Door; 3] = [Door::VerifyApi, Door::ForwardAuth, Door::ManagementApi];

    pub fn as_str(self) -> &'static str {
        match self {
            Door::VerifyApi => "verify_api",
            Door::ForwardAuth => "forward_auth",
            Door::ManagementApi => "management_api",
        }
    }
}

/// Buckets of the verification latency histogram (seconds): 50 µs to 1 s.
const VERIFY_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 0.25, 1.0,
];
/// OpenTelemetry's advice for `http.server.request.duration` (seconds).
const HTTP_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

const VERIFICATIONS: &str = "keyward_verifications_total";
const VERIFY_SECONDS: &str = "keyward_verification_duration_seconds";
const HTTP_SECONDS: &str = "http_server_request_duration_seconds";

/// The metrics of one application. Cheap to clone.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// `[door][code]`.
    verifications: Vec<Counter>,
    verify_seconds: Vec<Histogram>,
    /// Route template → handles per (method, status).
    http: RwLock<HashMap<String, Vec<HttpHandles>>>,
}

struct HttpHandles {
    method: Method,
    status: u16,
    seconds: Histogram,
}

static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Self {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(VERIFY_SECONDS.into()), &VERIFY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(HTTP_SECONDS.into()), &HTTP_BUCKETS)
            })
            .unwrap_or_else(|_| unreachable!("the bucket lists are not empty"));
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        describe(&recorder);
        let mut verifications = Vec::new();
        let mut verify_seconds = Vec::new();
        for door in Door::ALL {
            for code in VerifyCode::ALL {
                verifications.push(recorder.register_counter(
                    &Key::from_parts(
                        VERIFICATIONS,
                        vec![
                            Label::new("door", door.as_str()),
                            Label::new("code", code.as_str()),
                        ],
                    ),
                    &METADATA,
                ));
            }
            verify_seconds.push(recorder.register_histogram(
                &Key::from_parts(VERIFY_SECONDS, vec![Label::new("door", door.as_str())]),
                &METADATA,
            ));
        }
        recorder
            .register_gauge(
                &Key::from_parts(
                    "keyward_build_info",
                    vec![Label::new("version", env!("CARGO_PKG_VERSION"))],
                ),
                &METADATA,
            )
            .set(1.0);
        Self(Arc::new(Inner {
            recorder,
            handle,
            verifications,
            verify_seconds,
            http: RwLock::new(HashMap::new()),
        }))
    }

    /// Counts a verification answered at `door` and how long it took since `started`.
    pub fn verification(&self, door: Door, code: VerifyCode, started: Instant) {
        let d = door as usize;
        self.0.verifications[d * VerifyCode::ALL.len() + code as usize].increment(1);
        self.0.verify_seconds[d].record(started.elapsed().as_secs_f64());
    }

    /// Counts one event (sign-ins, throttles, deliveries: not per verification).
    pub fn count(&self, name: &'static str, labels: &[(&'static str, &'static str)]) {
        self.0
            .recorder
            .register_counter(&key(name, labels), &METADATA)
            .increment(1);
    }

    /// Counts a sign-in attempt. `method` is mapped onto a fixed set of label values
    /// (password, two_step, two_step_passkey, passkey, sso, invitation, other).
    pub fn sign_in(&self, method: &str, succeeded: bool) {
        let method = match method {
            "password" => "password",
            "passkey" => "passkey",
            "sso" => "sso",
            "invitation" => "invitation",
            "two_step" | "password+totp" | "password+recovery_code" => "two_step",
            "password+passkey" => "two_step_passkey",
            _ => "other",
        };
        let outcome = if succeeded { "success" } else { "failure" };
        self.count(
            "keyward_sign_ins_total",
            &[("method", method), ("outcome", outcome)],
        );
    }

    /// Sets a counter the application keeps itself to its current total.
    fn total(&self, name: &'static str, labels: &[(&'static str, &'static str)], value: u64) {
        self.0
            .recorder
            .register_counter(&key(name, labels), &METADATA)
            .absolute(value);
    }

    fn gauge(&self, name: &'static str, labels: &[(&'static str, &'static str)], value: f64) {
        self.0
            .recorder
            .register_gauge(&key(name, labels), &METADATA)
            .set(value);
    }

    /// The histogram of one (route, method, status), registered the first time it is seen.
    fn http_seconds(&self, route: &str, method: &Method, status: u16) -> Histogram {
        {
            let map = self.0.http.read().unwrap_or_else(|e| e.into_inner());
            if let Some(h) = map
                .get(route)
                .and_then(|v| v.iter().find(|h| h.status == status && h.method == *method))
            {
                return h.seconds.clone();
            }
        }
        let seconds = self.0.recorder.register_histogram(
            &Key::from_parts(
                HTTP_SECONDS,
                vec![
                    Label::new("http_route", route.to_string()),
                    Label::new("http_request_method", method.as_str().to_string()),
                    Label::new("http_response_status_code", status.to_string()),
                ],
            ),
            &METADATA,
        );
        let mut map = self.0.http.write().unwrap_or_else(|e| e.into_inner());
        map.entry(route.to_string()).or_default().push(HttpHandles {
            method: method.clone(),
            status,
            seconds: seconds.clone(),
        });
        seconds
    }

    /// Reads the values kept elsewhere, then renders every metric.
    pub async fn render(&self, state: &AppState) -> String {
        let cache = state.store.cache_stats();
        self.total("keyward_key_cache_hits_total", &[], cache.hits);
        self.total("keyward_key_cache_misses_total", &[], cache.misses);
        self.total("keyward_key_cache_evictions_total", &[], cache.evictions);
        self.gauge("keyward_key_cache_entries", &[], cache.entries as f64);

        let v = state.verifier.stats();
        for (source, outcome, n) in [
            ("local", "allowed", v.local_allowed),
            ("local", "refused", v.local_refused),
            ("shared", "allowed", v.shared_allowed),
            ("shared", "refused", v.shared_refused),
        ] {
            self.total(
                "keyward_rate_limit_decisions_total",
                &[("source", source), ("outcome", outcome)],
                n,
            );
        }
        self.total(
            "keyward_throttled_total",
            &[("surface", "verification")],
            v.sources_throttled,
        );
        self.total(
            "keyward_shared_limits_unavailable_total",
            &[],
            v.shared_unavailable,
        );

        let pool = state.store.pool_stats();
        self.gauge("keyward_db_pool_connections", &[], pool.size as f64);
        self.gauge("keyward_db_pool_idle", &[], pool.idle as f64);
        self.gauge("keyward_db_pool_max", &[], pool.max as f64);

        match state.store.backlogs().await {
            Ok(b) => {
                self.gauge(
                    "keyward_webhook_outbox_pending",
                    &[],
                    b.webhooks_pending as f64,
                );
                for (status, n) in [
                    ("sent", b.emails_sent),
                    ("logged", b.emails_logged),
                    ("failed", b.emails_failed),
                ] {
                    self.gauge("keyward_email_outbox", &[("status", status)], n as f64);
                }
                self.gauge("keyward_db_up", &[], 1.0);
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics: could not read the outbox backlogs");
                self.gauge("keyward_db_up", &[], 0.0);
            }
        }
        self.0.handle.render()
    }
}

fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
    Key::from_parts(
        name,
        labels
            .iter()
            .map(|(k, v)| Label::new(*k, *v))
            .collect::<Vec<_>>(),
    )
}

/// The HELP lines.
fn describe(r: &PrometheusRecorder) {
    use metrics::Unit;
    for (name, unit, help) in [
        (
            VERIFICATIONS,
            None,
            "Verifications answered, by door and result code.",
        ),
        (
            VERIFY_SECONDS,
            Some(Unit::Seconds),
            "Time to answer a verification, by door.",
        ),
        (
            HTTP_SECONDS,
            Some(Unit::Seconds),
            "Duration of HTTP server requests (OpenTelemetry http.server.request.duration), by route template, method and status.",
        ),
        (
            "keyward_build_info",
            None,
            "The running version (always 1).",
        ),
        (
            "keyward_key_cache_hits_total",
            None,
            "Verification lookups answered by this node's key cache.",
        ),
        (
            "keyward_key_cache_misses_total",
            None,
            "Verification lookups that went to the database.",
        ),
        (
            "keyward_key_cache_evictions_total",
            None,
            "Keys dropped from the cache to stay within its capacity.",
        ),
        (
            "keyward_key_cache_entries",
            None,
            "Keys in this node's verification cache.",
        ),
        (
            "keyward_rate_limit_decisions_total",
            None,
            "Rate-limit decisions, by source (local: this node's buckets; shared: through Redis) and outcome.",
        ),
        (
            "keyward_throttled_total",
            None,
            "Requests refused because their source sent too many failed attempts, by surface.",
        ),
        (
            "keyward_shared_limits_unavailable_total",
            None,
            "Limit decisions taken without Redis (fallback or refusal) because it was unreachable.",
        ),
        (
            "keyward_sign_ins_total",
            None,
            "Sign-in attempts, by method and outcome.",
        ),
        (
            "keyward_webhook_deliveries_total",
            None,
            "Webhook delivery attempts, by outcome.",
        ),
        (
            "keyward_webhook_outbox_pending",
            None,
            "Webhook deliveries waiting to be sent or retried.",
        ),
        (
            "keyward_email_outbox",
            None,
            "Emails in the outbox, by status (email is sent inline; failed ones are the backlog).",
        ),
        (
            "keyward_db_pool_connections",
            None,
            "Open database connections.",
        ),
        ("keyward_db_pool_idle", None, "Idle database connections."),
        (
            "keyward_db_pool_max",
            None,
            "The database pool's maximum size.",
        ),
        (
            "keyward_db_up",
            None,
            "1 when the last scrape could query the database.",
        ),
    ] {
        r.describe_counter(name.into(), unit, help.into());
    }
}

/// `GET /metrics`: the Prometheus text format. With `KEYWARD_METRICS_TOKEN` set, only for
/// `Authorization: Bearer <token>` (compared in constant time).
pub async fn scrape(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.config.metrics_token {
        use secrecy::ExposeSecret;
        use subtle::ConstantTimeEq;
        let sent = crate::verify::http::bearer(&headers).unwrap_or("");
        let ok = {
            use sha2::{Digest, Sha256};
            Sha256::digest(sent.as_bytes()).ct_eq(&Sha256::digest(token.expose_secret().as_bytes()))
        };
        if !bool::from(ok) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "Send the metrics token: Authorization: Bearer <KEYWARD_METRICS_TOKEN>.\n",
            )
                .into_response();
        }
    }
    let body = state.metrics.render(&state).await;
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// Records every request's duration by route template, method and status (a tower layer
/// rather than `from_fn`, so the request path gains no allocation once a route was seen).
#[derive(Clone)]
pub struct HttpMetricsLayer(pub Metrics);

impl<S> Layer<S> for HttpMetricsLayer {
    type Service = HttpMetrics<S>;
    fn layer(&self, inner: S) -> HttpMetrics<S> {
        HttpMetrics {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct HttpMetrics<S> {
    inner: S,
    metrics: Metrics,
}

impl<S> Service<Request> for HttpMetrics<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = HttpMetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map(|p| RouteName::Matched(p.clone()))
            .unwrap_or(RouteName::Unmatched);
        let method = req.method().clone();
        HttpMetricsFuture {
            inner: self.inner.call(req),
            metrics: self.metrics.clone(),
            method,
            route,
            started: Instant::now(),
        }
    }
}

enum RouteName {
    Matched(MatchedPath),
    /// No route matched (404s): one label value for all of them.
    Unmatched,
}

pin_project_lite::pin_project! {
    pub struct HttpMetricsFuture<F> {
        #[pin]
        inner: F,
        metrics: Metrics,
        method: Method,
        route: RouteName,
        started: Instant,
    }
}

impl<F, E> Future for HttpMetricsFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = std::task::ready!(this.inner.poll(cx));
        if let Ok(r) = &res {
            let route = match &this.route {
                RouteName::Matched(p) => p.as_str(),
                RouteName::Unmatched => "unmatched",
            };
            this.metrics
                .http_seconds(route, this.method, r.status().as_u16())
                .record(this.started.elapsed().as_secs_f64());
        }
        Poll::Ready(res)
    }
}
