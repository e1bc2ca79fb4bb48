//! SSO against a real OpenID Provider: panva's oidc-provider (`tests/idp/`) on loopback,
//! driven over HTTP through its own login and consent pages, on SQLite and Postgres.

use std::{path::PathBuf, process::Stdio, sync::OnceLock, time::Duration};

use axum::{Json, Router, routing::get};
use keyward::{AppState, clock::Clock, config::Config, sso::OperatorProvider};
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use crate::helpers::{Backend, Browser, PASSWORD, Page, TestApp};

const CLIENT_ID: &str = "keyward-test";
const CLIENT_SECRET: &str = "idp-client-secret-0d9f8e7a6b5c";

/// The people the provider knows: login → claims. A login that is not listed gets an
/// unverified email.
fn accounts() -> Value {
    json!({
        "admin": {"email": "admin@corp.test", "email_verified": true, "name": "Ada Admin"},
        "bob": {"email": "bob@corp.test", "email_verified": true, "name": "Bob"},
        "carol": {"email": "carol@corp.test", "email_verified": false, "name": "Carol"},
        "dave": {"email": "dave@other.test", "email_verified": true, "name": "Dave"},
        "mallory": {"email": "admin@corp.test", "email_verified": true, "name": "Not Ada"},
        "frank": {"email": "frank@corp.test", "email_verified": true, "name": "Frank"},
        "erin": {"email": "erin@mail.test", "email_verified": true, "name": "Erin"},
    })
}

// ------------------------------------------------------------------- the provider

fn idp_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/idp")
}

/// Installs the provider's node modules once (`npm ci`) when they are missing.
fn ensure_node_modules() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        if idp_dir().join("node_modules/oidc-provider").exists() {
            return;
        }
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(idp_dir())
            .status()
            .expect("npm is needed for the SSO tests (Node 20+)");
        assert!(status.success(), "npm ci in tests/idp failed");
    });
}

/// A running oidc-provider; killed when dropped.
pub struct Idp {
    pub issuer: String,
    _child: Child,
}

impl Idp {
    pub async fn start(redirect_uri: &str) -> Self {
        ensure_node_modules();
        let clients = json!([{
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [redirect_uri],
        }]);
        let mut child = Command::new("node")
            .arg("provider.mjs")
            .current_dir(idp_dir())
            .env("IDP_PORT", "0")
            .env("IDP_CLIENTS", clients.to_string())
            .env("IDP_ACCOUNTS", accounts().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node must be installed for the SSO tests");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Generous: on a loaded 2-core CI machine, starting Node and the provider while
        // hundreds of tests run has once taken longer than 30 s.
        let issuer = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(issuer) = line.strip_prefix("READY ") {
                    return issuer.trim().to_string();
                }
            }
            panic!("the identity provider exited before it was ready");
        })
        .await
        .expect("the identity provider did not start within 120 s");
        // Keep reading so the provider never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            issuer,
            _child: child,
        }
    }
}

pub struct Sso {
    pub app: TestApp,
    pub idp: Idp,
    /// `auth.sso_failed` events audited so far (each refusal must add exactly one).
    failures: std::sync::Mutex<usize>,
}

/// Binds the app's port, starts the provider with the app's redirect URI registered, then
/// the app (with `tweak` seeing the provider's issuer).
pub async fn setup(backend: Backend, tweak: impl FnOnce(&mut Config, &str)) -> Option<Sso> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let idp = Idp::start(&format!("{base}/sso/callback")).await;
    let issuer = idp.issuer.clone();
    let app = TestApp::spawn_on(backend, listener, |c| tweak(c, &issuer)).await?;
    Some(Sso {
        app,
        idp,
        failures: std::sync::Mutex::new(0),
    })
}

macro_rules! sso_both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let s = super::setup($crate::helpers::Backend::Sqlite, |_, _| {})
                    .await
                    .unwrap();
                super::$name(s).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(s) = super::setup($crate::helpers::Backend::Postgres, |_, _| {}).await {
                    super::$name(s).await;
                }
            }
        }
    };
}

// ------------------------------------------------------------------- a person

