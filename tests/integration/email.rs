//! Email ownership: verification links, what an unverified account may not do, the
//! operator's "require verification" switch, and the sealed outbox.

use keyward::store::NewAudit;
use reqwest::StatusCode;
use time::Duration;

use crate::{
    both,
    helpers::{Backend, PASSWORD, TestApp},
};

async fn verified(app: &TestApp, email: &str) -> bool {
    app.store
        .user_by_email(email)
        .await
        .unwrap()
        .unwrap()
        .email_verified_at
        .is_some()
}

async fn a_verification_link_works_once(app: TestApp) {
    let mut b = app.signed_up_unverified("once@example.com").await;
    assert!(!verified(&app, "once@example.com").await);
    let link = app.verification_link("once@example.com").await;
    let page = b.get(&link).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.shows("Confirm once@example.com"));
    assert!(
        !verified(&app, "once@example.com").await,
        "a GET changes nothing"
    );
    let res = b.post(&link, &[]).await;
    assert_eq!(
        res.status,
        StatusCode::SEE_OTHER,
        "signed in here: back to the account"
    );
    assert!(verified(&app, "once@example.com").await);
    assert!(
        app.audit_events()
            .await
            .iter()
            .any(|(a, _)| a == "account.email_verified")
    );
    // Used: gone, in another browser too.
    let mut other = app.browser();
    assert_eq!(other.get(&link).await.status, StatusCode::GONE);
    let again = b.post(&link, &[]).await;
    assert_eq!(again.status, StatusCode::GONE);
    assert!(again.body.contains("This link can't be used"));
}
both!(a_verification_link_works_once);

async fn a_verification_link_expires_after_24_hours(app: TestApp) {
    let mut b = app.browser();
    app.sign_up(&mut b, "late@example.com").await;
    let link = app.verification_link("late@example.com").await;
    app.clock
        .advance(Duration::hours(24) + Duration::seconds(1));
    assert_eq!(b.get(&link).await.status, StatusCode::GONE);
    assert_eq!(b.post(&link, &[]).await.status, StatusCode::GONE);
    assert!(!verified(&app, "late@example.com").await);
}
both!(a_verification_link_expires_after_24_hours);

