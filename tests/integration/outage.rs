//! Outages and overload (issue 15 §3): while the database is unreachable the dashboard
//! answers a 503 page with `Retry-After`, the management API a JSON 503, verification fails
//! closed with 503, `/healthz` stays 200 and `/readyz` answers 503; all recover without a
//! restart. A request deadline bounds a stuck query and a slow client.
//!
//! Postgres is cut with a TCP proxy of the test's own between Keyward and the server (the
//! machine's Postgres keeps running); SQLite is "unreachable" when another process holds
//! the write lock past the busy timeout.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use keyward::store::StoreOptions;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

use crate::{
    api::{call, dashboard_key},
    helpers::{Backend, EmptyDb, Page, TestApp},
};

/// The database timeout the outage tests run with: an outage must answer within it (plus
/// a margin for a loaded machine), not hang.
const DB_TIMEOUT: Duration = Duration::from_secs(1);
const ANSWER_WITHIN: Duration = Duration::from_secs(6);

/// A TCP proxy in front of Postgres that the test can cut: `cut()` resets every open
/// connection and every new one (as a dead database host or a firewall would), `restore()`
/// forwards again.
struct CutProxy {
    addr: SocketAddr,
    up: Arc<watch::Sender<bool>>,
}

impl CutProxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(watch::channel(true).0);
        let state = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                // Closing with a zero linger sends RST: the client sees "connection reset".
                // (Deprecated because a non-zero linger blocks on drop; zero does not.)
                #[allow(deprecated)]
                let _ = client.set_linger(Some(Duration::ZERO));
                if !*state.borrow() {
                    drop(client);
                    continue;
                }
                let mut down = state.subscribe();
                tokio::spawn(async move {
                    let mut client = client;
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = down.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self { addr, up }
    }

    fn cut(&self) {
        self.up.send_replace(false);
    }

    fn restore(&self) {
        self.up.send_replace(true);
    }
}

/// A Postgres test app whose every database connection goes through a [`CutProxy`].
async fn behind_proxy(
    tweak: impl FnOnce(&mut keyward::config::Config),
) -> Option<(TestApp, CutProxy)> {
    let mut db = EmptyDb::create(Backend::Postgres).await?;
    let mut url = reqwest::Url::parse(&db.url).unwrap();
    let upstream: SocketAddr =
        format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432))
            .parse()
            .expect("the test Postgres URL names an IP address");
    let proxy = CutProxy::start(upstream).await;
    url.set_port(Some(proxy.addr.port())).unwrap();
    db.url = url.to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let options = StoreOptions {
        db_timeout: DB_TIMEOUT,
    };
    let app = TestApp::spawn_on_db(db, listener, options, tweak).await;
    Some((app, proxy))
}

async fn get(url: &str) -> (StatusCode, Duration) {
    let started = Instant::now();
    let res = reqwest::get(url).await.unwrap();
    (res.status(), started.elapsed())
}