/// Follows the provider's pages as a person would: signs in as `login`, consents, and
/// returns the URL the provider sends the browser back to Keyward with (not followed).
pub(crate) async fn through_idp(b: &mut Browser, idp: &Idp, auth_url: &str, login: &str) -> String {
    let mut page = b.get_abs(auth_url).await;
    for _ in 0..12 {
        if page.status.is_redirection() {
            let loc = absolute(idp, page.location());
            if loc.starts_with(&b.base) {
                return loc;
            }
            page = b.get_abs(&loc).await;
            continue;
        }
        assert_eq!(page.status, StatusCode::OK, "provider page: {}", page.body);
        let action = page
            .capture(r#"<form[^>]*action="([^"]+)""#)
            .expect("a provider form");
        let prompt = page
            .capture(r#"name="prompt" value="([^"]+)""#)
            .expect("the form's prompt");
        page = match prompt.as_str() {
            "login" => {
                b.post_abs(
                    &absolute(idp, &action),
                    &[("prompt", "login"), ("login", login), ("password", "any")],
                )
                .await
            }
            "consent" => {
                b.post_abs(&absolute(idp, &action), &[("prompt", "consent")])
                    .await
            }
            other => panic!("unexpected provider prompt {other}"),
        };
    }
    panic!("the provider never sent the browser back");
}

/// The provider URL of the "Continuing to your identity provider" page (a page, not a
/// redirect: the sign-in form's CSP `form-action 'self'` would stop a redirect).
pub(crate) fn to_provider(page: &Page) -> String {
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body
            .contains(r#"<meta http-equiv="refresh" content="0;url="#)
    );
    page.capture(r#"id="continue-sso" href="([^"]+)""#)
        .expect("a link to the provider")
        .replace("&amp;", "&")
        .replace("&#38;", "&")
}

fn absolute(idp: &Idp, url: &str) -> String {
    if url.starts_with('/') {
        format!("{}{url}", idp.issuer)
    } else {
        url.to_string()
    }
}

/// "Continue with SSO" with a work email; returns the provider's authorization URL.
async fn start_sso(b: &mut Browser, idp: &Idp, email: &str) -> String {
    b.get("/login").await;
    let res = b.post("/sso/start", &[("email", email)]).await;
    let loc = to_provider(&res);
    assert!(loc.starts_with(&idp.issuer), "{loc}");
    loc
}

/// The whole journey: start, provider pages, callback. Returns the callback's response.
pub(crate) async fn sso_sign_in(b: &mut Browser, idp: &Idp, email: &str, login: &str) -> Page {
    let auth = start_sso(b, idp, email).await;
    let cb = through_idp(b, idp, &auth, login).await;
    b.get_abs(&cb).await
}

fn query_param(url: &str, name: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).unwrap();
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn with_param(url: &str, name: &str, value: Option<&str>) -> String {
    let mut u = reqwest::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    {
        let mut q = u.query_pairs_mut();
        q.clear();
        for (k, v) in &pairs {
            q.append_pair(k, v);
        }
        if let Some(v) = value {
            q.append_pair(name, v);
        }
    }
    u.to_string()
}

/// Signed in? (The dashboard answers 200, not a redirect to the sign-in page.)
async fn signed_in_as(b: &mut Browser) -> Option<String> {
    let page = b.get("/settings/account").await;
    if page.status != StatusCode::OK {
        return None;
    }
    page.capture(r#"<dt>Email</dt><dd>([^<]+)</dd>"#)
}

/// The admin (password account) adds an org connection for corp.test; returns its id.
pub(crate) async fn admin_with_connection(s: &Sso, extra: &[(&str, &str)]) -> (Browser, String) {
    let mut admin = s.app.signed_up("admin@corp.test").await;
    // A personal organization has no SSO; a team organization does.
    let personal = admin.get("/settings/sso").await;
    assert!(personal.shows("Single sign-on is for team organizations"));
    admin.get("/orgs/new").await;
    let res = admin.post("/orgs", &[("name", "Corp")]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    admin.get("/settings/sso/new").await;
    let conn = save_connection(&mut admin, &s.idp.issuer, None, extra).await;
    (admin, conn)
}

async fn save_connection(
    admin: &mut Browser,
    issuer: &str,
    id: Option<&str>,
    extra: &[(&str, &str)],
) -> String {
    let mut fields = vec![
        ("name", "Corp IdP"),
        ("issuer", issuer),
        ("client_id", CLIENT_ID),
        ("domains", "corp.test"),
        ("default_role", "developer"),
    ];
    if id.is_none() {
        fields.push(("client_secret", CLIENT_SECRET));
    }
    fields.extend_from_slice(extra);
    let path = match id {
        Some(id) => format!("/settings/sso/{id}"),
        None => "/settings/sso".into(),
    };
    let res = admin.post(&path, &fields).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let conn = res
        .location()
        .strip_prefix("/settings/sso/")
        .unwrap()
        .to_string();
    admin.get(&format!("/settings/sso/{conn}")).await;
    conn
}

/// Whether some audit event `action` has `key` = `value` in its details.
async fn audited(app: &TestApp, action: &str, key: &str, value: Value) -> bool {
    app.audit_events()
        .await
        .iter()
        .any(|(a, d)| a == action && d[key] == value)
}

/// The failure page, no session, and the audit row with this reason.
async fn assert_refused(s: &Sso, b: &mut Browser, page: &Page, status: StatusCode, reason: &str) {
    assert_eq!(page.status, status, "{reason}: {}", page.body);
    assert!(
        page.shows("Single sign-on did not complete"),
        "{reason}: {}",
        page.body
    );
    assert_eq!(signed_in_as(b).await, None, "{reason}: no session");
    let failed: Vec<Value> = s
        .app
        .audit_events()
        .await
        .into_iter()
        .filter(|(a, _)| a == "auth.sso_failed")
        .map(|(_, d)| d)
        .collect();
    let mut seen = s.failures.lock().unwrap();
    assert_eq!(
        failed.len(),
        *seen + 1,
        "{reason}: exactly one new audit entry"
    );
    assert_eq!(failed.last().unwrap()["reason"], json!(reason));
    *seen = failed.len();
}

// ------------------------------------------------------------------- journeys

/// An admin connects the organization to the provider; a teammate signs in with
/// "Continue with SSO" through the provider's pages and lands in the organization as a
/// developer, with a new session id and an audit trail naming issuer and subject.
async fn teammate_joins_through_org_connection(s: Sso) {
    let (mut admin, conn) = admin_with_connection(&s, &[]).await;

    // The secret is write-only: not on the page, not in the database in clear.
    let edit = admin.get(&format!("/settings/sso/{conn}")).await;
    assert!(edit.shows("Corp IdP") && !edit.body.contains(CLIENT_SECRET));
    assert!(!s.app.dump_database().await.contains(CLIENT_SECRET));

    // "Test connection" runs discovery against the real provider.
    let test = admin.post(&format!("/settings/sso/{conn}/test"), &[]).await;
    assert_eq!(test.status, StatusCode::OK, "{}", test.body);
    assert!(test.shows("Connection works."), "{}", test.body);
    assert!(test.shows("supported"));

    // The teammate.
    let mut bob = s.app.browser();
    let auth = start_sso(&mut bob, &s.idp, "Bob@Corp.test").await;
    // Authorization code flow with PKCE S256, state and nonce (SECURITY.md E.28/29).
    assert_eq!(query_param(&auth, "response_type").as_deref(), Some("code"));
    assert_eq!(
        query_param(&auth, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(query_param(&auth, "code_challenge").unwrap().len(), 43);
    assert!(query_param(&auth, "state").unwrap().len() >= 22);
    assert!(query_param(&auth, "nonce").unwrap().len() >= 22);
    assert!(query_param(&auth, "code_verifier").is_none());
    assert_eq!(
        query_param(&auth, "redirect_uri").unwrap(),
        format!("{}/sso/callback", s.app.base)
    );
    let before = bob.cookie_value(&s.app.base);
    let cb = through_idp(&mut bob, &s.idp, &auth, "bob").await;
    assert_eq!(
        query_param(&cb, "iss").as_deref(),
        Some(s.idp.issuer.as_str())
    );
    let landed = bob.get_abs(&cb).await;
    assert_eq!(landed.status, StatusCode::SEE_OTHER, "{}", landed.body);
    assert_eq!(landed.location(), "/settings/api-keys");
    assert_ne!(bob.cookie_value(&s.app.base), before, "new session id");

    // In the admin's organization, as a developer (the connection's default role).
    let keys = bob.get("/settings/api-keys").await;
    assert_eq!(keys.status, StatusCode::OK);
    assert!(keys.shows("Welcome! You joined through Corp IdP."));
    assert!(
        keys.body
            .contains(r#"<span class="badge badge-role">developer</span>"#)
    );
    let admin_org = admin.org.clone().unwrap();
    assert!(
        keys.body
            .contains(&format!(r#"value="{admin_org}" selected"#))
    );
    let (_, key) = bob.new_key("bob's key").await;
    assert!(key.starts_with("kw_live_"));

    let members = admin.get("/settings/members").await;
    assert!(members.shows("bob@corp.test"));
    assert!(members.body.contains("<td>SSO</td>"), "{}", members.body);
    let audit = admin.get("/settings/audit-log").await;
    assert!(audit.shows("Member joined through SSO"));
    let events = s.app.audit_events().await;
    let (_, signed_in) = events
        .iter()
        .find(|(a, d)| a == "auth.signed_in" && d["method"] == "sso")
        .expect("an SSO sign-in event");
    assert_eq!(signed_in["subject"], "bob");
    assert_eq!(signed_in["issuer"], json!(s.idp.issuer));
    assert_eq!(signed_in["account"], "created");

    // An SSO-only account cannot unlink its only way in.
    let account = bob.get("/settings/account").await;
    assert!(account.shows("Corp IdP") && account.shows("Not set: you sign in with single sign-on"));
    let refused = bob
        .post(
            "/sso/unlink",
            &[("issuer", s.idp.issuer.as_str()), ("subject", "bob")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::SEE_OTHER);
    assert!(
        bob.get("/settings/account")
            .await
            .shows("only way into your account")
    );

    // Signing in again finds the same account (identity = issuer + subject).
    bob.post("/logout", &[]).await;
    let again = sso_sign_in(&mut bob, &s.idp, "bob@corp.test", "bob").await;
    assert_eq!(again.status, StatusCode::SEE_OTHER, "{}", again.body);
    // Created from the provider's verified email: verified.
    let bob_user = s
        .app
        .store
        .user_by_email("bob@corp.test")
        .await
        .unwrap()
        .unwrap();
    assert!(bob_user.email_verified_at.is_some());
    assert_eq!(
        signed_in_as(&mut bob).await.as_deref(),
        Some("bob@corp.test")
    );
    let members_after = admin.get("/settings/members").await;
    assert_eq!(
        members_after.body.matches("bob@corp.test").count(),
        members.body.matches("bob@corp.test").count()
    );

    // Someone from another domain is not routed anywhere.
    let mut other = s.app.browser();
    other.get("/login").await;
    let none = other
        .post("/sso/start", &[("email", "x@nowhere.test")])
        .await;
    assert_eq!(none.status, StatusCode::BAD_REQUEST);
    assert!(none.shows("Single sign-on is not set up for nowhere.test"));
}
sso_both!(teammate_joins_through_org_connection);

/// The negative matrix: each ends on a clear page, with no session and an audit entry.
async fn sso_failures_leave_no_session(s: Sso) {
    let (mut admin, conn) = admin_with_connection(&s, &[]).await;

    // State missing, in a browser with a sign-in in flight: refused and audited.
    let mut b = s.app.browser();
    start_sso(&mut b, &s.idp, "bob@corp.test").await;
    let page = b.get("/sso/callback?code=abc").await;
    assert_refused(&s, &mut b, &page, StatusCode::BAD_REQUEST, "invalid_state").await;
    // ...and in a browser that started nothing: refused, logged but not audited (anyone
    // could send these).
    let mut stray = s.app.browser();
    let page = stray.get("/sso/callback?code=abc&state=x").await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert_eq!(signed_in_as(&mut stray).await, None);

    // State altered.
    let mut b = s.app.browser();
    let auth = start_sso(&mut b, &s.idp, "bob@corp.test").await;
    let cb = through_idp(&mut b, &s.idp, &auth, "bob").await;
    let state = query_param(&cb, "state").unwrap();
    let page = b
        .get_abs(&with_param(&cb, "state", Some(&format!("{state}x"))))
        .await;
    assert_refused(&s, &mut b, &page, StatusCode::BAD_REQUEST, "invalid_state").await;
    // The altered state matched nothing, so the real callback still works, once.
    let first = b.get_abs(&cb).await;
    assert_eq!(first.status, StatusCode::SEE_OTHER, "{}", first.body);
    assert_eq!(signed_in_as(&mut b).await.as_deref(), Some("bob@corp.test"));

    // Replayed in the same session after a failed attempt consumed it: refused.
    let mut b = s.app.browser();
    start_sso(&mut b, &s.idp, "bob@corp.test").await; // another attempt stays in flight
    let auth = start_sso(&mut b, &s.idp, "bob@corp.test").await;
    let cb = through_idp(&mut b, &s.idp, &auth, "bob").await;
    let page = b
        .get_abs(&with_param(&cb, "iss", Some("http://evil.example")))
        .await;
    assert_refused(
        &s,
        &mut b,
        &page,
        StatusCode::BAD_REQUEST,
        "issuer_mismatch",
    )
    .await;
    let replay = b.get_abs(&cb).await;
    assert_refused(
        &s,
        &mut b,
        &replay,
        StatusCode::BAD_REQUEST,
        "invalid_state",
    )
    .await;

    // A callback arriving in another browser's session (which has its own in flight).
    let mut a = s.app.browser();
    let auth = start_sso(&mut a, &s.idp, "bob@corp.test").await;
    let cb_a = through_idp(&mut a, &s.idp, &auth, "bob").await;
    let mut other = s.app.browser();
    start_sso(&mut other, &s.idp, "bob@corp.test").await;
    let page = other.get_abs(&cb_a).await;
    assert_refused(
        &s,
        &mut other,
        &page,
        StatusCode::BAD_REQUEST,
        "invalid_state",
    )
    .await;
    // The browser that started it can still finish.
    assert_eq!(a.get_abs(&cb_a).await.status, StatusCode::SEE_OTHER);

    // Authorization code injection: the attacker's code in the victim's callback fails at
    // the token endpoint (PKCE verifier mismatch).
    let mut attacker = s.app.browser();
    let auth_x = start_sso(&mut attacker, &s.idp, "bob@corp.test").await;
    let cb_x = through_idp(&mut attacker, &s.idp, &auth_x, "bob").await;
    let mut victim = s.app.browser();
    let auth_v = start_sso(&mut victim, &s.idp, "bob@corp.test").await;
    let injected = with_param(
        &with_param(&cb_x, "state", None),
        "state",
        Some(&query_param(&auth_v, "state").unwrap()),
    );
    let page = victim.get_abs(&injected).await;
    assert_refused(
        &s,
        &mut victim,
        &page,
        StatusCode::BAD_REQUEST,
        "token_exchange_failed",
    )
    .await;

    // RFC 9207: a different `iss`, or none from a provider that sends it.
    for iss in [Some("http://evil.example"), None] {
        let mut b = s.app.browser();
        let auth = start_sso(&mut b, &s.idp, "bob@corp.test").await;
        let cb = through_idp(&mut b, &s.idp, &auth, "bob").await;
        let page = b.get_abs(&with_param(&cb, "iss", iss)).await;
        assert_refused(
            &s,
            &mut b,
            &page,
            StatusCode::BAD_REQUEST,
            "issuer_mismatch",
        )
        .await;
    }

    // The person cancels at the provider: error=access_denied.
    let mut b = s.app.browser();
    let auth = start_sso(&mut b, &s.idp, "bob@corp.test").await;
    let login = b.get_abs(&auth).await;
    let login = b.get_abs(&absolute(&s.idp, login.location())).await;
    let abort = login
        .capture(r#"href="([^"]*/abort)""#)
        .expect("the provider's cancel link");
    let mut back = b.get_abs(&absolute(&s.idp, &abort)).await;
    while !back.location().starts_with(&s.app.base) {
        assert!(back.status.is_redirection(), "{}", back.body);
        back = b.get_abs(&absolute(&s.idp, back.location())).await;
    }
    let cb = back.location().to_string();
    assert_eq!(query_param(&cb, "error").as_deref(), Some("access_denied"));
    let page = b.get_abs(&cb).await;
    assert_refused(&s, &mut b, &page, StatusCode::FORBIDDEN, "provider_error").await;
    assert!(page.shows("cancelled or refused at your identity provider"));

    // An unverified email cannot join.
    let mut b = s.app.browser();
    let page = sso_sign_in(&mut b, &s.idp, "carol@corp.test", "carol").await;
    assert_refused(
        &s,
        &mut b,
        &page,
        StatusCode::FORBIDDEN,
        "email_not_verified",
    )
    .await;
    assert!(
        !admin
            .get("/settings/members")
            .await
            .shows("carol@corp.test")
    );

    // A verified email outside the connection's domains cannot join.
    let mut b = s.app.browser();
    let page = sso_sign_in(&mut b, &s.idp, "someone@corp.test", "dave").await;
    assert_refused(
        &s,
        &mut b,
        &page,
        StatusCode::FORBIDDEN,
        "domain_not_allowed",
    )
    .await;

    // An existing password account that is not a member is never taken over by email.
    s.app.signed_up("frank@corp.test").await;
    let mut b = s.app.browser();
    let page = sso_sign_in(&mut b, &s.idp, "frank@corp.test", "frank").await;
    assert_refused(&s, &mut b, &page, StatusCode::FORBIDDEN, "existing_account").await;

    // A member (the admin, not linked yet) is not signed in by a provider asserting their
    // verified email under some subject: identity is (issuer, subject), never the email.
    let mut b = s.app.browser();
    let page = sso_sign_in(&mut b, &s.idp, "admin@corp.test", "mallory").await;
    assert_refused(&s, &mut b, &page, StatusCode::FORBIDDEN, "existing_account").await;

    // The admin links their identity (subject "admin"); another subject asserting the
    // admin's email is still refused.
    admin.get("/settings/account").await;
    let go = admin
        .post("/sso/link", &[("source", &format!("connection:{conn}"))])
        .await;
    assert_eq!(
        query_param(&to_provider(&go), "prompt").as_deref(),
        Some("login")
    );
    let cb = through_idp(&mut admin, &s.idp, &to_provider(&go), "admin").await;
    assert_eq!(admin.get_abs(&cb).await.location(), "/settings/account");
    let mut b = s.app.browser();
    let page = sso_sign_in(&mut b, &s.idp, "admin@corp.test", "mallory").await;
    assert_refused(&s, &mut b, &page, StatusCode::FORBIDDEN, "existing_account").await;

    // Linking with an unverified email is refused; the admin stays signed in as before.
    let mut ada = s.app.browser();
    ada.sign_in("admin@corp.test", PASSWORD).await;
    ada.get("/settings/account").await;
    let go = ada
        .post("/sso/link", &[("source", &format!("connection:{conn}"))])
        .await;
    let cb = through_idp(&mut ada, &s.idp, &to_provider(&go), "carol").await;
    let page = ada.get_abs(&cb).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.shows("did not confirm your email address"));
    let account = ada.get("/settings/account").await;
    assert_eq!(account.status, StatusCode::OK);
    assert!(!account.shows("carol@corp.test"));

    // Linking needs a recent sign-in: 20 minutes later, sign in again first.
    s.app.clock.advance(time::Duration::minutes(20));
    ada.get("/settings/account").await;
    let go = ada
        .post("/sso/link", &[("source", &format!("connection:{conn}"))])
        .await;
    assert_eq!(go.status, StatusCode::SEE_OTHER);
    assert_eq!(
        go.location(),
        "/login?reason=reauth&next=%2Fsettings%2Faccount"
    );
    assert!(ada.get(go.location()).await.shows("Confirm it's you"));
}
sso_both!(sso_failures_leave_no_session);

/// Linking from Settings → Account, signing in with the linked identity, "require SSO"
/// (password sign-in refused once linked; before that, the password sign-in continues at
/// the provider and links), and unlinking; deleting a connection drops its identities.
async fn link_require_sso_and_unlink(s: Sso) {
    let (mut admin, conn) = admin_with_connection(&s, &[]).await;
    let account = admin.get("/settings/account").await;
    assert!(account.shows("No identity is linked yet."));
    let go = admin
        .post("/sso/link", &[("source", &format!("connection:{conn}"))])
        .await;
    let cb = through_idp(&mut admin, &s.idp, &to_provider(&go), "admin").await;
    let linked = admin.get_abs(&cb).await;
    assert_eq!(linked.location(), "/settings/account", "{}", linked.body);
    let account = admin.get("/settings/account").await;
    assert!(account.shows("Linked Corp IdP (admin@corp.test)"));
    assert!(account.body.contains(&s.idp.issuer));

    // Sign out, sign in with SSO: the same account.
    admin.post("/logout", &[]).await;
    let back = sso_sign_in(&mut admin, &s.idp, "admin@corp.test", "admin").await;
    assert_eq!(back.status, StatusCode::SEE_OTHER, "{}", back.body);
    assert_eq!(
        signed_in_as(&mut admin).await.as_deref(),
        Some("admin@corp.test")
    );

    // Bob has a password account and is a member.
    let bob_browser = s.app.signed_up("bob@corp.test").await;
    drop(bob_browser);
    let org = admin.org.clone().unwrap();
    let bob = s
        .app
        .store
        .user_by_email("bob@corp.test")
        .await
        .unwrap()
        .unwrap();
    s.app
        .store
        .add_member(
            &org,
            &bob.id,
            "viewer",
            keyward::store::NewAudit::new("member.added", s.app.clock.unix()),
        )
        .await
        .unwrap();

    // Require SSO (the stored secret is kept when the field is left empty).
    admin.get(&format!("/settings/sso/{conn}")).await;
    save_connection(
        &mut admin,
        &s.idp.issuer,
        Some(&conn),
        &[("require_sso", "1")],
    )
    .await;
    // The admin has linked: password sign-in is refused, pointing to SSO.
    let mut b = s.app.browser();
    let res = b.sign_in("admin@corp.test", PASSWORD).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN, "{}", res.body);
    assert!(res.shows("requires single sign-on for corp.test addresses"));
    assert_eq!(signed_in_as(&mut b).await, None);
    // A wrong password still gets the generic answer (nothing revealed).
    let res = b.sign_in("bob@corp.test", "wrong password entirely").await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);

    // A member whose address is not confirmed is not sent on to link an identity.
    let mut hal = s.app.browser();
    s.app.sign_up(&mut hal, "hal@corp.test").await;
    let hal_id = s
        .app
        .store
        .user_by_email("hal@corp.test")
        .await
        .unwrap()
        .unwrap()
        .id;
    s.app
        .store
        .add_member(
            &org,
            &hal_id,
            "viewer",
            keyward::store::NewAudit::new("member.added", s.app.clock.unix()),
        )
        .await
        .unwrap();
    let res = hal.sign_in("hal@corp.test", PASSWORD).await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST, "{}", res.body);
    assert!(res.shows("linking it needs a confirmed email address"));
    assert_eq!(signed_in_as(&mut hal).await, None);

    // Bob (a member with a password, not linked) cannot be signed in by email alone...
    let mut b = s.app.browser();
    let page = sso_sign_in(&mut b, &s.idp, "bob@corp.test", "bob").await;
    assert_refused(&s, &mut b, &page, StatusCode::FORBIDDEN, "existing_account").await;
    // ...but his password sign-in, now that SSO is required, continues at the provider,
    // and the identity it confirms (same verified email) is linked to his account.
    let res = b.sign_in("bob@corp.test", PASSWORD).await;
    let cb = through_idp(&mut b, &s.idp, &to_provider(&res), "bob").await;
    let landed = b.get_abs(&cb).await;
    assert_eq!(landed.status, StatusCode::SEE_OTHER, "{}", landed.body);
    assert_eq!(signed_in_as(&mut b).await.as_deref(), Some("bob@corp.test"));
    let keys = b.get("/settings/api-keys").await;
    assert!(
        keys.body
            .contains(r#"<span class="badge badge-role">viewer</span>"#)
    );
    assert!(audited(&s.app, "auth.signed_in", "account", json!("linked_now")).await);
    // Once linked, his password alone no longer signs him in.
    let mut c = s.app.browser();
    assert_eq!(
        c.sign_in("bob@corp.test", PASSWORD).await.status,
        StatusCode::FORBIDDEN
    );
    // A provider account with another email cannot be linked that way.
    let mut d = s.app.browser();
    s.app.signed_up("gina@corp.test").await;
    let gina = s
        .app
        .store
        .user_by_email("gina@corp.test")
        .await
        .unwrap()
        .unwrap();
    s.app
        .store
        .add_member(
            &org,
            &gina.id,
            "viewer",
            keyward::store::NewAudit::new("member.added", s.app.clock.unix()),
        )
        .await
        .unwrap();
    let res = d.sign_in("gina@corp.test", PASSWORD).await;
    let cb = through_idp(&mut d, &s.idp, &to_provider(&res), "frank").await;
    let page = d.get_abs(&cb).await;
    assert_refused(&s, &mut d, &page, StatusCode::FORBIDDEN, "email_mismatch").await;

    // Admin unlinks (they have a password, so it is allowed).
    admin.get("/settings/account").await;
    let res = admin
        .post(
            "/sso/unlink",
            &[("issuer", s.idp.issuer.as_str()), ("subject", "admin")],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    let account = admin.get("/settings/account").await;
    assert!(account.shows("Unlinked Corp IdP"));
    assert!(account.shows("No identity is linked yet."));
    let audit = admin.get("/settings/audit-log").await;
    assert!(audit.shows("SSO identity unlinked") && audit.shows("SSO identity linked"));
    assert!(audit.shows("SSO connection changed") && audit.shows("SSO connection added"));

    // Another organization's admin cannot see or touch this connection.
    let mut stranger = s.app.signed_up("eve@elsewhere.test").await;
    stranger.get("/orgs/new").await;
    stranger.post("/orgs", &[("name", "Elsewhere")]).await;
    assert_eq!(
        stranger.get(&format!("/settings/sso/{conn}")).await.status,
        StatusCode::NOT_FOUND
    );
    stranger.get("/settings/sso/new").await;
    let res = stranger
        .post(&format!("/settings/sso/{conn}/delete"), &[])
        .await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    let res = stranger
        .post("/sso/link", &[("source", &format!("connection:{conn}"))])
        .await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    // A viewer of this organization cannot open Settings → SSO.
    assert_eq!(b.get("/settings/sso").await.status, StatusCode::FORBIDDEN);

    // Deleting the connection: audited; its domain no longer routes.
    admin.get(&format!("/settings/sso/{conn}")).await;
    let res = admin
        .post(&format!("/settings/sso/{conn}/delete"), &[])
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    let mut b = s.app.browser();
    b.get("/login").await;
    let res = b.post("/sso/start", &[("email", "bob@corp.test")]).await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    // Identities that came through it are gone (the issuer could be added back by anyone).
    assert!(
        s.app
            .store
            .sso_identities(&bob.id)
            .await
            .unwrap()
            .is_empty()
    );
}
sso_both!(link_require_sso_and_unlink);

/// Form checks: each refusal names what to fix, and nothing is saved.
async fn connection_form_refusals(s: Sso) {
    let (mut admin, _) = admin_with_connection(&s, &[]).await;
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("name", "")], "Give the connection a name"),
        (&[("issuer", "ftp://x")], "The issuer must be"),
        (&[("client_id", "")], "Enter the client ID"),
        (&[("client_secret", "")], "Enter the client secret"),
        (&[("domains", "not a domain!")], "is not a domain name"),
        (&[("domains", "")], "List at least one email domain"),
        (
            &[("default_role", "owner")],
            "Choose admin, developer or viewer",
        ),
        (
            &[("domains", "corp.test")],
            "corp.test already signs in through another SSO connection",
        ),
    ];
    for (change, message) in cases {
        admin.get("/settings/sso/new").await;
        let mut fields: Vec<(&str, &str)> = vec![
            ("name", "Second"),
            ("issuer", &s.idp.issuer),
            ("client_id", "c2"),
            ("client_secret", "s2"),
            ("domains", "second.test"),
            ("default_role", "viewer"),
        ];
        for (k, v) in change.iter() {
            fields.retain(|(fk, _)| fk != k);
            fields.push((k, v));
        }
        let res = admin.post("/settings/sso", &fields).await;
        assert_eq!(
            res.status,
            StatusCode::BAD_REQUEST,
            "{message}: {}",
            res.body
        );
        assert!(res.shows(message), "{message}: {}", res.body);
        assert!(!res.body.contains("value=\"s2\""), "secret not echoed");
    }
    let org = admin.org.clone().unwrap();
    assert_eq!(
        s.app.store.sso_connections(&org).await.unwrap().len(),
        1,
        "nothing saved"
    );
    assert!(!admin.get("/settings/sso").await.shows("Second"));
}
sso_both!(connection_form_refusals);

/// A metadata document whose `issuer` is not the configured one: "Test connection" says
/// so, and a sign-in through it stops before leaving Keyward.
async fn issuer_mismatch_in_metadata(s: Sso) {
    let fake = fake_metadata(&s.idp.issuer, "https://evil.example").await;
    let (mut admin, conn) = admin_with_connection(&s, &[]).await;
    save_connection(&mut admin, &fake, Some(&conn), &[]).await;
    let test = admin.post(&format!("/settings/sso/{conn}/test"), &[]).await;
    assert!(test.shows("Connection failed."), "{}", test.body);
    assert!(test.shows("does not match"), "{}", test.body);

    let mut b = s.app.browser();
    b.get("/login").await;
    let page = b.post("/sso/start", &[("email", "bob@corp.test")]).await;
    assert_refused(
        &s,
        &mut b,
        &page,
        StatusCode::BAD_GATEWAY,
        "discovery_failed",
    )
    .await;
}
sso_both!(issuer_mismatch_in_metadata);

/// An authorization endpoint with another scheme than http(s) in the metadata is never
/// linked from the hop page: the sign-in stops before leaving Keyward.
async fn authorization_endpoint_must_be_a_web_address(s: Sso) {
    let (mut admin, conn) = admin_with_connection(&s, &[]).await;
    for endpoint in ["javascript:alert(document.cookie)", "data:text/html,hi"] {
        let fake = fake_metadata_with(&s.idp.issuer, |doc, own| {
            doc["issuer"] = Value::from(own);
            doc["authorization_endpoint"] = Value::from(endpoint);
        })
        .await;
        save_connection(&mut admin, &fake, Some(&conn), &[]).await;
        let mut b = s.app.browser();
        b.get("/login").await;
        let page = b.post("/sso/start", &[("email", "bob@corp.test")]).await;
        assert!(!page.body.contains(endpoint), "{}", page.body);
        assert_refused(
            &s,
            &mut b,
            &page,
            StatusCode::BAD_GATEWAY,
            "discovery_failed",
        )
        .await;
    }
}
sso_both!(authorization_endpoint_must_be_a_web_address);

/// Serves the provider's discovery document with its `issuer` replaced.
async fn fake_metadata(real_issuer: &str, claimed: &str) -> String {
    let claimed = claimed.to_string();
    fake_metadata_with(real_issuer, move |doc, _| {
        doc["issuer"] = Value::from(claimed)
    })
    .await
}

/// Serves the provider's discovery document changed by `edit` (which is told the fake's
/// own URL).
async fn fake_metadata_with(real_issuer: &str, edit: impl FnOnce(&mut Value, &str)) -> String {
    let mut doc: Value = reqwest::get(format!("{real_issuer}/.well-known/openid-configuration"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    edit(&mut doc, &url);
    let app = Router::new().route(
        "/.well-known/openid-configuration",
        get(move || {
            let doc = doc.clone();
            async move { Json(doc) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

pub(crate) fn operator_provider(issuer: &str) -> OperatorProvider {
    OperatorProvider {
        id: "test-idp".into(),
        name: "Test IdP".into(),
        issuer: issuer.into(),
        client_id: CLIENT_ID.into(),
        client_secret: Some(SecretString::from(CLIENT_SECRET)),
        client_secret_env: None,
    }
}

/// An operator-wide provider: a button on the sign-in page; a first sign-in creates an
/// account (sign-up is open) with its personal organization. Start-up discovery refuses a
/// provider that does not answer or names another issuer.
async fn operator_wide_provider(backend: Backend) {
    let Some(s) = setup(backend, |c, issuer| {
        c.sso_providers = vec![operator_provider(issuer)];
    })
    .await
    else {
        return;
    };
    s.app.state.check_sso_providers().await.unwrap();

    let mut b = s.app.browser();
    let login = b.get("/login").await;
    assert!(login.shows("Sign in with Test IdP"));
    let res = b.post("/sso/start", &[("provider", "test-idp")]).await;
    let cb = through_idp(&mut b, &s.idp, &to_provider(&res), "erin").await;
    let landed = b.get_abs(&cb).await;
    assert_eq!(landed.status, StatusCode::SEE_OTHER, "{}", landed.body);
    assert_eq!(
        signed_in_as(&mut b).await.as_deref(),
        Some("erin@mail.test")
    );
    let keys = b.get("/settings/api-keys").await;
    assert!(keys.shows("Erin's organization"), "{}", keys.body);
    assert!(
        keys.body
            .contains(r#"<span class="badge badge-role">owner</span>"#)
    );

    // Unverified email: no account.
    let mut b = s.app.browser();
    b.get("/login").await;
    let res = b.post("/sso/start", &[("provider", "test-idp")]).await;
    let cb = through_idp(&mut b, &s.idp, &to_provider(&res), "carol").await;
    let page = b.get_abs(&cb).await;
    assert_refused(
        &s,
        &mut b,
        &page,
        StatusCode::FORBIDDEN,
        "email_not_verified",
    )
    .await;

    // An unknown provider id is a clean 400.
    let mut b = s.app.browser();
    b.get("/login").await;
    let res = b.post("/sso/start", &[("provider", "nope")]).await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);

    // Start-up checks.
    let fake = fake_metadata(&s.idp.issuer, "https://evil.example").await;
    for (issuer, expected) in [
        (fake.as_str(), "does not match"),
        ("http://127.0.0.1:9", "did not answer"),
    ] {
        let mut config = Config::for_tests(&s.app.base, [42u8; 32]);
        config.sso_providers = vec![operator_provider(issuer)];
        let state = AppState::new(
            config,
            s.app.store.clone(),
            std::sync::Arc::new(s.app.clock.clone()) as std::sync::Arc<dyn Clock>,
        )
        .unwrap();
        let err = state.check_sso_providers().await.unwrap_err().to_string();
        assert!(err.contains(expected) && err.contains("test-idp"), "{err}");
    }
}

mod operator_wide_provider {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::operator_wide_provider(crate::helpers::Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::operator_wide_provider(crate::helpers::Backend::Postgres).await;
    }
}

/// An invitation for an address whose domain the organization signs in through SSO: the
/// invitation page offers "Continue with SSO" (and, when SSO is required, nothing else),
/// password sign-up with it is refused, and the SSO sign-in joins with the invited role.
async fn invitation_goes_through_sso(s: Sso) {
    let (mut admin, _) = admin_with_connection(&s, &[("require_sso", "1")]).await;
    admin.get("/settings/members").await;
    let page = admin
        .post(
            "/settings/invitations",
            &[("email", "frank@corp.test"), ("role", "admin")],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let link = page
        .capture(r#"id="invite-link">([^<]+)<"#)
        .expect("link shown");
    let path = format!("/invitations/{}", link.rsplit('/').next().unwrap());
    let token = link.rsplit('/').next().unwrap().to_string();

    let mut frank = s.app.browser();
    let show = frank.get(&path).await;
    assert_eq!(show.status, StatusCode::OK);
    assert!(show.shows("Continue with SSO"));
    assert!(!show.shows("Create an account"));
    let signup = frank
        .post(
            "/signup",
            &[
                ("email", "frank@corp.test"),
                ("password", PASSWORD),
                ("invite", &token),
            ],
        )
        .await;
    assert_eq!(signup.status, StatusCode::FORBIDDEN);
    assert!(signup.shows("signs frank@corp.test in with single sign-on"));

    frank.get(&path).await;
    let go = frank
        .post(
            "/sso/start",
            &[("email", "frank@corp.test"), ("next", &path)],
        )
        .await;
    let cb = through_idp(&mut frank, &s.idp, &to_provider(&go), "frank").await;
    let landed = frank.get_abs(&cb).await;
    assert_eq!(landed.location(), "/settings/api-keys", "{}", landed.body);
    let keys = frank.get("/settings/api-keys").await;
    assert!(
        keys.body
            .contains(r#"<span class="badge badge-role">admin</span>"#),
        "invited role"
    );
    assert_eq!(
        frank.get(&path).await.status,
        StatusCode::GONE,
        "invitation used"
    );
    assert!(audited(&s.app, "invitation.accepted", "via", json!("sso")).await);
}
sso_both!(invitation_goes_through_sso);