async fn a_wrong_verification_token_is_refused(app: TestApp) {
    let mut b = app.browser();
    app.sign_up(&mut b, "wrongtoken@example.com").await;
    let link = app.verification_link("wrongtoken@example.com").await;
    let mut forged = link.clone();
    forged.pop();
    forged.push(if link.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(b.get(&forged).await.status, StatusCode::GONE);
    assert_eq!(b.post(&forged, &[]).await.status, StatusCode::GONE);
    assert_eq!(
        b.post("/verify-email/not-a-token", &[]).await.status,
        StatusCode::GONE
    );
    assert!(!verified(&app, "wrongtoken@example.com").await);
    // The link does not sign anyone in: afterwards the password is still needed.
    let res = b.post(&link, &[]).await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(res.body.contains("Sign in with your password"));
    assert_eq!(
        b.get("/settings/api-keys").await.status,
        StatusCode::SEE_OTHER
    );
}
both!(a_wrong_verification_token_is_refused);

async fn resending_is_throttled_and_voids_older_links(app: TestApp) {
    let mut b = app.signed_up_unverified("again@example.com").await;
    let first = app.verification_link("again@example.com").await;
    b.get("/settings/account").await;
    let res = b.post("/settings/account/verify-email", &[]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert!(b.get(res.location()).await.shows("less than a minute ago"));
    assert_eq!(app.verification_link("again@example.com").await, first);
    app.clock.advance(Duration::seconds(61));
    let res = b.post("/settings/account/verify-email", &[]).await;
    assert!(b.get(res.location()).await.shows("We sent a new link"));
    let second = app.verification_link("again@example.com").await;
    assert_ne!(first, second);
    assert_eq!(b.post(&first, &[]).await.status, StatusCode::GONE);
    assert_eq!(b.post(&second, &[]).await.status, StatusCode::SEE_OTHER);
    assert!(verified(&app, "again@example.com").await);
}
both!(resending_is_throttled_and_voids_older_links);

async fn an_unverified_account_cannot_create_a_team_organization(app: TestApp) {
    let mut b = app.signed_up_unverified("solo@example.com").await;
    // The personal organization works.
    let (_, key) = b.new_key("mine").await;
    assert!(key.starts_with("kw_live_"));
    let page = b.get("/orgs/new").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .contains("Confirm your email address before creating")
    );
    assert!(
        !page.body.contains("action=\"/orgs\""),
        "no form that can only fail"
    );
    assert!(page.body.contains("Resend verification email"));
    let res = b.post("/orgs", &[("name", "Team")]).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert!(res.body.contains("Confirm your email address first"));
    let user = app
        .store
        .user_by_email("solo@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(app.store.memberships(&user.id).await.unwrap().len(), 1);
}
both!(an_unverified_account_cannot_create_a_team_organization);

/// A verified owner's team organization with `email` (unverified) added as `role`.
async fn team_with(app: &TestApp, email: &str, role: &str) -> String {
    let mut owner = app.signed_up("owner@example.com").await;
    owner.get("/orgs/new").await;
    let res = owner.post("/orgs", &[("name", "Team")]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let owner_id = app
        .store
        .user_by_email("owner@example.com")
        .await
        .unwrap()
        .unwrap()
        .id;
    let team = app
        .store
        .memberships(&owner_id)
        .await
        .unwrap()
        .into_iter()
        .find(|m| !m.personal)
        .unwrap()
        .org_id;
    let mut b = app.browser();
    app.sign_up(&mut b, email).await;
    let user = app.store.user_by_email(email).await.unwrap().unwrap();
    app.store
        .add_member(&team, &user.id, role, NewAudit::new("member.added", 0))
        .await
        .unwrap();
    team
}

async fn an_unverified_admin_cannot_invite(app: TestApp) {
    let team = team_with(&app, "admin@example.com", "admin").await;
    let mut b = app.browser();
    b.sign_in("admin@example.com", PASSWORD).await;
    b.post("/orgs/switch", &[("org_id", &team)]).await;
    let page = b.get("/settings/members").await;
    assert!(
        page.body
            .contains("Confirm your email address before inviting")
    );
    assert!(!page.body.contains("action=\"/settings/invitations\""));
    let res = b
        .post(
            "/settings/invitations",
            &[("email", "friend@example.com"), ("role", "viewer")],
        )
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert!(res.body.contains("Confirm your email address first"));
    assert!(app.store.open_invitations(&team).await.unwrap().is_empty());
}
both!(an_unverified_admin_cannot_invite);

async fn an_unverified_account_cannot_link_an_sso_identity(app: TestApp) {
    let mut b = app.signed_up_unverified("link@example.com").await;
    let account = b.get("/settings/account").await;
    assert!(account.body.contains("unverified"));
    assert!(!account.body.contains("action=\"/sso/link\""));
    assert!(account.body.contains("before linking an SSO identity"));
    let res = b.post("/sso/link", &[("source", "provider:any")]).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert!(res.body.contains("Confirm your email address first"));
}
both!(an_unverified_account_cannot_link_an_sso_identity);

async fn the_members_page_marks_unverified_addresses(app: TestApp) {
    let team = team_with(&app, "new@example.com", "viewer").await;
    let mut owner = app.browser();
    owner.sign_in("owner@example.com", PASSWORD).await;
    owner.post("/orgs/switch", &[("org_id", &team)]).await;
    let page = owner.get("/settings/members").await;
    assert_eq!(
        page.body.matches(">unverified</span>").count(),
        1,
        "{}",
        page.body
    );
    let row = page
        .body
        .split("<tr")
        .find(|r| r.contains("new@example.com"))
        .unwrap();
    assert!(row.contains(">unverified<"));
}
both!(the_members_page_marks_unverified_addresses);

async fn requiring_verification_keeps_unverified_accounts_out(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |c| c.require_email_verification = true).await
    else {
        return;
    };
    let mut b = app.signed_up_unverified("strict@example.com").await;
    for path in ["/settings/api-keys", "/settings/account", "/orgs/new"] {
        let res = b.get(path).await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(res.location(), "/verify-email", "{path}");
    }
    // The management API with this session says so too.
    let api = b.get("/api/v1/keys").await;
    assert_eq!(api.status, StatusCode::FORBIDDEN);
    assert!(api.body.contains("email_unverified"));
    let page = b.get("/verify-email").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("strict@example.com"));
    app.clock.advance(Duration::seconds(61));
    let res = b.post("/settings/account/verify-email", &[]).await;
    assert_eq!(res.location(), "/verify-email");
    assert!(b.get("/verify-email").await.shows("We sent a new link"));
    let link = app.verification_link("strict@example.com").await;
    b.get(&link).await;
    b.post(&link, &[]).await;
    assert_eq!(b.get("/settings/api-keys").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requiring_verification_keeps_unverified_accounts_out_sqlite() {
    requiring_verification_keeps_unverified_accounts_out(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requiring_verification_keeps_unverified_accounts_out_postgres() {
    requiring_verification_keeps_unverified_accounts_out(Backend::Postgres).await;
}

async fn the_outbox_holds_no_live_links(app: TestApp) {
    let mut b = app.browser();
    app.sign_up(&mut b, "sealed@example.com").await;
    let verify = app.verification_link("sealed@example.com").await;
    b.get("/forgot-password").await;
    b.post("/forgot-password", &[("email", "sealed@example.com")])
        .await;
    let mail = app
        .wait_for_mail("sealed@example.com", "Reset your Keyward password")
        .await;
    let token = regex::Regex::new(r"/reset-password/([A-Za-z0-9_-]+)")
        .unwrap()
        .captures(&mail.body)
        .unwrap()[1]
        .to_string();
    let dump = app.dump_database().await;
    assert!(
        dump.contains("sealed@example.com"),
        "the dump reads the outbox"
    );
    assert!(
        !dump.contains(&token),
        "a live reset token is in the database"
    );
    let verify_token = verify.trim_start_matches("/verify-email/");
    assert!(
        !dump.contains(verify_token),
        "a live verification token is in the database"
    );
    // The operator still reads them.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["mail", "outbox"])
        .env("DATABASE_URL", &app.db_url)
        .env(
            "KEYWARD_KEY_PEPPER",
            "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=",
        )
        .env("KEYWARD_SECRETS_FILE", "/nonexistent/keyward.secrets")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&token), "{text}");
}
both!(the_outbox_holds_no_live_links);