/// Asserts a friendly 503 page that says to come back, and that it came quickly.
fn assert_unavailable_page(page: &Page, took: Duration, what: &str) {
    assert_eq!(
        page.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{what}: {}",
        page.body
    );
    assert!(took < ANSWER_WITHIN, "{what} took {took:?}");
    assert_eq!(page.header("retry-after"), "5", "{what}");
    assert_eq!(
        page.header("content-type"),
        "text/html; charset=utf-8",
        "{what}"
    );
    assert!(
        page.shows("Keyward can't reach its database right now"),
        "{what}: {}",
        page.body
    );
    assert!(!page.body.contains("sqlx") && !page.body.contains("127.0.0.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_answers_503_everywhere_and_heals_without_a_restart() {
    let Some((app, proxy)) = behind_proxy(|_| {}).await else {
        return;
    };
    let mut b = app.signed_up("outage@example.com").await;
    let (_, mgmt) = dashboard_key(&mut b, "automation", &["read", "keys:read"], &[]).await;
    // Never verified, so not in the verification cache: verifying it needs the database.
    let (_, cold) = b.new_key("cold").await;
    let (s, _) = call(&app, &mgmt, Method::GET, "/api/v1/keys", None).await;
    assert_eq!(s, StatusCode::OK);

    proxy.cut();

    // The dashboard: a signed-in page, a form post, and a visitor's sign-in page.
    let started = Instant::now();
    let page = b.get("/settings/api-keys").await;
    assert_unavailable_page(&page, started.elapsed(), "key list");
    let started = Instant::now();
    let page = b
        .post("/settings/api-keys", &[("name", "during the outage")])
        .await;
    assert_unavailable_page(&page, started.elapsed(), "a form post");
    let started = Instant::now();
    let page = app.browser().get("/login").await;
    assert_unavailable_page(&page, started.elapsed(), "sign-in page");

    // The management API: JSON.
    let started = Instant::now();
    let (s, body) = call(&app, &mgmt, Method::GET, "/api/v1/keys", None).await;
    assert!(started.elapsed() < ANSWER_WITHIN);
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable")),
        "{body}"
    );

    // Verification fails closed.
    let started = Instant::now();
    let (s, body) = app.verify_api(json!({ "key": cold })).await;
    assert!(started.elapsed() < ANSWER_WITHIN);
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_ne!(body["valid"], Value::Bool(true));

    // Liveness does not depend on the database; readiness does.
    let (s, _) = get(&format!("{}/healthz", app.base)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, took) = get(&format!("{}/readyz", app.base)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(took < ANSWER_WITHIN, "readyz took {took:?}");

    proxy.restore();

    // Ready again by itself (the pool reconnects), bounded.
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(&format!("{}/readyz", app.base)).await.0 != StatusCode::OK {
        assert!(
            Instant::now() < deadline,
            "not ready 20 s after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = b.get("/settings/api-keys").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.shows("cold"));
    let (s, body) = call(&app, &mgmt, Method::GET, "/api/v1/keys", None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, body) = app.verify_api(json!({ "key": cold })).await;
    assert_eq!((s, &body["valid"]), (StatusCode::OK, &Value::Bool(true)));
    // Nothing panicked on the way.
    assert!(!crate::helpers::log_text().contains("handler panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_sqlite_database_answers_503_then_recovers() {
    let db = EmptyDb::create(Backend::Sqlite).await.unwrap();
    let path = db.sqlite_path();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let options = StoreOptions {
        db_timeout: DB_TIMEOUT,
    };
    let app = TestApp::spawn_on_db(db, listener, options, |_| {}).await;
    let mut b = app.signed_up("locked@example.com").await;
    let form = b.get("/settings/api-keys/new").await;
    let token = form.form_token();

    // Another process (here: another connection) holds the write lock.
    let mut holder = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .unwrap();
    let fields = [
        ("form_token", token.as_str()),
        ("name", "while locked"),
        ("environment", "live"),
        ("preset", "Read-write"),
        ("expiry", "30d"),
    ];
    let started = Instant::now();
    let page = b.post("/settings/api-keys", &fields).await;
    assert_unavailable_page(&page, started.elapsed(), "creating a key");
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    holder.close().await.unwrap();

    // No restart: the next attempt goes through.
    let page = b
        .create_key(&[
            ("name", "after the lock"),
            ("environment", "live"),
            ("preset", "Read-write"),
            ("expiry", "30d"),
        ])
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.new_key().is_some());
}

/// Holds `LOCK TABLE api_keys` in an open transaction on a connection of its own, so that
/// every query touching keys waits (a stuck query, as a long migration or a runaway report
/// would cause).
async fn lock_keys_table(url: &str) -> sqlx::PgConnection {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
    sqlx::query("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_query_is_cut_off_at_the_request_deadline() {
    let deadline = Duration::from_secs(2);
    let Some(app) = TestApp::spawn_with(Backend::Postgres, |c| c.request_timeout = deadline).await
    else {
        return;
    };
    let mut b = app.signed_up("stuck@example.com").await;
    let (_, cold) = b.new_key("cold").await;

    let mut lock = lock_keys_table(&app.db_url).await;
    let started = Instant::now();
    let page = b.get("/settings/api-keys").await;
    let took = started.elapsed();
    assert_eq!(
        page.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        page.body
    );
    assert!(
        took >= deadline && took < deadline + Duration::from_secs(4),
        "{took:?}"
    );
    assert!(
        page.shows("Keyward took too long to answer this request"),
        "{}",
        page.body
    );
    assert_eq!(page.header("retry-after"), "5");

    let (s, body) = app.verify_api(json!({ "key": cold })).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_ne!(body["valid"], Value::Bool(true));

    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    let page = b.get("/settings/api-keys").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let (s, body) = app.verify_api(json!({ "key": cold })).await;
    assert_eq!((s, &body["valid"]), (StatusCode::OK, &Value::Bool(true)));
    assert!(crate::helpers::log_text().contains("request_timed_out"));
}

/// Sends headers announcing a 100-byte body, then only part of it, and reads the answer.
async fn slow_post(base: &str, path: &str, content_type: &str) -> (Duration, String) {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\n\
         Authorization: Bearer {}\r\nContent-Length: 100\r\n\r\n{{\"key\":",
        keyward::config::TEST_VERIFIER_TOKEN
    );
    let started = Instant::now();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes the connection")
        .unwrap();
    (
        started.elapsed(),
        String::from_utf8_lossy(&answer).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_sending_its_body_gets_408() {
    let deadline = Duration::from_secs(1);
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.request_timeout = deadline)
        .await
        .unwrap();
    let (took, answer) = slow_post(&app.base, "/v1/keys/verify", "application/json").await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"timed_out""#), "{answer}");
    assert!(
        answer.to_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(
        took >= deadline && took < deadline + Duration::from_secs(4),
        "{took:?}"
    );

    let (_, answer) = slow_post(&app.base, "/login", "application/x-www-form-urlencoded").await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive in time"), "{answer}");
    assert!(answer.contains("text/html; charset=utf-8"), "{answer}");
}
