//! Test harness: the real server on 127.0.0.1:0 with a fresh database per test (a SQLite
//! file in a temp dir, or a new Postgres database), a settable clock, and a cookie-keeping
//! HTTP client that behaves like a browser filling in forms.

use std::{
    io::Write,
    net::SocketAddr,
    sync::{Arc, Mutex, OnceLock},
};

use keyward::{
    AppState, Store,
    clock::{Clock, ManualClock},
    config::Config,
    store::{StoreOptions, sessions::SessionBackend},
};
use regex::Regex;
use reqwest::{StatusCode, header::HeaderMap, redirect::Policy};

pub const PASSWORD: &str = "correct horse battery staple";
pub const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs one test function against both backends: `both!(name);` defines
/// `name::sqlite` and `name::postgres`, each spawning a fresh app.
#[macro_export]
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let app = $crate::helpers::TestApp::spawn($crate::helpers::Backend::Sqlite)
                    .await
                    .unwrap();
                super::$name(app).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(app) =
                    $crate::helpers::TestApp::spawn($crate::helpers::Backend::Postgres).await
                {
                    super::$name(app).await;
                }
            }
        }
    };
}

// ------------------------------------------------------------------------ logs

/// Everything the server logs during the test run (for the secret-leak checks).
pub fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| Arc::new(Mutex::new(Vec::new())))
}

#[derive(Clone)]
struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        logs().lock().unwrap().extend_from_slice(buf);
        if std::env::var_os("TEST_LOG").is_some() {
            std::io::stderr().write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logging() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug,sqlx=info,hyper=info,h2=info,reqwest=info,tower_sessions=info")
            .with_writer(|| LogWriter)
            .with_ansi(false)
            .try_init();
    });
}

pub fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

// ------------------------------------------------------------------------ app

pub struct TestApp {
    pub base: String,
    pub clock: ManualClock,
    pub store: Store,
    pub state: AppState,
    pub backend: Backend,
    pub db_url: String,
    _db: TestDb,
}

/// The per-test database; dropped with the test.
enum TestDb {
    Sqlite(std::path::PathBuf),
    Postgres { admin_url: String, name: String },
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match self {
            TestDb::Sqlite(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            TestDb::Postgres { admin_url, name } => {
                let (admin_url, name) = (admin_url.clone(), name.clone());
                let _ = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async {
                        if let Ok(pool) = sqlx::PgPool::connect(&admin_url).await {
                            let _ = sqlx::query(&format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            ))
                            .execute(&pool)
                            .await;
                        }
                    });
                })
                .join();
            }
        }
    }
}

