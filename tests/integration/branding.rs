//! Branding (issue 14 §1): the operator's product name, accent colour, support contacts and
//! sender name reach every page, the emails and the favicon.

use std::sync::Arc;

use keyward::branding::{Branding, Rgb};
use reqwest::StatusCode;

use crate::{
    both,
    helpers::{Backend, TestApp},
    smtp::SmtpSink,
};

fn acme() -> Arc<Branding> {
    Arc::new(Branding {
        accent: Some(Rgb(0x0f, 0x76, 0x6e)),
        support_url: Some("https://help.acme.test/keys".into()),
        support_email: Some("keys@acme.test".into()),
        mail_sender_name: "Acme Keys".into(),
        ..Branding::named("Acme API")
    })
}

async fn branded(backend: Backend) -> Option<TestApp> {
    TestApp::spawn_with(backend, |c| c.branding = acme()).await
}

async fn the_sign_in_page_carries_the_product_name(backend: Backend) {
    let Some(app) = branded(backend).await else {
        return;
    };
    let page = app.browser().get("/login").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("<title>Sign in · Acme API</title>"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains(r#"<p class="brand">Acme API</p>"#),
        "{}",
        page.body
    );
    assert!(!page.body.contains("Keyward"), "{}", page.body);
    assert!(page.shows("Need help with Acme API?"), "{}", page.body);
    assert!(page.body.contains(r#"href="mailto:keys@acme.test""#));
    assert!(page.body.contains(r#"href="https://help.acme.test/keys""#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sign_in_page_carries_the_product_name_sqlite() {
    the_sign_in_page_carries_the_product_name(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sign_in_page_carries_the_product_name_postgres() {
    the_sign_in_page_carries_the_product_name(Backend::Postgres).await;
}

async fn dashboard_pages_and_the_created_key_carry_the_product_name(backend: Backend) {
    let Some(app) = branded(backend).await else {
        return;
    };
    let mut b = app.signed_up("brand@example.com").await;
    let keys = b.get("/settings/api-keys").await;
    assert_eq!(keys.status, StatusCode::OK);
    assert!(keys.body.contains("· Acme API</title>"), "{}", keys.body);
    assert!(
        keys.body
            .contains(r#"<a class="brand" href="/settings/api-keys">Acme API</a>"#),
        "{}",
        keys.body
    );
    let created = b
        .create_key(&[
            ("name", "branded"),
            ("environment", "live"),
            ("preset", "Read-write"),
            ("expiry", "30d"),
        ])
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    assert!(created.new_key().is_some());
    assert!(
        created.shows("Acme API stores only a hash of it."),
        "{}",
        created.body
    );
    assert!(created.body.contains("· Acme API</title>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_pages_and_the_created_key_carry_the_product_name_sqlite() {
    dashboard_pages_and_the_created_key_carry_the_product_name(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_pages_and_the_created_key_carry_the_product_name_postgres() {
    dashboard_pages_and_the_created_key_carry_the_product_name(Backend::Postgres).await;
}

async fn emails_carry_the_product_name_and_the_sender_name(backend: Backend) {
    let (sink, url) = SmtpSink::start().await;
    let Some(app) = TestApp::spawn_with(backend, |c| {
        c.branding = acme();
        c.smtp_url = Some(url.clone());
    })
    .await
    else {
        return;
    };
    let mut b = app.browser();
    app.sign_up(&mut b, "mail@example.com").await;
    let mail = sink.wait_for("mail@example.com", 1).await;
    let headers = mail.data.split("\n\n").next().unwrap().to_string();
    assert!(
        headers.contains("Subject: Confirm your email address for Acme API"),
        "{headers}"
    );
    assert!(
        headers.lines().any(|l| l.starts_with("From: ")
            && l.contains("Acme Keys")
            && l.contains("<keyward@localhost>")),
        "{headers}"
    );
    let body = mail.data.replace("=\n", "");
    assert!(body.contains("your email address for Acme API"), "{body}");
    assert!(body.contains("Need help with Acme API?"), "{body}");
    assert!(body.contains("keys@acme.test"), "{body}");
    assert!(!body.contains("Keyward"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emails_carry_the_product_name_and_the_sender_name_sqlite() {
    emails_carry_the_product_name_and_the_sender_name(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emails_carry_the_product_name_and_the_sender_name_postgres() {
    emails_carry_the_product_name_and_the_sender_name(Backend::Postgres).await;
}

async fn the_accent_colour_is_served_as_a_stylesheet(backend: Backend) {
    let Some(app) = branded(backend).await else {
        return;
    };
    let mut b = app.browser();
    let page = b.get("/login").await;
    let href = page
        .capture(r#"<link rel="stylesheet" href="(/brand\.css\?v=[0-9a-f]+)">"#)
        .expect("the page links the brand stylesheet");
    let css = b.get(&href).await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css.header("content-type").starts_with("text/css"));
    assert!(css.body.contains("--accent: #0f766e;"), "{}", css.body);
    // The Content-Security-Policy is unchanged: styles from this origin only.
    assert!(
        page.header("content-security-policy")
            .contains("style-src 'self';")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_accent_colour_is_served_as_a_stylesheet_sqlite() {
    the_accent_colour_is_served_as_a_stylesheet(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_accent_colour_is_served_as_a_stylesheet_postgres() {
    the_accent_colour_is_served_as_a_stylesheet(Backend::Postgres).await;
}

async fn a_favicon_is_served_and_linked(app: TestApp) {
    let mut b = app.browser();
    let page = b.get("/login").await;
    assert!(
        page.body
            .contains(r#"<link rel="icon" href="/favicon.ico?v="#),
        "{}",
        page.body
    );
    let icon = b.get("/favicon.ico").await;
    assert_eq!(icon.status, StatusCode::OK);
    assert!(
        icon.header("content-type").starts_with("image/"),
        "{:?}",
        icon.headers
    );
    assert!(icon.body.contains("<svg"));
}
both!(a_favicon_is_served_and_linked);

/// `keyward` with these environment variables (and a throw-away secrets file and database).
fn keyward(args: &[&str], env: &[(&str, &str)], stdin: &str) -> std::process::Output {
    use std::{io::Write, process::Stdio};
    let dir = std::env::temp_dir().join(format!("kw-brand-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(args)
        .env("DATABASE_URL", format!("sqlite://{}/k.db", dir.display()))
        .env("KEYWARD_SECRETS_FILE", dir.join("secrets"))
        .env("KEYWARD_BIND", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(dir);
    out
}

#[test]
fn start_up_refuses_an_accent_colour_without_enough_contrast() {
    let out = keyward(&["serve"], &[("KEYWARD_ACCENT_COLOR", "#ffcc00")], "");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("KEYWARD_ACCENT_COLOR #ffcc00 has a contrast of 1.51:1"),
        "{err}"
    );
}

#[test]
fn start_up_refuses_a_logo_on_another_origin() {
    let out = keyward(
        &["serve"],
        &[
            ("KEYWARD_BASE_URL", "https://keys.acme.test"),
            ("KEYWARD_LOGO", "https://cdn.example.net/logo.svg"),
        ],
        "",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "KEYWARD_LOGO https://cdn.example.net/logo.svg is not on Keyward's own origin"
        ),
        "{err}"
    );
}

#[test]
fn user_create_refuses_a_password_built_from_the_product_name() {
    let out = keyward(
        &[
            "user",
            "create",
            "--email",
            "ops@example.com",
            "--role",
            "owner",
        ],
        &[("KEYWARD_PRODUCT_NAME", "Acme API")],
        "AcmeAPI-2024-2025!\n",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("based on the name of this service"), "{err}");
}