pub fn postgres_url() -> String {
    std::env::var("KEYWARD_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_PG.to_string())
}

fn postgres_required() -> bool {
    std::env::var("KEYWARD_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

/// A fresh, empty database of its own (a SQLite file in a temp dir, or a new Postgres
/// database), dropped with the test. `None` when Postgres is unreachable and not required.
pub struct EmptyDb {
    pub backend: Backend,
    pub url: String,
    db: TestDb,
}

impl EmptyDb {
    pub async fn create(backend: Backend) -> Option<Self> {
        init_logging();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (url, db) = match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("keyward-test-{id}"));
                std::fs::create_dir_all(&dir).unwrap();
                (
                    format!("sqlite://{}/keyward.db", dir.display()),
                    TestDb::Sqlite(dir),
                )
            }
            Backend::Postgres => {
                let admin_url = postgres_url();
                let admin = match sqlx::PgPool::connect(&admin_url).await {
                    Ok(p) => p,
                    Err(e) if !postgres_required() => {
                        eprintln!(
                            "SKIPPED (Postgres at {admin_url} unreachable: {e}); set KEYWARD_REQUIRE_POSTGRES=1 to fail instead"
                        );
                        return None;
                    }
                    Err(e) => panic!("Postgres at {admin_url} is required but unreachable: {e}"),
                };
                let name = format!("kw_test_{id}");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&admin)
                    .await
                    .unwrap();
                admin.close().await;
                let (prefix, _) = admin_url.rsplit_once('/').expect("database URL has a path");
                let url = format!("{prefix}/{name}");
                (url, TestDb::Postgres { admin_url, name })
            }
        };
        Some(Self { backend, url, db })
    }

    /// The SQLite file's path (SQLite only).
    pub fn sqlite_path(&self) -> std::path::PathBuf {
        match &self.db {
            TestDb::Sqlite(dir) => dir.join("keyward.db"),
            TestDb::Postgres { .. } => panic!("not a SQLite database"),
        }
    }
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Option<Self> {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Spawns the app; `tweak` adjusts the configuration first. Returns `None` (test
    /// skipped) when Postgres is not reachable and not required.
    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Option<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::spawn_on(backend, listener, tweak).await
    }

    /// Spawns the app on a listener the test bound first (so that its address can be
    /// registered somewhere, e.g. at an identity provider, before the app starts).
    pub async fn spawn_on(
        backend: Backend,
        listener: tokio::net::TcpListener,
        tweak: impl FnOnce(&mut Config),
    ) -> Option<Self> {
        let db = EmptyDb::create(backend).await?;
        Some(Self::spawn_on_db(db, listener, StoreOptions::default(), tweak).await)
    }

    /// Spawns the app on a database the test prepared (an [`EmptyDb`] it filled, e.g. with
    /// an older schema); the app migrates it as `keyward serve` does.
    pub async fn spawn_on_db(
        db: EmptyDb,
        listener: tokio::net::TcpListener,
        options: StoreOptions,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let (store, state, base, clock) =
            Self::start_node_with(&db.url, listener, options, tweak).await;
        Self {
            base,
            clock,
            store,
            state,
            backend: db.backend,
            db_url: db.url,
            _db: db.db,
        }
    }

    /// A second server on the same database (another "node": its own pool and cache).
    pub async fn second_node(&self) -> (AppState, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (_, state, base, _) = Self::start_node(&self.db_url, listener, |_| {}).await;
        (state, base)
    }

    async fn start_node(
        db_url: &str,
        listener: tokio::net::TcpListener,
        tweak: impl FnOnce(&mut Config),
    ) -> (Store, AppState, String, ManualClock) {
        Self::start_node_with(db_url, listener, StoreOptions::default(), tweak).await
    }

    /// A server on `db_url` (which may lead through a proxy the test controls), with its own
    /// pool options: (store, state, base URL, clock).
    pub async fn start_node_with(
        db_url: &str,
        listener: tokio::net::TcpListener,
        options: StoreOptions,
        tweak: impl FnOnce(&mut Config),
    ) -> (Store, AppState, String, ManualClock) {
        let store = Store::connect_with(db_url, options).await.unwrap();
        store.migrate().await.unwrap();
        store.spawn_invalidation_listener();
        let sessions: SessionBackend = store.session_store().await.unwrap();

        let addr = listener.local_addr().unwrap();
        let base = format!("http://{addr}");
        let mut config = Config::for_tests(&base, [42u8; 32]);
        tweak(&mut config);
        let clock = ManualClock::starting_now();
        let state = AppState::new(
            config,
            store.clone(),
            Arc::new(clock.clone()) as Arc<dyn Clock>,
        )
        .unwrap();
        let app = keyward::router(state.clone(), sessions);
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
        (store, state, base, clock)
    }

    /// Calls `POST /v1/keys/verify` with the test verifier credential.
    pub async fn verify_api(&self, body: serde_json::Value) -> (StatusCode, serde_json::Value) {
        let res = reqwest::Client::new()
            .post(format!("{}/v1/keys/verify", self.base))
            .bearer_auth(keyward::config::TEST_VERIFIER_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub fn browser(&self) -> Browser {
        Browser::new(&self.base)
    }

    /// A new browser signed in to a freshly signed-up account whose email address is
    /// verified: sign-up, the emailed link, then sign-in — as a person does it. (With an
    /// SMTP server configured the link goes there; the address is then marked verified
    /// in the database directly.)
    pub async fn signed_up(&self, email: &str) -> Browser {
        let mut b = self.browser();
        self.sign_up(&mut b, email).await;
        if self.state.mailer.smtp_configured() {
            let user = self.store.user_by_email(email).await.unwrap().unwrap();
            self.raw_execute(&format!(
                "UPDATE users SET email_verified_at = created_at WHERE id = '{}'",
                user.id
            ))
            .await
            .unwrap();
        } else {
            let link = self.verification_link(email).await;
            b.get(&link).await;
            let res = b.post(&link, &[]).await;
            assert_eq!(
                res.status,
                StatusCode::OK,
                "verification failed: {}",
                res.body
            );
        }
        let res = b.sign_in(email, PASSWORD).await;
        assert_eq!(
            res.status,
            StatusCode::SEE_OTHER,
            "sign-in failed: {}",
            res.body
        );
        b
    }

    /// A new browser signed in to a freshly signed-up account that has not verified its
    /// email address.
    pub async fn signed_up_unverified(&self, email: &str) -> Browser {
        let mut b = self.browser();
        self.sign_up(&mut b, email).await;
        let res = b.sign_in(email, PASSWORD).await;
        assert_eq!(
            res.status,
            StatusCode::SEE_OTHER,
            "sign-in failed: {}",
            res.body
        );
        b
    }

    /// Submits the sign-up form and waits until the account exists (it is created in the
    /// background, so that the answer is the same for a taken address).
    pub async fn sign_up(&self, b: &mut Browser, email: &str) {
        b.get("/signup").await;
        let res = b
            .post("/signup", &[("email", email), ("password", PASSWORD)])
            .await;
        assert_eq!(res.status, StatusCode::OK, "sign-up failed: {}", res.body);
        assert!(res.body.contains("Check your inbox"), "{}", res.body);
        for _ in 0..400 {
            if self.store.user_by_email(email).await.unwrap().is_some() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("the account for {email} was not created");
    }

    /// The newest email to `to` whose subject contains `subject`, waiting for background
    /// senders (up to 10 s).
    pub async fn wait_for_mail(&self, to: &str, subject: &str) -> keyward::store::OutboxEmail {
        for _ in 0..400 {
            if let Some(m) = self
                .state
                .mailer
                .outbox(500)
                .await
                .unwrap()
                .into_iter()
                .find(|m| m.recipient == to && m.subject.contains(subject))
            {
                return m;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("no email to {to} about {subject:?}");
    }

    /// The path of the newest verification link emailed to `to`.
    pub async fn verification_link(&self, to: &str) -> String {
        let mail = self.wait_for_mail(to, "Confirm your email address").await;
        Regex::new(r"(/verify-email/[A-Za-z0-9_-]+)")
            .unwrap()
            .captures(&mail.body)
            .expect("a verification link")[1]
            .to_string()
    }

    /// Every audit event as (action, details JSON), oldest first.
    pub async fn audit_events(&self) -> Vec<(String, serde_json::Value)> {
        let sql = "SELECT action, CAST(details AS TEXT) FROM audit_events ORDER BY id";
        let rows: Vec<(String, String)> = match self.backend {
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&self.db_url).await.unwrap();
                sqlx::query_as(sql).fetch_all(&pool).await.unwrap()
            }
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&self.db_url).await.unwrap();
                sqlx::query_as(sql).fetch_all(&pool).await.unwrap()
            }
        };
        rows.into_iter()
            .map(|(a, d)| (a, serde_json::from_str(&d).unwrap()))
            .collect()
    }

    /// Raw SQL against the test database through a separate pool.
    pub async fn raw_execute(&self, sql: &str) -> Result<(), sqlx::Error> {
        match self.backend {
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&self.db_url).await?;
                sqlx::query(sql).execute(&pool).await.map(|_| ())
            }
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&self.db_url).await?;
                sqlx::query(sql).execute(&pool).await.map(|_| ())
            }
        }
    }

    /// Every row of every table as text (for secret-leak checks).
    pub async fn dump_database(&self) -> String {
        let mut out = String::new();
        match self.backend {
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&self.db_url).await.unwrap();
                let tables: Vec<String> =
                    sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
                        .fetch_all(&pool)
                        .await
                        .unwrap();
                for t in tables {
                    let rows = sqlx::query(&format!("SELECT * FROM \"{t}\""))
                        .fetch_all(&pool)
                        .await
                        .unwrap();
                    for r in rows {
                        use sqlx::{Column, Row, ValueRef};
                        for (i, c) in r.columns().iter().enumerate() {
                            let raw = r.try_get_raw(i).unwrap();
                            if raw.is_null() {
                                continue;
                            }
                            let text: Option<String> = r.try_get::<String, _>(i).ok();
                            let bytes: Option<Vec<u8>> = r.try_get::<Vec<u8>, _>(i).ok();
                            out.push_str(&format!(
                                "{t}.{}={:?}|{}\n",
                                c.name(),
                                text,
                                String::from_utf8_lossy(&bytes.unwrap_or_default())
                            ));
                        }
                    }
                }
            }
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&self.db_url).await.unwrap();
                let tables: Vec<(String, String)> = sqlx::query_as(
                    "SELECT table_schema::text, table_name::text FROM information_schema.tables \
                     WHERE table_schema NOT IN ('pg_catalog', 'information_schema')",
                )
                .fetch_all(&pool)
                .await
                .unwrap();
                for (s, t) in tables {
                    let rows: Vec<String> =
                        sqlx::query_scalar(&format!("SELECT x::text FROM \"{s}\".\"{t}\" x"))
                            .fetch_all(&pool)
                            .await
                            .unwrap();
                    for r in rows {
                        out.push_str(&format!("{s}.{t}: {r}\n"));
                    }
                }
            }
        }
        out
    }
}

// ------------------------------------------------------------------------ browser

/// A response, read whole.
#[derive(Debug)]
pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    /// The first capture of `pattern` in the body.
    pub fn capture(&self, pattern: &str) -> Option<String> {
        Regex::new(pattern)
            .unwrap()
            .captures(&self.body)
            .map(|c| c[1].to_string())
    }
    /// Whether the page shows `text` (compared after undoing HTML escaping of quotes).
    pub fn shows(&self, text: &str) -> bool {
        self.body
            .replace("&#39;", "'")
            .replace("&#x27;", "'")
            .replace("&#34;", "\"")
            .replace("&quot;", "\"")
            .replace("&#60;", "<")
            .replace("&lt;", "<")
            .replace("&#62;", ">")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
            .replace("&#38;", "&")
            .contains(text)
    }
    pub fn form_token(&self) -> String {
        self.capture(r#"name="form_token" value="([^"]+)""#)
            .expect("page has a form token")
    }
    /// The plaintext key on a "created" page.
    pub fn new_key(&self) -> Option<String> {
        self.capture(r#"id="new-key">([^<]+)<"#)
    }
    pub fn key_id(&self) -> String {
        self.capture(r#"/settings/api-keys/([0-9a-f-]{36})""#)
            .expect("page links a key")
    }
}

/// A cookie-keeping client that remembers the last CSRF token it saw, like a browser
/// submitting the forms it was given.
pub struct Browser {
    pub client: reqwest::Client,
    jar: Arc<reqwest::cookie::Jar>,
    pub base: String,
    pub csrf: Option<String>,
    /// The organization the last page's forms were rendered for.
    pub org: Option<String>,
}

impl Browser {
    pub fn new(base: &str) -> Self {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        Self {
            jar: jar.clone(),
            client: reqwest::Client::builder()
                .cookie_provider(jar)
                .redirect(Policy::none())
                .user_agent("keyward-tests/1.0")
                .build()
                .unwrap(),
            base: base.to_string(),
            csrf: None,
            org: None,
        }
    }

    async fn read(&mut self, res: reqwest::Response) -> Page {
        let page = Page {
            status: res.status(),
            headers: res.headers().clone(),
            body: res.text().await.unwrap(),
        };
        if let Some(t) = page.capture(r#"name="csrf" value="([^"]+)""#) {
            self.csrf = Some(t);
        }
        if let Some(o) = page.capture(r#"name="org" value="([^"]+)""#) {
            self.org = Some(o);
        }
        page
    }

    /// GET an absolute URL (another server, e.g. the identity provider).
    pub async fn get_abs(&mut self, url: &str) -> Page {
        let res = self.client.get(url).send().await.unwrap();
        self.read(res).await
    }

    /// POST a form to an absolute URL, exactly these fields.
    pub async fn post_abs(&mut self, url: &str, fields: &[(&str, &str)]) -> Page {
        let res = self
            .client
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(fields).unwrap())
            .send()
            .await
            .unwrap();
        self.read(res).await
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let res = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        self.read(res).await
    }

    /// Submits a form with the current CSRF token (and the organization the page was
    /// rendered for, as the dashboard's forms do).
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.csrf.clone().unwrap_or_default();
        let org = self.org.clone().unwrap_or_default();
        let mut all: Vec<(&str, &str)> = vec![("csrf", &csrf), ("org", &org)];
        all.extend_from_slice(fields);
        self.post_raw(path, &all, &[]).await
    }

    /// Submits exactly these fields and extra headers (for CSRF tests).
    pub async fn post_raw(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Page {
        let body = serde_urlencoded::to_string(fields).unwrap();
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.unwrap();
        self.read(res).await
    }

    /// Opens the new-key form and submits it with these fields (plus its one-time token).
    pub async fn create_key(&mut self, fields: &[(&str, &str)]) -> Page {
        let form = self.get("/settings/api-keys/new").await;
        assert_eq!(form.status, StatusCode::OK, "{}", form.body);
        let token = form.form_token();
        let mut all: Vec<(&str, &str)> = vec![("form_token", &token)];
        all.extend_from_slice(fields);
        self.post("/settings/api-keys", &all).await
    }

    /// Creates a key and returns (key id, plaintext).
    pub async fn new_key(&mut self, name: &str) -> (String, String) {
        let page = self
            .create_key(&[
                ("name", name),
                ("environment", "live"),
                ("preset", "Read-write"),
                ("expiry", "30d"),
            ])
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        (page.key_id(), page.new_key().expect("key shown"))
    }

    /// Signs in through the form; on success, loads the landing page as a browser would
    /// (picking up the new session's CSRF token). Returns the sign-in response.
    pub async fn sign_in(&mut self, email: &str, password: &str) -> Page {
        self.get("/login").await;
        let res = self
            .post("/login", &[("email", email), ("password", password)])
            .await;
        if res.status == StatusCode::SEE_OTHER {
            let to = res.location().to_string();
            self.get(&to).await;
        }
        res
    }

    /// The session cookie's value from the client's cookie jar.
    pub fn cookie_value(&self, base: &str) -> String {
        use reqwest::cookie::CookieStore;
        let url: reqwest::Url = base.parse().unwrap();
        let header = self.jar.cookies(&url).expect("a cookie is set");
        header
            .to_str()
            .unwrap()
            .split("; ")
            .find_map(|c| c.strip_prefix("keyward_session="))
            .expect("session cookie")
            .to_string()
    }

    /// The session cookie's value, if any.
    pub fn session_cookie(&self, page: &Page) -> Option<String> {
        page.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with("keyward_session="))
            .map(|c| {
                c.split(';')
                    .next()
                    .unwrap()
                    .trim_start_matches("keyward_session=")
                    .to_string()
            })
    }
}
